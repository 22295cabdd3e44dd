//! Machine tokens end to end: tokens made with `purser token create`, used by docker, ctr,
//! podman and skopeo through the distribution registry, capped below what the policy grants,
//! expiring and revoked while a client is logged in; `purser revoke --account` for a person's
//! identity token; twenty concurrent creates; a malformed tokens file keeping the last good one.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use purser_testkit::clients::*;
use purser_testkit::*;
use serde_json::{json, Value};

/// The policy grants the robots' account everything: only the tokens' caps hold them back.
const MACHINE_POLICY: &str = r#"rules:
  - name: robots may do anything
    match: { account: robot }
    actions: ["*"]
  - name: alice owns alice
    match: { account: alice, name: "alice/**" }
    actions: [pull, push, delete]
  - name: public read
    match: { name: "public/**" }
    actions: [pull]
"#;
const CAP: &str = "repository:ci/app/**:pull,push";
/// How long a change of the tokens or revocations file may take to reach the server.
const TAKES_EFFECT: Duration = Duration::from_secs(2);

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn purser(args: &[&str]) -> (bool, String, String) {
    let out = run_purser(args, "");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `purser token create --file FILE --name NAME ...`: the secret, checked for its shape.
fn create(file: &Path, name: &str, extra: &[&str]) -> String {
    let f = file.display().to_string();
    let mut args = vec!["token", "create", "--file", &f, "--name", name];
    args.extend(extra);
    let (ok, out, err) = purser(&args);
    assert!(ok, "token create {name}: {err}");
    let secret = out.trim().to_string();
    assert_eq!(
        out.lines().count(),
        1,
        "stdout holds the secret only: {out}"
    );
    assert!(
        secret.len() == 79
            && secret.starts_with("purser_")
            && secret[7..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{secret}"
    );
    assert!(err.contains(name) && !err.contains(&secret), "{err}");
    secret
}

fn metric(p: &Purser, prefix: &str, labels: &[(&str, &str)]) -> f64 {
    let r = Http::get(&p.metrics_url()).send().expect("GET /metrics");
    parse_metrics(&r.text())
        .iter()
        .filter(|(k, _)| {
            k.starts_with(prefix)
                && labels
                    .iter()
                    .all(|(n, v)| k.contains(&format!("{n}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

fn reloads(p: &Purser, source: &str, outcome: &str) -> f64 {
    metric(
        p,
        "purser_reloads_total{",
        &[("source", source), ("outcome", outcome)],
    )
}

fn status_for(p: &Purser, user: (&str, &str)) -> u16 {
    p.token_get(&[("service", SERVICE)], Some(user)).status
}

fn htpasswd_line(user: (&str, &str)) -> String {
    let bin = require_on_path("htpasswd", "apache2-utils");
    let out = Command::new(bin)
        .args(["-n", "-b", "-B", "-C", "4", user.0, user.1])
        .output()
        .expect("run htpasswd");
    assert!(out.status.success());
    format!("{}\n", String::from_utf8_lossy(&out.stdout).trim_end())
}

fn said(o: &Outcome) -> String {
    format!("{}{}", o.stdout, o.stderr)
}

/// purser (tokens, then alice in an htpasswd file), the registry trusting it, and the tokens
/// made before the start.
struct World {
    stack: Stack,
    tokens: PathBuf,
    revocations: PathBuf,
    ci: String,
}

impl World {
    fn start() -> World {
        let scratch = tempfile::tempdir().unwrap();
        let seed = scratch.path().join("tokens.yaml");
        let ci = create(
            &seed,
            "ci-app",
            &[
                "--account",
                "robot",
                "--scope",
                CAP,
                "--description",
                "CI of app",
            ],
        );
        let mut config = base_config();
        set_path(
            &mut config,
            "authn.order",
            json!(["tokens", "htpasswd", "static"]),
        );
        set_path(&mut config, "authn.tokens.file", json!("tokens.yaml"));
        set_path(&mut config, "authn.htpasswd.file", json!("users.htpasswd"));
        set_path(
            &mut config,
            "token.revocations_file",
            json!("revocations.yaml"),
        );
        set_path(&mut config, "log.format", json!("json"));
        let stack = Stack::start_with(
            config,
            &[
                ("policy.yaml", MACHINE_POLICY),
                ("users.htpasswd", &htpasswd_line(ALICE)),
                ("tokens.yaml", &fs::read_to_string(&seed).unwrap()),
            ],
            None,
        );
        let tokens = stack.purser.dir().join("tokens.yaml");
        let revocations = stack.purser.dir().join("revocations.yaml");
        World {
            stack,
            tokens,
            revocations,
            ci,
        }
    }

    fn host(&self) -> String {
        self.stack.registry.host()
    }
    fn image_ref(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host())
    }
    fn logs(&self) -> String {
        self.stack.logs()
    }
    fn ok(&self, o: Outcome, what: &str) -> Outcome {
        assert!(o.ok, "{what} failed:\n{}\n{}", said(&o), self.logs());
        o
    }
    fn fails(&self, o: Outcome, what: &str) -> Outcome {
        assert!(!o.ok, "{what} should have failed:\n{}", said(&o));
        println!("{what}: refused as expected: {}", said(&o).trim());
        o
    }

    /// Adds a token to the live file and waits until the server accepts it.
    fn create_live(&self, name: &str, extra: &[&str]) -> String {
        let secret = create(&self.tokens, name, extra);
        wait_until(
            Duration::from_secs(20),
            &format!("token {name} loaded"),
            || status_for(&self.stack.purser, (name, &secret)) == 200,
            || self.stack.purser.log_tail(),
        );
        secret
    }

    /// The expiry `purser token list --format json` shows for `name`.
    fn listed_expiry(&self, name: &str) -> String {
        let f = self.tokens.display().to_string();
        let (ok, out, err) = purser(&["token", "list", "--file", &f, "--format", "json"]);
        assert!(ok, "{err}");
        let list: Value = serde_json::from_str(&out).unwrap();
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {out}"));
        assert!(entry.get("sha256").is_none(), "the digest is never listed");
        entry["expires"].as_str().unwrap().to_string()
    }
}

fn docker_rootfs(d: &Dockerd) -> PathBuf {
    let rootfs = d.dir().join(format!("rootfs-{}.tar", random_hex(4)));
    fs::write(
        &rootfs,
        tar_archive(&[("hello.txt", random_hex(32).as_bytes())]),
    )
    .unwrap();
    rootfs
}

/// Login, push and pull within the cap, a push outside it refused; expiry and revocation of
/// a logged-in client; `purser revoke --account` for alice's identity token.
fn docker_part(w: &World, d: &Dockerd) {
    let cfg = d.new_config("machine");
    let run = |args: &[&str]| d.cli(&cfg, args);
    let host = w.host();
    let rootfs = docker_rootfs(d);
    let app = w.image_ref("ci/app/web:1");
    w.ok(
        run(&["import", &rootfs.display().to_string(), &app]),
        "docker import",
    );

    // A typo in the secret is refused (the checksum), the right secret logs in.
    let typo = format!(
        "{}{}",
        &w.ci[..78],
        if w.ci.ends_with('0') { "1" } else { "0" }
    );
    w.fails(
        run(&["login", "-u", "ci-app", "-p", &typo, &host]),
        "docker login with a typo",
    );
    w.ok(
        run(&["login", "-u", "ci-app", "-p", &w.ci, &host]),
        "docker login with a machine token",
    );
    w.ok(run(&["push", &app]), "docker push within the cap");
    w.ok(run(&["rmi", &app]), "docker rmi");
    w.ok(run(&["pull", &app]), "docker pull within the cap");
    // The policy grants the account everything; the cap does not.
    let outside = w.image_ref("prod/app:1");
    w.ok(run(&["tag", &app, &outside]), "docker tag");
    w.fails(run(&["push", &outside]), "docker push outside the cap");
    assert!(!w.stack.exists("prod/app:1"));
    let audit = w.stack.purser.audit_records();
    assert!(
        audit.iter().any(|r| r["machine_token"] == "ci-app"
            && r["account"] == "robot"
            && r["backend"] == "tokens"),
        "no audit record names the token: {audit:?}"
    );

    // Revocation while logged in: the next push is refused within 2 s of the command.
    let (ok, _, err) = purser(&[
        "token",
        "revoke",
        "--file",
        &w.tokens.display().to_string(),
        "ci-app",
    ]);
    assert!(ok, "{err}");
    let revoked = Instant::now();
    wait_until(
        TAKES_EFFECT,
        "the removed token refused",
        || status_for(&w.stack.purser, ("ci-app", &w.ci)) == 401,
        || w.stack.purser.log_tail(),
    );
    println!("token revoke took effect after {:?}", revoked.elapsed());
    let next = w.image_ref("ci/app/web:2");
    w.ok(run(&["tag", &app, &next]), "docker tag");
    w.fails(
        run(&["push", &next]),
        "docker push after the token was removed",
    );
    assert!(!w.stack.exists("ci/app/web:2"));

    // Expiry: a client logged in with a short-lived token loses access without a new login.
    let brief = w.create_live(
        "brief",
        &["--account", "robot", "--scope", CAP, "--expires", "12s"],
    );
    let cfg2 = d.new_config("brief");
    let run2 = |args: &[&str]| d.cli(&cfg2, args);
    w.ok(
        run2(&["login", "-u", "brief", "-p", &brief, &host]),
        "docker login, short-lived token",
    );
    let short = w.image_ref("ci/app/brief:1");
    w.ok(run2(&["tag", &app, &short]), "docker tag");
    w.ok(run2(&["push", &short]), "docker push before expiry");
    wait_until(
        Duration::from_secs(30),
        "the short-lived token expired",
        || status_for(&w.stack.purser, ("brief", &brief)) == 401,
        || w.stack.purser.log_tail(),
    );
    let late = w.image_ref("ci/app/brief:2");
    w.ok(run2(&["tag", &app, &late]), "docker tag");
    w.fails(
        run2(&["push", &late]),
        "docker push after expiry, no new login",
    );
    assert!(!w.stack.exists("ci/app/brief:2"));

    // `purser revoke --account alice`: her identity token stops, a new login works.
    let cfg3 = d.new_config("alice");
    let run3 = |args: &[&str]| d.cli(&cfg3, args);
    w.ok(
        run3(&["login", "-u", ALICE.0, "-p", ALICE.1, &host]),
        "docker login as alice",
    );
    let mine = w.image_ref("alice/app:1");
    w.ok(run3(&["tag", &app, &mine]), "docker tag");
    w.ok(run3(&["push", &mine]), "docker push as alice");
    let before = reloads(&w.stack.purser, "revocations", "success");
    let config = w.stack.purser.dir().join("purser.yaml");
    let (ok, _, err) = purser(&[
        "revoke",
        "--config",
        &config.display().to_string(),
        "--account",
        "alice",
    ]);
    assert!(ok, "{err}");
    let when = now_secs();
    assert!(w.revocations.exists());
    wait_until(
        TAKES_EFFECT,
        "the revocation loaded",
        || reloads(&w.stack.purser, "revocations", "success") > before,
        || w.stack.purser.log_tail(),
    );
    let mine2 = w.image_ref("alice/app:2");
    w.ok(run3(&["tag", &app, &mine2]), "docker tag");
    w.fails(
        run3(&["push", &mine2]),
        "docker push with alice's revoked identity token",
    );
    assert!(!w.stack.exists("alice/app:2"));
    // Revocation is to the second: a login in the revocation's own second would be revoked
    // too, so the new login waits for the clock to leave it (a bounded poll of the clock).
    wait_until(
        Duration::from_secs(3),
        "the next second",
        || now_secs() > when,
        String::new,
    );
    assert_eq!(
        status_for(&w.stack.purser, ALICE),
        200,
        "a password login is not revoked"
    );
    w.ok(
        run3(&["login", "-u", ALICE.0, "-p", ALICE.1, &host]),
        "docker login as alice again",
    );
    w.ok(
        run3(&["push", &mine2]),
        "docker push as alice after a new login",
    );
}

/// `tar` of an OCI layout.
fn oci_archive(image: &OciImage, dest: &Path) -> PathBuf {
    let tar = dest.join(format!("oci-{}.tar", random_hex(4)));
    let out = Command::new("tar")
        .arg("-C")
        .arg(image.path())
        .arg("-cf")
        .arg(&tar)
        .args(["oci-layout", "index.json", "blobs"])
        .output()
        .unwrap();
    assert!(out.status.success());
    tar
}

fn ctr_part(w: &World, c: &Containerd, name: &str, secret: &str) {
    let run = |args: &[&str]| c.ctr("machine", args);
    let image = OciImage::build(1);
    let tar = oci_archive(&image, c.dir());
    let base = w.image_ref("ci/app/ctr");
    w.ok(
        run(&[
            "images",
            "import",
            "--no-unpack",
            "--base-name",
            &base,
            &tar.display().to_string(),
        ]),
        "ctr images import",
    );
    let app = format!("{base}:1");
    w.ok(
        run(&["images", "tag", &format!("{base}:latest"), &app]),
        "ctr tag",
    );
    let user = format!("{name}:{secret}");
    w.ok(
        run(&["images", "push", "--plain-http", "--user", &user, &app]),
        "ctr push within the cap",
    );
    w.ok(
        c.ctr(
            "machine-back",
            &[
                "images",
                "pull",
                "--plain-http",
                "--snapshotter",
                "native",
                "--user",
                &user,
                &app,
            ],
        ),
        "ctr pull within the cap",
    );
    let outside = w.image_ref("prod/ctr:1");
    w.ok(run(&["images", "tag", &app, &outside]), "ctr tag");
    w.fails(
        run(&["images", "push", "--plain-http", "--user", &user, &outside]),
        "ctr push outside the cap",
    );
    assert!(!w.stack.exists("prod/ctr:1"));
}

fn podman_part(w: &World, p: &Containers, name: &str, secret: &str) {
    let policy = p.policy_args();
    let policy: Vec<&str> = policy.iter().map(String::as_str).collect();
    let auth = p.dir().join("machine-auth.json").display().to_string();
    let image = OciImage::build(1);
    let tar = oci_archive(&image, p.dir());
    let id = image.config.hex().to_string();
    w.ok(
        p.run(&[
            "login",
            "--tls-verify=false",
            "--authfile",
            &auth,
            "-u",
            name,
            "-p",
            secret,
            &w.host(),
        ]),
        "podman login with a machine token",
    );
    w.ok(
        p.run(&["load", "-i", &tar.display().to_string()]),
        "podman load",
    );
    let push = |target: &str| {
        let dest = format!("docker://{}", w.image_ref(target));
        let mut args: Vec<&str> = vec!["push", "--tls-verify=false", "--authfile", &auth];
        args.extend(&policy);
        args.push(&id);
        args.push(&dest);
        p.run(&args)
    };
    w.ok(push("ci/app/podman:1"), "podman push within the cap");
    w.ok(p.run(&["rmi", "-f", &id]), "podman rmi");
    let app = w.image_ref("ci/app/podman:1");
    let mut pull: Vec<&str> = vec!["pull", "--tls-verify=false", "--authfile", &auth];
    pull.extend(&policy);
    pull.push(&app);
    w.ok(p.run(&pull), "podman pull within the cap");
    w.fails(push("prod/podman:1"), "podman push outside the cap");
    assert!(!w.stack.exists("prod/podman:1"));
}

fn skopeo_part(w: &World, name: &str, secret: &str) {
    let image = OciImage::build(1);
    w.stack
        .push_ok(&image, "ci/app/skopeo:1", Creds::User(name, secret));
    w.stack
        .pull_identical(&image, "ci/app/skopeo:1", Creds::User(name, secret));
    let refused = w.stack.skopeo.push(
        &image,
        &w.stack.registry,
        "prod/skopeo:1",
        Creds::User(name, secret),
    );
    assert!(!refused.ok, "skopeo pushed outside the cap");
    assert!(!w.stack.exists("prod/skopeo:1"));
}

#[test]
fn machine_tokens_with_docker_ctr_podman_and_skopeo() {
    let guard = HostGuard::new();
    let base = tempfile::Builder::new()
        .prefix("machine-e2e-")
        .tempdir()
        .unwrap();
    {
        let w = World::start();
        // The 3-second token over plain HTTP: works, then is refused naming its expiry.
        let three = w.create_live("three", &["--expires", "3s"]);
        let expiry = w.listed_expiry("three");
        wait_until(
            Duration::from_secs(10),
            "the 3 s token expired",
            || status_for(&w.stack.purser, ("three", &three)) == 401,
            || w.stack.purser.log_tail(),
        );
        let r = w
            .stack
            .purser
            .token_get(&[("service", SERVICE)], Some(("three", &three)));
        assert!(
            r.text().contains(&format!("expired at {expiry}")),
            "{}",
            r.text()
        );

        // One more token for the clients that do not log in twice.
        let robot = w.create_live("robot-ci", &["--account", "robot", "--scope", CAP]);
        let mut dockerd = Dockerd::start(base.path());
        let mut containerd = Containerd::start(base.path());
        let podman = Containers::podman(base.path());
        ctr_part(&w, &containerd, "robot-ci", &robot);
        podman_part(&w, &podman, "robot-ci", &robot);
        skopeo_part(&w, "robot-ci", &robot);
        docker_part(&w, &dockerd);

        let m = Http::get(&w.stack.purser.metrics_url())
            .send()
            .unwrap()
            .text();
        assert!(
            m.contains("purser_machine_tokens{state=\"expired\"} 2"),
            "{m}"
        );
        assert!(m.contains("purser_machine_token_last_used_timestamp_seconds{name=\"robot-ci\"}"));
        assert!(m.contains("purser_machine_token_expiry_timestamp_seconds{name=\"robot-ci\"}"));
        let logs = w.stack.purser.log_text();
        for secret in [&w.ci, &robot, &three] {
            assert!(
                !logs.contains(secret.as_str()) && !m.contains(secret.as_str()),
                "a secret leaked"
            );
        }
        dockerd.stop();
        containerd.stop();
    }
    guard.remove_outside_writes();
    let base_path = base.path().to_path_buf();
    guard.assert_nothing_left(&base_path);
    base.close().unwrap();
}

#[test]
fn twenty_concurrent_creates_and_a_malformed_file_keeps_the_last_good_tokens() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("tokens.yaml");
    let f = file.display().to_string();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let f = f.clone();
            std::thread::spawn(move || {
                let out = Command::new(purser_bin())
                    .args([
                        "token",
                        "create",
                        "--file",
                        &f,
                        "--name",
                        &format!("bot-{i}"),
                        "--expires",
                        "never",
                    ])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                (
                    format!("bot-{i}"),
                    String::from_utf8_lossy(&out.stdout).trim().to_string(),
                )
            })
        })
        .collect();
    let made: Vec<(String, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let (ok, out, err) = purser(&["token", "list", "--file", &f, "--format", "json"]);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 20, "{out}");
    // A duplicate name is refused and changes nothing.
    let (ok, _, err) = purser(&["token", "create", "--file", &f, "--name", "bot-3"]);
    assert!(!ok && err.contains("exists already"), "{err}");

    let mut config = base_config();
    set_path(&mut config, "authn.order", json!(["tokens"]));
    set_path(&mut config, "authn.tokens.file", json!("tokens.yaml"));
    let p = Purser::start(
        config,
        &[("tokens.yaml", &fs::read_to_string(&file).unwrap())],
    );
    for (name, secret) in &made {
        assert_eq!(status_for(&p, (name, secret)), 200, "{name}");
    }
    // A malformed edit is refused with its line; the last good tokens keep working.
    let live = p.dir().join("tokens.yaml");
    let good = fs::read_to_string(&live).unwrap();
    let failures = reloads(&p, "tokens", "failure");
    let broken = good.replacen("  expires: null\n", "  expires: someday\n", 1);
    let line = broken.lines().position(|l| l.contains("someday")).unwrap() + 1;
    fs::write(&live, &broken).unwrap();
    wait_until(
        Duration::from_secs(20),
        "the malformed file refused",
        || reloads(&p, "tokens", "failure") > failures,
        || p.log_tail(),
    );
    // The first entry holds the bad value; the error names the entry's line.
    let entry_line = broken.lines().position(|l| l.starts_with("- ")).unwrap() + 1;
    assert!(entry_line < line);
    assert!(
        p.log_text()
            .contains(&format!("tokens.yaml:{entry_line}: token 1: expires")),
        "the error names the line:\n{}",
        p.log_tail()
    );
    for (name, secret) in &made {
        assert_eq!(
            status_for(&p, (name, secret)),
            200,
            "{name} after a bad edit"
        );
    }
    // check-config reports it too, with the line, and never a digest.
    let cfg = p.dir().join("purser.yaml").display().to_string();
    let (ok, out, err) = purser(&["check-config", "--config", &cfg]);
    assert!(!ok, "{out}{err}");
    assert!(err.contains(&format!("tokens.yaml:{entry_line}:")), "{err}");
    for l in good.lines().filter(|l| l.contains("sha256:")) {
        let digest = l.trim().trim_start_matches("sha256: ");
        assert!(!out.contains(digest) && !err.contains(digest));
    }
}
