//! Self-tests of the test kit, independent of purser: a registry without authentication, a
//! skopeo round trip of a generated OCI image, the HTTP client, the tar builder, the openssl
//! key-id computation against a known vector, the log check, the free ports and redis-server.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::path::Path;
use std::process::Command;

use purser_testkit::*;

#[test]
fn registry_without_auth_round_trips_an_image_byte_for_byte() {
    let registry = Registry::start(RegistryAuth::None);
    let image = OciImage::build(2);
    let skopeo = Skopeo::new();

    skopeo
        .push(&image, &registry, "selftest/app:1", Creds::None)
        .expect_ok("push to an open registry");

    let raw = skopeo
        .inspect_raw(&registry.reference("selftest/app:1"), Creds::None)
        .expect_ok("inspect --raw");
    assert_eq!(
        sha256_digest(raw.stdout.as_bytes()),
        image.manifest.digest,
        "the registry must store the manifest as pushed"
    );

    let (out, dir) = skopeo.pull_to_dir(&registry, "selftest/app:1", Creds::None);
    out.expect_ok("pull back");
    image.assert_same_as_dir(&dir);

    // A second repository gets the blobs by cross-repository mount, which the access log shows.
    skopeo
        .push(&image, &registry, "selftest/copy:1", Creds::None)
        .expect_ok("push to a second repository");
    assert!(
        registry.log_text().lines().any(|l| l
            .contains("POST /v2/selftest/copy/blobs/uploads/?from=selftest%2Fapp&mount=sha256")
            && l.contains("\" 201 ")),
        "no mount in the access log:\n{}",
        registry.log_tail()
    );
    skopeo
        .delete(&registry.reference("selftest/copy:1"), Creds::None)
        .expect_ok("delete the copy");

    // The registry's catalog answers without auth and names the repository.
    let catalog = Http::get(&format!("{}/v2/_catalog", registry.url()))
        .send()
        .expect("catalog");
    assert_eq!(catalog.status, 200);
    assert_eq!(
        catalog.json()["repositories"],
        serde_json::json!(["selftest/app", "selftest/copy"])
    );

    // Deleting works (storage.delete.enabled), and afterwards the tag is gone.
    skopeo
        .delete(&registry.reference("selftest/app:1"), Creds::None)
        .expect_ok("delete");
    let gone = skopeo.inspect_raw(&registry.reference("selftest/app:1"), Creds::None);
    assert!(!gone.ok, "deleted image still inspectable");

    // The access log records the requests (later tests read it for blob mounts).
    assert!(
        registry
            .log_text()
            .contains("PUT /v2/selftest/app/manifests/1"),
        "{}",
        registry.log_tail()
    );
}

#[test]
fn a_changed_blob_is_detected_by_the_identity_check() {
    let registry = Registry::start(RegistryAuth::None);
    let image = OciImage::build(1);
    let skopeo = Skopeo::new();
    skopeo
        .push(&image, &registry, "selftest/tamper:1", Creds::None)
        .expect_ok("push");
    let (out, dir) = skopeo.pull_to_dir(&registry, "selftest/tamper:1", Creds::None);
    out.expect_ok("pull");
    let layer = dir.join(image.layers[0].hex());
    let mut bytes = std::fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let result = std::panic::catch_unwind(|| image.assert_same_as_dir(&dir));
    assert!(result.is_err(), "a modified layer must fail the check");
}

#[test]
fn tar_layers_are_readable_by_tar() {
    let dir = tempfile::tempdir().unwrap();
    let tar = tar_archive(&[("data/a.txt", b"hello\n"), ("b.bin", &[7u8; 700])]);
    assert_eq!(tar.len() % 512, 0);
    let path = dir.path().join("t.tar");
    std::fs::write(&path, &tar).unwrap();
    let out = Command::new("tar")
        .arg("-tvf")
        .arg(&path)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("data/a.txt"), "{listing}");
    assert!(listing.contains("b.bin"), "{listing}");
    assert!(listing.contains(" 700 "), "{listing}");
}

#[test]
fn libtrust_kid_matches_a_known_vector() {
    // Test-only key (tests/fixtures/keyid/), with its id computed independently.
    let pem = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keyid/p256.pem");
    assert_eq!(
        libtrust_kid_openssl(&pem, false),
        "Y6UI:VKJO:OK4L:JDVB:D4OW:TKX2:NO2Q:GY45:Q5VE:4OLL:SQLX:PWYT"
    );
    // The same id from a self-signed certificate of that key.
    let dir = tempfile::tempdir().unwrap();
    let crt = dir.path().join("c.crt");
    openssl_stdout(&[
        "req",
        "-new",
        "-x509",
        "-key",
        &pem.display().to_string(),
        "-subj",
        "/CN=kid-test",
        "-days",
        "1",
        "-out",
        &crt.display().to_string(),
    ]);
    assert_eq!(
        libtrust_kid_openssl(&crt, true),
        "Y6UI:VKJO:OK4L:JDVB:D4OW:TKX2:NO2Q:GY45:Q5VE:4OLL:SQLX:PWYT"
    );
}

