//! What one build shares between its parts: the mode (serve or dry run), the error type, and the
//! context through which the parts register reload sources, readiness flags and, in a dry run,
//! problems. Backend modules build through it without depending on the rest of the build.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use purser_core::Reloadable;

use crate::config::problem::Problem;
use crate::metrics::Metrics;
use crate::reload::{self, Loader, Source};

/// How far a build goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `purser serve`: a missing signing key is generated, a missing watched file is served
    /// without (not ready) until it appears, background tasks start; the first failure stops.
    Serve,
    /// `purser check-config`: the same reading and parsing, with nothing written, bound,
    /// contacted or started; a missing watched file is a problem, and every failure is kept.
    DryRun,
}

/// Why the server cannot be built. `serve` prints it as it is; `check-config` prints
/// [`BuildError::problem`], which leads with the key to change.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The signing key or its certificate.
    #[error("signing key: {message}")]
    Key { key: &'static str, message: String },
    /// A file of `token.publish_keys`.
    #[error("signing key: token.publish_keys: {message}")]
    PublishedKey { index: usize, message: String },
    /// A backend that cannot be built with its block.
    #[error("{key}: {message}")]
    Backend { key: String, message: String },
    /// A watched file (policy, htpasswd, htgroup) that exists but does not load.
    #[error("{name}: {message}")]
    Watched {
        name: &'static str,
        key: String,
        message: String,
    },
    /// The certificate or key of `server.tls`.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Anything else, with its key.
    #[error("{key}: {message}")]
    Other { key: String, message: String },
}

impl BuildError {
    pub fn backend(key: &str, message: impl std::fmt::Display) -> Self {
        BuildError::Backend {
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    /// The failure as a configuration problem: the key path first.
    pub fn problem(&self) -> Problem {
        match self {
            BuildError::Key { key, message } => Problem::new(*key, message.clone()),
            BuildError::PublishedKey { index, message } => {
                Problem::new(format!("token.publish_keys[{index}]"), message.clone())
            }
            BuildError::Backend { key, message }
            | BuildError::Watched { key, message, .. }
            | BuildError::Other { key, message } => Problem::new(key.clone(), message.clone()),
            BuildError::Tls(e) => Problem::new(e.key, e.message.clone()),
        }
    }
}

/// What a watched file's parser hands back.
pub struct Parsed<T> {
    pub value: T,
    /// For the log: `"42 rules"`.
    pub summary: String,
    /// Lines skipped while the rest loaded: `serve` goes on (the parser logs them), a dry run
    /// reports each.
    pub refused: Vec<String>,
}

impl<T> Parsed<T> {
    pub fn new(value: T, summary: String) -> Self {
        Parsed {
            value,
            summary,
            refused: Vec::new(),
        }
    }
}

/// What a part running degraded says in `/readyz` (which still answers 200), asked at each
/// probe: one line per problem, none while all is well.
pub type NoteSource = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// A watched file that must be loaded for `/readyz`.
pub struct Loaded {
    pub name: &'static str,
    pub path: PathBuf,
    pub ok: AtomicBool,
}

/// The state of one build: its mode, what the parts register (reload sources, readiness
/// flags) and, in a dry run, the problems found so far.
pub struct Ctx<'a> {
    pub mode: Mode,
    pub metrics: &'a Metrics,
    /// One bound on password hashing for every hashing backend: at most one check per CPU.
    pub hash_limiter: Arc<purser_authn::HashLimiter>,
    pub(super) sources: Vec<Source>,
    pub(super) flags: Vec<Arc<Loaded>>,
    pub(super) notes: Vec<NoteSource>,
    pub(super) problems: Vec<Problem>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(mode: Mode, metrics: &'a Metrics) -> Self {
        Ctx {
            mode,
            metrics,
            hash_limiter: purser_authn::hash_limiter(),
            sources: Vec::new(),
            flags: Vec::new(),
            notes: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// A step's result: `serve` stops at a failure; a dry run notes it, goes on to find the
    /// others, and gets `None`.
    pub fn check<T>(&mut self, r: Result<T, BuildError>) -> Result<Option<T>, BuildError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if self.mode == Mode::DryRun => {
                self.problems.push(e.problem());
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A degraded state `/readyz` reports without failing readiness (an OIDC issuer without
    /// keys: its logins answer 503, the other backends serve).
    pub fn note(&mut self, source: NoteSource) {
        self.notes.push(source);
    }

    /// Something `serve` runs with but warns about, and `check-config` reports as a problem.
    pub fn doubt(&mut self, key: &str, message: String) {
        match self.mode {
            Mode::Serve => tracing::warn!(key, "{message}"),
            Mode::DryRun => self.problems.push(Problem::new(key, message)),
        }
    }

    /// A watched file (`key` names it in the config): a holder that the loader fills, its
    /// readiness flag and its reload source, registered here. The first load happens now: a
    /// file that exists but does not load is a failure (better than serving a policy or user
    /// list other than the one the operator wrote); a missing one is served without, not ready,
    /// until it appears, which a dry run reports.
    pub fn watch<T, F>(
        &mut self,
        name: &'static str,
        key: &str,
        path: &Path,
        empty: T,
        parse: F,
    ) -> Result<Option<Arc<Reloadable<T>>>, BuildError>
    where
        T: Send + Sync + 'static,
        F: Fn(&Path) -> Result<Parsed<T>, String> + Send + Sync + 'static,
    {
        self.metrics.init_reload_source(name);
        let holder = Arc::new(Reloadable::new(empty));
        let loaded = Arc::new(Loaded {
            name,
            path: path.to_path_buf(),
            ok: AtomicBool::new(false),
        });
        let parse = Arc::new(parse);
        let load: Loader = {
            let (holder, loaded, parse) = (holder.clone(), loaded.clone(), parse.clone());
            Box::new(move |p: &Path| {
                let parsed = parse(p)?;
                holder.store(parsed.value);
                loaded.ok.store(true, Ordering::Release);
                Ok(parsed.summary)
            })
        };
        if path.exists() {
            let first = parse(path);
            let r = match first {
                Ok(parsed) => {
                    for line in &parsed.refused {
                        if self.mode == Mode::DryRun {
                            self.problems.push(Problem::new(key, line.clone()));
                        }
                    }
                    holder.store(parsed.value);
                    loaded.ok.store(true, Ordering::Release);
                    Ok(parsed.summary)
                }
                Err(e) => Err(e),
            };
            reload::record(self.metrics, name, path, &r);
            let failed = r.map_err(|message| BuildError::Watched {
                name,
                key: key.to_string(),
                message,
            });
            if self.check(failed)?.is_none() {
                return Ok(None);
            }
        } else {
            match self.mode {
                Mode::Serve => tracing::error!(source = name, path = %path.display(), "file not found: serving without it (not ready) until it appears"),
                Mode::DryRun => self.problems.push(Problem::new(
                    key,
                    format!(
                        "{} does not exist: serve would start without it and answer not ready until it appears; create it or correct the path",
                        path.display()
                    ),
                )),
            }
        }
        self.flags.push(loaded);
        self.sources.push(Source {
            name,
            path: path.to_path_buf(),
            load,
        });
        Ok(Some(holder))
    }
}
