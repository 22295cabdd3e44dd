//! The compatibility suite: docker, containerd (ctr), podman, buildah and skopeo against the
//! distribution registry and purser, with an RS256 key and with an ES256 key.
//!
//! For every client: login where it has one (right and wrong password), push, pull back and
//! compare, anonymous pull of a public repository, a push the policy refuses, and the client's
//! refresh-token path. docker additionally proves that its stored identity token drives pushes
//! by POST refresh grants and that a policy edit and a removed htpasswd user reach it without a
//! new login. The daemons are private to the run; at the end the run checks that no process,
//! mount or file of theirs is left outside its temporary folders.
//!
//! The suite prints each client's version and what each sent to purser (GET or POST requests),
//! the facts docs/compatibility.md is written from.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use purser_testkit::clients::*;
use purser_testkit::*;
use serde_json::{json, Value};

/// carol lives in the htpasswd file (so she can be removed while purser runs) and is the
/// account the docker client logs in with.
const CAROL: (&str, &str) = ("carol", "carol-secret");
/// The message purser's 401 carries, which clients show to their user.
const WRONG_PASSWORD_MESSAGE: &str = "invalid username or password";
/// How long a policy or htpasswd edit may take to be reloaded.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);

const SUITE_POLICY: &str = r#"rules:
  - name: admins
    match: { groups: [admins] }
    actions: ["*"]
  - name: carol writes team
    match: { account: carol, name: "team/**" }
    actions: [pull, push]
  - name: bob reads alice
    match: { account: bob, name: "alice/**" }
    actions: [pull]
  - name: alice owns alice
    match: { account: alice, name: "alice/**" }
    actions: [pull, push, delete]
  - name: own namespace
    match: { account: "*", name: "${account}/**" }
    actions: [pull, push, delete]
  - name: public read, anonymous too
    match: { name: "public/**" }
    actions: [pull]
"#;

/// carol's line for an htpasswd file, bcrypt at the lowest cost, made by `htpasswd -n`.
fn htpasswd_line(user: (&str, &str)) -> String {
    let bin = require_on_path("htpasswd", "apache2-utils");
    let out = Command::new(bin)
        .args(["-n", "-b", "-B", "-C", "4", user.0, user.1])
        .output()
        .expect("run htpasswd");
    assert!(out.status.success(), "htpasswd -n failed");
    format!("{}\n", String::from_utf8_lossy(&out.stdout).trim_end())
}

/// purser (static users plus carol in an htpasswd file, the suite policy, `alg`'s key), the
/// registry trusting it, skopeo, and a public image pushed by the admin.
struct World {
    stack: Stack,
    alg: &'static str,
    public: OciImage,
}

