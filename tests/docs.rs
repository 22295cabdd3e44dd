//! Docs that cannot lie: every fenced block of README.md and docs/*.md is run here, run by a
//! named end-to-end test, or marked as not runnable with the reason.
//!
//! A block's mark is an HTML comment on the line just before its fence (GitHub shows nothing):
//!
//! | mark | what this file does with the block |
//! | --- | --- |
//! | `<!-- test: config -->` | saves it as `purser.yaml` in a fresh folder of stock files (below); `purser check-config` must pass |
//! | `<!-- test: policy -->` | a policy: with the next block marked `test: cases`, `purser policy test` must pass them all; alone, `check-config` must load it |
//! | `<!-- test: cases -->` | the cases of the policy block just before |
//! | `<!-- test: file NAME -->` | saves it as `NAME` in the page's scratch folder, for the sessions after it |
//! | `<!-- test: session -->` | `$ ` lines are run by `sh` in the page's scratch folder, with `purser` on `PATH`; the lines after each are its expected output (stdout and stderr), `...` at a line's end standing for the rest of the line |
//! | `<!-- test: htgroup -->` | an htgroup file: served by purser with the policy block after it, every member name gets that policy's grant and nothing else does |
//! | `<!-- tested by tests/NAME.rs -->` | that test runs the block; it must exist and name this page |
//! | `<!-- not tested: REASON -->` | nothing; the reason must be given |
//!
//! Sessions use a shell of their own rather than trycmd: the docs show pipes, redirections,
//! `&&` and `\` continuations, which trycmd does not run (it executes one program per line, no
//! shell). Expected output is compared by snapbox, with its `[..]` wildcard.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use purser_testkit::*;
use serde_json::json;

/// One fenced block of a Markdown file.
#[derive(Debug)]
struct Block {
    /// `FILE:LINE` of the opening fence.
    at: String,
    info: String,
    body: String,
    /// The text of the HTML comment on the line before the fence, trimmed.
    mark: Option<String>,
}

fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir("docs")
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

