//! End to end with an Apache htpasswd file managed by the real `htpasswd` tool (apache2-utils)
//! while purser runs: live edits, htgroup groups through the real registry, the credential
//! cache, and hostile files. Each test starts its own processes.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use purser_testkit::*;
use serde_json::{json, Value};

/// How long a live edit of the htpasswd file may take to apply (issue 3's promise).
const LIVE_EDIT: Duration = Duration::from_secs(2);
/// Bound for waits that are not part of a promise (a reload failure to be counted).
const SETTLE: Duration = Duration::from_secs(20);

/// One `user:hash` line made by `htpasswd -n -b -B -C COST`, with its newline.
fn bcrypt_line(user: &str, password: &str, cost: u32) -> String {
    let line = htpasswd(&["-n", "-b", "-B", "-C", &cost.to_string(), user, password]);
    format!("{}\n", line.trim_end())
}

/// The e2e config with `static` then `htpasswd` (file `users.htpasswd`, and `users.htgroup`
/// when `groups`).
fn htpasswd_config(groups: bool) -> Value {
    let mut c = base_config();
    set_path(&mut c, "authn.order", json!(["static", "htpasswd"]));
    set_path(&mut c, "authn.htpasswd.file", json!("users.htpasswd"));
    if groups {
        set_path(&mut c, "authn.htpasswd.groups_file", json!("users.htgroup"));
    }
    c
}

fn status(p: &Purser, user: &str, password: &str) -> u16 {
    p.token_get(&[("service", SERVICE)], Some((user, password)))
        .status
}

