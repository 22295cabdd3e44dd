//! Refresh tokens: signed by the same key as access tokens, but shaped so that no registry ever
//! takes one for an access token (their `aud` is `{iss}/refresh`, never a service name).

use std::time::Duration;

use purser_core::{SignError, Signer, VerifyError};
use serde::{Deserialize, Serialize};

use crate::jws::new_jti;

/// The `typ` claim of every refresh token.
pub const REFRESH_TYP: &str = "refresh";

/// The claims of a refresh token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub iss: String,
    /// The account the token was issued to.
    pub sub: String,
    /// Always `{iss}/refresh`: a registry requires `aud` to be its service, so it refuses this.
    pub aud: String,
    /// The service the token was issued for; it is good for that service only.
    pub svc: String,
    /// The authentication backend that checked the password when the token was issued.
    pub bk: String,
    /// The fingerprint of the account's stored credential at login, when the backend keeps one:
    /// a refresh grant is refused once the backend's fingerprint differs (password changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cs: Option<String>,
    /// The machine token that logged in, when one did: the refresh grant looks the token up by
    /// this name (several tokens may share an account), so the session ends with the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tok: Option<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// Always [`REFRESH_TYP`].
    pub typ: String,
}

/// Why a refresh token was refused. Messages are safe to show a client: they never echo the
/// token or any of its claims.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefreshError {
    #[error("refresh token is malformed")]
    Malformed,
    #[error("refresh token was not issued by this server's key")]
    BadSignature,
    #[error("refresh token has expired: log in again")]
    Expired,
    #[error("refresh token is not valid yet")]
    NotYetValid,
    #[error("token is not a refresh token of this server")]
    NotRefresh,
    #[error("refresh token was issued for another service")]
    WrongService,
}

impl From<VerifyError> for RefreshError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Malformed => RefreshError::Malformed,
            VerifyError::WrongKey | VerifyError::BadSignature => RefreshError::BadSignature,
        }
    }
}

/// How far in the future `iat` may lie (clock steps between issue and use).
const IAT_LEEWAY_SECS: i64 = 60;

fn refresh_audience(iss: &str) -> String {
    format!("{iss}/refresh")
}

/// Whom a refresh token is for: the account, the service, the backend that checked the
/// password, and that backend's fingerprint of the stored credential.
#[derive(Clone, Copy, Debug)]
pub struct RefreshSubject<'a> {
    pub account: &'a str,
    pub service: &'a str,
    pub backend: &'a str,
    pub stamp: Option<&'a str>,
    /// The machine token's name, when one logged in.
    pub token: Option<&'a str>,
}

/// Signs a refresh token for `who`, valid `lifetime` from `now` (unix seconds). The end is
/// absolute: refresh grants hand the same token back, they never make a later one.
pub fn issue_refresh(
    signer: &dyn Signer,
    iss: &str,
    who: RefreshSubject<'_>,
    lifetime: Duration,
    now: i64,
) -> Result<String, SignError> {
    let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    let claims = RefreshClaims {
        iss: iss.to_string(),
        sub: who.account.to_string(),
        aud: refresh_audience(iss),
        svc: who.service.to_string(),
        bk: who.backend.to_string(),
        cs: who.stamp.map(str::to_string),
        tok: who.token.map(str::to_string),
        iat: now,
        exp: now.saturating_add(lifetime),
        jti: new_jti(),
        typ: REFRESH_TYP.to_string(),
    };
    let payload = serde_json::to_vec(&claims).map_err(|e| SignError::Crypto(e.to_string()))?;
    signer.sign_payload(&payload)
}