fn blocks(page: &Path) -> Vec<Block> {
    let text = fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if let Some(info) = line.strip_prefix("```") {
            let fence_indent = lines[i].len() - line.len();
            let mark = i
                .checked_sub(1)
                .map(|k| lines[k].trim())
                .and_then(|l| l.strip_prefix("<!--"))
                .and_then(|l| l.strip_suffix("-->"))
                .map(|l| l.trim().to_string());
            let mut body = String::new();
            let mut j = i + 1;
            while j < lines.len() && !lines[j].trim_start().starts_with("```") {
                let l = lines[j];
                body.push_str(l.get(fence_indent..).unwrap_or(l.trim_start()));
                body.push('\n');
                j += 1;
            }
            assert!(
                j < lines.len(),
                "{}:{}: unclosed fence",
                page.display(),
                i + 1
            );
            out.push(Block {
                at: format!("{}:{}", page.display(), i + 1),
                info: info.trim().to_string(),
                body,
                mark,
            });
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// A folder with `purser` on the PATH of the commands run in it.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("purser-docs-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// A folder holding the files the docs' configs name: an htpasswd and htgroup file, a
    /// policy, LDAP CA certificates and password files.
    fn stock() -> Scratch {
        let s = Scratch::new();
        let d = s.path();
        fs::write(
            d.join("users.htpasswd"),
            format!("alice:{}\n", bcrypt_hash("alice-secret")),
        )
        .unwrap();
        fs::write(d.join("users.htgroup"), "developers: alice\n").unwrap();
        fs::write(d.join("policy.yaml"), "rules: []\n").unwrap();
        fs::write(d.join("tokens.yaml"), "").unwrap();
        let out = s.sh("purser keygen --alg es256 --out ca");
        assert!(out.0, "keygen for the stock CA: {}", out.1);
        for ca in ["ldap-ca.pem", "corp-root-ca.pem"] {
            fs::copy(d.join("ca/signing.crt"), d.join(ca)).unwrap();
        }
        for pw in ["ldap-password", "ad-password"] {
            fs::write(d.join(pw), "service secret\n").unwrap();
        }
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `script` with `sh -c`; returns success and stdout then stderr.
    fn sh(&self, script: &str) -> (bool, String) {
        let bin_dir = Path::new(purser_bin()).parent().expect("bin dir");
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("exec 2>&1\n{script}"))
            .current_dir(self.path())
            .env("PATH", path)
            .env_remove("RUST_LOG");
        for (k, _) in std::env::vars() {
            if k.starts_with("PURSER_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd.output().expect("run sh");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    }
}

/// The commands of a session and the output shown after each.
fn session(body: &str) -> Vec<(String, String)> {
    let mut steps: Vec<(String, String)> = Vec::new();
    let mut continuing = false;
    for line in body.lines() {
        if continuing {
            let (cmd, _) = steps.last_mut().expect("a command");
            cmd.push('\n');
            cmd.push_str(line);
            continuing = line.ends_with('\\');
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push((cmd.to_string(), String::new()));
            continuing = cmd.ends_with('\\');
        } else {
            let (_, out) = steps.last_mut().expect("output before any `$ ` command");
            // The docs write `...` for "and so on"; snapbox's wildcard within a line is `[..]`.
            match line.strip_suffix("...") {
                Some(head) => out.push_str(&format!("{head}[..]")),
                None => out.push_str(line),
            }
            out.push('\n');
        }
    }
    steps
}

fn run_session(scratch: &Scratch, b: &Block) {
    let steps = session(&b.body);
    assert!(!steps.is_empty(), "{}: a session without `$ ` lines", b.at);
    for (cmd, want) in steps {
        let (_, got) = scratch.sh(&cmd);
        let result = std::panic::catch_unwind(|| {
            snapbox::assert_data_eq!(got.clone(), snapbox::Data::text(want.clone()));
        });
        assert!(
            result.is_ok(),
            "{}: `{cmd}` printed:\n{got}\nwhere the docs show:\n{want}",
            b.at
        );
    }
}

fn check_config(b: &Block) {
    let s = Scratch::stock();
    fs::write(s.path().join("purser.yaml"), &b.body).unwrap();
    let (ok, out) = s.sh("purser check-config --config purser.yaml");
    assert!(
        ok,
        "{}: purser check-config refuses the block:\n{out}",
        b.at
    );
}

fn policy_test(policy: &Block, cases: Option<&Block>) {
    let s = Scratch::new();
    fs::write(s.path().join("policy.yaml"), &policy.body).unwrap();
    fs::write(
        s.path().join("purser.yaml"),
        "authz:\n  policy_file: policy.yaml\n",
    )
    .unwrap();
    let (ok, out) = match cases {
        Some(c) => {
            fs::write(s.path().join("cases.yaml"), &c.body).unwrap();
            let (ok, out) = s.sh("purser policy test --config purser.yaml cases.yaml");
            assert!(
                out.contains(" passed, 0 failed"),
                "{}: {} of its cases fail:\n{out}",
                policy.at,
                c.at
            );
            (ok, out)
        }
        None => s.sh("purser check-config --config purser.yaml"),
    };
    assert!(ok, "{}: {out}", policy.at);
}

/// The htgroup block, served: every name on a member line gets the policy's grant on
/// `team/app`, and a user whose name is a word of the block but no member gets nothing.
fn htgroup(b: &Block, policy: &Block) {
    let mut members = Vec::new();
    let mut words = Vec::new();
    for line in b.body.lines() {
        let line = line.trim();
        words.extend(
            line.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_string),
        );
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (_, names) = line.split_once(':').expect("group: members");
        members.extend(names.split_whitespace().map(str::to_string));
    }
    words.sort();
    words.dedup();
    let mut htpasswd = String::new();
    for w in &words {
        htpasswd.push_str(&format!("{w}:{}\n", bcrypt_hash("pw")));
    }
    let mut c = base_config();
    set_path(&mut c, "authn.order", json!(["htpasswd"]));
    set_path(
        &mut c,
        "authn.htpasswd",
        json!({ "file": "users.htpasswd", "groups_file": "users.htgroup" }),
    );
    set_path(&mut c, "authz.policy_file", json!("policy.yaml"));
    let policy_body = policy
        .body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let p = Purser::start(
        c,
        &[
            ("users.htpasswd", &htpasswd),
            ("users.htgroup", &b.body),
            ("policy.yaml", &policy_body),
        ],
    );
    for w in &words {
        let token = p.token_for((w, "pw"), &["repository:team/app:pull,push"]);
        let access = purser_testkit::policy::access_of(&token);
        let got = access
            .get("repository:team/app")
            .cloned()
            .unwrap_or_default();
        if members.contains(w) && ["alice", "bob", "carol"].contains(&w.as_str()) {
            assert_eq!(got, ["pull", "push"], "{}: member {w}", b.at);
        } else if !["alice", "bob", "carol"].contains(&w.as_str()) {
            assert!(
                got.is_empty(),
                "{}: `{w}`, a word of the block that names no user, is made a member (granted {got:?}): \
                 htgroup has no comments after members",
                b.at
            );
        }
    }
}

#[test]
fn every_fenced_block_is_tested_or_marked_with_a_reason() {
    let mut unmarked = Vec::new();
    let mut failed = Vec::new();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for page in pages() {
        let page_name = page.display().to_string();
        let blocks = blocks(&page);
        let scratch = Scratch::new();
        let mut i = 0;
        while i < blocks.len() {
            let b = &blocks[i];
            let next = blocks.get(i + 1);
            let kind = match b.mark.as_deref() {
                None => {
                    unmarked.push(format!(
                        "{}: a ```{} block neither tested nor marked `<!-- not tested: REASON -->`",
                        b.at, b.info
                    ));
                    i += 1;
                    continue;
                }
                Some(m) => m.to_string(),
            };
            let mut skip_next = false;
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let Some(reason) = kind.strip_prefix("not tested:") {
                    assert!(
                        reason.trim().len() >= 10,
                        "{}: `not tested` needs a reason",
                        b.at
                    );
                } else if kind == "not tested" {
                    panic!("{}: `not tested` needs a reason", b.at);
                } else if let Some(test) = kind.strip_prefix("tested by ") {
                    let test = test.trim();
                    let text = fs::read_to_string(test)
                        .unwrap_or_else(|e| panic!("{}: tested by {test}: {e}", b.at));
                    assert!(
                        text.contains(&page_name),
                        "{}: {test} does not name {page_name}",
                        b.at
                    );
                } else if kind == "test: config" {
                    check_config(b);
                } else if kind == "test: policy" {
                    let cases = next.filter(|n| n.mark.as_deref() == Some("test: cases"));
                    policy_test(b, cases);
                    skip_next = cases.is_some();
                } else if let Some(name) = kind.strip_prefix("test: file ") {
                    let path = scratch.path().join(name.trim());
                    if let Some(dir) = path.parent() {
                        fs::create_dir_all(dir).unwrap();
                    }
                    fs::write(path, &b.body).unwrap();
                } else if kind == "test: session" {
                    run_session(&scratch, b);
                } else if kind == "test: htgroup" {
                    let policy = next.expect("a policy block after the htgroup block");
                    htgroup(b, policy);
                } else {
                    panic!("{}: unknown mark `{kind}`", b.at);
                }
            }));
            if let Err(e) = ran {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed.push(format!("{}: {msg}", b.at));
            }
            if skip_next {
                *counts.entry("test: cases".into()).or_default() += 1;
                i += 1;
            }
            *counts
                .entry(kind.split(':').next().unwrap_or("").to_string())
                .or_default() += 1;
            i += 1;
        }
    }
    println!("blocks by mark: {counts:?}");
    assert!(unmarked.is_empty(), "\n{}", unmarked.join("\n"));
    assert!(
        failed.is_empty(),
        "blocks that fail:\n{}",
        failed.join("\n")
    );
}

