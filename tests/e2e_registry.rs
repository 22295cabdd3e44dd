//! End to end with the real distribution registry and skopeo: purser issues the tokens, the
//! registry verifies them, skopeo pushes and pulls. Each test starts its own processes.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use purser_testkit::*;
use serde_json::json;

#[test]
fn owner_pushes_pulls_back_identical_bytes_and_mounts_across_repositories() {
    let s = Stack::start(base_config());
    let image = OciImage::build(2);
    s.push_ok(&image, "alice/app:1", Creds::of(ALICE));
    s.pull_identical(&image, "alice/app:1", Creds::of(ALICE));

    // The same image in a second repository: skopeo asks one token for both repositories and
    // mounts the blobs instead of uploading them again.
    s.push_ok(&image, "alice/copy:1", Creds::of(ALICE));
    let log = s.registry.log_text();
    let mounted = log.lines().any(|l| {
        l.contains("POST /v2/alice/copy/blobs/uploads/?")
            && l.contains("mount=")
            && l.contains("from=alice%2Fapp")
            && l.contains("\" 201 ")
    });
    assert!(
        mounted,
        "no cross-repository mount answered 201:\n{}",
        s.logs()
    );
    s.pull_identical(&image, "alice/copy:1", Creds::of(ALICE));

    // The two-scope token request: both resources granted to alice.
    let token = s.purser.token_for(
        ALICE,
        &[
            "repository:alice/copy:pull,push",
            "repository:alice/app:pull",
        ],
    );
    let jwt = Jwt::decode(&token);
    let access = jwt.claims["access"]
        .as_array()
        .expect("access array")
        .clone();
    assert!(
        access.contains(
            &json!({"type": "repository", "name": "alice/copy", "actions": ["pull", "push"]})
        ),
        "{access:?}"
    );
    assert!(
        access.contains(&json!({"type": "repository", "name": "alice/app", "actions": ["pull"]})),
        "{access:?}"
    );
}

#[test]
fn a_user_without_push_is_refused_and_a_reader_can_pull() {
    let s = Stack::start(base_config());
    let image = OciImage::build(1);
    s.push_ok(&image, "alice/app:1", Creds::of(ALICE));

    // bob may only pull alice/**.
    let out = s
        .skopeo
        .push(&image, &s.registry, "alice/bob-was-here:1", Creds::of(BOB));
    assert!(!out.ok, "bob pushed into alice/**:\n{}", out.stdout);
    assert!(
        !s.exists("alice/bob-was-here:1"),
        "bob's push left an image"
    );
    s.pull_identical(&image, "alice/app:1", Creds::of(BOB));

    // bob's own namespace is his.
    s.push_ok(&image, "bob/app:1", Creds::of(BOB));
    // alice may not read bob/**.
    let (out, _) = s
        .skopeo
        .pull_to_dir(&s.registry, "bob/app:1", Creds::of(ALICE));
    assert!(!out.ok, "alice pulled from bob/**");
}

#[test]
fn a_wrong_password_is_refused_as_unauthorized() {
    let s = Stack::start(base_config());
    let image = OciImage::build(1);
    let out = s.skopeo.push(
        &image,
        &s.registry,
        "alice/app:1",
        Creds::User("alice", "Wr0ng-e2e-Pa55"),
    );
    assert!(!out.ok, "push with a wrong password succeeded");
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("invalid username/password") || err.contains("unauthorized"),
        "skopeo should report the credentials: {}",
        out.stderr
    );
    assert!(!s.exists("alice/app:1"));
    // The password never reaches purser's log.
    assert!(
        !s.purser.log_text().contains("Wr0ng-e2e-Pa55"),
        "{}",
        s.purser.log_tail()
    );
}

#[test]
fn anonymous_pulls_public_but_nothing_else() {
    let s = Stack::start(base_config());
    let image = OciImage::build(2);
    s.push_ok(&image, "public/base:1", Creds::of(ADMIN));
    s.pull_identical(&image, "public/base:1", Creds::None);

    let out = s
        .skopeo
        .push(&image, &s.registry, "public/base:2", Creds::None);
    assert!(!out.ok, "anonymous push succeeded");
    assert!(!s.exists("public/base:2"));

    s.push_ok(&image, "alice/private:1", Creds::of(ALICE));
    let (out, _) = s
        .skopeo
        .pull_to_dir(&s.registry, "alice/private:1", Creds::None);
    assert!(!out.ok, "anonymous pull of alice/** succeeded");
}

#[test]
fn delete_needs_the_delete_grant() {
    let s = Stack::start(base_config());
    let image = OciImage::build(1);
    s.push_ok(&image, "alice/del:1", Creds::of(ALICE));

    let reference = s.registry.reference("alice/del:1");
    let out = s.skopeo.delete(&reference, Creds::of(BOB));
    assert!(!out.ok, "bob deleted alice's image");
    assert!(
        s.exists("alice/del:1"),
        "the image must survive bob's attempt"
    );

    let out = s.skopeo.delete(&reference, Creds::of(ALICE));
    assert!(
        out.ok,
        "alice could not delete: {}\n{}",
        out.stderr,
        s.logs()
    );
    assert!(
        !s.exists("alice/del:1"),
        "the image is still there after delete"
    );
}

