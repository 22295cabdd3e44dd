//! The layers, their merge, and loading: extraction, path resolution, secret twins, validation.

use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;

use super::problem::{find_line, suggest};
use super::values::resolve;
use super::{Config, ConfigErrors, LogLevel, Problem, ProblemSource, Yaml};

/// The file read when no `--config` is given, relative to the current directory, if it exists.
pub(super) const DEFAULT_CONFIG_FILE: &str = "config/purser.yaml";
/// Environment variables of this prefix are the env layer.
pub(super) const ENV_PREFIX: &str = "PURSER_";
/// Between levels in an environment variable name: `PURSER_TOKEN__ISSUER` is `token.issuer`.
pub(super) const ENV_SEPARATOR: &str = "__";

const FLAGS_LAYER: &str = "command-line flags";
/// A config file larger than this is not one (the reference config is a few KiB).
const MAX_CONFIG_FILE: u64 = 1024 * 1024;
/// Bound on extraction rounds when collecting key and type errors.
const MAX_ROUNDS: usize = 100;

/// What the command line contributes to loading: the file, and the flags that override keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `--config`; when `None`, `config/purser.yaml` if it exists, else no file.
    pub config_file: Option<PathBuf>,
    /// `--listen`, overriding `server.listen`.
    pub listen: Option<String>,
    /// `--log-level`, overriding `log.level`.
    pub log_level: Option<LogLevel>,
}

impl LoadOptions {
    /// The config file these options select: the given one, else `config/purser.yaml` when it
    /// exists, else none.
    pub fn selected_file(&self) -> Option<PathBuf> {
        match &self.config_file {
            Some(f) => Some(f.clone()),
            None => {
                let default = Path::new(DEFAULT_CONFIG_FILE);
                default.is_file().then(|| default.to_path_buf())
            }
        }
    }
}

/// A loaded, valid configuration.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Every relative path already resolved against `base_dir`; `*_file` secrets read into
    /// their plain fields.
    pub config: Config,
    /// The config file read (absolute), if any.
    pub config_file: Option<PathBuf>,
    /// The config file's folder, or the current directory when there is no file (absolute).
    pub base_dir: PathBuf,
}

/// The flag layer: only what was given on the command line.
struct Flags {
    listen: Option<String>,
    log_level: Option<LogLevel>,
}

#[derive(Serialize)]
struct FlagValues<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<ServerFlags<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<LogFlags>,
}

#[derive(Serialize)]
struct ServerFlags<'a> {
    listen: &'a str,
}

#[derive(Serialize)]
struct LogFlags {
    level: LogLevel,
}

impl Provider for Flags {
    fn metadata(&self) -> Metadata {
        Metadata::named(FLAGS_LAYER)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let values = FlagValues {
            server: self.listen.as_deref().map(|listen| ServerFlags { listen }),
            log: self.log_level.map(|level| LogFlags { level }),
        };
        Serialized::defaults(values).data()
    }
}

fn is_toml(file: &Path) -> bool {
    file.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

impl Config {
    /// The layers, lowest first: built-in defaults < config file (TOML for `.toml`, YAML
    /// otherwise) < `PURSER_` environment variables (`__` between levels) < flags. The only
    /// place where layers merge.
    pub fn figment(opts: &LoadOptions) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = opts.selected_file() {
            figment = if is_toml(&file) {
                figment.merge(Toml::file_exact(&file))
            } else {
                figment.merge(Yaml::file_exact(&file))
            };
        }
        figment
            .merge(Env::prefixed(ENV_PREFIX).split(ENV_SEPARATOR))
            .merge(Flags {
                listen: opts.listen.clone(),
                log_level: opts.log_level,
            })
    }

    /// Loads every layer, then, as the only steps after extraction: resolves relative paths
    /// against the config file's folder (the current directory without a file) and reads the
    /// `*_file` secret twins. Reports every problem found (unknown keys, wrong types, unreadable
    /// secret files, [`Config::validate`]) at once, each with its key path and source.
    pub fn load(opts: &LoadOptions) -> Result<Loaded, ConfigErrors> {
        let config_file = opts.selected_file();
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let mut file_text = None;
        if let Some(file) = &config_file {
            match purser_fs::read_text(file, MAX_CONFIG_FILE) {
                Ok(text) => file_text = Some(text),
                Err(e) => {
                    let problem = Problem {
                        path: String::new(),
                        source: Some(ProblemSource::File {
                            path: file.clone(),
                            line: None,
                        }),
                        message: format!(
                            "cannot read the config file ({}); check the path given to --config",
                            e.kind()
                        ),
                    };
                    return Err(ConfigErrors {
                        problems: vec![problem],
                    });
                }
            }
        }
        let figment = Config::figment(opts);
        let locator = Locator {
            figment: &figment,
            file_text: file_text.as_deref(),
        };

        let (config, mut problems, removed) = extract(&figment, &locator);
        let abs_file = config_file.as_ref().map(|f| cwd.join(f));
        let base_dir = match abs_file.as_ref().and_then(|f| f.parent()) {
            Some(dir) => dir.to_path_buf(),
            None => cwd.clone(),
        };
        let Some(mut config) = config else {
            return Err(ConfigErrors { problems });
        };
        resolve_paths(&mut config, &base_dir);
        read_secrets(&mut config, &mut problems);
        // A dropped key took its default: a problem found in that default is not the user's.
        let under_removed = |path: &str| {
            removed
                .iter()
                .any(|r| path == r || path.starts_with(&format!("{r}.")))
        };
        problems.extend(
            config
                .validate()
                .into_iter()
                .filter(|p| !under_removed(&p.path)),
        );
        for p in &mut problems {
            if p.source.is_none() {
                p.source = locator.locate(&p.path);
            }
        }
        // In reading order: the file by line, then the environment, then flags.
        problems.sort_by_key(|p| match &p.source {
            Some(ProblemSource::File { line, .. }) => (0, line.unwrap_or(0)),
            Some(ProblemSource::Env { .. }) => (1, 0),
            Some(ProblemSource::Flag { .. }) => (2, 0),
            None => (3, 0),
        });
        if problems.is_empty() {
            Ok(Loaded {
                config,
                config_file: abs_file,
                base_dir,
            })
        } else {
            Err(ConfigErrors { problems })
        }
    }
}

