//! docs/quickstart.md, run word for word: its blocks are read from the page at test time and
//! run with only ports and folders changed (`/etc/purser` becomes a scratch folder, the example
//! hosts become 127.0.0.1 and free ports), against Debian's registry package configured as the
//! page says. skopeo then pushes and pulls as the page's user, and pulls `public/**`
//! anonymously, as the page's policy promises.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use purser_testkit::policy::{access_of, write_by_rename};
use purser_testkit::*;

const PAGE: &str = "docs/quickstart.md";
const DEBIAN_REGISTRY_CONFIG: &str = "/etc/docker/registry/config.yml";
const ALICE_PASSWORD: &str = "alice-quickstart";

/// The fenced blocks of the page, in order: (info string, body).
fn blocks() -> Vec<(String, String)> {
    let text = fs::read_to_string(PAGE).expect("docs/quickstart.md");
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        match &mut current {
            None => {
                if let Some(info) = line.trim_start().strip_prefix("```") {
                    current = Some((info.trim().to_string(), String::new()));
                }
            }
            Some(_) if line.trim_start().starts_with("```") => {
                out.push(current.take().expect("block"));
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    out
}

/// The block whose first line starts with `start`.
fn block(blocks: &[(String, String)], start: &str) -> String {
    blocks
        .iter()
        .find(|(_, b)| b.starts_with(start))
        .unwrap_or_else(|| panic!("{PAGE}: no block starting with {start:?}"))
        .1
        .clone()
}

/// The Debian registry config with its top-level `auth:` section removed.
fn without_auth(config: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in config.lines() {
        let top_level = !line.starts_with(' ') && !line.is_empty();
        if top_level {
            skipping = line.starts_with("auth:");
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

struct Local {
    etc: String,
    purser_port: u16,
    registry_port: u16,
}

impl Local {
    /// The page's text with only ports and folders changed.
    fn apply(&self, text: &str) -> String {
        text.replace("/etc/purser", &self.etc)
            .replace(
                "registry.example.org:5000",
                &format!("127.0.0.1:{}", self.registry_port),
            )
            .replace(
                "auth.example.org:5001",
                &format!("127.0.0.1:{}", self.purser_port),
            )
            .replace("0.0.0.0:5001", &format!("127.0.0.1:{}", self.purser_port))
    }
}

fn sh(cwd: &Path, script: &str, stdin: &str, env: &[(&str, &str)]) -> (bool, String) {
    let bin_dir = Path::new(purser_bin()).parent().expect("bin dir");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("HOME", cwd)
        .env("XDG_RUNTIME_DIR", cwd.join("run"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn sh");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin");
    let out = child.wait_with_output().expect("sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A process started by this test, killed on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn registry(config: &Path, cwd: &Path, log: &Path) -> Proc {
    require_program(DOCKER_REGISTRY, "docker-registry");
    let log = fs::File::create(log).expect("registry log");
    Proc(
        Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(config)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", cwd)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry"),
    )
}

#[test]
fn the_quickstart_word_for_word_against_debians_registry() {
    let blocks = blocks();
    let root = tempfile::Builder::new()
        .prefix("purser-quickstart-")
        .tempdir()
        .expect("tempdir");
    let root = root.path();
    let local = Local {
        etc: root.join("etc/purser").display().to_string(),
        purser_port: free_port(),
        registry_port: free_port(),
    };
    fs::create_dir_all(&local.etc).unwrap();
    fs::create_dir_all(root.join("run")).unwrap();
    let etc = Path::new(&local.etc);

    // 1. A signing key.
    let keygen = local.apply(&block(&blocks, "purser keygen"));
    let (ok, out) = sh(root, &keygen, "", &[]);
    assert!(ok, "{keygen}{out}");
    assert!(etc.join("keys/signing.crt").is_file(), "{out}");

    // 2. purser's config, the starter policy, and alice in the htpasswd file as the config's
    // comment says (`htpasswd -B -c users.htpasswd alice`; -b gives the password typed).
    let config = local.apply(&block(&blocks, "server:"));
    fs::write(etc.join("purser.yaml"), &config).unwrap();
    fs::write(etc.join("policy.yaml"), block(&blocks, "rules:")).unwrap();
    assert!(config.contains("htpasswd -B -c users.htpasswd alice"));
    let (ok, out) = sh(
        etc,
        &format!("htpasswd -B -c -b users.htpasswd alice {ALICE_PASSWORD}"),
        "",
        &[],
    );
    assert!(ok, "{out}");

    // Check it offline, then run it (the metrics listener's port is changed too).
    let run = local.apply(&block(&blocks, "purser check-config"));
    let mut lines = run.lines();
    let check = lines.next().expect("check-config line");
    let (ok, out) = sh(root, check, "", &[]);
    assert!(ok, "{check}: {out}");
    let serve = lines.next().expect("serve line");
    assert!(serve.starts_with("purser serve"), "{serve}");
    let metrics = format!("127.0.0.1:{}", free_port());
    let purser_log = root.join("purser.log");
    let log = fs::File::create(&purser_log).unwrap();
    let _purser = Proc(
        Command::new(purser_bin())
            .args(serve.split_whitespace().skip(1))
            .current_dir(root)
            .env("PURSER_METRICS__LISTEN", &metrics)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn purser"),
    );
    let purser_url = format!("http://127.0.0.1:{}", local.purser_port);
    wait_until(
        READY_TIMEOUT,
        "purser's /readyz answering 200",
        || {
            Http::get(&format!("{purser_url}/readyz"))
                .send()
                .is_ok_and(|r| r.status == 200)
        },
        || file_tail(&purser_log, 3000),
    );

    // 3. The registry: Debian's own config.yml with its auth section replaced by the page's.
    let page = fs::read_to_string(PAGE).unwrap();
    assert!(
        page.contains("**replace the whole\n`auth:` section**"),
        "{PAGE} must tell to replace Debian's auth section: pasting token: beside its htpasswd: stops the registry"
    );
    let debian = fs::read_to_string(DEBIAN_REGISTRY_CONFIG).expect(DEBIAN_REGISTRY_CONFIG);
    assert!(debian.contains("auth:\n  htpasswd:"), "{debian}");
    let debian = debian
        .replace(
            "/var/lib/docker-registry",
            &root.join("storage").display().to_string(),
        )
        .replace(
            "addr: :5000",
            &format!("addr: 127.0.0.1:{}", local.registry_port),
        );
    let auth = local.apply(&block(&blocks, "auth:"));
    // Why the page says so: the page's `token:` pasted into Debian's `auth:` section, beside
    // its `htpasswd:`, and the registry refuses to start.
    let both = root.join("both.yml");
    let token_part = auth
        .strip_prefix("auth:\n")
        .expect("the block starts with auth:");
    fs::write(
        &both,
        debian.replacen("auth:\n", &format!("auth:\n{token_part}"), 1),
    )
    .unwrap();
    let mut refused = registry(&both, root, &root.join("both.log"));
    let status = wait_exit(&mut refused.0, Duration::from_secs(30));
    let both_log = fs::read_to_string(root.join("both.log")).unwrap_or_default();
    assert!(
        status.is_some() && both_log.contains("must provide exactly one type"),
        "the registry with two auth sections: {status:?}\n{both_log}"
    );
    let cfg = root.join("config.yml");
    fs::write(&cfg, format!("{}{auth}", without_auth(&debian))).unwrap();
    let registry_log = root.join("registry.log");
    let mut reg = registry(&cfg, root, &registry_log);
    let registry_url = format!("http://127.0.0.1:{}", local.registry_port);
    wait_until(
        READY_TIMEOUT,
        "the registry's /v2/ answering 401",
        || {
            assert!(
                matches!(reg.0.try_wait(), Ok(None)),
                "the registry exited: {}",
                file_tail(&registry_log, 3000)
            );
            Http::get(&format!("{registry_url}/v2/"))
                .send()
                .is_ok_and(|r| r.status == 401)
        },
        || file_tail(&registry_log, 3000),
    );

    // 4. First push, word for word from ./image; the password typed at skopeo's prompt is
    // given on stdin.
    let image = OciImage::build(2);
    let copy = Command::new("cp")
        .arg("-r")
        .arg(image.path())
        .arg(root.join("image"))
        .status()
        .unwrap();
    assert!(copy.success());
    let push = local.apply(&block(&blocks, "skopeo login"));
    for line in push.lines() {
        let (cmd, stdin) = if line.starts_with("skopeo login") {
            (format!("{line} --password-stdin"), ALICE_PASSWORD)
        } else {
            (line.to_string(), "")
        };
        let (ok, out) = sh(root, &cmd, stdin, &[]);
        assert!(
            ok,
            "{cmd}: {out}\n{}\n{}",
            file_tail(&purser_log, 2000),
            file_tail(&registry_log, 2000)
        );
    }

    // Pulled back, it is the same image.
    let host = format!("127.0.0.1:{}", local.registry_port);
    let skopeo = Skopeo::new();
    let pulled = skopeo.scratch("alice-app");
    skopeo
        .copy(
            &format!("docker://{host}/alice/app:1"),
            &format!("dir:{}", pulled.display()),
            Creds::of(("alice", ALICE_PASSWORD)),
            Creds::None,
        )
        .expect_ok("pull alice/app:1");
    image.assert_same_as_dir(&pulled);

    // The policy's "public read, anonymous too": put an image in public/ (a rule added for a
    // moment, then the page's policy again), then pull it without credentials.
    let policy_path = etc.join("policy.yaml");
    let starter = block(&blocks, "rules:");
    let seeding = starter.replacen(
        "rules:\n",
        "rules:\n  - name: seed\n    match: { account: alice, name: \"public/**\" }\n    actions: [pull, push]\n",
        1,
    );
    let alice_push_on_public = || {
        let r = Http::get(&format!("{purser_url}/token"))
            .query(&[
                ("service", "registry.example.org"),
                ("scope", "repository:public/base:push"),
            ])
            .basic("alice", ALICE_PASSWORD)
            .send()
            .expect("token");
        r.status == 200
            && access_of(r.json()["token"].as_str().unwrap_or_default())
                .get("repository:public/base")
                .is_some_and(|a| a.iter().any(|x| x == "push"))
    };
    write_by_rename(&policy_path, &seeding);
    wait_until(
        Duration::from_secs(20),
        "the seeding policy in force",
        alice_push_on_public,
        || file_tail(&purser_log, 2000),
    );
    skopeo
        .copy(
            &image.reference(),
            &format!("docker://{host}/public/base:1"),
            Creds::None,
            Creds::of(("alice", ALICE_PASSWORD)),
        )
        .expect_ok("seed public/base:1");
    write_by_rename(&policy_path, &starter);
    wait_until(
        Duration::from_secs(20),
        "the page's policy in force again",
        || !alice_push_on_public(),
        || file_tail(&purser_log, 2000),
    );
    let anon = skopeo.scratch("public-base");
    let out = skopeo.copy(
        &format!("docker://{host}/public/base:1"),
        &format!("dir:{}", anon.display()),
        Creds::None,
        Creds::None,
    );
    assert!(
        out.ok,
        "an anonymous pull of public/base, which the page's policy allows: {}\n{}",
        out.stderr,
        file_tail(&purser_log, 2000)
    );
    image.assert_same_as_dir(&anon);
    // Anonymous callers still push nothing.
    let out = skopeo.copy(
        &image.reference(),
        &format!("docker://{host}/public/base:2"),
        Creds::None,
        Creds::None,
    );
    assert!(!out.ok, "an anonymous push to public/ succeeded");
    assert!(matches!(reg.0.try_wait(), Ok(None)));
}

fn wait_exit(child: &mut std::process::Child, bound: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    wait_until(
        bound,
        "the registry to stop",
        || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        },
        String::new,
    );
    status
}
