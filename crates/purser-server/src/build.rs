//! Building the running server from a loaded configuration: the signer and the JWKS, the TLS
//! certificate store, the authenticator chain, the policy, the reload sources and the readiness
//! checks.
//!
//! `serve` and `check-config` build through the same code, so they cannot disagree about a
//! configuration. [`server`] builds for `serve` ([`Mode::Serve`]) and stops at the first
//! failure; [`dry_run`] builds for `check-config` ([`Mode::DryRun`]): every file is read and
//! parsed by the same bounded readers, but nothing is written (no key generated), no socket is
//! bound, no directory contacted and no task started, and every failure is collected.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use purser_authn::cache::CacheSettings;
use purser_authn::chain::Chain;
use purser_authz::{Policy, PolicyAuthorizer};
use purser_core::{Authenticator, Reloadable, Signer};
use purser_token::{JwsSigner, KeyIdMode, TokenError};
use serde_json::Value;

use crate::config::{Config, KeyAlg, KeyIdConfig, Problem};
use crate::keys::admin::Folder;
use crate::keys::{KeySet, Published};
use purser_core::Clock as _;

pub mod ctx;
use crate::metrics::Metrics;
use crate::reload::{self, Source};
use crate::revocations::Revocations;
use crate::stack::Readiness;
use crate::tls::CertStore;
pub use ctx::{BuildError, Ctx, Loaded, Mode, Parsed};

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

/// Loads the signing key; in `serve`, generates key and certificate first when allowed and
/// missing. Checks the certificate against the key: `token.certificate_file` (a mismatch stops
/// the start), or else the generated certificate beside the key when present (a mismatch is
/// warned about: it is what the registry was given to verify tokens).
fn signer(config: &Config, ctx: &mut Ctx<'_>) -> Result<Option<Arc<JwsSigner>>, BuildError> {
    const KEY: &str = "token.signing_key_file";
    const CERT: &str = "token.certificate_file";
    let t = &config.token;
    let key_path = &t.signing_key_file;
    if !key_path.exists() {
        if !t.generate_key {
            return Err(BuildError::Key {
                key: KEY,
                message: format!(
                    "{} does not exist: create one with `purser keygen`, or set token.generate_key: true",
                    key_path.display()
                ),
            });
        }
        if ctx.mode == Mode::DryRun {
            // serve generates it at start.
            return Ok(None);
        }
        generate_key(config)?;
    }
    let cert = (!t.certificate_file.as_os_str().is_empty()).then_some(t.certificate_file.as_path());
    let signer = JwsSigner::from_files(key_path, cert, key_id_mode(t.key_id)).map_err(|e| {
        let key = match &e {
            TokenError::File { path, .. } if Some(path.as_path()) == cert => CERT,
            TokenError::Read(r) if Some(r.path()) == cert => CERT,
            _ => KEY,
        };
        BuildError::Key {
            key,
            message: e.to_string(),
        }
    })?;
    if cert.is_none() {
        let beside = generated_cert_path(config);
        if beside.exists() {
            let matches =
                purser_token::load_cert_chain_file(&beside).and_then(|chain| match chain.first() {
                    Some(leaf) => purser_token::check_cert_matches_key(leaf, signer.public_key()),
                    None => Ok(()),
                });
            if let Err(e) = matches {
                ctx.doubt(
                    KEY,
                    format!(
                        "{}: {e} (this certificate, beside the key, is the one to give the registry as auth.token.rootcertbundle)",
                        beside.display()
                    ),
                );
            }
        }
    }
    warn_if_key_readable(key_path);
    Ok(Some(Arc::new(signer)))
}

fn generate_key(config: &Config) -> Result<(), BuildError> {
    let t = &config.token;
    let key_path = &t.signing_key_file;
    let key_error = |message: String| BuildError::Key {
        key: "token.signing_key_file",
        message,
    };
    let cert_path = generated_cert_path(config);
    if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| key_error(format!("cannot create {}: {e}", dir.display())))?;
    }
    let files = purser_token::write_generated_to(key_path, &cert_path, alg_of(t.generate_alg))
        .map_err(|e| key_error(e.to_string()))?;
    tracing::warn!(
        key = %files.key.display(),
        certificate = %files.cert.display(),
        alg = %files.alg,
        libtrust_kid = %files.key_ids.libtrust,
        thumbprint_kid = %files.key_ids.thumbprint,
        "generated a new signing key; give the certificate to the registry as auth.token.rootcertbundle"
    );
    Ok(())
}

