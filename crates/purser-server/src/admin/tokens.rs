//! `purser token create|list|revoke`: the tokens file (`authn.tokens.file`) changed from the
//! command line. An entry is appended as a block, so the file's comments and order survive and
//! a review in git shows one new block; a removal cuts the entry's lines. Each result is parsed
//! again before it is written, and a file that does not load is never written over.

use std::path::Path;
use std::time::Duration;

use purser_authn::tokens::{
    check_name, format_time, generate_secret, secret_sha256, NewToken, TokenEntry, TokensDb,
};
use purser_core::ScopeCap;
use serde_json::{json, Value};

use super::file_update::{self, UpdateError};

/// The first lines of a new tokens file.
const HEADER: &str =
    "# Machine tokens, managed with `purser token create|list|revoke`. Each entry keeps the\n\
# SHA-256 of its secret, never the secret. Review changes like code.\n";

/// What `purser token create` was asked for.
#[derive(Clone, Debug, Default)]
pub struct CreateSpec {
    pub name: String,
    /// The account the policy sees; the name when `None`.
    pub account: Option<String>,
    pub groups: Vec<String>,
    /// The cap; empty for none.
    pub scopes: Vec<String>,
    /// How long from now it works; `None` for never.
    pub expires: Option<Duration>,
    pub description: String,
}

/// A created token: the secret (shown once) and its entry.
pub struct Created {
    pub secret: String,
    pub entry: TokenEntry,
}

fn parse(text: &str, source: &str) -> Result<TokensDb, UpdateError> {
    TokensDb::parse(text, source, &purser_authz::check_cap).map_err(|e| {
        UpdateError::Refused(format!(
            "{e}; the tokens file does not load, so it was left as it is: correct it first"
        ))
    })
}

/// Checks `spec`, makes a secret and adds the entry to the file at `path` (created when
/// missing), under the file's lock.
pub fn create(path: &Path, spec: &CreateSpec, now: i64) -> Result<Created, UpdateError> {
    let refused = UpdateError::Refused;
    check_name(&spec.name).map_err(refused)?;
    let account = spec.account.clone().unwrap_or_else(|| spec.name.clone());
    if account.is_empty() {
        return Err(refused("--account must not be empty".into()));
    }
    if spec.groups.iter().any(String::is_empty) {
        return Err(refused("--group must not be empty".into()));
    }
    for s in &spec.scopes {
        let cap: ScopeCap = s.parse().map_err(|e| refused(format!("--scope: {e}")))?;
        purser_authz::check_cap(&cap).map_err(|e| refused(format!("--scope {s:?}: {e}")))?;
    }
    let expires = spec
        .expires
        .map(|d| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
    let secret = generate_secret();
    let sha256 = secret_sha256(&secret);
    let block = NewToken {
        name: &spec.name,
        account: &account,
        groups: &spec.groups,
        scopes: (!spec.scopes.is_empty()).then_some(spec.scopes.as_slice()),
        sha256: &sha256,
        created: now,
        expires,
        description: &spec.description,
    }
    .render();
    let source = path.display().to_string();
    let entry = file_update::update(path, |old| {
        let old = old.unwrap_or(HEADER);
        let db = parse(old, &source)?;
        if db.get(&spec.name).is_some() {
            return Err(refused(format!(
                "a token named {:?} exists already: revoke it first, or choose another name",
                spec.name
            )));
        }
        let mut text = old.to_string();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&block);
        // Appending a block works for a file in block style; anything else is written anew.
        let text = match parse(&text, &source) {
            Ok(new) if new.len() == db.len() + 1 => text,
            _ => {
                let mut all = HEADER.to_string();
                for e in db.entries() {
                    all.push_str(&e.render());
                }
                all.push_str(&block);
                all
            }
        };
        let new = parse(&text, &source)?;
        let entry = new
            .get(&spec.name)
            .cloned()
            .ok_or_else(|| refused("the new entry did not load".into()))?;
        Ok((text, entry))
    })?;
    Ok(Created { secret, entry })
}

/// The tokens in the file at `path`, in file order (none when it does not exist).
pub fn list(path: &Path) -> Result<Vec<TokenEntry>, UpdateError> {
    match file_update::read(path)? {
        Some(text) => Ok(parse(&text, &path.display().to_string())?
            .entries()
            .to_vec()),
        None => Ok(Vec::new()),
    }
}

