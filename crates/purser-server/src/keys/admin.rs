//! `purser keys list|next|activate|retire`, and the first key of a new folder. Every change
//! holds the manifest's lock (`manifest.json.lock`), writes any new key and certificate first
//! (new files, never overwritten), then the manifest with a rename, then the published files
//! (`token.bundle_file`, `token.jwks_file`), still under the lock: a reader (another replica)
//! sees the old set or the new one, and never a manifest naming a key that is not written yet.

use std::io::Write as _;
use std::path::Path;

use purser_token::{Alg, KeyIdMode};

use super::{
    cert_path, key_path, manifest_path, publish_files, retire_after, time_of, Entry, KeySet,
    KeyState, Lifetimes, Manifest,
};
use crate::admin::file_update::{self, UpdateError};
use crate::config::{Config, KeyAlg, KeyIdConfig};

/// Why a `purser keys` command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Update(#[from] UpdateError),
}

fn refused(m: impl Into<String>) -> UpdateError {
    UpdateError::Refused(m.into())
}

/// What the commands need of the configuration.
#[derive(Clone, Debug)]
pub struct Folder<'a> {
    pub dir: &'a Path,
    pub mode: KeyIdMode,
    pub bundle_file: &'a Path,
    pub jwks_file: &'a Path,
    pub lifetimes: Lifetimes,
    /// The algorithm of a key made without `--alg` (and of the first key).
    pub default_alg: Alg,
    /// `token.signing_key_file` and its certificate, imported as the first active key when the
    /// folder is new and the file exists, so that trust carries over.
    pub import: Option<(&'a Path, std::path::PathBuf)>,
    /// Whether a new folder may get a generated first key (`token.generate_key`).
    pub generate: bool,
}

