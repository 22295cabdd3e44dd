//! Clock skew: the registry refuses tokens whose `nbf`/`exp` are off by more than its leeway, so
//! its clock is compared with purser's (the `Date` headers), or with this machine's.

use std::time::SystemTime;

use super::{Finding, REGISTRY_LEEWAY};

/// Parses an HTTP `Date` header (IMF-fixdate).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let fmt = time::format_description::parse_borrowed::<2>(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
    )
    .ok()?;
    time::PrimitiveDateTime::parse(s.trim(), &fmt)
        .ok()
        .map(|dt| dt.assume_utc().into())
}

fn signed_secs(a: SystemTime, b: SystemTime) -> i64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// The registry's clock (its `Date`) against purser's, or `local_now` when purser sent none.
pub(super) fn check_clock(
    registry_date: Option<SystemTime>,
    purser_date: Option<SystemTime>,
    local_now: SystemTime,
) -> Finding {
    let Some(reg_date) = registry_date else {
        return Finding::warn(
            "clock",
            "the registry sent no Date header; clock skew not checked",
            "",
        );
    };
    let (other, whose) = match purser_date {
        Some(d) => (d, "purser's"),
        None => (local_now, "this machine's"),
    };
    let skew = signed_secs(reg_date, other);
    let abs = skew.unsigned_abs();
    // The Date header has one-second resolution, so a second of difference is noise.
    if abs + 1 >= REGISTRY_LEEWAY.as_secs() {
        Finding::problem(
            "clock",
            format!("the registry's clock is {skew:+} s from {whose}, beyond its 60 s leeway: tokens look expired or not yet valid"),
            "synchronise both clocks (NTP)",
        )
    } else if abs >= 10 {
        Finding::warn(
            "clock",
            format!("the registry's clock is {skew:+} s from {whose} (leeway 60 s)"),
            "synchronise both clocks (NTP)",
        )
    } else {
        Finding::ok(
            "clock",
            format!("the registry's clock is within {abs} s of {whose}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::doctor::Status;

    #[test]
    fn http_dates_parse() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        assert!(parse_http_date("yesterday").is_none());
    }

    #[test]
    fn skew_is_judged_against_the_leeway() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at =
            |s: i64| Some(now + Duration::from_secs(100) - Duration::from_secs((100 - s) as u64));
        assert_eq!(check_clock(at(2), None, now).status, Status::Ok);
        let f = check_clock(at(-20), at(0), now);
        assert_eq!(f.status, Status::Warn);
        assert!(f.what.contains("-20 s from purser's"), "{f}");
        let f = check_clock(at(59), None, now);
        assert_eq!(f.status, Status::Problem);
        assert!(f.what.contains("+59 s from this machine's"), "{f}");
        assert_eq!(check_clock(None, None, now).status, Status::Warn);
    }
}
