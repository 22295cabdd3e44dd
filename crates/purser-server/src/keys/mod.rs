//! Signing keys that rotate without a restart: the key folder (`token.keys_dir`), its manifest
//! of states (`next`, `active`, `retiring`), what is published from it (the JWKS endpoint,
//! `token.bundle_file` for registry 2.x, `token.jwks_file` for 3.x), the `purser keys`
//! commands (`admin.rs`) and the schedule (`schedule.rs`).
//!
//! The server holds the keys as one [`Published`] behind a `Reloadable`: the active key signs,
//! every published key verifies (a refresh token signed by a retiring key keeps working), and
//! the JWKS lists them all. The manifest is a watched file; a folder that does not load whole
//! (a manifest naming a key file that is missing or of another key, two active keys, half a
//! manifest) keeps the last good set serving, and the reload is logged and counted as failed.

pub mod admin;
pub mod manifest;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use purser_core::Signer;
use purser_token::{JwsSigner, KeyIdMode, KeyIds, KeyRing};
use serde_json::{json, Value};

pub use manifest::{Entry, KeyState, Manifest, MANIFEST};

/// What the server signs and verifies with, and publishes: swapped whole at a reload.
#[derive(Debug)]
pub struct Published {
    pub ring: KeyRing,
    /// The JWKS document served at `/.well-known/jwks.json`.
    pub jwks: Bytes,
    /// Per key: its state and times, for the metrics.
    pub states: Vec<(KeyState, Option<i64>)>,
}

impl Published {
    /// A single key (`token.signing_key_file`), with its JWKS; `activated` is when it started
    /// signing, as far as known (the key file's time).
    pub fn single(signer: Arc<JwsSigner>, jwks: Vec<u8>, activated: Option<i64>) -> Self {
        Published {
            ring: KeyRing::single(signer),
            jwks: jwks.into(),
            states: vec![(KeyState::Active, activated)],
        }
    }
}

/// One key of the folder, loaded.
#[derive(Debug)]
pub struct LoadedKey {
    pub entry: Entry,
    pub signer: Arc<JwsSigner>,
    /// The certificate, PEM as written.
    pub cert_pem: String,
    /// DER of the certificate.
    pub cert_der: Vec<u8>,
    pub ids: KeyIds,
}

impl LoadedKey {
    /// Whether `id` names this key: its name, libtrust id or thumbprint.
    pub fn is(&self, id: &str) -> bool {
        id == self.entry.name || id == self.ids.libtrust || id == self.ids.thumbprint
    }
}

/// The whole folder, loaded and checked.
#[derive(Debug)]
pub struct KeySet {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// In the manifest's order.
    pub keys: Vec<LoadedKey>,
    pub mode: KeyIdMode,
}

pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join(MANIFEST)
}

pub fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pem"))
}

pub fn cert_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.crt"))
}

/// Unix seconds of an RFC 3339 time the manifest already checked.
pub fn time_of(t: &str) -> i64 {
    purser_authn::tokens::parse_time(t).unwrap_or(0)
}

impl KeySet {
    /// Reads the manifest and every key and certificate it names. Anything missing, unreadable,
    /// of another algorithm or not matching is an error naming the file: the set is all or
    /// nothing.
    pub fn load(dir: &Path, mode: KeyIdMode) -> Result<KeySet, String> {
        let mpath = manifest_path(dir);
        let text = purser_fs::read_text(&mpath, manifest::MAX_MANIFEST_BYTES)
            .map_err(|e| e.to_string())?;
        let manifest = Manifest::parse(&text).map_err(|e| format!("{}: {e}", dir.display()))?;
        Self::load_keys(dir, manifest, mode)
    }

    pub(crate) fn load_keys(
        dir: &Path,
        manifest: Manifest,
        mode: KeyIdMode,
    ) -> Result<KeySet, String> {
        let mut keys = Vec::with_capacity(manifest.keys.len());
        for e in &manifest.keys {
            let kp = key_path(dir, &e.name);
            let cp = cert_path(dir, &e.name);
            let cert_pem = purser_fs::read_text(&cp, purser_token::MAX_PEM_FILE_BYTES)
                .map_err(|err| err.to_string())?;
            let signer = JwsSigner::from_files(&kp, None, mode).map_err(|err| err.to_string())?;
            let chain = purser_token::load_cert_chain(&cert_pem)
                .map_err(|err| format!("{}: {err}", cp.display()))?;
            let Some(leaf) = chain.first() else {
                return Err(format!("{}: no certificate", cp.display()));
            };
            purser_token::check_cert_matches_key(leaf, signer.public_key())
                .map_err(|err| format!("{}: {err}", cp.display()))?;
            if signer.alg() != e.alg {
                return Err(format!(
                    "{}: the manifest says {} but the key signs {}",
                    kp.display(),
                    e.alg,
                    signer.alg()
                ));
            }
            keys.push(LoadedKey {
                entry: e.clone(),
                ids: KeyIds::of(signer.public_key()),
                signer: Arc::new(signer),
                cert_der: leaf.clone(),
                cert_pem,
            });
        }
        Ok(KeySet {
            dir: dir.to_path_buf(),
            manifest,
            keys,
            mode,
        })
    }

