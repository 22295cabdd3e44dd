//! Operations, end to end: the `/metrics` exposition (promtool, exact counter movements after a
//! scripted mix of requests), readiness, the alert rules and dashboard in docs/, graceful
//! shutdown under load, HTTPS with certificate reload through the real registry and skopeo, and
//! JSON logs (request ids, nothing secret).

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use purser_testkit::ops::*;
use purser_testkit::*;
use serde_json::{json, Value};

const CAROL: (&str, &str) = ("carol", "carol-secret");
const DAVE: (&str, &str) = ("dave", "dave-secret");
const ERIN: (&str, &str) = ("erin", "erin-secret");
const WRONG: &str = "not-the-password";

/// Static users alice, bob, dave and erin (not carol), with their bcrypt hashes.
fn users() -> (Value, Vec<String>) {
    let mut map = serde_json::Map::new();
    let mut hashes = Vec::new();
    for (name, pw) in [ALICE, BOB, DAVE, ERIN] {
        let h = bcrypt_hash(pw);
        hashes.push(h.clone());
        map.insert(name.into(), json!({ "password_hash": h, "groups": [] }));
    }
    (Value::Object(map), hashes)
}

/// Static users first, then a directory that is down (a closed port): users unknown to the
/// static list get 503. Client addresses come from `X-Forwarded-For` (the test is the proxy).
fn mix_config() -> (Value, Vec<String>) {
    let (users, hashes) = users();
    let mut c = base_config();
    set_path(&mut c, "authn.static.users", users);
    set_path(&mut c, "authn.order", json!(["static", "ldap"]));
    set_path(&mut c, "authn.anonymous", json!(false));
    set_path(
        &mut c,
        "authn.ldap",
        json!({
            "urls": [format!("ldap://127.0.0.1:{}", free_port())],
            "user_dn": "uid={username},ou=people,dc=example,dc=org",
            "timeout": "2s",
        }),
    );
    set_path(&mut c, "server.trusted_proxies", json!(["127.0.0.1/32"]));
    set_path(
        &mut c,
        "limits.failed_logins",
        json!({ "max": 3, "per_address_max": 3, "window": "60s", "lockout": "5m" }),
    );
    (c, hashes)
}

/// `name{k="v",...}` with labels sorted, so keys compare whatever order the exposition uses.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<(&str, &str)> = labels.to_vec();
    l.sort();
    if l.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn normalise(key: &str) -> String {
    let Some((name, rest)) = key.split_once('{') else {
        return key.to_string();
    };
    let inner = rest.trim_end_matches('}');
    let pairs: Vec<(&str, &str)> = inner
        .split("\",")
        .filter(|s| !s.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k, v.trim_matches('"')))
        })
        .collect();
    series(name, &pairs)
}

fn snapshot(p: &Purser) -> BTreeMap<String, f64> {
    parse_metrics(&metrics_text(p))
        .into_iter()
        .map(|(k, v)| (normalise(&k), v))
        .collect()
}

/// The series the test holds to exact movements: every purser counter and every histogram count.
fn counted(key: &str) -> bool {
    let name = key.split('{').next().unwrap_or(key);
    name.starts_with("purser_") && (name.ends_with("_total") || name.ends_with("_count"))
}

/// One request of the mix, from the simulated client address `ip`.
struct Step<'a> {
    post: bool,
    creds: Option<(&'a str, &'a str)>,
    params: Vec<(&'a str, &'a str)>,
    ip: &'a str,
}

fn get<'a>(creds: Option<(&'a str, &'a str)>, scope: &'a str, ip: &'a str) -> Step<'a> {
    Step {
        post: false,
        creds,
        params: vec![("service", SERVICE), ("scope", scope)],
        ip,
    }
}

fn send(p: &Purser, step: &Step) -> HttpResponse {
    let mut req = if step.post {
        Http::post(&p.token_url()).form(&step.params)
    } else {
        Http::get(&p.token_url()).query(&step.params)
    };
    if let Some((u, pw)) = step.creds {
        req = req.basic(u, pw);
    }
    req.header("X-Forwarded-For", step.ip)
        .send()
        .expect("token request")
}

/// What the mix leaves behind: the counter movements it must cause, the request ids purser
/// answered with, and the tokens it issued.
#[derive(Default)]
struct Mix {
    expected: BTreeMap<String, f64>,
    request_ids: Vec<String>,
    tokens: Vec<String>,
}