/// Removes the token `name` from the file at `path`, under its lock; returns the entry.
pub fn revoke(path: &Path, name: &str) -> Result<TokenEntry, UpdateError> {
    let source = path.display().to_string();
    file_update::update(path, |old| {
        let Some(old) = old else {
            return Err(UpdateError::Refused(format!("{source} does not exist")));
        };
        let db = parse(old, &source)?;
        let Some(gone) = db.get(name).cloned() else {
            return Err(UpdateError::Refused(format!(
                "no token named {name:?} in {source} (`purser token list` shows them)"
            )));
        };
        // Cut the entry's lines: from its first line to the next entry's.
        let next = db
            .entries()
            .iter()
            .map(|e| e.line)
            .filter(|&l| l > gone.line)
            .min();
        let cut: String = old
            .lines()
            .enumerate()
            .filter(|(i, _)| {
                let n = i + 1;
                gone.line == 0 || n < gone.line || next.is_some_and(|x| n >= x)
            })
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let text = match parse(&cut, &source) {
            Ok(new) if gone.line > 0 && new.len() + 1 == db.len() && new.get(name).is_none() => cut,
            _ => {
                let mut all = HEADER.to_string();
                for e in db.entries().iter().filter(|e| e.name != name) {
                    all.push_str(&e.render());
                }
                all
            }
        };
        parse(&text, &source)?;
        Ok((text, gone))
    })
}

fn expiry_text(e: &TokenEntry, now: i64) -> String {
    match e.expires {
        None => "never".into(),
        Some(t) if now >= t => format!("{} (expired)", format_time(t)),
        Some(t) => format_time(t),
    }
}

fn cap_list(e: &TokenEntry) -> Option<Vec<String>> {
    e.cap
        .as_ref()
        .map(|c| c.iter().map(ToString::to_string).collect())
}

/// `purser token list` as text: one block per token. Never the digest.
pub fn list_text(entries: &[TokenEntry], now: i64) -> String {
    if entries.is_empty() {
        return "no machine tokens\n".into();
    }
    let mut out = String::new();
    for e in entries {
        let cap = match cap_list(e) {
            Some(c) if c.is_empty() => "(nothing)".to_string(),
            Some(c) => c.join(" "),
            None => "(none: the policy decides)".into(),
        };
        out.push_str(&format!(
            "{}\n  account: {}\n  groups: {}\n  scopes: {cap}\n  created: {}\n  expires: {}\n",
            e.name,
            e.account,
            if e.groups.is_empty() {
                "-".to_string()
            } else {
                e.groups.join(", ")
            },
            if e.created.is_empty() {
                "-"
            } else {
                &e.created
            },
            expiry_text(e, now),
        ));
        if !e.description.is_empty() {
            out.push_str(&format!("  description: {}\n", e.description));
        }
    }
    out
}

/// `purser token list --format json`: an array of objects. Never the digest.
pub fn list_json(entries: &[TokenEntry], now: i64) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "account": e.account,
                    "groups": e.groups,
                    "scopes": cap_list(e),
                    "created": e.created,
                    "expires": e.expires.map(format_time),
                    "expired": e.is_expired(now),
                    "description": e.description,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> CreateSpec {
        CreateSpec {
            name: name.into(),
            scopes: vec!["repository:ci/**:pull,push".into()],
            expires: Some(Duration::from_secs(90 * 86_400)),
            ..CreateSpec::default()
        }
    }

    #[test]
    fn create_list_revoke_keep_the_file_loadable_and_its_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        let now = 1_800_000_000;
        let a = create(&path, &spec("ci-app"), now).unwrap();
        assert!(purser_authn::tokens::secret_is_valid(&a.secret));
        assert_eq!(a.entry.expires, Some(now + 90 * 86_400));
        let mut b = spec("deploy");
        b.expires = None;
        b.scopes.clear();
        b.account = Some("robots".into());
        create(&path, &b, now).unwrap();
        create(&path, &spec("third"), now).unwrap();
        let dup = create(&path, &spec("ci-app"), now).err().unwrap();
        assert!(dup.to_string().contains("exists already"), "{dup}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Machine tokens"));
        assert!(!text.contains(&a.secret));

        let all = list(&path).unwrap();
        assert_eq!(all.len(), 3);
        let shown = list_text(&all, now);
        assert!(shown.contains("deploy\n  account: robots") && shown.contains("expires: never"));
        let json = list_json(&all, now + 91 * 86_400);
        assert_eq!(json[0]["expired"], true);
        assert_eq!(json[1]["scopes"], Value::Null);
        assert!(!shown.contains(&secret_sha256(&a.secret)));
        assert!(!json.to_string().contains(&secret_sha256(&a.secret)));

        assert_eq!(revoke(&path, "deploy").unwrap().account, "robots");
        let left: Vec<String> = list(&path).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(left, ["ci-app", "third"]);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("# Machine tokens"));
        assert!(revoke(&path, "deploy").is_err());

        // A file that does not load is never written over.
        std::fs::write(&path, "- name: [\n").unwrap();
        assert!(create(&path, &spec("x"), now).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "- name: [\n");
        // Bad input is refused before anything is written.
        let mut bad = spec("y");
        bad.scopes = vec!["repository:${account}/**:pull".into()];
        assert!(create(&dir.path().join("other.yaml"), &bad, now).is_err());
        assert!(!dir.path().join("other.yaml").exists());
    }

    #[test]
    fn a_flow_style_file_is_rewritten_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        std::fs::write(&path, "[]\n").unwrap();
        create(&path, &spec("a"), 1).unwrap();
        create(&path, &spec("b"), 1).unwrap();
        assert_eq!(list(&path).unwrap().len(), 2);
    }
}