fn warn_if_key_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the signing key file is readable by group or others; chmod 600 it");
        }
    }
}

/// The keys of `token.publish_keys`, as JWKs, each file checked.
fn published_keys(config: &Config, ctx: &mut Ctx<'_>) -> Result<Option<Vec<Value>>, BuildError> {
    let mode = key_id_mode(config.token.key_id);
    let mut keys = Some(Vec::new());
    for (index, p) in config.token.publish_keys.iter().enumerate() {
        let jwk =
            purser_token::public_jwk_from_file(p, mode).map_err(|e| BuildError::PublishedKey {
                index,
                message: e.to_string(),
            });
        match (ctx.check(jwk)?, keys.as_mut()) {
            (Some(jwk), Some(keys)) => keys.push(jwk),
            _ => keys = None,
        }
    }
    Ok(keys)
}

/// The JWKS document: the active key first, then `publish_keys`.
fn jwks(config: &Config, signer: &dyn Signer, extra: &[Value]) -> Vec<u8> {
    let mut doc = purser_token::jwks_document(signer, extra);
    if config.token.generate_key && config.token.certificate_file.as_os_str().is_empty() {
        let mode = key_id_mode(config.token.key_id);
        add_generated_x5c(&mut doc, &generated_cert_path(config), mode);
    }
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
}

/// Lists the certificate written beside a generated key as the active key's `x5c`, so the
/// JWKS says what the registry's `rootcertbundle` holds. Tokens still carry no `x5c` unless
/// `token.certificate_file` is set. A certificate that is missing, unreadable or of another
/// key is left out.
fn add_generated_x5c(doc: &mut serde_json::Value, cert: &Path, mode: purser_token::KeyIdMode) {
    let Some(active) = doc["keys"].get_mut(0) else {
        return;
    };
    if active.get("x5c").is_some() {
        return;
    }
    let Ok(mut of_cert) = purser_token::public_jwk_from_file(cert, mode) else {
        return;
    };
    let Some(x5c) = of_cert.as_object_mut().and_then(|o| o.remove("x5c")) else {
        return;
    };
    if of_cert == *active {
        active["x5c"] = x5c;
    }
}

/// The keys the server signs, verifies and publishes with: the folder of `token.keys_dir`
/// (watched: a new manifest is loaded whole or not at all), or the one `signing_key_file` with
/// `publish_keys`.
fn keys(
    config: &Config,
    ctx: &mut Ctx<'_>,
) -> Result<Option<Arc<Reloadable<Published>>>, BuildError> {
    const NAME: &str = "keys";
    const KEY: &str = "token.keys_dir";
    let Some(folder) = Folder::of(config) else {
        let signer = signer(config, ctx);
        let signer = ctx.check(signer)?.flatten();
        let extra = published_keys(config, ctx)?;
        let (Some(signer), Some(extra)) = (signer, extra) else {
            return Ok(None);
        };
        let jwks = jwks(config, signer.as_ref(), &extra);
        let since = std::fs::metadata(&config.token.signing_key_file)
            .and_then(|m| m.modified())
            .ok()
            .map(purser_authn::tokens::unix_seconds);
        return Ok(Some(Arc::new(Reloadable::new(Published::single(
            signer, jwks, since,
        )))));
    };
    let key_error = |message: String| BuildError::Key { key: KEY, message };
    for (key, set) in [
        (
            "token.certificate_file",
            !config.token.certificate_file.as_os_str().is_empty(),
        ),
        ("token.publish_keys", !config.token.publish_keys.is_empty()),
    ] {
        if set {
            ctx.doubt(
                key,
                "is not used with token.keys_dir: the folder holds each key's certificate and publishes its keys itself".into(),
            );
        }
    }
    let manifest = crate::keys::manifest_path(folder.dir);
    if ctx.mode == Mode::DryRun {
        if manifest.exists() {
            let set = folder.load().map_err(|e| key_error(e.to_string()));
            ctx.check(set)?;
        } else if folder.import.is_none() && !folder.generate {
            ctx.check::<()>(Err(key_error(format!(
                "{} holds no keys and token.generate_key is false: serve would not start",
                folder.dir.display()
            ))))?;
        }
        return Ok(None);
    }
    let now = purser_authn::tokens::unix_seconds(purser_core::SystemClock.wall());
    ctx.metrics.init_reload_source(NAME);
    let first = folder.ensure(now).map_err(|e| e.to_string());
    reload::record(
        ctx.metrics,
        NAME,
        &manifest,
        &first.as_ref().map(KeySet::summary).map_err(Clone::clone),
    );
    let set = first.map_err(key_error)?;
    warn_if_key_readable(&crate::keys::key_path(folder.dir, &set.active().entry.name));
    if let Err(e) =
        crate::keys::publish_files(&config.token.bundle_file, &config.token.jwks_file, &set)
    {
        tracing::error!(error = %e, "cannot write the published keys");
    }
    let holder = Arc::new(Reloadable::new(set.to_published()));
    let held = holder.clone();
    let (dir, mode) = (folder.dir.to_path_buf(), folder.mode);
    let (bundle_file, jwks_file) = (
        config.token.bundle_file.clone(),
        config.token.jwks_file.clone(),
    );
    ctx.sources.push(Source {
        name: NAME,
        path: manifest,
        load: Box::new(move |_: &Path| {
            let set = KeySet::load(&dir, mode)?;
            held.store(set.to_published());
            if let Err(e) = crate::keys::publish_files(&bundle_file, &jwks_file, &set) {
                tracing::error!(error = %e, "cannot write the published keys");
            }
            Ok(set.summary())
        }),
    });
    Ok(Some(holder))
}

