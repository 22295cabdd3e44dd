#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::Path;
use std::time::Duration;

use purser_core::{Clock, ManualClock, Signer};
use purser_token::{Alg, KeyIdMode};

use super::admin::Folder;
use super::schedule::{due, run_due, Rotation, Step};
use super::*;

const DAY: u64 = 86400;

fn folder<'a>(dir: &'a Path, bundle: &'a Path, jwks: &'a Path) -> Folder<'a> {
    Folder {
        dir,
        mode: KeyIdMode::Libtrust,
        bundle_file: bundle,
        jwks_file: jwks,
        lifetimes: Lifetimes {
            access: 300,
            refresh: 30 * DAY,
        },
        default_alg: Alg::Es256,
        import: None,
        generate: true,
    }
}

fn now(c: &ManualClock) -> i64 {
    purser_authn::tokens::unix_seconds(c.wall())
}

fn states(set: &KeySet) -> Vec<(String, KeyState)> {
    set.keys
        .iter()
        .map(|k| (k.entry.name.clone(), k.entry.state))
        .collect()
}

#[test]
fn next_activate_retire_with_the_published_files_following() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, bundle, jwks) = (
        tmp.path().join("keys"),
        tmp.path().join("out/bundle.crt"),
        tmp.path().join("out/jwks.json"),
    );
    let f = folder(&dir, &bundle, &jwks);
    let clock = ManualClock::new();

    let set = f.ensure(now(&clock)).unwrap();
    assert_eq!(states(&set), [("key-1".to_string(), KeyState::Active)]);
    let first = set.active().signer.clone();
    let count_certs = || {
        std::fs::read_to_string(&bundle)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count()
    };
    assert_eq!(count_certs(), 1);

    let name = f.next(Some(Alg::Rs256), now(&clock)).unwrap();
    assert_eq!(name, "key-2");
    let set = f.load().unwrap();
    assert_eq!(set.active().entry.name, "key-1", "a next key does not sign");
    assert_eq!(count_certs(), 2, "the bundle publishes the next key");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&jwks).unwrap()).unwrap();
    let kids: Vec<&str> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        [
            set.find("key-1").unwrap().ids.libtrust.as_str(),
            set.find("key-2").unwrap().ids.libtrust.as_str()
        ]
    );

    // A refresh token of the first key, then the switch (RS256 after ES256).
    let refresh = purser_token::issue_refresh(
        &set.to_published().ring,
        "purser",
        purser_token::RefreshSubject {
            account: "alice",
            service: "registry.local",
            backend: "static",
            stamp: None,
            token: None,
        },
        Duration::from_secs(30 * DAY),
        now(&clock),
    )
    .unwrap();
    clock.advance(Duration::from_secs(60));
    let (new, old) = f.activate(None, now(&clock), |_, _| Ok(())).unwrap();
    assert_eq!((new.as_str(), old.as_str()), ("key-2", "key-1"));
    let set = f.load().unwrap();
    let published = set.to_published();
    assert_eq!(published.ring.alg(), "RS256");
    assert_ne!(published.ring.key_id(), first.key_id());
    // The retiring key still verifies its refresh tokens.
    purser_token::check_refresh(
        &published.ring,
        &refresh,
        "purser",
        "registry.local",
        now(&clock),
    )
    .unwrap();
    assert_eq!(count_certs(), 2, "the retiring key stays published");

    // A second activation has nothing to activate.
    let e = f.activate(None, now(&clock), |_, _| Ok(())).unwrap_err();
    assert!(e.to_string().contains("no next key"), "{e}");

    // Retiring too early is refused, with the time it becomes possible.
    let e = f
        .retire("key-1", now(&clock), false)
        .unwrap_err()
        .to_string();
    let when = purser_authn::tokens::format_time(now(&clock) + (30 * DAY) as i64);
    assert!(e.contains(&when), "{e}");
    assert!(f
        .retire("key-2", now(&clock), false)
        .unwrap_err()
        .to_string()
        .contains("is active"));
    // The access lifetime alone is not enough while refresh tokens may live.
    clock.advance(Duration::from_secs(400));
    assert!(f.retire("key-1", now(&clock), false).is_err());
    clock.advance(Duration::from_secs(30 * DAY));
    assert_eq!(
        f.retire(first.key_id(), now(&clock), false).unwrap(),
        "key-1"
    );
    let set = f.load().unwrap();
    assert_eq!(states(&set), [("key-2".to_string(), KeyState::Active)]);
    assert!(!dir.join("key-1.pem").exists());
    assert_eq!(count_certs(), 1);
    assert!(purser_token::check_refresh(
        &set.to_published().ring,
        &refresh,
        "purser",
        "registry.local",
        now(&clock),
    )
    .is_err());

    // --force retires at once.
    f.next(None, now(&clock)).unwrap();
    f.activate(Some("key-3"), now(&clock), |_, _| Ok(()))
        .unwrap();
    assert!(f.retire("key-2", now(&clock), false).is_err());
    f.retire("key-2", now(&clock), true).unwrap();
}

