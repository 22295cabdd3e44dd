//! OIDC workload identity end to end, against a real OpenID provider (`oidc-provider` from npm,
//! over HTTPS with a test CA; scripts/test installs it), started once for this binary and
//! shared by its tests: its tokens log skopeo and docker (`docker login -u oidc
//! --password-stdin`) in through the distribution registry, the POST password grant and the
//! token exchange answer alike,
//! the claims reach the policy as account, groups and labels (and the audit record), and the
//! provider's tokens that break a rule (audience, lifetime, `require`) are refused.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::sync::OnceLock;

use purser_testkit::oidc::{OidcClient, OidcProvider};
use purser_testkit::*;
use serde_json::{json, Value};

const AUDIENCE: &str = "registry.example.com";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// CI of acme/app's main branch may push its repository; any of its jobs may pull it.
const OIDC_POLICY: &str = r#"rules:
  - name: admins
    match: { groups: [admins] }
    actions: ["*"]
  - name: main branch pushes its repository
    match: { groups: [acme], labels: { ref: refs/heads/main }, name: "ci/${labels.repository}/**" }
    actions: [pull, push]
  - name: any job of the repository pulls it
    match: { account: "github:**", name: "ci/${labels.repository}/**" }
    actions: [pull]
"#;

fn claims(repo: &str, owner: &str, git_ref: &str) -> Value {
    json!({ "repository": repo, "repository_owner": owner, "ref": git_ref })
}

/// The provider, with a client per kind of CI job.
fn provider() -> &'static OidcProvider {
    static PROVIDER: OnceLock<OidcProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let mut long = OidcClient::new(
            "long",
            AUDIENCE,
            claims("acme/app", "acme", "refs/heads/main"),
        );
        long.ttl = 7200;
        OidcProvider::start(&[
            OidcClient::new(
                "main",
                AUDIENCE,
                claims("acme/app", "acme", "refs/heads/main"),
            ),
            OidcClient::new(
                "dev",
                AUDIENCE,
                claims("acme/app", "acme", "refs/heads/dev"),
            ),
            OidcClient::new("tag", AUDIENCE, claims("acme/app", "acme", "refs/tags/v1")),
            OidcClient::new(
                "evil",
                AUDIENCE,
                claims("evil/app", "evil", "refs/heads/main"),
            ),
            OidcClient::new(
                "elsewhere",
                "another.example.com",
                claims("acme/app", "acme", "refs/heads/main"),
            ),
            long,
        ])
    })
}

/// The e2e config with static users first, then the provider as an OIDC issuer.
fn config(p: &OidcProvider) -> Value {
    let mut c = base_config();
    set_path(&mut c, "authn.order", json!(["static", "oidc"]));
    set_path(&mut c, "log.format", json!("json"));
    set_path(
        &mut c,
        "authn.oidc",
        json!({
            "issuers": [{
                "issuer": p.issuer(),
                "audience": [AUDIENCE],
                "username": "oidc",
                "account": "github:${claims.repository}",
                "groups": ["${claims.repository_owner}"],
                "labels": { "repository": "${claims.repository}", "ref": "${claims.ref}" },
                "require": { "repository_owner": "acme", "ref": "refs/heads/*" },
                "algorithms": ["RS256", "ES256"],
                "ca_file": p.ca_file().display().to_string(),
                "max_token_lifetime": "1h",
            }],
        }),
    );
    c
}

fn granted(token: &str) -> Vec<(String, Vec<String>)> {
    Jwt::decode(token).claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let actions = a["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            (a["name"].as_str().unwrap().to_string(), actions)
        })
        .collect()
}