/// The certificate store of `server.tls`, when both files are set (validation refuses one
/// without the other); its first load is recorded like any reload source's, and its files are
/// two more reload sources.
fn tls_store(config: &Config, ctx: &mut Ctx<'_>) -> Result<Option<Arc<CertStore>>, BuildError> {
    let t = &config.server.tls;
    if t.cert_file.as_os_str().is_empty() && t.key_file.as_os_str().is_empty() {
        return Ok(None);
    }
    if t.cert_file.as_os_str().is_empty() || t.key_file.as_os_str().is_empty() {
        return Err(BuildError::Other {
            key: "server.tls".into(),
            message: "set both cert_file and key_file, or neither".into(),
        });
    }
    ctx.metrics.init_reload_source(crate::tls::SOURCE);
    let store = CertStore::load(&t.cert_file, &t.key_file)?;
    reload::record(
        ctx.metrics,
        crate::tls::SOURCE,
        &t.cert_file,
        &Ok(store.summary()),
    );
    ctx.sources.extend(store.sources());
    Ok(Some(store))
}

/// The policy, read with the policy's size bound by the server and the checker alike.
fn policy(
    config: &Config,
    ctx: &mut Ctx<'_>,
) -> Result<Option<Arc<Reloadable<Policy>>>, BuildError> {
    let gauge = ctx.metrics.policy_rules.clone();
    let empty = Policy::parse("", "(no policy loaded)").map_err(|e| BuildError::Other {
        key: "authz.policy_file".into(),
        message: e.to_string(),
    })?;
    ctx.watch(
        "policy",
        "authz.policy_file",
        &config.authz.policy_file,
        empty,
        move |p: &Path| {
            let policy = Policy::from_file(p).map_err(|e| e.to_string())?;
            let n = policy.rule_count();
            gauge.set(n as i64);
            Ok(Parsed::new(policy, format!("{n} rules")))
        },
    )
}