impl Mix {
    fn add(&mut self, name: &str, labels: &[(&str, &str)], n: f64) {
        *self.expected.entry(series(name, labels)).or_default() += n;
    }
    fn request(&mut self, method: &str, outcome: &str) {
        self.add(
            "purser_token_requests_total",
            &[("method", method), ("outcome", outcome)],
            1.0,
        );
        self.add(
            "purser_token_request_duration_seconds_count",
            &[("method", method)],
            1.0,
        );
    }
    /// A backend answer that reached the backend (not the cache).
    fn attempt(&mut self, backend: &str, outcome: &str) {
        self.add(
            "purser_authn_attempts_total",
            &[("backend", backend), ("outcome", outcome)],
            1.0,
        );
        self.add(
            "purser_authn_duration_seconds_count",
            &[("backend", backend)],
            1.0,
        );
    }
    fn cache_hit(&mut self, backend: &str) {
        self.add(
            "purser_authn_attempts_total",
            &[("backend", backend), ("outcome", "accepted")],
            1.0,
        );
        self.add(
            "purser_authn_cache_hits_total",
            &[("backend", backend)],
            1.0,
        );
    }
    fn decision(&mut self, outcome: &str) {
        self.add("purser_authz_decisions_total", &[("outcome", outcome)], 1.0);
    }
    fn issued(&mut self, kind: &str) {
        self.add(
            "purser_tokens_issued_total",
            &[("alg", "RS256"), ("kind", kind)],
            1.0,
        );
    }
    fn lockout(&mut self, scope: &str) {
        self.add("purser_lockouts_total", &[("scope", scope)], 1.0);
    }
    fn reload(&mut self, source: &str, outcome: &str) {
        self.add(
            "purser_reloads_total",
            &[("outcome", outcome), ("source", source)],
            1.0,
        );
    }

    /// Sends `step`, checks its status, and notes its request id and any token.
    fn run(&mut self, p: &Purser, step: &Step, status: u16) -> HttpResponse {
        let r = send(p, step);
        assert_eq!(
            r.status,
            status,
            "{} {:?}: {}\n{}",
            if step.post { "POST" } else { "GET" },
            step.params,
            r.text(),
            p.log_tail()
        );
        let id = r.header("x-request-id").expect("x-request-id header");
        self.request_ids.push(id.to_string());
        if status == 200 {
            let body = r.json();
            for field in ["token", "access_token", "refresh_token"] {
                if let Some(t) = body[field].as_str() {
                    self.tokens.push(t.to_string());
                }
            }
        }
        r
    }
}