/// configuration.md: an empty file means every default, and the defaults need only the policy
/// file beside the config: `check-config` names it while it is missing, and passes once it is
/// there (an empty policy is a valid one: no rules, nothing granted).
#[test]
fn an_empty_config_file_is_every_default_as_configuration_md_says() {
    let doc = fs::read_to_string("docs/configuration.md").unwrap();
    assert!(doc.contains("means every default"));
    let s = Scratch::new();
    fs::write(s.path().join("empty.yaml"), "").unwrap();
    let (ok, out) = s.sh("purser check-config --config empty.yaml");
    assert!(!ok, "check-config passed without the policy file:\n{out}");
    assert!(out.contains("authz.policy_file"), "{out}");
    fs::write(s.path().join("policy.yaml"), "").unwrap();
    let (ok, out) = s.sh("purser check-config --config empty.yaml");
    assert!(ok, "check-config on an empty file beside a policy:\n{out}");
}

/// The quickstart's starter policy lets anonymous callers read `public/**`: its config must turn
/// anonymous access on, and so must scripts/demo's.
#[test]
fn the_quickstart_and_the_demo_turn_anonymous_access_on_for_their_public_rule() {
    let quickstart = fs::read_to_string("docs/quickstart.md").unwrap();
    let config = blocks(Path::new("docs/quickstart.md"))
        .into_iter()
        .find(|b| b.body.starts_with("server:"))
        .expect("the quickstart's purser.yaml");
    assert!(quickstart.contains("public read, anonymous too"));
    assert!(
        config.body.contains("anonymous: true"),
        "{}: the policy promises anonymous pulls of public/**, the config refuses them",
        config.at
    );
    let demo = fs::read_to_string("scripts/demo").unwrap();
    assert!(
        demo.contains("public read, anonymous too") && demo.contains("anonymous: true"),
        "scripts/demo promises anonymous pulls of public/** without turning anonymous access on"
    );
}