    pub fn active(&self) -> &LoadedKey {
        // `Manifest::check` proved there is exactly one.
        self.keys
            .iter()
            .find(|k| k.entry.state == KeyState::Active)
            .unwrap_or(&self.keys[0])
    }

    /// The published keys in publication order: active, next, retiring.
    pub fn published(&self) -> Vec<&LoadedKey> {
        let mut out: Vec<&LoadedKey> = self.keys.iter().collect();
        out.sort_by_key(|k| match k.entry.state {
            KeyState::Active => 0,
            KeyState::Next => 1,
            KeyState::Retiring => 2,
        });
        out
    }

    /// The JWKS of every published key (the active one first), each with `x5c` from its
    /// certificate and full-length EC coordinates: registry 3.x's `jwks` file as is.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .published()
            .iter()
            .map(|k| {
                purser_token::jwk_of(
                    k.signer.public_key(),
                    self.mode,
                    std::slice::from_ref(&k.cert_der),
                )
            })
            .collect();
        json!({ "keys": keys })
    }

    pub fn jwks_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(&self.jwks()).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Every published key's certificate, PEM, concatenated: registry 2.x's `rootcertbundle`.
    pub fn bundle_text(&self) -> String {
        let mut out = String::new();
        for k in self.published() {
            out.push_str(k.cert_pem.trim_end());
            out.push('\n');
        }
        out
    }

    /// What the server runs with.
    pub fn to_published(&self) -> Published {
        let active = self.active().signer.clone();
        let others = self
            .published()
            .into_iter()
            .skip(1)
            .map(|k| k.signer.clone())
            .collect();
        Published {
            ring: KeyRing::new(active, others),
            jwks: serde_json::to_vec_pretty(&self.jwks())
                .unwrap_or_default()
                .into(),
            states: self
                .keys
                .iter()
                .map(|k| (k.entry.state, k.entry.activated.as_deref().map(time_of)))
                .collect(),
        }
    }

    /// The key `id` names (name, libtrust id or thumbprint).
    pub fn find(&self, id: &str) -> Option<&LoadedKey> {
        self.keys.iter().find(|k| k.is(id))
    }

    /// A one-line summary for the log.
    pub fn summary(&self) -> String {
        let a = self.active();
        format!(
            "{} keys; active {} ({}, kid {})",
            self.keys.len(),
            a.entry.name,
            a.entry.alg,
            a.signer.key_id()
        )
    }
}

/// The lifetimes that decide when a retiring key may go.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    /// `token.lifetime`.
    pub access: u64,
    /// `token.refresh_lifetime` (0: no refresh tokens).
    pub refresh: u64,
}

impl Lifetimes {
    pub fn of(config: &crate::config::Config) -> Self {
        Lifetimes {
            access: config.token.lifetime.as_secs(),
            refresh: config.token.refresh_lifetime.as_secs(),
        }
    }
}

/// The clock skew the registry allows on `exp` (`doctor::REGISTRY_LEEWAY`).
pub const REGISTRY_LEEWAY_SECS: u64 = 60;

/// When no token a key signed can still be valid, once it stopped signing at `deactivated`:
/// its last access token plus the registry's leeway, or its last refresh token (refresh grants
/// hand the same token back, so none lives longer than its lifetime from its login).
pub fn retire_after(deactivated: i64, l: Lifetimes) -> i64 {
    let access = l.access.saturating_add(REGISTRY_LEEWAY_SECS);
    let longest = access.max(l.refresh);
    deactivated.saturating_add(i64::try_from(longest).unwrap_or(i64::MAX))
}

/// Writes `text` to `path` with a rename when it differs from what is there.
pub fn write_if_changed(path: &Path, text: &str) -> Result<bool, String> {
    if path.as_os_str().is_empty() {
        return Ok(false);
    }
    let current = crate::admin::file_update::read(path).ok().flatten();
    if current.as_deref() == Some(text) {
        return Ok(false);
    }
    crate::admin::file_update::replace(path, text).map_err(|e| e.to_string())?;
    Ok(true)
}

/// Rewrites `token.bundle_file` and `token.jwks_file` (those set) from the set.
pub fn publish_files(
    bundle_file: &Path,
    jwks_file: &Path,
    set: &KeySet,
) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    if write_if_changed(bundle_file, &set.bundle_text())? {
        written.push(bundle_file.to_path_buf());
    }
    if write_if_changed(jwks_file, &set.jwks_text())? {
        written.push(jwks_file.to_path_buf());
    }
    Ok(written)
}

#[cfg(test)]
mod tests;
