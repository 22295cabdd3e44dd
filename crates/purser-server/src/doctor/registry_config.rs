//! The registry's side: its `config.yml`, with the `REGISTRY_AUTH_TOKEN_*` (and
//! `REGISTRY_HTTP_ADDR`) overrides of an env file applied the way the registry applies them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_norway::Value as Yaml;

use super::MAX_FILE;

/// The registry versions whose rules differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RegistryVersion {
    V2,
    V3,
}

impl fmt::Display for RegistryVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegistryVersion::V2 => "registry 2.x",
            RegistryVersion::V3 => "registry 3.x",
        })
    }
}

/// The registry's `auth.token` block after environment overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryToken {
    pub realm: Option<String>,
    pub service: Option<String>,
    pub issuer: Option<String>,
    pub rootcertbundle: Option<PathBuf>,
    pub jwks: Option<PathBuf>,
    pub autoredirect: bool,
    pub autoredirectpath: Option<String>,
    pub signingalgorithms: Option<Vec<String>>,
    /// `http.addr`, for `autoredirect`.
    pub http_addr: Option<String>,
    /// The version the keys tell (`jwks`, `signingalgorithms`, `autoredirectpath` are 3.x only).
    pub version: Option<RegistryVersion>,
    /// True when `version` was found by asking the running registry.
    pub version_probed: bool,
    /// True when the config has an `auth.token` block at all (or env overrides create one).
    pub present: bool,
    /// Other `auth` methods configured (`htpasswd`, `silly`), in the order written.
    pub other_auth: Vec<String>,
}

/// Reads the registry's `config.yml` and applies `REGISTRY_AUTH_TOKEN_*` (and `REGISTRY_HTTP_ADDR`)
/// from `env_file`. Relative paths are taken relative to the config file's folder.
pub fn read_registry_config(path: &Path, env_file: Option<&Path>) -> Result<RegistryToken, String> {
    let text = read_bounded(path)?;
    parse_registry_config(path, &text, env_file)
}