/// Tells which layer set a key, and where.
struct Locator<'a> {
    figment: &'a Figment,
    file_text: Option<&'a str>,
}

impl Locator<'_> {
    fn locate(&self, path: &str) -> Option<ProblemSource> {
        if path.is_empty() {
            return None;
        }
        let md = self.figment.find_metadata(path)?;
        self.source_of(md, path)
    }

    fn source_of(&self, md: &Metadata, path: &str) -> Option<ProblemSource> {
        let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
        match &md.source {
            Some(figment::Source::File(file)) => Some(ProblemSource::File {
                path: file.clone(),
                line: self
                    .file_text
                    .and_then(|text| find_line(file, text, &segments)),
            }),
            _ if md.name == FLAGS_LAYER => Some(ProblemSource::Flag {
                flag: flag_name(path),
            }),
            _ if md.name.contains("environment variable") => Some(ProblemSource::Env {
                var: env_var_name(&segments),
            }),
            _ => None,
        }
    }
}

/// `token.lifetime` -> `PURSER_TOKEN__LIFETIME`.
fn env_var_name(segments: &[&str]) -> String {
    let upper: Vec<String> = segments.iter().map(|s| s.to_ascii_uppercase()).collect();
    format!("{ENV_PREFIX}{}", upper.join(ENV_SEPARATOR))
}

fn flag_name(path: &str) -> String {
    match path {
        "server.listen" => "--listen".into(),
        "log.level" => "--log-level".into(),
        other => format!("--{other}"),
    }
}

/// Keys whose values must never be echoed, even in a type error: the backends' secrets.
fn is_secret_key(path: &[String]) -> bool {
    // The Redis URL may hold a password.
    if path.len() == 3 && path[0] == "state" && path[1] == "redis" && path[2] == "url" {
        return true;
    }
    path.last()
        .is_some_and(|k| crate::backends::is_secret_key(k))
}

/// Extracts the configuration, collecting every key and type error rather than the first: each
/// offending key is reported, dropped from a copy of the merged values (so its default applies)
/// and extraction retried. Returns the config if one could be extracted, the problems, and the
/// dropped key paths.
fn extract(
    figment: &Figment,
    locator: &Locator<'_>,
) -> (Option<Config>, Vec<Problem>, Vec<String>) {
    let mut problems = Vec::new();
    let mut removed = Vec::new();
    let mut err = match figment.extract::<Config>() {
        Ok(config) => return (Some(config), problems, removed),
        Err(e) => e,
    };
    // A layer that failed to provide its values (a file that does not parse) leaves nothing to
    // retry with.
    let mut merged = match figment.extract::<Value>() {
        Ok(v) => v,
        Err(errors) => {
            for e in errors {
                problems.push(layer_problem(&e, locator));
            }
            return (None, problems, removed);
        }
    };
    for _ in 0..MAX_ROUNDS {
        let (problem, bad) = key_problem(&err, locator);
        problems.push(problem);
        if bad.is_empty() || !remove_path(&mut merged, &bad) {
            return (None, problems, removed);
        }
        removed.push(bad.join("."));
        match Figment::from(Serialized::defaults(&merged)).extract::<Config>() {
            Ok(config) => return (Some(config), problems, removed),
            Err(e) => err = e,
        }
    }
    (None, problems, removed)
}