#[test]
fn provider_tokens_push_and_pull_through_the_registry_with_skopeo() {
    let p = provider();
    let stack = Stack::start_with(config(p), &[("policy.yaml", OIDC_POLICY)], None);
    let image = OciImage::build(2);
    let main = p.token("main");
    assert_eq!(
        Jwt::decode(&main).header["typ"],
        "at+jwt",
        "the provider's own token type"
    );

    // The main branch pushes its repository, a dev branch's job pulls it but cannot push.
    stack.push_ok(&image, "ci/acme/app/web:1", Creds::User("oidc", &main));
    let dev = p.token("dev");
    stack.pull_identical(&image, "ci/acme/app/web:1", Creds::User("oidc", &dev));
    let refused = stack.skopeo.push(
        &image,
        &stack.registry,
        "ci/acme/app/web:dev",
        Creds::User("oidc", &dev),
    );
    assert!(!refused.ok, "a dev-branch job must not push");
    assert!(!stack.exists("ci/acme/app/web:dev"));
    // Another repository's name is nobody's.
    let other = stack.skopeo.push(
        &image,
        &stack.registry,
        "ci/acme/other:1",
        Creds::User("oidc", &main),
    );
    assert!(!other.ok, "the label confines the job to its repository");
    // A tag's job fails `require` (refs/heads/*): no login at all.
    let tag = p.token("tag");
    let r = stack
        .purser
        .token_get(&[("service", SERVICE)], Some(("oidc", &tag)));
    assert_eq!(r.status, 401, "{}", r.text());
    // The static users still log in beside the issuer.
    stack.pull_identical(&image, "ci/acme/app/web:1", Creds::of(ADMIN));
    assert!(
        stack.purser.metric(
            "purser_oidc_logins_total",
            &[("issuer", &p.issuer()), ("outcome", "accepted")]
        ) >= 2.0
    );
}