impl<'a> Folder<'a> {
    /// The folder of `token.keys_dir`; `None` when it is not set.
    pub fn of(config: &'a Config) -> Option<Folder<'a>> {
        let t = &config.token;
        if t.keys_dir.as_os_str().is_empty() {
            return None;
        }
        // The certificate beside the key (`purser keygen`, a generated key), unless
        // `certificate_file` names one: what the registries were given for it.
        let cert = if t.certificate_file.as_os_str().is_empty() {
            t.signing_key_file.with_extension("crt")
        } else {
            t.certificate_file.clone()
        };
        let import = t
            .signing_key_file
            .exists()
            .then_some((t.signing_key_file.as_path(), cert));
        Some(Folder {
            dir: &t.keys_dir,
            mode: match t.key_id {
                KeyIdConfig::Libtrust => KeyIdMode::Libtrust,
                KeyIdConfig::Thumbprint => KeyIdMode::Thumbprint,
            },
            bundle_file: &t.bundle_file,
            jwks_file: &t.jwks_file,
            lifetimes: Lifetimes::of(config),
            default_alg: match t.generate_alg {
                KeyAlg::Rs256 => Alg::Rs256,
                KeyAlg::Es256 => Alg::Es256,
                KeyAlg::Es384 => Alg::Es384,
                KeyAlg::Eddsa => Alg::EdDsa,
            },
            import,
            generate: t.generate_key,
        })
    }

    fn publish(&self, set: &KeySet) -> Result<(), UpdateError> {
        publish_files(self.bundle_file, self.jwks_file, set).map_err(UpdateError::Refused)?;
        Ok(())
    }

    /// Under the lock: the current manifest (the first key made when there is none), `change`
    /// applied to the loaded set, the new manifest written, the published files rewritten.
    fn change<T>(
        &self,
        now: i64,
        change: impl FnOnce(&KeySet) -> Result<(Manifest, T), UpdateError>,
    ) -> Result<T, KeysError> {
        std::fs::create_dir_all(self.dir).map_err(|e| UpdateError::Io {
            path: self.dir.display().to_string(),
            message: e.to_string(),
        })?;
        let written: std::cell::RefCell<Option<KeySet>> = std::cell::RefCell::new(None);
        let out = file_update::update_then(
            &manifest_path(self.dir),
            |old| {
                let manifest = match old {
                    Some(text) => Manifest::parse(text).map_err(UpdateError::Refused)?,
                    None => self.first_key(now)?,
                };
                let set = KeySet::load_keys(self.dir, manifest, self.mode).map_err(refused)?;
                let (next, out) = change(&set)?;
                next.check().map_err(refused)?;
                let text = next.to_text();
                *written.borrow_mut() =
                    Some(KeySet::load_keys(self.dir, next, self.mode).map_err(refused)?);
                Ok((text, out))
            },
            |_| match &*written.borrow() {
                Some(set) => self.publish(set),
                None => Ok(()),
            },
        )?;
        Ok(out)
    }

    /// The manifest of a new folder: `token.signing_key_file` imported, or a generated key.
    fn first_key(&self, now: i64) -> Result<Manifest, UpdateError> {
        let name = "key-1";
        let (kp, cp) = (key_path(self.dir, name), cert_path(self.dir, name));
        let alg = match &self.import {
            Some((key, cert)) => {
                let signing = purser_token::load_signing_key_file(key)
                    .map_err(|e| refused(e.to_string()))?;
                let cert_pem = match purser_fs::read_text(cert, purser_token::MAX_PEM_FILE_BYTES) {
                    Ok(text)
                        if purser_token::load_cert_chain(&text)
                            .ok()
                            .and_then(|c| c.first().cloned())
                            .is_some_and(|leaf| {
                                purser_token::check_cert_matches_key(&leaf, &signing.public_key())
                                    .is_ok()
                            }) =>
                    {
                        text
                    }
                    _ => purser_token::self_signed_cert(&signing)
                        .map_err(|e| refused(e.to_string()))?,
                };
                let key_pem = signing.to_pkcs8_pem().map_err(|e| refused(e.to_string()))?;
                write_new(&kp, key_pem.as_bytes(), 0o600)?;
                write_new(&cp, cert_pem.as_bytes(), 0o644)?;
                signing.alg()
            }
            None if self.generate => {
                purser_token::write_generated_to(&kp, &cp, self.default_alg)
                    .map_err(|e| refused(e.to_string()))?;
                self.default_alg
            }
            None => {
                return Err(refused(format!(
                    "{} holds no keys and token.generate_key is false: set token.generate_key: true, or token.signing_key_file to the key to start from",
                    self.dir.display()
                )))
            }
        };
        let t = purser_authn::tokens::format_time(now);
        Ok(Manifest {
            keys: vec![Entry {
                name: name.into(),
                alg: alg.as_str().into(),
                state: KeyState::Active,
                created: t.clone(),
                activated: Some(t),
                deactivated: None,
            }],
        })
    }

    /// The folder as it is, made with its first key when new (what `serve` starts with).
    pub fn ensure(&self, now: i64) -> Result<KeySet, KeysError> {
        if manifest_path(self.dir).exists() {
            let set = KeySet::load(self.dir, self.mode).map_err(KeysError::Refused)?;
            return Ok(set);
        }
        self.change(now, |set| Ok((set.manifest.clone(), ())))?;
        KeySet::load(self.dir, self.mode).map_err(KeysError::Refused)
    }

    /// Reads the folder as it is (never writes).
    pub fn load(&self) -> Result<KeySet, KeysError> {
        KeySet::load(self.dir, self.mode).map_err(KeysError::Refused)
    }

    /// `purser keys next`: a new key and certificate in state `next`.
    pub fn next(&self, alg: Option<Alg>, now: i64) -> Result<String, KeysError> {
        let alg = alg.unwrap_or(self.default_alg);
        self.change(now, |set| {
            let mut m = set.manifest.clone();
            let mut name = m.fresh_name();
            // Files a failed command left behind, never named by the manifest, are not reused.
            while key_path(self.dir, &name).exists() || cert_path(self.dir, &name).exists() {
                m.keys.push(Entry {
                    name,
                    alg: String::new(),
                    state: KeyState::Next,
                    created: String::new(),
                    activated: None,
                    deactivated: None,
                });
                name = m.fresh_name();
                m.keys.pop();
            }
            purser_token::write_generated_to(
                &key_path(self.dir, &name),
                &cert_path(self.dir, &name),
                alg,
            )
            .map_err(|e| refused(e.to_string()))?;
            m.keys.push(Entry {
                name: name.clone(),
                alg: alg.as_str().into(),
                state: KeyState::Next,
                created: purser_authn::tokens::format_time(now),
                activated: None,
                deactivated: None,
            });
            Ok((m, name))
        })
    }

    /// `purser keys activate [ID]`: the next key (the one `id` names, or the only one) becomes
    /// active and the active one retiring. `check` may refuse the key (registries that do not
    /// trust it yet); it runs under the lock, on the key about to sign.
    pub fn activate(
        &self,
        id: Option<&str>,
        now: i64,
        check: impl FnOnce(&KeySet, &super::LoadedKey) -> Result<(), String>,
    ) -> Result<(String, String), KeysError> {
        self.change(now, |set| {
            let target = pick_next(set, id)?;
            check(set, target).map_err(UpdateError::Refused)?;
            let t = purser_authn::tokens::format_time(now);
            let mut m = set.manifest.clone();
            let old = set.active().entry.name.clone();
            for e in &mut m.keys {
                if e.state == KeyState::Active {
                    e.state = KeyState::Retiring;
                    e.deactivated = Some(t.clone());
                } else if e.name == target.entry.name {
                    e.state = KeyState::Active;
                    e.activated = Some(t.clone());
                }
            }
            Ok((m, (target.entry.name.clone(), old)))
        })
    }

    /// `purser keys retire ID`: removes a retiring key (manifest first, then its files) once
    /// no token it signed can still be valid; earlier only with `force`.
    pub fn retire(&self, id: &str, now: i64, force: bool) -> Result<String, KeysError> {
        let name = self.change(now, |set| {
            let Some(k) = set.find(id) else {
                return Err(refused(format!(
                    "no key {id:?} in {} (purser keys list shows them)",
                    self.dir.display()
                )));
            };
            if k.entry.state != KeyState::Retiring {
                return Err(refused(format!(
                    "{} is {}: only a retiring key is retired (activate another key first)",
                    k.entry.name, k.entry.state
                )));
            }
            let after = retire_after(
                k.entry.deactivated.as_deref().map(time_of).unwrap_or(now),
                self.lifetimes,
            );
            if now < after && !force {
                return Err(refused(format!(
                    "{} may still have valid tokens until {} (token.lifetime plus 60s of registry leeway, or token.refresh_lifetime for refresh tokens): retire it then, or with --force, which logs out every session it signed",
                    k.entry.name,
                    purser_authn::tokens::format_time(after)
                )));
            }
            let mut m = set.manifest.clone();
            m.keys.retain(|e| e.name != k.entry.name);
            Ok((m, k.entry.name.clone()))
        })?;
        // The manifest no longer names them: no reader looks for these files any more.
        let _ = std::fs::remove_file(key_path(self.dir, &name));
        let _ = std::fs::remove_file(cert_path(self.dir, &name));
        Ok(name)
    }

    /// `purser keys list`, one key per block.
    pub fn list_text(&self, set: &KeySet) -> String {
        let mut out = String::new();
        for k in &set.keys {
            let e = &k.entry;
            let retire = match (e.state, e.deactivated.as_deref()) {
                (KeyState::Retiring, Some(d)) => {
                    purser_authn::tokens::format_time(retire_after(time_of(d), self.lifetimes))
                }
                _ => "-".into(),
            };
            out.push_str(&format!(
                "{}  {}  {}\n  libtrust:     {}\n  thumbprint:   {}\n  created:      {}\n  activated:    {}\n  retire after: {retire}\n",
                e.name,
                e.state,
                e.alg,
                k.ids.libtrust,
                k.ids.thumbprint,
                e.created,
                e.activated.as_deref().unwrap_or("-"),
            ));
        }
        out
    }
}

fn pick_next<'s>(set: &'s KeySet, id: Option<&str>) -> Result<&'s super::LoadedKey, UpdateError> {
    let nexts: Vec<&super::LoadedKey> = set
        .keys
        .iter()
        .filter(|k| k.entry.state == KeyState::Next)
        .collect();
    match id {
        Some(id) => match set.find(id) {
            Some(k) if k.entry.state == KeyState::Next => Ok(k),
            Some(k) => Err(refused(format!(
                "{} is {}, not next: only a next key is activated",
                k.entry.name, k.entry.state
            ))),
            None => Err(refused(format!("no key {id:?} (purser keys list shows them)"))),
        },
        None => match nexts.as_slice() {
            [one] => Ok(one),
            [] => Err(refused(
                "there is no next key: make one with `purser keys next`, give the registries the new bundle, then activate it",
            )),
            _ => Err(refused(
                "there are several next keys: name the one to activate (purser keys list)",
            )),
        },
    }
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), UpdateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| UpdateError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)
}