#[test]
fn an_admin_lists_the_catalog_and_others_cannot() {
    let s = Stack::start(base_config());
    let image = OciImage::build(1);
    s.push_ok(&image, "alice/app:1", Creds::of(ALICE));
    s.push_ok(&image, "public/base:1", Creds::of(ADMIN));

    let catalog = format!("{}/v2/_catalog", s.registry.url());
    let token = s.purser.token_for(ADMIN, &["registry:catalog:*"]);
    let r = Http::get(&catalog).bearer(&token).send().expect("catalog");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.logs());
    let mut repos: Vec<String> = r.json()["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    repos.sort();
    assert_eq!(repos, ["alice/app", "public/base"]);

    // alice gets a token, but it grants nothing on the catalog.
    let token = s.purser.token_for(ALICE, &["registry:catalog:*"]);
    let jwt = Jwt::decode(&token);
    for entry in jwt.claims["access"].as_array().expect("access") {
        assert_eq!(entry["actions"], json!([]), "{entry}");
    }
    let r = Http::get(&catalog).bearer(&token).send().expect("catalog");
    assert_eq!(r.status, 401, "alice listed the catalog");
}

// --- signing algorithms -------------------------------------------------------------------

fn push_pull_with(s: &Stack) -> Jwt {
    let image = OciImage::build(2);
    s.push_ok(&image, "alice/app:1", Creds::of(ALICE));
    s.pull_identical(&image, "alice/app:1", Creds::of(ALICE));
    let jwt = Jwt::decode(&s.purser.token_for(ALICE, &["repository:alice/app:pull"]));
    jwt.verify_with_cert(&s.purser.cert_file(), ISSUER, SERVICE);
    jwt
}

#[test]
fn push_and_pull_with_an_rs256_key() {
    // The key and certificate purser generates at first start.
    let mut config = base_config();
    set_path(&mut config, "token.generate_key", json!(true));
    set_path(&mut config, "token.generate_alg", json!("rs256"));
    let s = Stack::start(config);
    let jwt = push_pull_with(&s);
    assert_eq!(jwt.header["alg"], "RS256");
    assert_eq!(
        jwt.header["kid"],
        json!(libtrust_kid_openssl(&s.purser.cert_file(), true))
    );
    assert!(
        jwt.header.get("x5c").is_none(),
        "no certificate_file, no x5c"
    );
}

#[test]
fn push_and_pull_with_an_es256_key() {
    let mut config = base_config();
    set_path(&mut config, "token.generate_key", json!(true));
    set_path(&mut config, "token.generate_alg", json!("es256"));
    let s = Stack::start(config);
    let jwt = push_pull_with(&s);
    assert_eq!(jwt.header["alg"], "ES256");
    let text = String::from_utf8(openssl_stdout(&[
        "pkey",
        "-in",
        &s.purser.key_file().display().to_string(),
        "-noout",
        "-text",
    ]))
    .unwrap();
    assert!(
        text.contains("P-256") || text.contains("prime256v1"),
        "{text}"
    );
    assert_eq!(
        jwt.header["kid"],
        json!(libtrust_kid_openssl(&s.purser.cert_file(), true))
    );
}

#[test]
fn push_and_pull_with_x5c_headers() {
    let (key, crt) = keygen("rs256");
    let mut config = base_config();
    set_path(&mut config, "token.generate_key", json!(false));
    set_path(
        &mut config,
        "token.certificate_file",
        json!("keys/signing.crt"),
    );
    let s = Stack::start_with(
        config,
        &[("keys/signing.pem", &key), ("keys/signing.crt", &crt)],
        Some("keys/signing.crt"),
    );
    let jwt = push_pull_with(&s);
    let x5c = jwt.header["x5c"].as_array().expect("x5c header");
    assert!(!x5c.is_empty());
    let der = openssl_stdout(&[
        "x509",
        "-in",
        &s.purser.cert_file().display().to_string(),
        "-outform",
        "DER",
    ]);
    let leaf = data_encoding::BASE64
        .decode(x5c[0].as_str().expect("x5c string").as_bytes())
        .expect("x5c is standard base64");
    assert_eq!(leaf, der, "x5c[0] is the configured certificate");
}

// --- refresh tokens -----------------------------------------------------------------------

#[test]
fn skopeo_uses_a_refresh_token_as_identity_token() {
    let s = Stack::start(base_config());
    let image = OciImage::build(1);
    s.push_ok(&image, "alice/app:1", Creds::of(ALICE));

    let r = s.purser.token_get(
        &[
            ("service", SERVICE),
            ("account", "alice"),
            ("offline_token", "true"),
            ("client_id", "test"),
        ],
        Some(ALICE),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let refresh = r.json()["refresh_token"]
        .as_str()
        .expect("refresh_token with offline_token=true")
        .to_string();
    assert!(!refresh.is_empty());

    // containers/image uses an identity token only through the POST refresh grant.
    let authfile = s
        .skopeo
        .identity_token_authfile(&s.registry.host(), "alice", &refresh);
    let out = s.skopeo.inspect_raw(
        &s.registry.reference("alice/app:1"),
        Creds::AuthFile(&authfile),
    );
    assert!(
        out.ok,
        "inspect with the identity token failed: {}\n{}",
        out.stderr,
        s.logs()
    );
    assert_eq!(sha256_digest(out.stdout.as_bytes()), image.manifest.digest);

    s.pull_identical(&image, "alice/app:1", Creds::AuthFile(&authfile));
    s.push_ok(&image, "alice/via-refresh:1", Creds::AuthFile(&authfile));
    assert!(s.exists("alice/via-refresh:1"));

    // A forged refresh token gets nothing.
    let forged =
        s.skopeo
            .identity_token_authfile(&s.registry.host(), "alice", &format!("{refresh}x"));
    let out = s.skopeo.inspect_raw(
        &s.registry.reference("alice/app:1"),
        Creds::AuthFile(&forged),
    );
    assert!(!out.ok, "a tampered refresh token was accepted");
}