impl World {
    fn start(alg: &'static str) -> World {
        let mut config = base_config();
        set_path(&mut config, "authn.order", json!(["static", "htpasswd"]));
        set_path(&mut config, "authn.htpasswd.file", json!("users.htpasswd"));
        match alg {
            "rs256" => {}
            "es256" => {
                set_path(&mut config, "token.generate_key", json!(true));
                set_path(&mut config, "token.generate_alg", json!("es256"));
            }
            other => panic!("no key set-up for {other}"),
        }
        let line = htpasswd_line(CAROL);
        let stack = Stack::start_with(
            config,
            &[("policy.yaml", SUITE_POLICY), ("users.htpasswd", &line)],
            None,
        );
        let public = OciImage::build(1);
        stack.push_ok(&public, "public/base:1", Creds::of(ADMIN));
        World { stack, alg, public }
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

    /// Sum of `purser_token_requests_total` for `method` and `outcome`.
    fn requests(&self, method: &str, outcome: &str) -> f64 {
        metric_sum(
            &self.stack.purser,
            "purser_token_requests_total{",
            &[("method", method), ("outcome", outcome)],
        )
    }
    fn counts(&self) -> Counts {
        Counts {
            get: self.requests("GET", "issued"),
            post: self.requests("POST", "issued"),
            get_401: self.requests("GET", "unauthorized"),
            post_401: self.requests("POST", "unauthorized"),
        }
    }

    /// The manifest the registry holds for `repo_tag`, read as admin.
    fn manifest(&self, repo_tag: &str) -> Value {
        let out = self
            .stack
            .skopeo
            .inspect_raw(&self.stack.registry.reference(repo_tag), Creds::of(ADMIN))
            .expect_ok("inspect --raw as admin");
        serde_json::from_str(&out.stdout).expect("manifest JSON")
    }

    /// A refresh token for `user`, from a GET with `offline_token=true`.
    fn refresh_token(&self, user: (&str, &str)) -> String {
        let r = self.stack.purser.token_get(
            &[
                ("service", SERVICE),
                ("account", user.0),
                ("client_id", "e2e"),
                ("offline_token", "true"),
            ],
            Some(user),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["refresh_token"]
            .as_str()
            .expect("refresh_token in the answer")
            .to_string()
    }

    /// Replaces the policy and waits until purser has reloaded it.
    fn edit_policy(&self, text: &str) {
        let before = self.reloads("policy");
        fs::write(self.stack.purser.dir().join("policy.yaml"), text).expect("write policy");
        wait_until(
            RELOAD_TIMEOUT,
            "policy reload",
            || self.reloads("policy") > before,
            || self.stack.purser.log_tail(),
        );
    }

    fn reloads(&self, source: &str) -> f64 {
        metric_sum(
            &self.stack.purser,
            "purser_reloads_total{",
            &[("source", source), ("outcome", "success")],
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Counts {
    get: f64,
    post: f64,
    get_401: f64,
    post_401: f64,
}

impl Counts {
    fn since(self, before: Counts) -> String {
        format!(
            "GET issued {}, POST issued {}, GET 401 {}, POST 401 {}",
            self.get - before.get,
            self.post - before.post,
            self.get_401 - before.get_401,
            self.post_401 - before.post_401
        )
    }
}

fn metric_sum(p: &Purser, prefix: &str, labels: &[(&str, &str)]) -> f64 {
    let r = Http::get(&p.metrics_url()).send().expect("GET /metrics");
    assert_eq!(r.status, 200);
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

fn wait_for_status(p: &Purser, user: (&str, &str), want: u16) {
    wait_until(
        RELOAD_TIMEOUT,
        &format!("purser answering {want} for {}", user.0),
        || p.token_get(&[("service", SERVICE)], Some(user)).status == want,
        || p.log_tail(),
    );
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Both streams of a client run, for assertions on what the user sees.
fn said(o: &Outcome) -> String {
    format!("{}{}", o.stdout, o.stderr)
}

fn ok(o: Outcome, what: &str, w: &World) -> Outcome {
    assert!(
        o.ok,
        "[{}] {what} failed:\nstdout: {}\nstderr: {}\n{}",
        w.alg,
        o.stdout,
        o.stderr,
        w.logs()
    );
    o
}

fn fails(o: Outcome, what: &str, w: &World) -> Outcome {
    assert!(
        !o.ok,
        "[{}] {what} should have failed:\nstdout: {}\nstderr: {}",
        w.alg, o.stdout, o.stderr
    );
    println!(
        "[{}] {what}: refused as expected: {}",
        w.alg,
        said(&o).trim()
    );
    o
}

/// `tar` of an OCI layout (the file names without `./`).
fn oci_archive(image: &OciImage, dest: &Path) -> PathBuf {
    let tar = dest.join(format!("oci-{}.tar", random_hex(4)));
    let out = Command::new("tar")
        .arg("-C")
        .arg(image.path())
        .arg("-cf")
        .arg(&tar)
        .args(["oci-layout", "index.json", "blobs"])
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tar
}

/// Writes a containers auth file holding only an identity token for `host`.
fn identity_authfile(dir: &Path, host: &str, user: &str, token: &str) -> PathBuf {
    let path = dir.join(format!("identity-{}.json", random_hex(4)));
    let entry = json!({
        "auth": data_encoding::BASE64.encode(format!("{user}:").as_bytes()),
        "identitytoken": token,
    });
    let mut auths = serde_json::Map::new();
    auths.insert(host.to_string(), entry);
    fs::write(&path, json!({ "auths": auths }).to_string()).expect("write auth file");
    path
}

// ---------------------------------------------------------------------------------------------
// docker

fn docker_suite(w: &World, d: &Dockerd) {
    let cfg = d.new_config(w.alg);
    let run = |args: &[&str]| d.cli(&cfg, args);
    let host = w.host();

    // Login: a wrong password is refused with purser's message in docker's own output.
    let bad = fails(
        run(&["login", "-u", CAROL.0, "-p", "wrong", &host]),
        "docker login with a wrong password",
        w,
    );
    assert!(
        said(&bad).contains(WRONG_PASSWORD_MESSAGE),
        "docker does not show purser's message: {}",
        said(&bad)
    );
    let before = w.counts();
    ok(
        run(&["login", "-u", CAROL.0, "-p", CAROL.1, &host]),
        "docker login",
        w,
    );
    let stored: Value =
        serde_json::from_slice(&fs::read(cfg.join("config.json")).expect("docker config.json"))
            .expect("config.json is JSON");
    let entry = &stored["auths"][&host];
    assert!(
        entry["identitytoken"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "docker login stored no identity token: {stored}"
    );
    println!("[{}] docker login: {}", w.alg, w.counts().since(before));

    // Push: an image made without a pull, pushed with the identity token only (POST grants).
    let rootfs = d.dir().join(format!("rootfs-{}.tar", random_hex(4)));
    let content = random_hex(64);
    fs::write(&rootfs, tar_archive(&[("hello.txt", content.as_bytes())])).expect("write rootfs");
    let app = w.image_ref("carol/app:1");
    let id = ok(
        run(&["import", &path_str(&rootfs), &app]),
        "docker import",
        w,
    )
    .stdout
    .trim()
    .to_string();
    let before = w.counts();
    ok(run(&["push", &app]), "docker push", w);
    let after = w.counts();
    println!("[{}] docker push: {}", w.alg, after.since(before));
    assert!(
        after.post > before.post,
        "docker push sent no POST refresh grant"
    );
    assert_eq!(after.get, before.get, "docker push fell back to GET");

    // Pull back and compare: same image id (the config digest).
    ok(run(&["rmi", &app]), "docker rmi", w);
    ok(run(&["pull", &app]), "docker pull", w);
    let pulled = ok(
        run(&["image", "inspect", "--format", "{{.Id}}", &app]),
        "docker image inspect",
        w,
    );
    assert_eq!(pulled.stdout.trim(), id, "docker pulled a different image");
    let manifest = w.manifest("carol/app:1");
    assert_eq!(manifest["config"]["digest"].as_str(), Some(id.as_str()));

    // Push refused by policy: carol may not write alice/.
    let other = w.image_ref("alice/from-docker:1");
    ok(run(&["tag", &app, &other]), "docker tag", w);
    fails(run(&["push", &other]), "docker push to alice/ as carol", w);
    assert!(!w.stack.exists("alice/from-docker:1"));

    // Anonymous pull of a public repository (a client without any login).
    let anon = d.new_config("anonymous");
    let public = w.image_ref("public/base:1");
    let before = w.counts();
    ok(d.cli(&anon, &["pull", &public]), "anonymous docker pull", w);
    println!(
        "[{}] docker anonymous pull: {}",
        w.alg,
        w.counts().since(before)
    );
    let public_id = ok(
        d.cli(&anon, &["image", "inspect", "--format", "{{.Id}}", &public]),
        "docker image inspect",
        w,
    );
    assert_eq!(public_id.stdout.trim(), w.public.config.digest);

    // A policy edit reaches the logged-in client without a new login.
    let team = w.image_ref("team/app:1");
    ok(run(&["tag", &app, &team]), "docker tag", w);
    ok(run(&["push", &team]), "docker push to team/", w);
    w.edit_policy(&SUITE_POLICY.replace(
        "name: \"team/**\" }\n    actions: [pull, push]",
        "name: \"team/**\" }\n    actions: [pull]",
    ));
    let team2 = w.image_ref("team/app:2");
    ok(run(&["tag", &app, &team2]), "docker tag", w);
    fails(
        run(&["push", &team2]),
        "docker push to team/ after the policy took push away",
        w,
    );
    assert!(!w.stack.exists("team/app:2"));
    ok(run(&["rmi", &team]), "docker rmi", w);
    ok(
        run(&["pull", &team]),
        "docker pull of team/ (still allowed)",
        w,
    );
    w.edit_policy(SUITE_POLICY);

    // A removed user loses access at the next refresh grant, without a new login.
    let htfile = w.stack.purser.dir().join("users.htpasswd");
    let before = w.counts();
    htpasswd(&["-D", &path_str(&htfile), CAROL.0]);
    wait_for_status(&w.stack.purser, CAROL, 401);
    ok(run(&["rmi", &app]), "docker rmi", w);
    fails(
        run(&["pull", &app]),
        "docker pull after carol was removed",
        w,
    );
    let after = w.counts();
    assert!(
        after.post_401 > before.post_401,
        "the refresh grant of a removed user was not refused: {}",
        after.since(before)
    );
    // Put carol back for the clients that follow.
    htpasswd(&["-b", "-B", "-C", "4", &path_str(&htfile), CAROL.0, CAROL.1]);
    wait_for_status(&w.stack.purser, CAROL, 200);
}

// ---------------------------------------------------------------------------------------------
// containerd

fn ctr_suite(w: &World, c: &Containerd) {
    let ns = format!("suite-{}", w.alg);
    let run = |args: &[&str]| c.ctr(&ns, args);
    let image = OciImage::build(2);
    let tar = oci_archive(&image, c.dir());
    let base = w.image_ref("alice/ctr");
    ok(
        run(&[
            "images",
            "import",
            "--no-unpack",
            "--base-name",
            &base,
            &path_str(&tar),
        ]),
        "ctr images import",
        w,
    );
    let app = format!("{base}:1");
    ok(
        run(&["images", "tag", &format!("{base}:latest"), &app]),
        "ctr images tag",
        w,
    );
    let user = format!("{}:{}", ALICE.0, ALICE.1);
    let before = w.counts();
    ok(
        run(&["images", "push", "--plain-http", "--user", &user, &app]),
        "ctr push --user",
        w,
    );
    let after = w.counts();
    println!("[{}] ctr push --user: {}", w.alg, after.since(before));
    assert!(
        after.post > before.post,
        "ctr did not use the POST password grant"
    );
    assert_eq!(
        w.manifest("alice/ctr:1"),
        serde_json::from_slice::<Value>(&image.manifest.bytes).expect("manifest")
    );

    // Pull back into another namespace and compare every blob.
    let back = format!("back-{}", w.alg);
    ok(
        c.ctr(
            &back,
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
        "ctr pull --user",
        w,
    );
    let listed = ok(c.ctr(&back, &["images", "ls"]), "ctr images ls", w);
    assert!(
        listed.stdout.contains(&image.manifest.digest),
        "pulled image has another digest: {}",
        listed.stdout
    );
    // containerd verifies every blob against its digest as it fetches it.
    let content = ok(c.ctr(&back, &["content", "ls", "-q"]), "ctr content ls", w);
    for blob in image.layers.iter().chain([&image.config]) {
        assert!(
            content.stdout.lines().any(|l| l.trim() == blob.digest),
            "blob {} was not pulled: {}",
            blob.digest,
            content.stdout
        );
    }

    // Wrong password, refused push, anonymous pull.
    let bad = fails(
        run(&[
            "images",
            "pull",
            "--plain-http",
            "--user",
            &format!("{}:wrong", ALICE.0),
            &app,
        ]),
        "ctr pull with a wrong password",
        w,
    );
    assert!(said(&bad).contains("401"), "{}", said(&bad));
    let bob = format!("{}:{}", BOB.0, BOB.1);
    let refused = format!("{base}:bob");
    ok(run(&["images", "tag", &app, &refused]), "ctr images tag", w);
    fails(
        run(&["images", "push", "--plain-http", "--user", &bob, &refused]),
        "ctr push to alice/ as bob",
        w,
    );
    assert!(!w.stack.exists("alice/ctr:bob"));
    let before = w.counts();
    ok(
        run(&[
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "native",
            &w.image_ref("public/base:1"),
        ]),
        "anonymous ctr pull",
        w,
    );
    println!(
        "[{}] ctr anonymous pull: {}",
        w.alg,
        w.counts().since(before)
    );

    // --refresh: a refresh token alone drives the push (POST refresh grant).
    let rt = w.refresh_token(ALICE);
    let refreshed = format!("{base}:2");
    ok(
        run(&["images", "tag", &app, &refreshed]),
        "ctr images tag",
        w,
    );
    let before = w.counts();
    ok(
        run(&[
            "images",
            "push",
            "--plain-http",
            "--refresh",
            &rt,
            &refreshed,
        ]),
        "ctr push --refresh",
        w,
    );
    let after = w.counts();
    println!("[{}] ctr push --refresh: {}", w.alg, after.since(before));
    assert!(after.post > before.post);
    assert!(w.stack.exists("alice/ctr:2"));
}

// ---------------------------------------------------------------------------------------------
// podman and buildah (containers/image, like skopeo)

fn containers_suite(w: &World, tool: &Containers) {
    let name = if tool.is_podman() {
        "podman"
    } else {
        "buildah"
    };
    let policy = tool.policy_args();
    let policy: Vec<&str> = policy.iter().map(String::as_str).collect();
    let auth = tool.dir().join(format!("auth-{}.json", w.alg));
    let auth = path_str(&auth);
    let host = w.host();
    let image = OciImage::build(2);
    let tar = oci_archive(&image, tool.dir());
    let id = image.config.hex().to_string();

    // Login, wrong then right.
    let bad = fails(
        tool.run(&[
            "login",
            "--tls-verify=false",
            "--authfile",
            &auth,
            "-u",
            ALICE.0,
            "-p",
            "wrong",
            &host,
        ]),
        &format!("{name} login with a wrong password"),
        w,
    );
    assert!(
        said(&bad).contains("invalid username/password"),
        "{}",
        said(&bad)
    );
    ok(
        tool.run(&[
            "login",
            "--tls-verify=false",
            "--authfile",
            &auth,
            "-u",
            ALICE.0,
            "-p",
            ALICE.1,
            &host,
        ]),
        &format!("{name} login"),
        w,
    );

    // Load the image and push it.
    let loaded = if tool.is_podman() {
        tool.run(&["load", "-i", &path_str(&tar)])
    } else {
        let mut args = vec!["pull"];
        args.extend(&policy);
        let src = format!("oci-archive:{}", path_str(&tar));
        args.push(&src);
        tool.run(&args)
    };
    ok(loaded, &format!("{name} load"), w);
    let app = w.image_ref(&format!("alice/{name}:1"));
    ok(tool.run(&["tag", &id, &app]), &format!("{name} tag"), w);
    let before = w.counts();
    let mut push: Vec<&str> = vec!["push", "--tls-verify=false", "--authfile", &auth];
    push.extend(&policy);
    let dest = format!("docker://{app}");
    let mut push_app = push.clone();
    push_app.extend([app.as_str(), dest.as_str()]);
    ok(tool.run(&push_app), &format!("{name} push"), w);
    println!("[{}] {name} push: {}", w.alg, w.counts().since(before));
    let manifest = w.manifest(&format!("alice/{name}:1"));
    assert_eq!(
        manifest["config"]["digest"].as_str(),
        Some(image.config.digest.as_str())
    );

    // Pull back after removing the local copy: the same image id (config digest).
    ok(tool.run(&["rmi", "-f", &id]), &format!("{name} rmi"), w);
    // With the image gone locally, a wrong password on a pull shows purser's message in the
    // client's own output.
    let creds = format!("{}:wrong", ALICE.0);
    let mut bad_pull: Vec<&str> = vec!["pull", "--tls-verify=false", "--creds", &creds];
    bad_pull.extend(&policy);
    bad_pull.push(&app);
    let bad = fails(
        tool.run(&bad_pull),
        &format!("{name} pull with a wrong password"),
        w,
    );
    assert!(
        said(&bad).contains(WRONG_PASSWORD_MESSAGE),
        "{name} does not show purser's message: {}",
        said(&bad)
    );

    let mut pull: Vec<&str> = vec!["pull", "--tls-verify=false", "--authfile", &auth];
    pull.extend(&policy);
    let mut pull_app = pull.clone();
    pull_app.push(&app);
    ok(tool.run(&pull_app), &format!("{name} pull"), w);
    let inspect_args: Vec<&str> = if tool.is_podman() {
        vec!["image", "inspect", "--format", "{{.Id}}", &app]
    } else {
        vec![
            "inspect",
            "--type",
            "image",
            "--format",
            "{{.FromImageID}}",
            &app,
        ]
    };
    let got = ok(tool.run(&inspect_args), &format!("{name} inspect"), w);
    assert_eq!(got.stdout.trim(), id, "{name} pulled another image");

    // Push refused by policy (bob reads alice/ only).
    let bob_auth = path_str(&tool.dir().join(format!("bob-{}.json", w.alg)));
    ok(
        tool.run(&[
            "login",
            "--tls-verify=false",
            "--authfile",
            &bob_auth,
            "-u",
            BOB.0,
            "-p",
            BOB.1,
            &host,
        ]),
        &format!("{name} login as bob"),
        w,
    );
    let refused = w.image_ref(&format!("alice/{name}:bob"));
    let refused_dest = format!("docker://{refused}");
    let mut bob_push: Vec<&str> = vec!["push", "--tls-verify=false", "--authfile", &bob_auth];
    bob_push.extend(&policy);
    bob_push.extend([app.as_str(), refused_dest.as_str()]);
    fails(
        tool.run(&bob_push),
        &format!("{name} push to alice/ as bob"),
        w,
    );
    assert!(!w.stack.exists(&format!("alice/{name}:bob")));

    // Anonymous pull of a public repository.
    let empty = path_str(&tool.dir().join(format!("empty-{}.json", w.alg)));
    fs::write(&empty, "{}").expect("write empty auth file");
    let public = w.image_ref("public/base:1");
    let mut anon: Vec<&str> = vec!["pull", "--tls-verify=false", "--authfile", &empty];
    anon.extend(&policy);
    anon.push(&public);
    let before = w.counts();
    ok(tool.run(&anon), &format!("anonymous {name} pull"), w);
    println!(
        "[{}] {name} anonymous pull: {}",
        w.alg,
        w.counts().since(before)
    );

    // Identity token in the auth file: POST refresh grants.
    let rt = w.refresh_token(ALICE);
    let idfile = identity_authfile(tool.dir(), &host, ALICE.0, &rt);
    let idfile = path_str(&idfile);
    let target = format!("docker://{}", w.image_ref(&format!("alice/{name}:2")));
    let mut id_push: Vec<&str> = vec!["push", "--tls-verify=false", "--authfile", &idfile];
    id_push.extend(&policy);
    id_push.extend([app.as_str(), target.as_str()]);
    let before = w.counts();
    ok(
        tool.run(&id_push),
        &format!("{name} push with an identity token"),
        w,
    );
    let after = w.counts();
    println!(
        "[{}] {name} push with an identity token: {}",
        w.alg,
        after.since(before)
    );
    assert!(
        after.post > before.post,
        "{name} sent no POST refresh grant"
    );
    assert_eq!(after.get, before.get, "{name} fell back to GET");
    assert!(w.stack.exists(&format!("alice/{name}:2")));
}

// ---------------------------------------------------------------------------------------------
// skopeo

fn skopeo_suite(w: &World) {
    let s = &w.stack.skopeo;
    let host = w.host();
    let auth = s.scratch("login").join("auth.json");
    let auth_s = path_str(&auth);
    let bad = fails(
        s.run(&[
            "login".into(),
            "--tls-verify=false".into(),
            "--authfile".into(),
            auth_s.clone(),
            "-u".into(),
            ALICE.0.into(),
            "-p".into(),
            "wrong".into(),
            host.clone(),
        ]),
        "skopeo login with a wrong password",
        w,
    );
    assert!(
        said(&bad).contains("invalid username/password"),
        "{}",
        said(&bad)
    );
    s.run(&[
        "login".into(),
        "--tls-verify=false".into(),
        "--authfile".into(),
        auth_s,
        "-u".into(),
        ALICE.0.into(),
        "-p".into(),
        ALICE.1.into(),
        host.clone(),
    ])
    .expect_ok("skopeo login");
    let image = OciImage::build(2);
    let before = w.counts();
    w.stack
        .push_ok(&image, "alice/skopeo:1", Creds::AuthFile(&auth));
    println!("[{}] skopeo push: {}", w.alg, w.counts().since(before));
    w.stack
        .pull_identical(&image, "alice/skopeo:1", Creds::AuthFile(&auth));
    let bad = s.push(
        &image,
        &w.stack.registry,
        "alice/skopeo:bad",
        Creds::User(ALICE.0, "wrong"),
    );
    assert!(
        !bad.ok && bad.stderr.contains(WRONG_PASSWORD_MESSAGE),
        "{}",
        bad.stderr
    );
    let refused = s.push(
        &image,
        &w.stack.registry,
        "alice/skopeo:bob",
        Creds::of(BOB),
    );
    assert!(!refused.ok, "bob pushed to alice/");
    assert!(!w.stack.exists("alice/skopeo:bob"));
    w.stack
        .pull_identical(&w.public, "public/base:1", Creds::None);
    let rt = w.refresh_token(ALICE);
    let idfile = s.identity_token_authfile(&host, ALICE.0, &rt);
    let before = w.counts();
    w.stack
        .push_ok(&image, "alice/skopeo:2", Creds::AuthFile(&idfile));
    let after = w.counts();
    println!(
        "[{}] skopeo push with an identity token: {}",
        w.alg,
        after.since(before)
    );
    assert!(after.post > before.post);
    assert_eq!(after.get, before.get);
}

fn print_versions(d: &Dockerd, c: &Containerd, podman: &Containers, buildah: &Containers) {
    let cfg = d.new_config("versions");
    let docker = d.cli(&cfg, &["version", "--format", "{{.Server.Version}}"]);
    let ctr = c.ctr("versions", &["version"]);
    let pv = podman.run(&["--version"]);
    let bv = buildah.run(&["--version"]);
    let sv = Command::new(require_on_path("skopeo", "skopeo"))
        .arg("--version")
        .output()
        .expect("skopeo --version");
    let rv = Command::new(DOCKER_REGISTRY)
        .arg("--version")
        .output()
        .expect("docker-registry --version");
    println!("versions:");
    println!("  docker engine {}", docker.stdout.trim());
    println!("  {}", ctr.stdout.trim().replace('\n', " / "));
    println!("  {}", pv.stdout.trim());
    println!("  {}", bv.stdout.trim());
    println!("  {}", String::from_utf8_lossy(&sv.stdout).trim());
    println!("  {}", String::from_utf8_lossy(&rv.stdout).trim());
}

#[test]
fn every_client_against_registry_and_purser_with_rs256_and_es256_keys() {
    let guard = HostGuard::new();
    let base = tempfile::Builder::new()
        .prefix("clients-e2e-")
        .tempdir()
        .expect("tempdir");
    {
        let mut dockerd = Dockerd::start(base.path());
        let mut containerd = Containerd::start(base.path());
        let podman = Containers::podman(base.path());
        let buildah = Containers::buildah(base.path());
        print_versions(&dockerd, &containerd, &podman, &buildah);
        for alg in ["rs256", "es256"] {
            let world = World::start(alg);
            let kid_alg =
                Jwt::decode(&world.stack.purser.token_for(ALICE, &[])).header["alg"].clone();
            println!("[{alg}] tokens signed with {kid_alg}");
            docker_suite(&world, &dockerd);
            ctr_suite(&world, &containerd);
            containers_suite(&world, &podman);
            containers_suite(&world, &buildah);
            skopeo_suite(&world);
        }
        dockerd.stop();
        containerd.stop();
    }
    guard.remove_outside_writes();
    let base_path = base.path().to_path_buf();
    guard.assert_nothing_left(&base_path);
    base.close().expect("remove the run's folder");
}