/// Checks a refresh token presented for `service` at `now` (unix seconds): the signature (this
/// signer's key), `typ`, `iss`, `aud`, `svc` and the validity period.
pub fn check_refresh(
    signer: &dyn Signer,
    token: &str,
    iss: &str,
    service: &str,
    now: i64,
) -> Result<RefreshClaims, RefreshError> {
    let payload = signer.verify(token)?;
    let claims: RefreshClaims =
        serde_json::from_slice(&payload).map_err(|_| RefreshError::NotRefresh)?;
    if claims.typ != REFRESH_TYP || claims.iss != iss || claims.aud != refresh_audience(iss) {
        return Err(RefreshError::NotRefresh);
    }
    if claims.svc != service {
        return Err(RefreshError::WrongService);
    }
    if now >= claims.exp {
        return Err(RefreshError::Expired);
    }
    if claims.iat > now.saturating_add(IAT_LEEWAY_SECS) {
        return Err(RefreshError::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate_key, Alg, JwsSigner, KeyIdMode};
    use purser_core::Claims;

    const NOW: i64 = 1_700_000_000;
    const DAY: Duration = Duration::from_secs(86400);

    fn who<'a>(account: &'a str, backend: &'a str) -> RefreshSubject<'a> {
        RefreshSubject {
            account,
            service: "registry.local",
            backend,
            stamp: None,
            token: None,
        }
    }

    fn signer() -> JwsSigner {
        JwsSigner::new(
            generate_key(Alg::Es256).unwrap(),
            KeyIdMode::Thumbprint,
            vec![],
        )
        .unwrap()
    }

    #[test]
    fn round_trip() {
        let s = signer();
        let t = issue_refresh(&s, "purser", who("alice", "htpasswd"), DAY, NOW).unwrap();
        let c = check_refresh(&s, &t, "purser", "registry.local", NOW + 100).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.svc.as_str(), c.bk.as_str()),
            ("alice", "registry.local", "htpasswd")
        );
        assert_eq!(c.aud, "purser/refresh");
        assert_eq!(c.typ, "refresh");
        assert_eq!((c.iat, c.exp), (NOW, NOW + 86400));
        assert_eq!(c.jti.len(), 22);
        assert_eq!(c.cs, None);
        // The credential fingerprint travels when the backend has one.
        let stamped = RefreshSubject {
            stamp: Some("abc"),
            ..who("alice", "htpasswd")
        };
        let t = issue_refresh(&s, "purser", stamped, DAY, NOW).unwrap();
        let c = check_refresh(&s, &t, "purser", "registry.local", NOW).unwrap();
        assert_eq!(c.cs.as_deref(), Some("abc"));
        assert_eq!(c.tok, None);
        // So does the machine token's name.
        let machine = RefreshSubject {
            token: Some("ci-app"),
            ..who("ci", "tokens")
        };
        let t = issue_refresh(&s, "purser", machine, DAY, NOW).unwrap();
        let c = check_refresh(&s, &t, "purser", "registry.local", NOW).unwrap();
        assert_eq!((c.sub.as_str(), c.tok.as_deref()), ("ci", Some("ci-app")));
    }

    #[test]
    fn refuses_wrong_service_expired_issuer_and_future() {
        let s = signer();
        let t = issue_refresh(&s, "purser", who("alice", "static"), DAY, NOW).unwrap();
        let check = |iss: &str, svc: &str, now: i64| check_refresh(&s, &t, iss, svc, now);
        assert_eq!(
            check("purser", "other", NOW),
            Err(RefreshError::WrongService)
        );
        assert_eq!(
            check("purser", "registry.local", NOW + 86400),
            Err(RefreshError::Expired)
        );
        assert_eq!(
            check("someone-else", "registry.local", NOW),
            Err(RefreshError::NotRefresh)
        );
        assert_eq!(
            check("purser", "registry.local", NOW - 61),
            Err(RefreshError::NotYetValid)
        );
        assert!(check("purser", "registry.local", NOW - 60).is_ok());
    }

    #[test]
    fn an_access_token_is_not_a_refresh_token() {
        let s = signer();
        let access = s
            .sign(&Claims {
                iss: "purser".into(),
                sub: "alice".into(),
                aud: "registry.local".into(),
                exp: NOW + 300,
                nbf: NOW,
                iat: NOW,
                jti: new_jti(),
                access: vec![],
            })
            .unwrap();
        assert_eq!(
            check_refresh(&s, &access, "purser", "registry.local", NOW),
            Err(RefreshError::NotRefresh)
        );
        // Right shape, wrong typ or aud: refused too.
        for (typ, aud) in [("access", "purser/refresh"), ("refresh", "registry.local")] {
            let forged = serde_json::json!({
                "iss": "purser", "sub": "alice", "aud": aud, "svc": "registry.local",
                "bk": "static", "iat": NOW, "exp": NOW + 10, "jti": "x", "typ": typ
            });
            let t = s.sign_payload(forged.to_string().as_bytes()).unwrap();
            assert_eq!(
                check_refresh(&s, &t, "purser", "registry.local", NOW),
                Err(RefreshError::NotRefresh)
            );
        }
    }

    #[test]
    fn refuses_other_keys_and_junk_without_echoing() {
        let s = signer();
        let other = signer();
        let t = issue_refresh(&other, "purser", who("alice", "ldap"), DAY, NOW).unwrap();
        let err = check_refresh(&s, &t, "purser", "registry.local", NOW).unwrap_err();
        assert_eq!(err, RefreshError::BadSignature);
        assert!(!err.to_string().contains(&t[..20]));
        let err = check_refresh(&s, "secret-junk", "purser", "registry.local", NOW).unwrap_err();
        assert_eq!(err, RefreshError::Malformed);
        assert!(!err.to_string().contains("secret-junk"));
    }
}