#[test]
fn http_client_sends_chunked_bodies_and_reads_answers() {
    // A one-shot server that records the raw request and answers with a chunked body.
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "request ended early");
            req.extend_from_slice(&buf[..n]);
        }
        s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Test: yes\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        String::from_utf8(req).unwrap()
    });
    let resp = Http::post(&format!("http://{addr}/token"))
        .basic("zoë", "p:w")
        .form(&[("grant_type", "password"), ("scope", "a b")])
        .chunked()
        .send()
        .unwrap();
    let req = server.join().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"abcde");
    assert_eq!(resp.header("x-test"), Some("yes"));
    assert!(req.starts_with("POST /token HTTP/1.1\r\n"), "{req}");
    assert!(req.contains("Transfer-Encoding: chunked\r\n"), "{req}");
    // base64("zoë:p:w")
    assert!(
        req.contains("Authorization: Basic em/DqzpwOnc=\r\n"),
        "{req}"
    );
    let (_, raw_body) = req.split_once("\r\n\r\n").unwrap();
    // 14 bytes first: chunk sizes are hex, in either case.
    assert!(
        raw_body.to_ascii_lowercase().starts_with("e\r\n"),
        "sent in two chunks: {raw_body:?}"
    );
    let body = dechunk(raw_body.as_bytes()).expect("valid chunked body");
    assert_eq!(body, b"grant_type=password&scope=a+b");
}

#[test]
fn jwt_decoder_verifies_against_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let crt = dir.path().join("k.crt");
    openssl_key_and_cert(
        &key,
        &crt,
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "jwt-test",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims =
        serde_json::json!({"iss": "i", "aud": "a", "exp": now + 60, "nbf": now, "iat": now});
    let pem = std::fs::read(&key).unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap();
    let jwt = Jwt::decode(&token);
    assert_eq!(jwt.header["alg"], "ES256");
    assert_eq!(jwt.claims["aud"], "a");
    jwt.verify_with_cert(&crt, "i", "a");
    let wrong = std::panic::catch_unwind(|| jwt.verify_with_cert(&crt, "other", "a"));
    assert!(wrong.is_err(), "a wrong issuer must fail verification");
}

#[test]
fn registry_with_token_auth_accepts_a_token_signed_by_its_bundle() {
    // A key and self-signed certificate made with openssl stand in for purser here.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let crt = dir.path().join("k.crt");
    openssl_key_and_cert(&key, &crt, &["rsa:2048"], "bundle-test");
    let realm = "http://127.0.0.1:9/token";
    let registry = Registry::start(RegistryAuth::Token {
        realm: realm.into(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        rootcertbundle: crt.clone(),
    });
    let challenge = Http::get(&format!("{}/v2/", registry.url()))
        .send()
        .unwrap();
    assert_eq!(challenge.status, 401);
    let www = challenge.header("www-authenticate").unwrap_or_default();
    assert!(
        www.contains(&format!("realm=\"{realm}\"")) && www.contains(SERVICE),
        "{www}"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |access: serde_json::Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(libtrust_kid_openssl(&crt, true));
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": "t", "aud": SERVICE, "exp": now + 120, "nbf": now - 5,
            "iat": now, "jti": random_hex(16), "access": access,
        });
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&key).unwrap()).unwrap(),
        )
        .unwrap()
    };
    let catalog = format!("{}/v2/_catalog", registry.url());
    let allowed =
        sign(serde_json::json!([{"type": "registry", "name": "catalog", "actions": ["*"]}]));
    let r = Http::get(&catalog).bearer(&allowed).send().unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), registry.log_tail());
    let empty = sign(serde_json::json!([]));
    let r = Http::get(&catalog).bearer(&empty).send().unwrap();
    assert_eq!(r.status, 401, "a token without access must be refused");
}