/// [`read_registry_config`] for a config already read from `path`.
pub fn parse_registry_config(
    path: &Path,
    text: &str,
    env_file: Option<&Path>,
) -> Result<RegistryToken, String> {
    let doc: Yaml = if text.trim().is_empty() {
        Yaml::Null
    } else {
        serde_norway::from_str(text).map_err(|e| {
            format!(
                "{}: not a registry config (YAML): {e}; give the registry's config.yml",
                path.display()
            )
        })?
    };
    let mut values: BTreeMap<String, Yaml> = BTreeMap::new();
    let mut other_auth = Vec::new();
    let mut present = false;
    if let Some(auth) = doc.get("auth").and_then(Yaml::as_mapping) {
        for (k, v) in auth {
            let Some(k) = k.as_str() else { continue };
            if k == "token" {
                present = true;
                if let Some(m) = v.as_mapping() {
                    for (tk, tv) in m {
                        if let Some(tk) = tk.as_str() {
                            values.insert(tk.to_ascii_lowercase(), tv.clone());
                        }
                    }
                }
            } else {
                other_auth.push(k.to_string());
            }
        }
    }
    let mut http_addr = doc
        .get("http")
        .and_then(|h| h.get("addr"))
        .and_then(yaml_string);
    if let Some(env) = env_file {
        let env_text = read_bounded(env)?;
        for (k, v) in parse_env_file(&env_text) {
            if let Some(key) = k.strip_prefix("REGISTRY_AUTH_TOKEN_") {
                present = true;
                // The registry parses override values as YAML too (lists for signingalgorithms).
                let parsed = serde_norway::from_str::<Yaml>(&v).unwrap_or(Yaml::String(v.clone()));
                values.insert(key.to_ascii_lowercase(), parsed);
            } else if k == "REGISTRY_HTTP_ADDR" {
                http_addr = Some(v);
            }
        }
    }
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let get_str = |k: &str| values.get(k).and_then(yaml_string);
    let get_path = |k: &str| {
        get_str(k).filter(|s| !s.is_empty()).map(|s| {
            let p = PathBuf::from(s);
            if p.is_relative() {
                base.join(p)
            } else {
                p
            }
        })
    };
    let signingalgorithms = values.get("signingalgorithms").map(|v| match v {
        Yaml::Sequence(items) => items.iter().filter_map(yaml_string).collect(),
        other => yaml_string(other)
            .map(|s| {
                s.split([',', ' '])
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    });
    let autoredirect = values
        .get("autoredirect")
        .map(|v| match v {
            Yaml::Bool(b) => *b,
            other => yaml_string(other).is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
        .unwrap_or(false);
    let v3_keys = ["jwks", "signingalgorithms", "autoredirectpath"];
    let version = v3_keys
        .iter()
        .any(|k| values.contains_key(*k))
        .then_some(RegistryVersion::V3);
    Ok(RegistryToken {
        realm: get_str("realm"),
        service: get_str("service"),
        issuer: get_str("issuer"),
        rootcertbundle: get_path("rootcertbundle"),
        jwks: get_path("jwks"),
        autoredirect,
        autoredirectpath: get_str("autoredirectpath"),
        signingalgorithms,
        http_addr,
        version,
        version_probed: false,
        present,
        other_auth,
    })
}

fn yaml_string(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads a text file the registry would read, refusing one too large to be it.
pub(crate) fn read_bounded(path: &Path) -> Result<String, String> {
    purser_fs::read_text(path, MAX_FILE).map_err(|e| match e.kind() {
        purser_fs::ReadErrorKind::TooLarge { .. } => format!(
            "{} is larger than {} bytes: is it the right file?",
            path.display(),
            MAX_FILE
        ),
        _ => format!("cannot read {e}"),
    })
}

/// `KEY=VALUE` lines as docker's `--env-file`, systemd's `EnvironmentFile` and shells write
/// them: blank lines and `#` comments skipped, an `export ` prefix and matching quotes removed.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|x| x.strip_suffix(*q)))
            .unwrap_or(v);
        out.push((k.trim().to_string(), v.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_read_like_docker_and_systemd() {
        let text = "# comment\n\nexport REGISTRY_AUTH_TOKEN_ISSUER=\"iss\"\nREGISTRY_AUTH_TOKEN_SERVICE='svc'\n  REGISTRY_HTTP_ADDR = 0.0.0.0:5000\nnot a pair\n";
        assert_eq!(
            parse_env_file(text),
            vec![
                ("REGISTRY_AUTH_TOKEN_ISSUER".to_string(), "iss".to_string()),
                ("REGISTRY_AUTH_TOKEN_SERVICE".to_string(), "svc".to_string()),
                ("REGISTRY_HTTP_ADDR".to_string(), "0.0.0.0:5000".to_string()),
            ]
        );
    }

    #[test]
    fn registry_config_with_env_overrides_and_version_hint() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            "version: 0.1\nhttp:\n  addr: :5000\nauth:\n  token:\n    realm: http://a/token\n    service: s\n    issuer: i\n    rootcertbundle: certs/bundle.pem\n",
        )
        .unwrap();
        let r = read_registry_config(&cfg, None).unwrap();
        assert!(r.present);
        assert_eq!(r.version, None);
        assert_eq!(r.issuer.as_deref(), Some("i"));
        assert_eq!(r.rootcertbundle, Some(dir.path().join("certs/bundle.pem")));
        assert_eq!(r.http_addr.as_deref(), Some(":5000"));

        let env = dir.path().join("env");
        std::fs::write(
            &env,
            "REGISTRY_AUTH_TOKEN_ISSUER=other\nREGISTRY_AUTH_TOKEN_SIGNINGALGORITHMS=[ES256, RS256]\nREGISTRY_AUTH_TOKEN_AUTOREDIRECT=true\n",
        )
        .unwrap();
        let r = read_registry_config(&cfg, Some(&env)).unwrap();
        assert_eq!(r.issuer.as_deref(), Some("other"));
        assert_eq!(r.version, Some(RegistryVersion::V3));
        assert_eq!(
            r.signingalgorithms,
            Some(vec!["ES256".to_string(), "RS256".to_string()])
        );
        assert!(r.autoredirect);
    }

    #[test]
    fn other_auth_types_are_kept_in_the_order_written() {
        let r = parse_registry_config(
            Path::new("config.yml"),
            "auth:\n  silly:\n    realm: r\n  token:\n    realm: http://a/token\n  htpasswd:\n    realm: r\n    path: /x\n",
            None,
        )
        .unwrap();
        assert!(r.present);
        assert_eq!(
            r.other_auth,
            vec!["silly".to_string(), "htpasswd".to_string()]
        );
    }
}