/// The scripted mix: issued (fresh and cached logins, full, partial and no grants, the POST
/// password and refresh grants), wrong passwords, missing credentials, malformed scope, unknown
/// service, an unsupported grant, a backend unavailable, an account lockout and an address
/// lockout, then a policy reload that works and one that fails.
fn run_mix(p: &Purser) -> Mix {
    let mut m = Mix::default();
    let home = "192.0.2.1";

    // Issued, fresh: static accepted, full grant.
    m.run(
        p,
        &get(Some(ALICE), "repository:alice/app:pull,push", home),
        200,
    );
    m.request("GET", "issued");
    m.attempt("static", "accepted");
    m.decision("full");
    m.issued("access");
    // The same login again: the credential cache answers.
    m.run(
        p,
        &get(Some(ALICE), "repository:alice/app:pull,push", home),
        200,
    );
    m.request("GET", "issued");
    m.cache_hit("static");
    m.decision("full");
    m.issued("access");
    // Two resources: one partly granted, one not at all.
    let mut two = get(Some(BOB), "repository:alice/app:pull,push", home);
    two.params.push(("scope", "repository:secret/x:pull"));
    m.run(p, &two, 200);
    m.request("GET", "issued");
    m.attempt("static", "accepted");
    m.decision("partial");
    m.decision("none");
    m.issued("access");
    // Wrong password.
    let r = m.run(
        p,
        &get(Some((ALICE.0, WRONG)), "repository:alice/app:pull", home),
        401,
    );
    assert!(r.header("www-authenticate").is_some());
    m.request("GET", "unauthorized");
    m.attempt("static", "rejected");
    // No credentials, anonymous off.
    m.run(p, &get(None, "repository:alice/app:pull", home), 401);
    m.request("GET", "unauthorized");
    // Malformed scope and unknown service: refused before any password check.
    m.run(p, &get(Some(ALICE), "Repository:alice/app:pull", home), 400);
    m.request("GET", "bad_request");
    let mut other = get(Some(ALICE), "repository:alice/app:pull", home);
    other.params[0] = ("service", "elsewhere.example");
    m.run(p, &other, 400);
    m.request("GET", "bad_request");
    // A user the static list does not know, and the directory down: 503 with Retry-After.
    let r = m.run(p, &get(Some(CAROL), "repository:carol/app:pull", home), 503);
    assert!(r.header("retry-after").is_some(), "503 without Retry-After");
    m.request("GET", "unavailable");
    m.attempt("static", "unknown_user");
    m.attempt("ldap", "unavailable");
    // POST password grant with a refresh token (bob's password is cached), then the refresh grant.
    let login = Step {
        post: true,
        creds: None,
        params: vec![
            ("grant_type", "password"),
            ("username", BOB.0),
            ("password", BOB.1),
            ("service", SERVICE),
            ("client_id", "ops-test"),
            ("access_type", "offline"),
            ("scope", "repository:bob/app:pull"),
        ],
        ip: home,
    };
    let r = m.run(p, &login, 200);
    m.request("POST", "issued");
    m.cache_hit("static");
    m.decision("full");
    m.issued("access");
    m.issued("refresh");
    let refresh = r.json()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    let refresh_step = Step {
        post: true,
        creds: None,
        params: vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", SERVICE),
            ("client_id", "ops-test"),
            ("scope", "repository:bob/app:pull,push"),
        ],
        ip: home,
    };
    m.run(p, &refresh_step, 200);
    m.request("POST", "issued");
    m.decision("full");
    m.issued("access");
    // POST errors: a wrong password (400 invalid_grant, counted unauthorized), a bad grant type.
    let wrong_post = Step {
        post: true,
        creds: None,
        params: vec![
            ("grant_type", "password"),
            ("username", ERIN.0),
            ("password", WRONG),
            ("service", SERVICE),
            ("scope", "repository:erin/app:pull"),
        ],
        ip: "192.0.2.50",
    };
    m.run(p, &wrong_post, 400);
    m.request("POST", "unauthorized");
    m.attempt("static", "rejected");
    let bad_grant = Step {
        post: true,
        creds: None,
        params: vec![("grant_type", "client_credentials"), ("service", SERVICE)],
        ip: home,
    };
    m.run(p, &bad_grant, 400);
    m.request("POST", "bad_request");
    // Account lockout: three distinct wrong passwords for dave from three addresses, then even
    // his right password is refused with 429 (and costs no backend attempt).
    for (ip, guess) in [
        ("198.51.100.1", "guess-1"),
        ("198.51.100.2", "guess-2"),
        ("198.51.100.3", "guess-3"),
    ] {
        m.run(
            p,
            &get(Some((DAVE.0, guess)), "repository:dave/app:pull", ip),
            401,
        );
        m.request("GET", "unauthorized");
        m.attempt("static", "rejected");
    }
    m.lockout("account");
    let r = m.run(
        p,
        &get(Some(DAVE), "repository:dave/app:pull", "198.51.100.4"),
        429,
    );
    assert!(r.header("retry-after").is_some(), "429 without Retry-After");
    m.request("GET", "rate_limited");
    // Address lockout: three accounts fail from one address (none reaches three failures), with
    // a password none of them was refused for yet (a remembered one would not count).
    let noisy = "203.0.113.7";
    for user in [ALICE.0, BOB.0, ERIN.0] {
        m.run(
            p,
            &get(Some((user, "noisy-guess")), "repository:x/app:pull", noisy),
            401,
        );
        m.request("GET", "unauthorized");
        m.attempt("static", "rejected");
    }
    m.lockout("ip");
    m.run(p, &get(Some(ERIN), "repository:erin/app:pull", noisy), 429);
    m.request("GET", "rate_limited");

    // Policy reloads: a good edit, then a broken one (the good one stays in force).
    let before = snapshot(p);
    let rules_key = series("purser_policy_rules", &[]);
    let success = series(
        "purser_reloads_total",
        &[("outcome", "success"), ("source", "policy")],
    );
    let failure = series(
        "purser_reloads_total",
        &[("outcome", "failure"), ("source", "policy")],
    );
    let policy = p.dir().join("policy.yaml");
    let grown = format!(
        "{POLICY}  - name: extra\n    match: {{ name: \"extra/**\" }}\n    actions: [pull]\n"
    );
    fs::write(&policy, grown).expect("write policy");
    poll(READY_TIMEOUT, "policy reload counted", || {
        snapshot(p).get(&success) > before.get(&success)
    });
    m.reload("policy", "success");
    let rules = snapshot(p)[&rules_key];
    assert_eq!(rules, before[&rules_key] + 1.0, "purser_policy_rules");
    fs::write(&policy, "rules: [ this is not yaml").expect("write policy");
    poll(READY_TIMEOUT, "failed policy reload counted", || {
        snapshot(p).get(&failure) > before.get(&failure)
    });
    m.reload("policy", "failure");
    assert_eq!(snapshot(p)[&rules_key], rules, "the good policy stays");
    m
}

/// Secrets that must never reach a log: every password of the mix and the users' hashes.
fn secrets_of(hashes: &[String]) -> Vec<String> {
    let mut s: Vec<String> = [ALICE.1, BOB.1, CAROL.1, DAVE.1, ERIN.1, WRONG]
        .iter()
        .map(|x| x.to_string())
        .collect();
    s.extend(hashes.iter().cloned());
    s
}

