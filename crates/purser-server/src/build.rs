//! Building the running server from a loaded configuration: the signer, the authenticator chain,
//! the policy, the reload sources and the readiness checks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use purser_authn::chain::Chain;
use purser_authn::htgroup::HtgroupDb;
use purser_authn::htpasswd::{HtpasswdAuthenticator, HtpasswdDb};
use purser_authn::static_users::{StaticAuthenticator, StaticUserEntry};
use purser_authz::{Policy, PolicyAuthorizer};
use purser_core::{Authenticator, Reloadable, Signer};
use purser_token::JwsSigner;
use purser_token::KeyIdMode;

use crate::config::{BackendKind, Config, KeyAlg, KeyIdConfig};
use crate::http::Readiness;
use crate::lockout::{Lockout, LockoutSettings, DEFAULT_CAPACITY};
use crate::metrics::Metrics;
use crate::reload::{self, Loader, Source};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("signing key: {0}")]
    Key(String),
    #[error("{0}")]
    Backend(String),
    #[error("{0}")]
    Policy(String),
}

pub fn key_id_mode(c: KeyIdConfig) -> KeyIdMode {
    match c {
        KeyIdConfig::Libtrust => KeyIdMode::Libtrust,
        KeyIdConfig::Thumbprint => KeyIdMode::Thumbprint,
    }
}

pub fn alg_of(a: KeyAlg) -> purser_token::Alg {
    use purser_token::Alg;
    match a {
        KeyAlg::Rs256 => Alg::Rs256,
        KeyAlg::Es256 => Alg::Es256,
        KeyAlg::Es384 => Alg::Es384,
        KeyAlg::Eddsa => Alg::EdDsa,
    }
}

/// Where a generated certificate goes when `certificate_file` is not set: beside the key.
pub fn generated_cert_path(config: &Config) -> PathBuf {
    if config.token.certificate_file.as_os_str().is_empty() {
        config.token.signing_key_file.with_extension("crt")
    } else {
        config.token.certificate_file.clone()
    }
}

/// Loads the signing key, generating key and certificate first when allowed and missing.
pub fn signer(config: &Config) -> Result<Arc<JwsSigner>, BuildError> {
    let t = &config.token;
    let key_path = &t.signing_key_file;
    if !key_path.exists() {
        if !t.generate_key {
            return Err(BuildError::Key(format!(
                "{} does not exist: create one with `purser keygen`, or set token.generate_key: true",
                key_path.display()
            )));
        }
        let cert_path = generated_cert_path(config);
        if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| BuildError::Key(format!("cannot create {}: {e}", dir.display())))?;
        }
        let files = purser_token::write_generated_to(key_path, &cert_path, alg_of(t.generate_alg))
            .map_err(|e| BuildError::Key(e.to_string()))?;
        tracing::warn!(
            key = %files.key.display(),
            certificate = %files.cert.display(),
            alg = %files.alg,
            libtrust_kid = %files.key_ids.libtrust,
            thumbprint_kid = %files.key_ids.thumbprint,
            "generated a new signing key; give the certificate to the registry as auth.token.rootcertbundle"
        );
    }
    let cert = (!t.certificate_file.as_os_str().is_empty()).then_some(t.certificate_file.as_path());
    let signer = JwsSigner::from_files(key_path, cert, key_id_mode(t.key_id))
        .map_err(|e| BuildError::Key(e.to_string()))?;
    warn_if_key_readable(key_path);
    Ok(Arc::new(signer))
}

fn warn_if_key_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the signing key file is readable by group or others; chmod 600 it");
        }
    }
}

/// The JWKS document: the active key first, then `publish_keys`.
pub fn jwks(config: &Config, signer: &dyn Signer) -> Result<Vec<u8>, BuildError> {
    let mode = key_id_mode(config.token.key_id);
    let mut extra = Vec::new();
    for p in &config.token.publish_keys {
        extra.push(
            purser_token::public_jwk_from_file(p, mode)
                .map_err(|e| BuildError::Key(format!("token.publish_keys: {e}")))?,
        );
    }
    let doc = purser_token::jwks_document(signer, &extra);
    Ok(serde_json::to_vec_pretty(&doc).unwrap_or_default())
}

/// A source that must be loaded for `/readyz`.
pub struct Loaded {
    pub name: &'static str,
    pub path: PathBuf,
    pub ok: AtomicBool,
}

pub struct ServerReadiness {
    pub sources: Vec<Arc<Loaded>>,
    pub chain: Arc<Chain>,
}

#[async_trait::async_trait]
impl Readiness for ServerReadiness {
    async fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.sources {
            if !s.ok.load(Ordering::Acquire) {
                out.push(format!(
                    "{} file {} is not loaded",
                    s.name,
                    s.path.display()
                ));
            }
        }
        for (backend, r) in self.chain.ready().await {
            if let Err(reason) = r {
                out.push(format!("{backend} backend unavailable: {reason}"));
            }
        }
        out
    }
}

/// A watched file's holder, its readiness flag and its reload source.
pub type Watched<T> = (Arc<Reloadable<T>>, Arc<Loaded>, Source);