/// A layer that could not be read or parsed at all.
fn layer_problem(e: &figment::Error, locator: &Locator<'_>) -> Problem {
    let source = e.metadata.as_ref().and_then(|md| match &md.source {
        Some(figment::Source::File(file)) => Some(ProblemSource::File {
            path: file.clone(),
            line: None,
        }),
        _ => locator.source_of(md, &e.path.join(".")),
    });
    Problem {
        path: e.path.join("."),
        source,
        message: format!("cannot be parsed: {}", e.kind),
    }
}

/// The problem for one extraction error, and the key path to drop before retrying.
fn key_problem(e: &figment::Error, locator: &Locator<'_>) -> (Problem, Vec<String>) {
    let mut path = e.path.clone();
    let message = match &e.kind {
        Kind::UnknownField(name, expected) => {
            if path.last() != Some(name) {
                path.push(name.clone());
            }
            match suggest(name, expected) {
                Some(s) => format!("unknown key (did you mean {s:?}?)"),
                None if expected.is_empty() => "unknown key".to_string(),
                None => format!("unknown key; the keys here are: {}", expected.join(", ")),
            }
        }
        _ if is_secret_key(&path) => {
            "has the wrong type: write it as a string (value not shown)".to_string()
        }
        Kind::UnknownVariant(value, expected) => {
            let hint = match suggest(value, expected) {
                Some(s) => format!(" (did you mean {s:?}?)"),
                None => String::new(),
            };
            format!(
                "unknown value {value:?}{hint}; expected one of: {}",
                expected.join(", ")
            )
        }
        kind => kind.to_string(),
    };
    let dotted = path.join(".");
    let source = locator.locate(&dotted).or_else(|| {
        e.metadata
            .as_ref()
            .and_then(|md| locator.source_of(md, &dotted))
    });
    (
        Problem {
            path: dotted,
            source,
            message,
        },
        path,
    )
}

fn remove_path(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = value;
    for key in parents {
        match cur {
            Value::Dict(_, dict) => match dict.get_mut(key) {
                Some(next) => cur = next,
                None => return false,
            },
            _ => return false,
        }
    }
    match cur {
        Value::Dict(_, dict) => dict.remove(last).is_some(),
        _ => false,
    }
}

/// The single post-extraction rewrite of values: relative paths become paths under `base`.
fn resolve_paths(c: &mut Config, base: &Path) {
    resolve(&mut c.server.tls.cert_file, base);
    resolve(&mut c.server.tls.key_file, base);
    resolve(&mut c.token.signing_key_file, base);
    resolve(&mut c.token.certificate_file, base);
    resolve(&mut c.token.revocations_file, base);
    resolve(&mut c.token.keys_dir, base);
    resolve(&mut c.token.bundle_file, base);
    resolve(&mut c.token.jwks_file, base);
    for key in &mut c.token.publish_keys {
        resolve(key, base);
    }
    c.authn.resolve_paths(base);
    resolve(&mut c.authz.policy_file, base);
    resolve(&mut c.authz.shadow_policy_file, base);
    resolve(&mut c.state.redis.ca_file, base);
    if let Some(f) = &mut c.state.redis.url_file {
        resolve(f, base);
    }
}

/// Reads every `*_file` secret twin into its plain field.
fn read_secrets(c: &mut Config, problems: &mut Vec<Problem>) {
    c.authn.read_secrets(problems);
    let r = &mut c.state.redis;
    super::values::read_twin(
        &mut r.url,
        r.url_file.as_deref(),
        "state.redis.url",
        problems,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_and_flags() {
        assert_eq!(
            env_var_name(&["token", "lifetime"]),
            "PURSER_TOKEN__LIFETIME"
        );
        assert_eq!(flag_name("server.listen"), "--listen");
        assert_eq!(flag_name("log.level"), "--log-level");
    }

    #[test]
    fn remove_nested_key() {
        let mut v = Value::serialize(Config::default()).unwrap();
        assert!(remove_path(&mut v, &["server".into(), "listen".into()]));
        assert!(!remove_path(&mut v, &["server".into(), "listen".into()]));
        assert!(!remove_path(&mut v, &["nope".into(), "x".into()]));
    }

    #[test]
    fn relative_paths_join_the_base() {
        let mut c = Config::default();
        c.token.certificate_file = PathBuf::new();
        c.authz.policy_file = PathBuf::from("/abs/policy.yaml");
        resolve_paths(&mut c, Path::new("/etc/purser"));
        assert_eq!(
            c.token.signing_key_file,
            Path::new("/etc/purser/data/signing.pem")
        );
        assert_eq!(c.token.certificate_file, PathBuf::new());
        assert_eq!(c.authz.policy_file, Path::new("/abs/policy.yaml"));
    }
}