#[test]
fn metrics_pass_promtool_and_each_counter_moves_by_exactly_the_mix() {
    let (config, _) = mix_config();
    let p = start_purser(config, &[], Scheme::Http, Wait::Healthy);

    // Readiness: the directory is down, so /readyz says 503 and why; /healthz stays 200.
    let ready = Http::get(&format!("{}/readyz", p.base_url()))
        .send()
        .expect("readyz");
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("ldap"), "{}", ready.text());

    let first = metrics_text(&p);
    promtool_check_metrics(&first);
    for family in [
        "purser_token_requests_total",
        "purser_authn_attempts_total",
        "purser_authn_cache_hits_total",
        "purser_authz_decisions_total",
        "purser_reloads_total",
        "purser_reload_last_success_timestamp_seconds",
        "purser_policy_rules",
        "purser_ldap_pool_connections",
        "purser_lockouts_total",
        "purser_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(
            first.contains(&format!("# TYPE {family} ")),
            "{family} missing from /metrics before any request:\n{first}"
        );
    }
    assert!(first.contains(&format!(
        "purser_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));

    let before = snapshot(&p);
    let mix = run_mix(&p);
    let after_text = metrics_text(&p);
    promtool_check_metrics(&after_text);
    let after = snapshot(&p);

    let keys: std::collections::BTreeSet<&String> = before
        .keys()
        .chain(after.keys())
        .chain(mix.expected.keys())
        .filter(|k| counted(k))
        .collect();
    let mut wrong = Vec::new();
    for k in keys {
        let moved = after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
        let want = mix.expected.get(k).copied().unwrap_or(0.0);
        if moved != want {
            wrong.push(format!("{k}: moved {moved}, expected {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "counters off:\n{}\n{after_text}",
        wrong.join("\n")
    );
    // Every expected series exists in the exposition (not only as a zero difference).
    for k in mix.expected.keys() {
        assert!(after.contains_key(k), "{k} not exported");
    }
    assert!(
        after[&series(
            "purser_reload_last_success_timestamp_seconds",
            &[("source", "policy")]
        )] >= before[&series(
            "purser_reload_last_success_timestamp_seconds",
            &[("source", "policy")]
        )]
    );
}

#[test]
fn json_logs_carry_request_ids_and_no_password_hash_or_token() {
    let (config, hashes) = mix_config();
    let p = start_purser(config, &[], Scheme::Http, Wait::Healthy);
    let mix = run_mix(&p);
    let log = json_log(&p);

    // Every answer's request id names exactly one audit record, and every line that carries
    // that id is an object written inside that request.
    let audits: Vec<&Value> = log
        .iter()
        .filter(|l| l["target"] == "purser::audit")
        .collect();
    assert_eq!(
        audits.len(),
        mix.request_ids.len(),
        "one audit record per token request"
    );
    for id in &mix.request_ids {
        let n = audits
            .iter()
            .filter(|l| request_id_of(l) == Some(id.as_str()))
            .count();
        assert_eq!(n, 1, "audit records for request {id}");
        assert!(
            log.iter().any(
                |l| request_id_of(l) == Some(id.as_str()) && l["message"] == "request received"
            ),
            "request {id} has no first line"
        );
    }
    // The audit record names the account, client address, decision and outcome.
    let lock = audits
        .iter()
        .find(|l| l["outcome"] == "rate_limited")
        .expect("a rate_limited audit record");
    assert_eq!(lock["account"], DAVE.0);
    assert_eq!(lock["client_ip"], "198.51.100.4");
    // `scopes` and `groups` are JSON arrays in JSON logs (indexable as they are), and an issued
    // token's record carries its status too.
    assert!(audits.iter().any(|l| l["outcome"] == "issued"
        && l["status"] == 200
        && l["groups"].is_array()
        && l["scopes"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|s| s.get("rule").is_some()))));
    assert!(
        audits.iter().all(|l| l["scopes"].is_array()),
        "an audit record whose scopes are not an array"
    );
    assert_eq!(lock["status"], 429);
    // The directory outage is explained to the operator.
    assert!(
        log.iter().any(|l| l["message"]
            .as_str()
            .unwrap_or("")
            .contains("no backend could decide")
            && request_id_of(l).is_some()),
        "the 503 is not explained in the log"
    );

    let mut secrets = secrets_of(&hashes);
    secrets.extend(mix.tokens.iter().cloned());
    assert!(mix.tokens.len() >= 6, "the mix issued tokens to look for");
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_clean_json_log(&p, &refs);
}

#[test]
fn alert_rules_pass_promtool_and_the_dashboard_names_only_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("docs/alerts.yaml");
    require_program(PROMTOOL, "prometheus");
    let out = std::process::Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules {}:\n{}{}",
        rules.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // What a running purser exports, after one token of each kind so every family has series;
    // with a machine token, so that the machine-token gauges have series too.
    let (mut config, _) = mix_config();
    set_path(
        &mut config,
        "authn.order",
        json!(["tokens", "static", "ldap"]),
    );
    set_path(&mut config, "authn.tokens.file", json!("tokens.yaml"));
    let tokens = format!(
        "- name: ci\n  sha256: {}\n  expires: \"2099-01-01T00:00:00Z\"\n",
        "0".repeat(64)
    );
    let p = start_purser(
        config,
        &[("tokens.yaml", &tokens)],
        Scheme::Http,
        Wait::Healthy,
    );
    p.token_for(ALICE, &["repository:alice/app:pull"]);
    let text = metrics_text(&p);
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let exists = |name: &str| {
        families.iter().any(|f| {
            *f == name
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f))
        })
    };

    let dashboard: Value = serde_json::from_str(
        &fs::read_to_string(root.join("docs/grafana-dashboard.json")).expect("read dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(
        exprs.len() >= 8,
        "the dashboard has only {} queries",
        exprs.len()
    );
    let rules_text = fs::read_to_string(&rules).expect("read alerts");
    let mut named = Vec::new();
    for e in exprs
        .iter()
        .map(String::as_str)
        .chain([rules_text.as_str()])
    {
        named.extend(metric_names(e));
    }
    assert!(named.iter().any(|n| n.starts_with("purser_")));
    for n in &named {
        assert!(exists(n), "{n} is used in docs/ but not exported by purser");
    }
    // The key panels are there.
    for must in [
        "purser_token_requests_total",
        "purser_token_request_duration_seconds_bucket",
        "purser_authn_attempts_total",
        "purser_reloads_total",
        "purser_lockouts_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(must)),
            "no dashboard panel uses {must}"
        );
    }
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    collect_exprs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The `purser_*` and `process_*` identifiers in a PromQL expression or rules file.
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while i < b.len() {
        if word(b[i]) && (i == 0 || !word(b[i - 1])) {
            let mut j = i;
            while j < b.len() && word(b[j]) {
                j += 1;
            }
            let w = &text[i..j];
            if w.starts_with("purser_") || w.starts_with("process_") {
                out.push(w.to_string());
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// A POST password grant sent slowly: the head and the first half of the body at once, the
/// rest only when `release` says so. Until then the request is in purser's hands and cannot
/// finish, whatever the machine's speed. Returns (status, whether an access token came back).
fn slow_post(port: u16, scope: &str, release: std::sync::mpsc::Receiver<()>) -> (u16, bool) {
    use std::io::{Read, Write};
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "password"),
            ("username", ALICE.0),
            ("password", ALICE.1),
            ("service", SERVICE),
            ("scope", scope),
        ])
        .finish();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).ok();
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(first).expect("write first half");
    s.flush().ok();
    if release.recv().is_err() {
        return (0, false);
    }
    if s.write_all(rest).is_err() {
        return (0, false);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text.contains("\"access_token\":\"ey"))
}

#[test]
fn sigterm_lets_fifty_slow_requests_finish_refuses_new_connections_and_exits_zero() {
    const N: usize = 50;
    let mut p = start_purser(base_config(), &[], Scheme::Http, Wait::Ready);
    let port = p.port();

    let mut releases = Vec::new();
    let mut threads = Vec::new();
    for i in 0..N {
        let (tx, rx) = std::sync::mpsc::channel();
        releases.push(tx);
        threads.push(std::thread::spawn(move || {
            slow_post(port, &format!("repository:alice/app{i}:pull"), rx)
        }));
    }
    // All fifty heads are parsed and their bodies awaited before the signal.
    let received = |p: &Purser| {
        json_log(p)
            .iter()
            .filter(|l| l["message"] == "request received")
            .count()
    };
    poll(READY_TIMEOUT, "fifty requests received", || {
        received(&p) >= N
    });

    send_signal(&p, "TERM");
    // New connections are refused while the fifty are still open and unanswered.
    poll(
        Duration::from_secs(30),
        "connections refused after SIGTERM",
        || {
            matches!(
                TcpStream::connect(("127.0.0.1", port)),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )
        },
    );
    assert!(
        p.is_running(),
        "purser exited with requests in flight\n{}",
        p.log_tail()
    );
    assert!(json_log(&p)
        .iter()
        .any(|l| l["message"] == "SIGTERM received"));

    // The clients finish their bodies; every one is answered with a token.
    for tx in releases {
        tx.send(()).expect("release");
    }
    let results: Vec<(u16, bool)> = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();
    for (status, has_token) in &results {
        assert_eq!(
            *status,
            200,
            "a request in flight was not answered\n{}",
            p.log_tail()
        );
        assert!(has_token, "an answer without access_token");
    }
    // Then the process exits 0, well within the shutdown bound (30 s of grace).
    let code = wait_exit(&mut p, Duration::from_secs(45));
    assert_eq!(code, Some(0), "exit code\n{}", p.log_tail());
    assert!(json_log(&p)
        .iter()
        .any(|l| l["message"] == "every request in flight has been answered"));
    let hashes = config_hashes(&p);
    let mut secrets = vec![ALICE.1];
    secrets.extend(hashes.iter().map(String::as_str));
    assert_clean_json_log(&p, &secrets);
}

#[test]
fn sigint_stops_purser_with_exit_zero() {
    let mut p = start_purser(base_config(), &[], Scheme::Http, Wait::Ready);
    p.token_for(ALICE, &["repository:alice/app:pull"]);
    send_signal(&p, "INT");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(45)), Some(0));
    assert!(json_log(&p)
        .iter()
        .any(|l| l["message"] == "SIGINT received"));
}