/// A watched file: a holder that the loader fills, its readiness flag and its reload source.
fn watched<T, F>(
    name: &'static str,
    path: &Path,
    empty: T,
    parse: F,
    metrics: &Metrics,
) -> Result<Watched<T>, BuildError>
where
    T: Send + Sync + 'static,
    F: Fn(&Path) -> Result<(T, String), String> + Send + Sync + 'static,
{
    metrics.init_reload_source(name);
    let holder = Arc::new(Reloadable::new(empty));
    let loaded = Arc::new(Loaded {
        name,
        path: path.to_path_buf(),
        ok: AtomicBool::new(false),
    });
    let load: Loader = {
        let holder = holder.clone();
        let loaded = loaded.clone();
        Box::new(move |p: &Path| {
            let (value, summary) = parse(p)?;
            holder.store(value);
            loaded.ok.store(true, Ordering::Release);
            Ok(summary)
        })
    };
    if path.exists() {
        // A file that exists but does not load stops the start: better than serving a policy or
        // user list other than the one the operator wrote.
        let r = load(path);
        reload::record(metrics, name, path, &r);
        r.map_err(|e| BuildError::Policy(format!("{name}: {e}")))?;
    } else {
        tracing::error!(source = name, path = %path.display(), "file not found: serving without it (not ready) until it appears");
    }
    Ok((
        holder,
        loaded,
        Source {
            name,
            path: path.to_path_buf(),
            load,
        },
    ))
}

pub struct Built {
    pub chain: Arc<Chain>,
    pub authorizer: Arc<PolicyAuthorizer>,
    pub policy: Arc<Reloadable<Policy>>,
    pub sources: Vec<Source>,
    pub readiness: Arc<ServerReadiness>,
    pub lockout: Lockout,
}

/// The policy holder with its loader, shared by `serve`.
pub fn policy(config: &Config, metrics: &Metrics) -> Result<Watched<Policy>, BuildError> {
    let gauge = metrics.policy_rules.clone();
    watched(
        "policy",
        &config.authz.policy_file,
        Policy::parse("", "(no policy loaded)").map_err(|e| BuildError::Policy(e.to_string()))?,
        move |p: &Path| {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let policy =
                Policy::parse(&text, &p.display().to_string()).map_err(|e| e.to_string())?;
            let n = policy.rule_count();
            gauge.set(n as i64);
            Ok((policy, format!("{n} rules")))
        },
        metrics,
    )
}

/// Builds the chain, the policy and their reload sources.
pub async fn components(config: &Config, metrics: &Metrics) -> Result<Built, BuildError> {
    let mut sources = Vec::new();
    let mut flags = Vec::new();
    let mut backends: Vec<Arc<dyn Authenticator>> = Vec::new();
    let ttl = config.authn.cache_ttl.0;
    // One bound on password hashing for every hashing backend: at most one check per CPU.
    let hash_limiter = purser_authn::hash_limiter();
    for kind in &config.authn.order {
        let backend: Arc<dyn Authenticator> = match kind {
            BackendKind::Static => {
                let Some(s) = &config.authn.r#static else {
                    continue;
                };
                let users = s
                    .users
                    .iter()
                    .map(|(name, u)| StaticUserEntry {
                        name: name.clone(),
                        password_hash: u.password_hash.clone(),
                        groups: u.groups.clone(),
                    })
                    .collect();
                Arc::new(
                    StaticAuthenticator::new(users)
                        .map_err(|e| BuildError::Backend(format!("authn.static: {e}")))?
                        .with_hash_limiter(Arc::clone(&hash_limiter)),
                )
            }
            BackendKind::Htpasswd => {
                let Some(h) = &config.authn.htpasswd else {
                    continue;
                };
                let (users, loaded, src) = watched(
                    "htpasswd",
                    &h.file,
                    HtpasswdDb::empty(&h.file.display().to_string()),
                    |p: &Path| {
                        let (db, issues) = HtpasswdDb::load(p).map_err(|e| e.to_string())?;
                        for issue in &issues {
                            tracing::warn!(%issue, "htpasswd");
                        }
                        let n = db.len();
                        Ok((db, format!("{n} users")))
                    },
                    metrics,
                )?;
                sources.push(src);
                flags.push(loaded);
                let groups = if h.groups_file.as_os_str().is_empty() {
                    Arc::new(Reloadable::new(HtgroupDb::empty()))
                } else {
                    let (groups, loaded, src) = watched(
                        "htgroup",
                        &h.groups_file,
                        HtgroupDb::empty(),
                        |p: &Path| {
                            let (db, issues) = HtgroupDb::load(p).map_err(|e| e.to_string())?;
                            for issue in &issues {
                                tracing::warn!(%issue, "htgroup");
                            }
                            let n = db.user_count();
                            Ok((db, format!("{n} users in groups")))
                        },
                        metrics,
                    )?;
                    sources.push(src);
                    flags.push(loaded);
                    groups
                };
                Arc::new(
                    HtpasswdAuthenticator::new(users, groups)
                        .with_hash_limiter(Arc::clone(&hash_limiter)),
                )
            }
            BackendKind::Ldap => {
                let Some(l) = &config.authn.ldap else {
                    continue;
                };
                let ldap = Arc::new(crate::ldap::build(l).map_err(BuildError::Backend)?);
                crate::ldap::export_pool_gauges(&ldap, metrics);
                ldap
            }
        };
        metrics.init_backend(backend.name());
        backends.push(backend);
    }
    let chain = Arc::new(Chain::with_cache(backends, ttl));
    let (policy, loaded, src) = policy(config, metrics)?;
    sources.push(src);
    flags.push(loaded);
    let authorizer = Arc::new(PolicyAuthorizer::new(policy.clone()));
    let f = &config.limits.failed_logins;
    let lockout = Lockout::new(
        LockoutSettings {
            max: f.max,
            window: f.window.0,
            lockout: f.lockout.0,
        },
        DEFAULT_CAPACITY,
    );
    let readiness = Arc::new(ServerReadiness {
        sources: flags,
        chain: chain.clone(),
    });
    Ok(Built {
        chain,
        authorizer,
        policy,
        sources,
        readiness,
        lockout,
    })
}