fn metrics(p: &Purser) -> std::collections::BTreeMap<String, f64> {
    let r = Http::get(&p.metrics_url()).send().expect("GET /metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    parse_metrics(&r.text())
}

fn metric(p: &Purser, key: &str) -> f64 {
    metrics(p).get(key).copied().unwrap_or(0.0)
}

const RELOAD_OK: &str = r#"purser_reloads_total{outcome="success",source="htpasswd"}"#;
const RELOAD_FAILED: &str = r#"purser_reloads_total{outcome="failure",source="htpasswd"}"#;
const RELOAD_AT: &str = r#"purser_reload_last_success_timestamp_seconds{source="htpasswd"}"#;
const CACHE_HITS: &str = r#"purser_authn_cache_hits_total{backend="htpasswd"}"#;

/// Polls until `user`/`password` gets `want` from the token endpoint, within `bound`.
fn wait_status(p: &Purser, user: &str, password: &str, want: u16, bound: Duration) -> Duration {
    let started = Instant::now();
    wait_until(
        bound,
        &format!("token request of {user:?} answering {want}"),
        || status(p, user, password) == want,
        || p.log_tail(),
    );
    started.elapsed()
}

fn assert_no_panic(p: &Purser) {
    let log = p.log_text();
    assert!(!log.contains("panicked"), "purser panicked:\n{log}");
}

#[test]
fn htpasswd_tool_edits_apply_live_and_a_broken_edit_keeps_the_last_good_file() {
    let initial = bcrypt_line("carol", "carol-pw", 4) + &bcrypt_line("dave", "dave-pw", 4);
    let p = Purser::start(htpasswd_config(false), &[("users.htpasswd", &initial)]);
    let file = p.dir().join("users.htpasswd");
    let file_s = file.display().to_string();
    assert_eq!(status(&p, "carol", "carol-pw"), 200, "{}", p.log_tail());
    assert_eq!(status(&p, "erin", "erin-pw"), 401);

    // A user added by the tool gets a token without a restart.
    htpasswd(&["-b", "-B", "-C", "4", &file_s, "erin", "erin-pw"]);
    let took = wait_status(&p, "erin", "erin-pw", 200, LIVE_EDIT);
    println!("htpasswd -b: erin accepted {took:?} after the edit");

    // A user removed by the tool is refused.
    htpasswd(&["-D", &file_s, "dave"]);
    let took = wait_status(&p, "dave", "dave-pw", 401, LIVE_EDIT);
    println!("htpasswd -D: dave refused {took:?} after the edit");
    assert_eq!(status(&p, "carol", "carol-pw"), 200);

    // An edit that breaks the file (a line without ':') is counted and changes nothing.
    let good = fs::read_to_string(&file).expect("read htpasswd");
    let failures = metric(&p, RELOAD_FAILED);
    let frank = bcrypt_line("frank", "frank-pw", 4);
    fs::write(&file, format!("{good}this line has no colon\n{frank}")).expect("write");
    wait_until(
        SETTLE,
        "the broken htpasswd file counted as a failed reload",
        || metric(&p, RELOAD_FAILED) > failures,
        || p.log_tail(),
    );
    assert_eq!(status(&p, "carol", "carol-pw"), 200, "{}", p.log_tail());
    assert_eq!(status(&p, "erin", "erin-pw"), 200, "{}", p.log_tail());
    assert_eq!(
        status(&p, "frank", "frank-pw"),
        401,
        "a user of the broken file was let in"
    );
    assert!(
        p.log_text().contains("the line has no ':'"),
        "the log does not say what is wrong:\n{}",
        p.log_tail()
    );

    // Fixing the file applies it.
    let successes = metric(&p, RELOAD_OK);
    fs::write(&file, format!("{good}{frank}")).expect("write");
    let took = wait_status(&p, "frank", "frank-pw", 200, LIVE_EDIT);
    println!("fixed file: frank accepted {took:?} after the edit");
    assert!(metric(&p, RELOAD_OK) > successes);
    assert_eq!(status(&p, "carol", "carol-pw"), 200);
    assert_no_panic(&p);
}

#[test]
fn htgroup_members_push_to_their_groups_repositories_and_others_cannot() {
    let users = bcrypt_line("carol", "carol-pw", 4) + &bcrypt_line("dave", "dave-pw", 4);
    let groups = "builders: carol\nreaders: dave\n";
    let policy = format!(
        "{POLICY}  - name: builders\n    match: {{ groups: [builders], type: repository, name: \"builders/**\" }}\n    actions: [pull, push]\n"
    );
    let s = Stack::start_with(
        htpasswd_config(true),
        &[
            ("users.htpasswd", &users),
            ("users.htgroup", groups),
            ("policy.yaml", &policy),
        ],
        None,
    );
    let image = OciImage::build(1);
    s.push_ok(&image, "builders/app:1", Creds::User("carol", "carol-pw"));
    s.pull_identical(&image, "builders/app:1", Creds::User("carol", "carol-pw"));

    let out = s.skopeo.push(
        &image,
        &s.registry,
        "builders/app:2",
        Creds::User("dave", "dave-pw"),
    );
    assert!(!out.ok, "dave (not a builder) pushed:\n{}", out.stdout);
    assert!(!s.exists("builders/app:2"), "dave's push left an image");

    // The groups file is live too: dave joins the builders and may push.
    fs::write(
        s.purser.dir().join("users.htgroup"),
        "builders: carol dave\n",
    )
    .expect("write");
    wait_until(
        SETTLE,
        "dave's token granting push after he joined builders",
        || {
            let t = s
                .purser
                .token_for(("dave", "dave-pw"), &["repository:builders/app:pull,push"]);
            Jwt::decode(&t).claims["access"][0]["actions"] == json!(["pull", "push"])
        },
        || s.logs(),
    );
    s.push_ok(&image, "builders/app:2", Creds::User("dave", "dave-pw"));
}

/// An htgroup file has no comments after the members (as in Apache): the line
/// `builders: carol   # several lines`, as an old example of ours had it, makes `#`, `several`
/// and `lines` builders. purser reads it as Apache does, and says so in the log, naming the file
/// and the line, so that the operator sees the user named `several` who may push.
#[test]
fn a_comment_after_htgroup_members_makes_members_and_a_logged_warning() {
    let users = bcrypt_line("carol", "carol-pw", 4) + &bcrypt_line("several", "several-pw", 4);
    let groups = "# who builds\nbuilders: carol   # several lines\n";
    let policy = format!(
        "{POLICY}  - name: builders\n    match: {{ groups: [builders], type: repository, name: \"builders/**\" }}\n    actions: [pull, push]\n"
    );
    let p = Purser::start(
        htpasswd_config(true),
        &[
            ("users.htpasswd", &users),
            ("users.htgroup", groups),
            ("policy.yaml", &policy),
        ],
    );
    let t = p.token_for(
        ("several", "several-pw"),
        &["repository:builders/app:pull,push"],
    );
    assert_eq!(
        Jwt::decode(&t).claims["access"][0]["actions"],
        json!(["pull", "push"]),
        "Apache's reading of the line: `several` is a builder"
    );
    wait_until(
        SETTLE,
        "the htgroup warning naming the file, the line and the members",
        || {
            let log = p.log_text();
            log.lines().any(|l| {
                l.contains("users.htgroup:2: users")
                    && l.contains("several")
                    && l.contains("no comments after members")
            })
        },
        || p.log_tail(),
    );
    assert_no_panic(&p);
}

#[test]
fn credential_cache_spares_the_second_cost_12_bcrypt_and_forgets_a_changed_password() {
    let users = bcrypt_line("grace", "grace-pw-1", 12);
    let p = Purser::start(htpasswd_config(false), &[("users.htpasswd", &users)]);
    let file_s = p.dir().join("users.htpasswd").display().to_string();

    let hits0 = metric(&p, CACHE_HITS);
    let t = Instant::now();
    assert_eq!(status(&p, "grace", "grace-pw-1"), 200, "{}", p.log_tail());
    let first = t.elapsed();
    assert_eq!(
        metric(&p, CACHE_HITS),
        hits0,
        "the first login cannot come from the cache"
    );
    let t = Instant::now();
    assert_eq!(status(&p, "grace", "grace-pw-1"), 200, "{}", p.log_tail());
    let second = t.elapsed();
    assert_eq!(
        metric(&p, CACHE_HITS),
        hits0 + 1.0,
        "the second login was not answered from the cache"
    );
    println!(
        "cost-12 bcrypt login: first {first:?}, second (cached) {second:?}, ratio {:.3}",
        second.as_secs_f64() / first.as_secs_f64()
    );

    // A new password: the old one is refused as soon as the reload is seen. `htpasswd` opens
    // the file for writing once before it hashes (an event, so a reload of the unchanged file)
    // and writes it after: the reload to wait for is one that finished after the last write.
    htpasswd(&["-b", "-B", "-C", "12", &file_s, "grace", "grace-pw-2"]);
    let written = fs::metadata(&file_s)
        .and_then(|m| m.modified())
        .expect("mtime")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    wait_until(
        SETTLE,
        "the htpasswd reload after the password change",
        || metric(&p, RELOAD_AT) > written,
        || p.log_tail(),
    );
    assert_eq!(
        status(&p, "grace", "grace-pw-1"),
        401,
        "the old password still works (served from the cache?)"
    );
    assert_eq!(status(&p, "grace", "grace-pw-2"), 200, "{}", p.log_tail());
    assert_no_panic(&p);
}

#[test]
fn malformed_bcrypt_line_is_skipped_with_its_line_and_a_non_ascii_name_logs_in() {
    let users = String::from("mallory:$2y$05$thisIsNotAValidBcryptHash\n")
        + &bcrypt_line("carol", "carol-pw", 4)
        + &bcrypt_line("jürgen", "pä:ss", 4);
    let p = Purser::start(htpasswd_config(false), &[("users.htpasswd", &users)]);
    assert_eq!(status(&p, "carol", "carol-pw"), 200, "{}", p.log_tail());
    assert_eq!(
        status(&p, "mallory", "$2y$05$thisIsNotAValidBcryptHash"),
        401
    );
    assert_eq!(status(&p, "mallory", ""), 401);
    let log = p.log_text();
    assert!(
        log.contains("users.htpasswd:1") && log.contains("mallory"),
        "the log does not name the bad line and its user:\n{log}"
    );

    let t = p.token_for(("jürgen", "pä:ss"), &[]);
    let jwt = Jwt::decode(&t);
    assert_eq!(jwt.claims["sub"], "jürgen");
    assert_eq!(status(&p, "jürgen", "pä"), 401);
    assert_eq!(status(&p, "jurgen", "pä:ss"), 401);
    assert_no_panic(&p);
}

#[test]
fn truncated_file_serves_its_complete_lines() {
    // The file as a write cut short would leave it: the last hash half written, no newline.
    let dave = bcrypt_line("dave", "dave-pw", 4);
    let cut = &dave[..dave.len() / 2];
    let users = bcrypt_line("carol", "carol-pw", 4) + cut;
    let p = Purser::start(htpasswd_config(false), &[("users.htpasswd", &users)]);
    assert_eq!(status(&p, "carol", "carol-pw"), 200, "{}", p.log_tail());
    assert_eq!(status(&p, "dave", "dave-pw"), 401);
    let log = p.log_text();
    assert!(
        log.contains("users.htpasswd:2") && log.contains("dave"),
        "the log does not name the truncated line:\n{log}"
    );
    assert_no_panic(&p);
}

#[test]
fn empty_file_serves_no_htpasswd_users_and_the_rest_of_the_chain() {
    let p = Purser::start(htpasswd_config(false), &[("users.htpasswd", "")]);
    let ready = Http::get(&format!("{}/readyz", p.base_url()))
        .send()
        .expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(status(&p, "carol", "carol-pw"), 401);
    assert_eq!(status(&p, ADMIN.0, ADMIN.1), 200, "{}", p.log_tail());
    assert_no_panic(&p);
}

#[test]
fn hundred_thousand_user_file_loads_and_serves() {
    // One real hash shared by every numbered user keeps the fixture quick to make.
    let shared = bcrypt_line("x", "many-pw", 4);
    let hash = shared.trim_end().split_once(':').expect("user:hash").1;
    let mut users = String::with_capacity(100_000 * 80);
    for i in 0..100_000 {
        users.push_str(&format!("user{i:06}:{hash}\n"));
    }
    users.push_str(&bcrypt_line("last", "last-pw", 4));
    let p = Purser::start(htpasswd_config(false), &[("users.htpasswd", &users)]);
    assert_eq!(status(&p, "user050000", "many-pw"), 200, "{}", p.log_tail());
    assert_eq!(status(&p, "user099999", "many-pw"), 200);
    assert_eq!(status(&p, "last", "last-pw"), 200);
    assert_eq!(status(&p, "user100000", "many-pw"), 401);
    assert_eq!(status(&p, "user000001", "wrong"), 401);
    assert!(
        p.log_text().contains("100001 users"),
        "the load summary does not count the users:\n{}",
        p.log_tail()
    );
    assert_no_panic(&p);
}

#[test]
fn unparseable_file_at_start_stops_purser_with_file_and_line() {
    // A name cut before its ':' makes the whole file suspect: purser refuses to start rather
    // than serve a user list other than the one the operator wrote.
    let users = bcrypt_line("carol", "carol-pw", 4) + "dav";
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let key = root.join("keys/signing.pem");
    openssl_rsa_key_and_cert(&key, &key.with_file_name("signing.crt"));
    fs::write(root.join("users.htpasswd"), users).expect("write");
    fs::write(root.join("policy.yaml"), POLICY).expect("write");
    let mut config = htpasswd_config(false);
    set_path(
        &mut config,
        "server.listen",
        json!(format!("127.0.0.1:{}", free_port())),
    );
    set_path(&mut config, "metrics.listen", json!(""));
    let cfg = root.join("purser.yaml");
    fs::write(&cfg, serde_json::to_string(&config).expect("json")).expect("write");

    let (code, stderr) = run_to_exit(root, &["serve", "--config", &cfg.display().to_string()]);
    assert_ne!(code, Some(0), "purser started on a broken file:\n{stderr}");
    assert!(
        stderr.contains("users.htpasswd:2") && stderr.contains("no ':'"),
        "the error does not name the file, line and problem:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Runs purser in `dir` until it exits (bounded; killed at the bound); returns its exit code
/// and stderr.
fn run_to_exit(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let err_path = dir.join("stderr.log");
    let mut child = Command::new(purser_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).expect("create log"))
        .spawn()
        .expect("spawn purser");
    let mut code = None;
    let mut exited = false;
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            code = s.code();
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !exited {
        let _ = child.kill();
    }
    // Reaps the process in every case (at once when it has exited).
    let _ = child.wait();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    assert!(exited, "purser did not exit on a broken file:\n{stderr}");
    (code, stderr)
}