/// TLS settings for purser: its certificate and key as `tls/server.crt` and `tls/server.key`.
fn tls_config(config: &mut Value) {
    set_path(
        config,
        "server.tls",
        json!({ "cert_file": "tls/server.crt", "key_file": "tls/server.key" }),
    );
}

#[test]
fn https_realm_serves_skopeo_through_the_registry_and_follows_certificate_renewal() {
    let ca = TestCa::new();
    let staging = tempfile::tempdir().expect("tempdir");
    let (cert1, key1) = ca.issue(staging.path(), "purser-1");
    let mut config = base_config();
    tls_config(&mut config);
    set_path(&mut config, "authn.anonymous", json!(false));
    let files = [
        ("tls/server.crt", fs::read_to_string(&cert1).expect("cert")),
        ("tls/server.key", fs::read_to_string(&key1).expect("key")),
    ];
    let file_refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let p = start_purser(config, &file_refs, Scheme::Https(&ca.cert), Wait::Ready);
    let port = p.port();
    let https = format!("https://127.0.0.1:{port}");

    // The served certificate is the configured one; plain HTTP and unverified trust fail.
    assert_eq!(
        served_fingerprint(port).as_deref(),
        Some(fingerprint_of_file(&cert1).as_str())
    );
    let ok = https_get(Some(&ca.cert), port, "/healthz").expect("healthz over HTTPS");
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok\n"));
    assert!(
        https_get(None, port, "/healthz").is_err(),
        "a client without the CA must refuse purser's certificate"
    );
    let plain = Http::get(&format!("{}/healthz", p.base_url())).send();
    assert!(
        !matches!(plain, Ok(ref r) if r.status == 200),
        "plain HTTP must not be served on a TLS listener"
    );

    // The registry over HTTPS, with purser's https:// realm; skopeo verifies both with the CA.
    let (reg_cert, reg_key) = ca.issue(staging.path(), "registry");
    let registry = start_tls_registry(
        &format!("{https}/token"),
        &p.dir().join("keys/signing.crt"),
        &reg_cert,
        &reg_key,
        &ca.cert,
    );
    let skopeo = Skopeo::new();
    let certs = cert_dir(&ca.cert, staging.path());
    let certs_arg = certs.display().to_string();
    let image = OciImage::build(2);
    let push = |repo_tag: &str, user: (&str, &str)| {
        skopeo.run(&[
            "copy".into(),
            "--dest-cert-dir".into(),
            certs_arg.clone(),
            "--dest-creds".into(),
            format!("{}:{}", user.0, user.1),
            image.reference(),
            registry.reference(repo_tag),
        ])
    };
    let pull = |repo_tag: &str, user: (&str, &str)| {
        let dest = skopeo.scratch("pulled");
        let out = skopeo.run(&[
            "copy".into(),
            "--src-cert-dir".into(),
            certs_arg.clone(),
            "--src-creds".into(),
            format!("{}:{}", user.0, user.1),
            registry.reference(repo_tag),
            format!("dir:{}", dest.display()),
        ]);
        (out, dest)
    };
    let logs = || format!("{}\n{}", p.log_tail(), registry.log_tail());
    let out = push("alice/app:1", ALICE);
    assert!(
        out.ok,
        "push over HTTPS failed:\n{}\n{}",
        out.stderr,
        logs()
    );
    let (out, dir) = pull("alice/app:1", BOB);
    assert!(
        out.ok,
        "pull over HTTPS failed:\n{}\n{}",
        out.stderr,
        logs()
    );
    image.assert_same_as_dir(&dir);
    // A wrong password is still a refusal, not a TLS problem.
    let out = push("alice/app:2", (ALICE.0, "wrong-password"));
    assert!(!out.ok, "a push with a wrong password succeeded");

    // The renewal: new key and certificate written in place (key first, as an ACME client
    // that renames files does); purser serves the new one without a restart.
    let before_pid = pid(&p);
    let (cert2, key2) = ca.issue(staging.path(), "purser-2");
    let new_print = fingerprint_of_file(&cert2);
    assert_ne!(new_print, fingerprint_of_file(&cert1));
    let tls_dir = p.dir().join("tls");
    fs::copy(&key2, tls_dir.join("server.key.new")).expect("copy key");
    fs::rename(tls_dir.join("server.key.new"), tls_dir.join("server.key")).expect("rename key");
    fs::copy(&cert2, tls_dir.join("server.crt.new")).expect("copy cert");
    fs::rename(tls_dir.join("server.crt.new"), tls_dir.join("server.crt")).expect("rename cert");
    poll(READY_TIMEOUT, "the renewed certificate served", || {
        served_fingerprint(port).as_deref() == Some(new_print.as_str())
    });
    assert_eq!(pid(&p), before_pid);
    let text = metrics_text(&p);
    let reloads = parse_metrics(&text);
    assert!(
        !reloads
            .iter()
            .any(|(k, v)| k.starts_with("purser_reloads_total")
                && k.contains("source=\"tls\"")
                && k.contains("outcome=\"failure\"")
                && *v > 0.0),
        "a renewal written key first, then certificate, must not count as a failure:\n{text}"
    );
    assert!(
        reloads
            .iter()
            .any(|(k, v)| k.starts_with("purser_reloads_total")
                && k.contains("source=\"tls\"")
                && k.contains("outcome=\"success\"")
                && *v >= 2.0),
        "the renewal is not counted as a tls reload:\n{text}"
    );
    // And the stack keeps working on the new certificate.
    let out = push("alice/app:4", ALICE);
    assert!(
        out.ok,
        "push after renewal failed:\n{}\n{}",
        out.stderr,
        logs()
    );
    let r = https_get(Some(&ca.cert), port, "/readyz").expect("readyz over HTTPS");
    assert_eq!(r.status, 200);

    // A broken renewal keeps the good certificate in service.
    fs::write(tls_dir.join("server.crt"), "not a certificate").expect("write");
    poll(READY_TIMEOUT, "the failed tls reload counted", || {
        parse_metrics(&metrics_text(&p)).iter().any(|(k, v)| {
            k.starts_with("purser_reloads_total")
                && k.contains("source=\"tls\"")
                && k.contains("outcome=\"failure\"")
                && *v >= 1.0
        })
    });
    assert_eq!(
        served_fingerprint(port).as_deref(),
        Some(new_print.as_str())
    );

    // The whole log of this run: JSON, request ids, no password, hash, token or TLS key.
    let hashes = config_hashes(&p);
    let key_text = fs::read_to_string(&key2).expect("key");
    let mut secrets: Vec<&str> = vec![ALICE.1, BOB.1, "wrong-password"];
    secrets.extend(hashes.iter().map(String::as_str));
    secrets.extend(key_text.lines().filter(|l| !l.starts_with("-----")));
    assert_clean_json_log(&p, &secrets);
}