/// Registry 3.x never accepts a libtrust kid, with a certificate or a jwks file alike, and a
/// jwks file saved before switching `key_id` carries the old kid: the README must not offer the
/// jwks file as an alternative to `key_id: thumbprint`.
#[test]
fn readme_gives_the_same_registry_3_advice_as_operations_md() {
    let readme = fs::read_to_string("README.md").unwrap();
    assert!(
        !readme.contains("or give 3.x purser's"),
        "README.md offers a jwks file instead of key_id: thumbprint"
    );
    assert!(readme.contains("never accepts the libtrust id"));
    let quickstart = fs::read_to_string("docs/quickstart.md").unwrap();
    assert!(
        !quickstart.contains("Instead of (or besides) the\ncertificate"),
        "quickstart.md offers a jwks file instead of key_id: thumbprint"
    );
}

/// POST errors carry the distribution `errors` array beside RFC 6749's fields, and the docs
/// say so.
#[test]
fn post_errors_have_the_errors_array_the_docs_describe() {
    let mut c = base_config();
    set_path(
        &mut c,
        "authn.static.users",
        json!({ "alice": { "password_hash": bcrypt_hash("right") } }),
    );
    let p = Purser::start(c, &[]);
    let r = Http::post(&p.token_url())
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wrong"),
            ("service", SERVICE),
        ])
        .send()
        .expect("POST");
    let v = r.json();
    assert!(
        v["error"].is_string() && v["errors"][0]["message"].is_string(),
        "{v}"
    );
    let compat = fs::read_to_string("docs/compatibility.md").unwrap();
    assert!(
        !compat.contains("would let docker print it cleanly"),
        "compatibility.md says POST errors lack the `errors` array"
    );
    let arch = fs::read_to_string("docs/architecture.md").unwrap();
    assert!(
        !arch.contains("RFC 6749 for POST)"),
        "architecture.md says POST errors are RFC 6749 only"
    );
}

/// A bind password from the environment beside a `bind_password_file` in the file: the error
/// says how to unset the file, and doing so works.
#[test]
fn bind_password_set_twice_says_how_to_unset_the_file() {
    let s = Scratch::stock();
    fs::write(
        s.path().join("purser.yaml"),
        "authn:\n  order: [ldap]\n  ldap:\n    urls: [\"ldap://127.0.0.1:389\"]\n    bind_dn: \"cn=purser,dc=example,dc=org\"\n    bind_password_file: ldap-password\n    user_base: \"dc=example,dc=org\"\n",
    )
    .unwrap();
    let (ok, out) = s.sh("purser check-config --config purser.yaml > /dev/null");
    assert!(ok, "{out}");
    let (ok, out) = s.sh(
        "PURSER_AUTHN__LDAP__BIND_PASSWORD=x purser check-config --config purser.yaml > /dev/null",
    );
    assert!(!ok);
    assert!(
        out.contains("PURSER_AUTHN__LDAP__BIND_PASSWORD_FILE=\"\""),
        "the error does not say how to unset the file:\n{out}"
    );
    assert!(!out.contains("=x"), "the secret is echoed: {out}");
    let (ok, out) = s.sh(
        "PURSER_AUTHN__LDAP__BIND_PASSWORD=x PURSER_AUTHN__LDAP__BIND_PASSWORD_FILE= purser check-config --config purser.yaml > /dev/null",
    );
    assert!(ok, "unsetting the file as the error says: {out}");
}

/// A purser that generated its key lists the generated certificate as the key's `x5c` in its
/// JWKS (tokens still carry none unless `token.certificate_file` is set).
#[test]
fn jwks_of_a_generated_key_has_the_generated_certificate_as_x5c() {
    let mut c = base_config();
    set_path(&mut c, "token.generate_key", json!(true));
    let p = Purser::start(c, &[]);
    let r = Http::get(&format!("{}/.well-known/jwks.json", p.base_url()))
        .send()
        .expect("GET jwks");
    assert_eq!(r.status, 200);
    let jwks = r.json();
    let x5c = jwks["keys"][0]["x5c"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no x5c in the JWKS of a generated key: {jwks}"));
    let pem = fs::read_to_string(p.cert_file()).expect("the generated certificate");
    let der_b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(x5c, der_b64, "x5c[0] is not {}", p.cert_file().display());
}