/// `authz.shadow_policy_file`, when set: the shadow policy and its reload source. Unlike the
/// policy, a shadow file that is missing or does not load neither stops `serve` nor makes it
/// unready (the shadow stays off until a good version appears, and a later broken edit keeps
/// the last good one), since it decides nothing; `check-config` reports both.
fn shadow(config: &Config, ctx: &mut Ctx<'_>) -> Option<Arc<crate::shadow::Shadow>> {
    use crate::shadow::{Shadow, SOURCE};
    const KEY: &str = "authz.shadow_policy_file";
    let path = &config.authz.shadow_policy_file;
    if path.as_os_str().is_empty() {
        return None;
    }
    ctx.metrics.init_reload_source(SOURCE);
    for o in purser_authz::Divergence::ALL {
        ctx.metrics
            .policy_shadow_decisions
            .with_label_values(&[o.label()]);
    }
    let holder: Arc<Reloadable<Option<Policy>>> = Arc::new(Reloadable::new(None));
    let gauge = ctx.metrics.policy_shadow_rules.clone();
    let load = {
        let holder = holder.clone();
        move |p: &Path| -> Result<String, String> {
            let policy = Policy::from_file(p).map_err(|e| e.to_string())?;
            let n = policy.rule_count();
            holder.store(Some(policy));
            gauge.set(n as i64);
            Ok(format!("{n} rules"))
        }
    };
    if path.exists() {
        let first = load(path);
        if let Err(message) = &first {
            match ctx.mode {
                Mode::DryRun => ctx.problems.push(crate::config::Problem::new(
                    KEY,
                    message.replace('\n', "; "),
                )),
                Mode::Serve => tracing::error!(
                    source = SOURCE,
                    path = %path.display(),
                    "the shadow policy does not load: no shadow until it does; the live policy decides as always"
                ),
            }
        }
        reload::record(ctx.metrics, SOURCE, path, &first);
    } else {
        match ctx.mode {
            Mode::Serve => tracing::warn!(source = SOURCE, path = %path.display(), "shadow policy file not found: no shadow until it appears"),
            Mode::DryRun => ctx.problems.push(crate::config::Problem::new(
                KEY,
                format!(
                    "{} does not exist: serve would run without a shadow policy until it appears; create it, correct the path or unset the key",
                    path.display()
                ),
            )),
        }
    }
    ctx.sources.push(Source {
        name: SOURCE,
        path: path.clone(),
        load: Box::new(load),
    });
    Some(Arc::new(Shadow::new(holder)))
}

/// `token.revocations_file`, watched: refresh tokens revoked by `purser revoke`. Unset, or a
/// file that does not exist yet, revokes nothing (the first `purser revoke` creates it).
fn revocations(
    config: &Config,
    ctx: &mut Ctx<'_>,
) -> Result<Option<Arc<Reloadable<Revocations>>>, BuildError> {
    const NAME: &str = "revocations";
    let path = &config.token.revocations_file;
    if path.as_os_str().is_empty() {
        return Ok(Some(Arc::new(Reloadable::new(Revocations::empty()))));
    }
    ctx.metrics.init_reload_source(NAME);
    let summary = |r: &Revocations| format!("{} accounts revoked", r.len());
    let first = Revocations::load(path);
    reload::record(
        ctx.metrics,
        NAME,
        path,
        &first.as_ref().map(summary).map_err(Clone::clone),
    );
    let first = first.map_err(|message| BuildError::Watched {
        name: NAME,
        key: "token.revocations_file".into(),
        message,
    });
    let Some(first) = ctx.check(first)? else {
        return Ok(None);
    };
    let holder = Arc::new(Reloadable::new(first));
    let held = holder.clone();
    ctx.sources.push(Source {
        name: NAME,
        path: path.clone(),
        load: Box::new(move |p: &Path| {
            let r = Revocations::load(p)?;
            let s = summary(&r);
            held.store(r);
            Ok(s)
        }),
    });
    Ok(Some(holder))
}

/// The chain of `authn.order`, each configured backend built by its own module.
fn chain(config: &Config, ctx: &mut Ctx<'_>) -> Result<Option<Arc<Chain>>, BuildError> {
    let cache = CacheSettings {
        ttl: config.authn.cache_ttl.0,
        max_entries: config.authn.cache_max_entries,
        stale_if_unavailable: config.authn.cache_stale_if_unavailable.0,
    };
    let mut backends: Vec<(Arc<dyn Authenticator>, CacheSettings)> = Vec::new();
    let mut complete = true;
    for kind in &config.authn.order {
        // A backend in the order without its block is skipped: the default order names them all.
        let Some(block) = config.authn.block(*kind) else {
            continue;
        };
        match block.build(&kind.key(), ctx)? {
            Some(backend) => {
                ctx.metrics.init_backend(backend.name());
                let settings = if block.credential_cache() {
                    cache
                } else {
                    CacheSettings::ttl(std::time::Duration::ZERO)
                };
                backends.push((backend, settings));
            }
            None => complete = false,
        }
    }
    Ok(complete.then(|| Arc::new(Chain::with_each_cache(backends))))
}