#[test]
fn tls_needs_both_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("purser.yaml");
    fs::write(
        &cfg,
        "server:\n  tls: { cert_file: \"server.crt\" }\ntoken:\n  generate_key: false\n",
    )
    .expect("write");
    let out = run_purser(
        &["check-config", "--config", &cfg.display().to_string()],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.tls.key_file"), "{err}");

    // A certificate whose key does not match stops the start with the reason.
    let ca = TestCa::new();
    let (c1, _) = ca.issue(dir.path(), "one");
    let (_, k2) = ca.issue(dir.path(), "two");
    let mut config = base_config();
    tls_config(&mut config);
    let files = [
        ("tls/server.crt", fs::read_to_string(&c1).expect("cert")),
        ("tls/server.key", fs::read_to_string(&k2).expect("key")),
    ];
    let cfg2 = dir.path().join("mismatch.yaml");
    for (rel, text) in &files {
        let p = dir.path().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }
    openssl_rsa_key_and_cert(
        &dir.path().join("keys/signing.pem"),
        &dir.path().join("keys/signing.crt"),
    );
    set_path(&mut config, "authz.policy_file", json!("policy.yaml"));
    fs::write(dir.path().join("policy.yaml"), POLICY).expect("policy");
    set_path(
        &mut config,
        "server.listen",
        json!(format!("127.0.0.1:{}", free_port())),
    );
    set_path(&mut config, "metrics.listen", json!(""));
    fs::write(&cfg2, serde_json::to_string(&config).expect("json")).expect("write");
    let out = run_purser_bounded(
        &["serve", "--config", &cfg2.display().to_string()],
        READY_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not belong"), "{err}");
}

/// A folder holding the base configuration's signing key, its certificate (`keys/signing.crt`)
/// and the policy, for `check-config` runs.
fn checkable_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    openssl_rsa_key_and_cert(
        &dir.path().join("keys/signing.pem"),
        &dir.path().join("keys/signing.crt"),
    );
    fs::write(dir.path().join("policy.yaml"), POLICY).expect("policy");
    dir
}