#[test]
fn refresh_lifetime_zero_retires_after_the_access_lifetime_and_leeway() {
    let l = Lifetimes {
        access: 300,
        refresh: 0,
    };
    assert_eq!(retire_after(1000, l), 1000 + 300 + 60);
    assert_eq!(
        REGISTRY_LEEWAY_SECS,
        crate::doctor::REGISTRY_LEEWAY.as_secs()
    );
    let l = Lifetimes {
        access: 300,
        refresh: 3600,
    };
    assert_eq!(retire_after(1000, l), 1000 + 3600);
}

#[test]
fn an_activation_the_check_refuses_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let none = Path::new("");
    let f = folder(&dir, none, none);
    let clock = ManualClock::new();
    f.ensure(now(&clock)).unwrap();
    f.next(None, now(&clock)).unwrap();
    let before = std::fs::read_to_string(dir.join(MANIFEST)).unwrap();
    let e = f
        .activate(None, now(&clock), |_, k| {
            Err(format!("{} untrusted", k.entry.name))
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "key-2 untrusted");
    assert_eq!(std::fs::read_to_string(dir.join(MANIFEST)).unwrap(), before);
}

#[test]
fn a_half_written_folder_does_not_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let none = Path::new("");
    let f = folder(&dir, none, none);
    f.ensure(1_800_000_000).unwrap();
    f.next(None, 1_800_000_000).unwrap();
    let good = std::fs::read_to_string(dir.join(MANIFEST)).unwrap();
    // The manifest names a key whose file is not there (yet).
    std::fs::rename(dir.join("key-2.pem"), dir.join("moved.pem")).unwrap();
    let e = KeySet::load(&dir, KeyIdMode::Libtrust).unwrap_err();
    assert!(e.contains("key-2.pem"), "{e}");
    std::fs::rename(dir.join("moved.pem"), dir.join("key-2.pem")).unwrap();
    // A key whose certificate is another key's.
    std::fs::copy(dir.join("key-1.crt"), dir.join("key-2.crt")).unwrap();
    assert!(KeySet::load(&dir, KeyIdMode::Libtrust).is_err());
    // Half a manifest.
    std::fs::write(dir.join(MANIFEST), &good[..good.len() / 2]).unwrap();
    assert!(KeySet::load(&dir, KeyIdMode::Libtrust).is_err());
}

#[test]
fn the_schedule_makes_the_next_key_then_activates_it_then_retires_the_old() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let none = Path::new("");
    let f = folder(&dir, none, none);
    let clock = ManualClock::new();
    let r = Rotation {
        every: 90 * DAY,
        overlap: 7 * DAY,
    };
    f.ensure(now(&clock)).unwrap();
    assert_eq!(run_due(&f, r, now(&clock)).unwrap(), []);
    clock.advance(Duration::from_secs(83 * DAY - 10));
    assert_eq!(due(&f.load().unwrap(), r, f.lifetimes, now(&clock)), None);
    clock.advance(Duration::from_secs(10));
    assert_eq!(run_due(&f, r, now(&clock)).unwrap(), [Step::MakeNext]);
    assert_eq!(run_due(&f, r, now(&clock)).unwrap(), [], "made once");
    clock.advance(Duration::from_secs(7 * DAY));
    assert_eq!(
        run_due(&f, r, now(&clock)).unwrap(),
        [Step::Activate("key-2".into())]
    );
    let set = f.load().unwrap();
    assert_eq!(set.active().entry.name, "key-2");
    clock.advance(Duration::from_secs(30 * DAY));
    assert_eq!(
        run_due(&f, r, now(&clock)).unwrap(),
        [Step::Retire("key-1".into())]
    );
    assert_eq!(f.load().unwrap().keys.len(), 1);
}

#[test]
fn the_first_key_is_the_signing_key_file_when_there_is_one() {
    let tmp = tempfile::tempdir().unwrap();
    let files = purser_token::write_generated(&tmp.path().join("old"), Alg::Es384).unwrap();
    let dir = tmp.path().join("keys");
    let none = Path::new("");
    let mut f = folder(&dir, none, none);
    f.import = Some((files.key.as_path(), files.cert.clone()));
    let set = f.ensure(1_800_000_000).unwrap();
    assert_eq!(set.active().ids, files.key_ids);
    assert_eq!(
        set.active().cert_pem,
        std::fs::read_to_string(&files.cert).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("key-1.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn concurrent_commands_each_land() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let none = Path::new("");
    folder(&dir, none, none).ensure(1_800_000_000).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let none = Path::new("");
                folder(&dir, none, none).next(None, 1_800_000_000).unwrap()
            })
        })
        .collect();
    let mut names: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 6);
    names.dedup();
    assert_eq!(names.len(), 6, "each made its own key");
    assert_eq!(
        KeySet::load(&dir, KeyIdMode::Libtrust).unwrap().keys.len(),
        7
    );
}