/// A stand-in token server for the identity-token check: answers the OAuth2 refresh grant (and
/// nothing else) with a token granting `*` on the requested repository.
fn fake_refresh_server(
    key_pem: Vec<u8>,
    kid: String,
    refresh: &'static str,
) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut req = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    if !head.contains("chunked") || body.ends_with("0\r\n\r\n") {
                        break;
                    }
                }
            }
            let text = String::from_utf8_lossy(&req).to_string();
            let _ = tx.send(text.clone());
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let body = if head.contains("chunked") {
                String::from_utf8(dechunk(body.as_bytes()).unwrap_or_default()).unwrap()
            } else {
                body.to_string()
            };
            let form: std::collections::HashMap<String, String> =
                form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect();
            let ok = head.starts_with("POST ")
                && form.get("grant_type").map(String::as_str) == Some("refresh_token")
                && form.get("refresh_token").map(String::as_str) == Some(refresh);
            let response = if ok {
                let access: Vec<serde_json::Value> = form
                    .get("scope")
                    .map(|s| s.split(' ').collect::<Vec<_>>())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|s| {
                        let mut p = s.splitn(3, ':');
                        let (t, n) = (p.next()?, p.next()?);
                        Some(serde_json::json!({"type": t, "name": n, "actions": ["*"]}))
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
                header.kid = Some(kid.clone());
                let claims = serde_json::json!({"iss": ISSUER, "sub": "t", "aud": SERVICE,
                    "exp": now + 120, "nbf": now - 5, "iat": now, "access": access});
                let token = jsonwebtoken::encode(
                    &header,
                    &claims,
                    &jsonwebtoken::EncodingKey::from_rsa_pem(&key_pem).unwrap(),
                )
                .unwrap();
                let body =
                    serde_json::json!({"access_token": token, "expires_in": 120}).to_string();
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = s.write_all(response.as_bytes());
        }
    });
    (url, rx)
}

#[test]
fn skopeo_reads_an_identity_token_auth_file_and_posts_the_refresh_grant() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let crt = dir.path().join("k.crt");
    openssl_key_and_cert(&key, &crt, &["rsa:2048"], "refresh-test");
    let (realm, requests) = fake_refresh_server(
        std::fs::read(&key).unwrap(),
        libtrust_kid_openssl(&crt, true),
        "RT-e2e-123",
    );
    let registry = Registry::start(RegistryAuth::Token {
        realm,
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        rootcertbundle: crt,
    });
    let skopeo = Skopeo::new();
    let image = OciImage::build(1);
    let authfile = skopeo.identity_token_authfile(&registry.host(), "alice", "RT-e2e-123");
    let out = skopeo.push(
        &image,
        &registry,
        "selftest/refresh:1",
        Creds::AuthFile(&authfile),
    );
    assert!(
        out.ok,
        "push with an identity token failed: {}\nrequests seen: {:?}",
        out.stderr,
        requests.try_iter().collect::<Vec<_>>(),
    );
    let out = skopeo
        .inspect_raw(
            &registry.reference("selftest/refresh:1"),
            Creds::AuthFile(&authfile),
        )
        .expect_ok("inspect with an identity token");
    assert_eq!(sha256_digest(out.stdout.as_bytes()), image.manifest.digest);
    let first = requests.recv().unwrap();
    assert!(first.starts_with("POST /token "), "{first}");
    assert!(first.contains("grant_type=refresh_token"), "{first}");
    assert!(first.contains("Transfer-Encoding: chunked"), "{first}");

    let wrong = skopeo.identity_token_authfile(&registry.host(), "alice", "RT-wrong");
    let out = skopeo.inspect_raw(
        &registry.reference("selftest/refresh:1"),
        Creds::AuthFile(&wrong),
    );
    assert!(!out.ok, "a wrong identity token was accepted");
}

/// The log check every Purser handle runs when dropped finds what it looks for, and only that.
#[test]
fn log_secret_check_finds_passwords_and_tokens() {
    assert_eq!(secret_in_log("INFO token request account=\"alice\""), None);
    assert!(secret_in_log("password alice-secret").is_some());
    assert!(secret_in_log("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln").is_some());
    // A lone base64url run starting like a JSON object is not a token.
    assert_eq!(secret_in_log("x5c eyJhbGciOiJSUzI1NiJ9 only"), None);
}

#[test]
fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
    for p in &ports {
        assert!(*p < low, "port {p} is in the ephemeral range from {low}");
        std::net::TcpListener::bind(("127.0.0.1", *p)).unwrap();
    }
}

#[test]
fn redis_server_starts_answers_stops_and_starts_again_empty() {
    let mut redis = purser_testkit::redis::RedisServer::start();
    assert!(redis.answers());
    assert_eq!(redis.cli(&["SET", "forever", "1"]).trim(), "OK");
    assert_eq!(redis.cli(&["SET", "brief", "1", "EX", "60"]).trim(), "OK");
    assert_eq!(redis.keys_without_expiry(), vec!["forever".to_string()]);
    redis.stop();
    assert!(!redis.answers());
    redis.start_again();
    assert!(redis.answers());
    // Nothing is saved: a restart is empty.
    assert!(redis.keys().is_empty());
}