/// `purser check-config` on `config`, written into `dir`: (exit code, stdout and stderr).
fn check_config_in(dir: &Path, config: &Value) -> (Option<i32>, String) {
    let cfg = dir.join(format!("purser-{}.yaml", random_hex(4)));
    fs::write(&cfg, serde_json::to_string(config).expect("json")).expect("write");
    let out = run_purser(
        &["check-config", "--config", &cfg.display().to_string()],
        "",
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn check_config_loads_the_tls_pair_as_serve_does() {
    let dir = checkable_dir();
    let ca = TestCa::new();
    let (c1, k1) = ca.issue(&dir.path().join("tls"), "one");
    let (_, k2) = ca.issue(&dir.path().join("tls"), "two");
    let with_tls = |cert: &Path, key: &Path| {
        let mut c = base_config();
        set_path(
            &mut c,
            "server.tls",
            json!({ "cert_file": cert, "key_file": key }),
        );
        c
    };

    let (code, out) = check_config_in(dir.path(), &with_tls(&c1, &k1));
    assert_eq!(code, Some(0), "a sound pair is refused:\n{out}");

    // A certificate file that is not there: serve would not start.
    let missing = dir.path().join("tls/missing.crt");
    let (code, out) = check_config_in(dir.path(), &with_tls(&missing, &k1));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("server.tls.cert_file: cannot read the certificate file")
            && out.contains("missing.crt"),
        "the problem does not name server.tls.cert_file and the file:\n{out}"
    );

    // A key of another certificate: serve stops with "does not belong"; so does the check.
    let (code, out) = check_config_in(dir.path(), &with_tls(&c1, &k2));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("server.tls.key_file: the key") && out.contains("does not belong"),
        "the problem does not name server.tls.key_file:\n{out}"
    );
}