pub struct ServerReadiness {
    pub sources: Vec<Arc<Loaded>>,
    pub chain: Arc<Chain>,
    /// Degraded parts that leave the server ready (an OIDC issuer without keys).
    pub notes: Vec<ctx::NoteSource>,
    /// The shared failed-login store, and whether its absence fails readiness.
    pub state: Option<(Arc<crate::limiter::RedisLimiter>, bool)>,
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
        if let Some((store, true)) = &self.state {
            if !store.ping().await {
                out.push(STATE_DOWN.into());
            }
        }
        out
    }

    async fn notes(&self) -> Vec<String> {
        let mut out: Vec<String> = self.notes.iter().flat_map(|n| n()).collect();
        if let Some((store, false)) = &self.state {
            if !store.ping().await {
                out.push(STATE_DOWN.into());
            }
        }
        out
    }
}

/// What `/readyz` says while Redis does not answer.
const STATE_DOWN: &str = "the shared failed-login store (Redis) does not answer";

/// Everything `serve` runs with, before it binds its listeners.
pub struct Built {
    /// The signing keys and the JWKS, swapped whole when `token.keys_dir` changes.
    pub keys: Arc<Reloadable<Published>>,
    /// `server.tls`, when set.
    pub tls: Option<Arc<CertStore>>,
    pub chain: Arc<Chain>,
    pub authorizer: Arc<PolicyAuthorizer>,
    pub policy: Arc<Reloadable<Policy>>,
    /// The shadow policy (`authz.shadow_policy_file`), when set.
    pub shadow: Option<Arc<crate::shadow::Shadow>>,
    /// The watched files: policy, htpasswd, htgroup, the TLS pair.
    pub sources: Vec<Source>,
    pub readiness: Arc<ServerReadiness>,
    pub limiter: Arc<dyn purser_core::LoginLimiter>,
    /// Refresh tokens revoked by `purser revoke` (`token.revocations_file`).
    pub revocations: Arc<Reloadable<Revocations>>,
}

/// Every part, in the order `serve` has always built them. `Ok(None)` only in a dry run.
fn assemble(config: &Config, ctx: &mut Ctx<'_>) -> Result<Option<Built>, BuildError> {
    let keys = keys(config, ctx)?;
    let chain = chain(config, ctx)?;
    let policy = policy(config, ctx)?;
    let shadow = shadow(config, ctx);
    let revocations = revocations(config, ctx)?;
    let tls = tls_store(config, ctx);
    let tls = ctx.check(tls)?;
    let limiter = crate::limiter::build(config, Arc::new(purser_core::SystemClock), ctx.metrics);
    let limiter = ctx.check(limiter)?;
    let (Some(keys), Some(chain), Some(policy), Some(tls), Some(revocations), Some(limiter)) =
        (keys, chain, policy, tls, revocations, limiter)
    else {
        return Ok(None);
    };
    let authorizer = Arc::new(PolicyAuthorizer::new(policy.clone()));
    let readiness = Arc::new(ServerReadiness {
        sources: std::mem::take(&mut ctx.flags),
        chain: chain.clone(),
        notes: std::mem::take(&mut ctx.notes),
        state: limiter
            .redis
            .clone()
            .map(|r| (r, config.state.redis.fail_readiness)),
    });
    let limiter = limiter.limiter;
    Ok(Some(Built {
        keys,
        tls,
        chain,
        authorizer,
        policy,
        shadow,
        sources: std::mem::take(&mut ctx.sources),
        readiness,
        limiter,
        revocations,
    }))
}

/// Builds the server for `purser serve`: generates a missing key when allowed, loads every
/// file, and stops at the first failure.
pub fn server(config: &Config, metrics: &Metrics) -> Result<Built, BuildError> {
    let mut ctx = Ctx::new(Mode::Serve, metrics);
    assemble(config, &mut ctx)?.ok_or_else(|| BuildError::Other {
        key: String::new(),
        message: "the server could not be built".into(),
    })
}

/// Builds the server as [`server`] does, for `purser check-config`, without writing, binding,
/// contacting or starting anything: every problem found, each with its key path.
pub fn dry_run(config: &Config) -> Vec<Problem> {
    let metrics = match Metrics::new(prometheus::Registry::new()) {
        Ok(m) => m,
        Err(e) => return vec![Problem::new("", format!("metrics: {e}"))],
    };
    let mut ctx = Ctx::new(Mode::DryRun, &metrics);
    if let Err(e) = assemble(config, &mut ctx) {
        // A dry run collects its failures; this is only for one that escaped.
        ctx.problems.push(e.problem());
    }
    ctx.problems
}