#[test]
fn password_grant_and_token_exchange_map_claims_into_the_policy() {
    let p = provider();
    let purser = Purser::start(config(p), &[("policy.yaml", OIDC_POLICY)]);
    let main = p.token("main");
    let scope = "repository:ci/acme/app/web:pull,push";

    // GET with Basic, as docker login -u oidc sends it.
    let r = purser.token_get(
        &[("service", SERVICE), ("scope", scope)],
        Some(("oidc", &main)),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(Jwt::decode(&t).claims["sub"], "github:acme/app");
    assert_eq!(
        granted(&t),
        [(
            "ci/acme/app/web".to_string(),
            vec!["pull".into(), "push".into()]
        )]
    );

    // The POST password grant; no refresh token for an OIDC login, even when asked.
    let r = Http::post(&purser.token_url())
        .form(&[
            ("grant_type", "password"),
            ("username", "oidc"),
            ("password", &main),
            ("service", SERVICE),
            ("scope", scope),
            ("access_type", "offline"),
            ("client_id", "ci"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(
        granted(body["access_token"].as_str().unwrap())[0].1,
        ["pull", "push"]
    );

    // The token exchange, with either subject token type, answered like the password grant.
    for kind in [JWT_TYPE, "urn:ietf:params:oauth:token-type:id_token"] {
        let r = Http::post(&purser.token_url())
            .form(&[
                ("grant_type", EXCHANGE),
                ("subject_token", &main),
                ("subject_token_type", kind),
                ("service", SERVICE),
                ("scope", scope),
                ("access_type", "offline"),
            ])
            .send()
            .unwrap();
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        let body = r.json();
        assert!(body.get("refresh_token").is_none(), "{body}");
        assert_eq!(body["token_type"], "Bearer");
        let t = body["access_token"].as_str().unwrap();
        assert_eq!(Jwt::decode(t).claims["sub"], "github:acme/app");
        assert_eq!(granted(t)[0].1, ["pull", "push"]);
    }
    // A dev-branch token through the exchange: the labels give pull only.
    let dev = p.token("dev");
    let r = Http::post(&purser.token_url())
        .form(&[
            ("grant_type", EXCHANGE),
            ("subject_token", &dev),
            ("subject_token_type", JWT_TYPE),
            ("service", SERVICE),
            ("scope", scope),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        granted(r.json()["access_token"].as_str().unwrap())[0].1,
        ["pull"]
    );
    // Shape errors of the exchange.
    for (form, want) in [
        (vec![("subject_token", main.as_str())], "subject_token_type"),
        (
            vec![
                ("subject_token", main.as_str()),
                ("subject_token_type", "urn:x"),
            ],
            "subject_token_type",
        ),
        (vec![("subject_token_type", JWT_TYPE)], "subject_token"),
    ] {
        let mut f = vec![("grant_type", EXCHANGE), ("service", SERVICE)];
        f.extend(form);
        let r = Http::post(&purser.token_url()).form(&f).send().unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(want), "{}", r.text());
    }

    // The audit record lists the labels and groups the policy saw.
    let rec = purser
        .audit_records()
        .into_iter()
        .rev()
        .find(|r| r["account"] == "github:acme/app" && r["status"] == 200)
        .expect("an audit record of an OIDC login");
    assert_eq!(rec["backend"], "oidc");
    assert_eq!(rec["groups"], json!(["acme"]));
    assert_eq!(rec["labels"]["repository"], "acme/app");
    // A record with labels carries every other field too: replay needs the service and scopes.
    assert!(rec["service"].is_string(), "{rec}");
    assert!(rec["scopes"].is_array(), "{rec}");
    assert_eq!(rec["stale"], false, "{rec}");
    assert!(rec["labels"]["ref"]
        .as_str()
        .unwrap()
        .starts_with("refs/heads/"));
}

#[test]
fn provider_tokens_breaking_a_rule_are_refused_and_never_lock_the_user_name() {
    let p = provider();
    // An account is locked after 5 distinct wrong passwords; the address may fail 1000 times.
    let mut c = config(p);
    set_path(&mut c, "limits.failed_logins.max", json!(5));
    set_path(&mut c, "limits.failed_logins.per_address_max", json!(1000));
    let purser = Purser::start(c, &[("policy.yaml", OIDC_POLICY)]);
    let get = |token: &str| {
        purser.token_get(
            &[
                ("service", SERVICE),
                ("scope", "repository:ci/acme/app/web:pull"),
            ],
            Some(("oidc", token)),
        )
    };
    for (client, why) in [
        ("elsewhere", "audience"),
        ("long", "max_token_lifetime"),
        ("evil", "requirements"),
        ("tag", "requirements"),
    ] {
        let r = get(&p.token(client));
        assert_eq!(r.status, 401, "{client}: {}", r.text());
        assert!(r.text().contains(why), "{client}: {}", r.text());
    }
    // A forged signature on a real token's header and claims.
    let main = p.token("main");
    let (head, _) = main.rsplit_once('.').unwrap();
    let r = get(&format!("{head}.AAAA"));
    assert_eq!(r.status, 401, "{}", r.text());
    // Dozens of refusals count against the address, never against the shared user name (5
    // would lock an account): the main branch's job still logs in.
    for _ in 0..20 {
        assert_eq!(get(&p.token("evil")).status, 401);
    }
    assert_eq!(get(&main).status, 200);
    assert!(
        purser.metric(
            "purser_oidc_logins_total",
            &[("issuer", &p.issuer()), ("outcome", "rejected")]
        ) >= 25.0
    );
    // Keys fetched once at start (discovery, then the JWKS) and not for every login.
    assert!(purser.metric("purser_oidc_jwks_fetches_total", &[("outcome", "success")]) >= 1.0);
    let age = purser.metric("purser_oidc_jwks_age_seconds", &[("issuer", &p.issuer())]);
    assert!((0.0..300.0).contains(&age), "{age}");
}

#[test]
fn policy_tools_take_labels() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), OIDC_POLICY).unwrap();
    let cfg = dir.path().join("purser.yaml");
    std::fs::write(
        &cfg,
        format!(
            "token: {{ issuer: t, service: {SERVICE}, signing_key_file: k.pem }}\nauthz: {{ policy_file: policy.yaml }}\n"
        ),
    )
    .unwrap();
    let c = cfg.display().to_string();
    let out = run_purser(
        &[
            "policy",
            "explain",
            "--config",
            &c,
            "--account",
            "github:acme/app",
            "--group",
            "acme",
            "--label",
            "repository=acme/app",
            "--label",
            "ref=refs/heads/main",
            "repository:ci/acme/app/web:pull,push",
        ],
        "",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("main branch pushes its repository"), "{text}");
    let cases = dir.path().join("cases.yaml");
    std::fs::write(
        &cases,
        "cases:\n  - { account: \"github:acme/app\", groups: [acme], labels: { ref: refs/heads/main }, scope: \"repository:ci/acme/app/web:push\", expect: [push] }\n",
    )
    .unwrap();
    let cs = cases.display().to_string();
    let without = run_purser(&["policy", "test", "--config", &c, &cs], "");
    assert!(
        !without.status.success(),
        "the case lacks the repository label"
    );
    let with = run_purser(
        &[
            "policy",
            "test",
            "--config",
            &c,
            "--label",
            "repository=acme/app",
            &cs,
        ],
        "",
    );
    assert!(
        with.status.success(),
        "{}{}",
        String::from_utf8_lossy(&with.stdout),
        String::from_utf8_lossy(&with.stderr)
    );
    let bad = run_purser(
        &[
            "policy",
            "test",
            "--config",
            &c,
            "--label",
            "no equals",
            &cs,
        ],
        "",
    );
    assert!(!bad.status.success());
}

#[test]
fn docker_logs_in_with_a_provider_token_on_stdin_and_pushes() {
    use purser_testkit::clients::{Dockerd, HostGuard};
    let p = provider();
    let guard = HostGuard::new();
    let base = tempfile::Builder::new()
        .prefix("oidc-docker-e2e-")
        .tempdir()
        .unwrap();
    {
        let stack = Stack::start_with(config(p), &[("policy.yaml", OIDC_POLICY)], None);
        let mut dockerd = Dockerd::start(base.path());
        let cfg = dockerd.new_config("oidc");
        let host = stack.registry.host();
        let rootfs = dockerd.dir().join("rootfs.tar");
        std::fs::write(
            &rootfs,
            tar_archive(&[("hello.txt", random_hex(32).as_bytes())]),
        )
        .unwrap();
        let image = format!("{host}/ci/acme/app/docker:1");
        let o = dockerd.cli(&cfg, &["import", &rootfs.display().to_string(), &image]);
        assert!(o.ok, "docker import: {}{}", o.stdout, o.stderr);

        // docker login -u oidc --password-stdin <<< "$ID_TOKEN", through a shell for the stdin.
        let token = p.token("main");
        let token_file = dockerd.dir().join("id-token");
        std::fs::write(&token_file, &token).unwrap();
        let login = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "DOCKER_CONFIG='{}' docker -H 'unix://{}' login -u oidc --password-stdin '{host}' < '{}'",
                cfg.display(),
                dockerd.dir().join("docker.sock").display(),
                token_file.display()
            ))
            .output()
            .unwrap();
        assert!(
            login.status.success(),
            "docker login: {}{}\n{}",
            String::from_utf8_lossy(&login.stdout),
            String::from_utf8_lossy(&login.stderr),
            stack.logs()
        );
        let o = dockerd.cli(&cfg, &["push", &image]);
        assert!(
            o.ok,
            "docker push: {}{}\n{}",
            o.stdout,
            o.stderr,
            stack.logs()
        );
        assert!(stack.exists("ci/acme/app/docker:1"));
        // A branch outside the repository's own name is refused.
        let other = format!("{host}/ci/acme/other:1");
        assert!(dockerd.cli(&cfg, &["tag", &image, &other]).ok);
        assert!(
            !dockerd.cli(&cfg, &["push", &other]).ok,
            "push outside the label"
        );
        assert!(
            !stack.purser.log_text().contains(&token),
            "the token reached the log"
        );
        dockerd.stop();
    }
    guard.remove_outside_writes();
    base.close().unwrap();
}