#[test]
fn check_config_matches_the_signing_key_and_its_certificate() {
    let dir = checkable_dir();
    openssl_rsa_key_and_cert(
        &dir.path().join("other/signing.pem"),
        &dir.path().join("other/signing.crt"),
    );
    let with_cert = |cert: &str| {
        let mut c = base_config();
        set_path(&mut c, "token.certificate_file", json!(cert));
        c
    };

    let (code, out) = check_config_in(dir.path(), &with_cert("keys/signing.crt"));
    assert_eq!(
        code,
        Some(0),
        "the key's own certificate is refused:\n{out}"
    );

    let (code, out) = check_config_in(dir.path(), &with_cert("other/signing.crt"));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("token.certificate_file:")
            && out.contains("does not belong to the signing key"),
        "the problem does not name token.certificate_file:\n{out}"
    );

    // Without certificate_file, the certificate beside the key (what key generation writes and
    // the registry is given) is held to the key too.
    fs::copy(
        dir.path().join("other/signing.crt"),
        dir.path().join("keys/signing.crt"),
    )
    .expect("copy");
    let (code, out) = check_config_in(dir.path(), &base_config());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("token.signing_key_file:")
            && out.contains("signing.crt")
            && out.contains("does not belong to the signing key"),
        "the stale certificate beside the key is not reported:\n{out}"
    );
}

#[test]
fn check_config_needs_every_watched_file() {
    let dir = checkable_dir();
    let mut config = base_config();
    set_path(&mut config, "authn.order", json!(["static", "htpasswd"]));
    set_path(
        &mut config,
        "authn.htpasswd",
        json!({ "file": "users.htpasswd", "groups_file": "users.htgroup" }),
    );
    set_path(
        &mut config,
        "authz.policy_file",
        json!("nowhere/policy.yaml"),
    );
    let (code, out) = check_config_in(dir.path(), &config);
    assert_eq!(code, Some(1), "{out}");
    for key in [
        "authn.htpasswd.file",
        "authn.htpasswd.groups_file",
        "authz.policy_file",
    ] {
        assert!(
            out.lines().any(|l| l.contains(&format!("{key}: "))
                && l.contains("does not exist: serve would start without it")),
            "{key} is not reported as missing, with what serve would do:\n{out}"
        );
    }
}
