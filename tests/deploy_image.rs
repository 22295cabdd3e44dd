//! The container image: `scripts/image` builds it with buildah from the Containerfile (from
//! scratch, the release binary with its loader and libraries, CA certificates, the user 65532,
//! /etc/purser and /var/lib/purser, ports and OCI labels), and prints its name and digest. The
//! image is exported as an OCI layout and its layers unpacked into a root filesystem; purser
//! runs from there under `chroot` as 65532, with the image's configuration, writes its key into
//! /var/lib/purser, issues tokens with which skopeo pushes and pulls through Debian's registry,
//! and reaches slapd by a host name found only in the image's /etc/hosts. The settings come
//! from docs/deploy.md's compose file: purser's environment, and the registry's token settings
//! with its certificate read from the volume purser writes its key into.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use purser_testkit::slapd::{self, Slapd};
use purser_testkit::*;
use serde_json::Value;

/// A name the host does not know: only the image's /etc/hosts resolves it.
const LDAP_HOST: &str = "ldap.purser-image.test";

/// buildah (scripts/image and the export) on a storage of its own under `work`.
fn buildah(work: &Path) -> Command {
    require_program("/usr/bin/buildah", "buildah");
    let mut cmd = Command::new("/usr/bin/buildah");
    env_for_buildah(&mut cmd, work);
    cmd
}

fn env_for_buildah(cmd: &mut Command, work: &Path) {
    let conf = work.join("storage.conf");
    if !conf.exists() {
        fs::create_dir_all(work.join("home")).unwrap();
        fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                work.join("storage").display(),
                work.join("run").display()
            ),
        )
        .unwrap();
    }
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("CONTAINERS_") || k.starts_with("BUILDAH_") || k.starts_with("STORAGE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CONTAINERS_STORAGE_CONF", &conf)
        .env("HOME", work.join("home"))
        .env("TMPDIR", work);
}

fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `KEY: value` of scripts/image's output.
fn printed<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("scripts/image printed no `{key}:`\n{out}"))
        .trim()
}

/// Exports `tag` as an OCI layout and unpacks its layers, in order, into `rootfs` (as root:
/// owners kept). Returns the image's config and the layers' compressed size.
fn unpack(work: &Path, tag: &str, rootfs: &Path) -> (Value, u64) {
    let layout = work.join("oci");
    let mut push = buildah(work);
    push.args(["push", "--quiet", tag])
        .arg(format!("oci:{}", layout.display()));
    run(push, "buildah push to an OCI layout");
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: Value = serde_json::from_slice(
        &fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let config: Value = serde_json::from_slice(
        &fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    fs::create_dir_all(rootfs).unwrap();
    let mut compressed = 0;
    for layer in manifest["layers"].as_array().unwrap() {
        compressed += layer["size"].as_u64().unwrap();
        let mut tar = Command::new("tar");
        tar.arg("-xf")
            .arg(blob(layer["digest"].as_str().unwrap()))
            .arg("--numeric-owner")
            .arg("-C")
            .arg(rootfs);
        run(tar, "unpack a layer");
    }
    (config, compressed)
}

fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap().flatten() {
        let m = fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            total += tree_size(&e.path());
        } else {
            total += m.len();
        }
    }
    total
}

/// Every regular file under `dir`, relative.
fn files(dir: &Path, under: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let m = fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            files(&e.path(), under, out);
        } else {
            out.push(e.path().strip_prefix(under).unwrap().to_path_buf());
        }
    }
}

#[test]
fn the_image_serves_tokens_from_chroot_to_the_registry_and_finds_ldap_by_name() {
    require_root("unpacking the image with its owners and running it under chroot as 65532");
    let release = release_purser_bin();
    let work = tempfile::Builder::new()
        .prefix("purser-image-")
        .tempdir()
        .unwrap();
    let w = work.path();

    // scripts/image, as an operator runs it (with the release binary built once for the suite).
    let tag = format!("localhost/purser-test:{}", random_hex(4));
    let mut script = Command::new("scripts/image");
    script
        .arg("--binary")
        .arg(release)
        .args(["--tag", &tag])
        .env("CARGO_TARGET_DIR", w.join("target"));
    env_for_buildah(&mut script, w);
    let out = run(script, "scripts/image");
    assert_eq!(printed(&out, "image"), tag);
    let digest = printed(&out, "digest");
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "digest: {digest}"
    );

    let rootfs = w.join("rootfs");
    let (config, compressed) = unpack(w, &tag, &rootfs);
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/bin/purser"]));
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["serve", "--config", "/etc/purser/purser.yaml"])
    );
    let ports: Vec<&String> = c["ExposedPorts"].as_object().unwrap().keys().collect();
    assert_eq!(ports, ["5001/tcp", "9090/tcp"]);
    let labels = &c["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://example.invalid/purser"
    );

    // From scratch: purser and what it loads, no shell.
    let mut all = Vec::new();
    files(&rootfs, &rootfs, &mut all);
    for p in ["bin/sh", "usr/bin/sh", "bin/busybox"] {
        assert!(!rootfs.join(p).exists(), "{p} in the image");
    }
    let executables: Vec<&PathBuf> = all
        .iter()
        .filter(|p| p.starts_with("usr/bin") || p.starts_with("bin") || p.starts_with("sbin"))
        .collect();
    assert_eq!(executables, [&PathBuf::from("usr/bin/purser")]);
    assert!(rootfs.join("lib64/ld-linux-x86-64.so.2").is_file());
    assert!(
        rootfs
            .join("etc/ssl/certs/ca-certificates.crt")
            .metadata()
            .unwrap()
            .len()
            > 1000
    );
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("purser:x:65532:65532:"), "{passwd}");
    let group = fs::read_to_string(rootfs.join("etc/group")).unwrap();
    assert!(group.contains("purser:x:65532:"), "{group}");
    let data = fs::metadata(rootfs.join("var/lib/purser")).unwrap();
    assert_eq!((data.uid(), data.gid()), (65532, 65532));
    assert!(rootfs.join("etc/purser/purser.yaml").is_file());
    let size = tree_size(&rootfs);
    eprintln!(
        "image {tag}: {digest}; unpacked {:.1} MB, layers {:.1} MB compressed",
        size as f64 / 1e6,
        compressed as f64 / 1e6
    );
    assert!(size < 40_000_000, "the image is {size} bytes unpacked");

    // What a runtime adds: the users file (a mounted file), a host name in /etc/hosts.
    let slapd = Slapd::start();
    let ldap_port = slapd.url().rsplit(':').next().unwrap().to_string();
    fs::write(
        rootfs.join("etc/purser/users.htpasswd"),
        htpasswd(&["-nbB", ALICE.0, ALICE.1]),
    )
    .unwrap();
    let hosts = rootfs.join("etc/hosts");
    let mut text = fs::read_to_string(&hosts).unwrap();
    text.push_str(&format!("127.0.0.1\t{LDAP_HOST}\n"));
    fs::write(&hosts, text).unwrap();
    let host_hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    assert!(!host_hosts.contains(LDAP_HOST));

    // docs/deploy.md's compose file: purser's environment, the registry's token settings, and
    // the volume both mount (purser's key folder, the registry's certificate).
    let compose: Value =
        serde_norway::from_str(&doc_block("docs/deploy.md", "# compose.yaml")).unwrap();
    let svc = &compose["services"];
    let volume_of = |service: &str, name: &str| -> String {
        svc[service]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .find_map(|v| v.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{service} mounts no {name}"))
            .trim_end_matches(":ro")
            .to_string()
    };
    assert_eq!(volume_of("purser", "purser-data"), "/var/lib/purser");
    assert_eq!(volume_of("purser", "./purser"), "/etc/purser");
    let reg_env = &svc["registry"]["environment"];
    assert_eq!(reg_env["REGISTRY_AUTH"], "token");
    let bundle_in_registry = reg_env["REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE"]
        .as_str()
        .unwrap();
    let bundle = bundle_in_registry
        .strip_prefix(&format!("{}/", volume_of("registry", "purser-data")))
        .expect("the registry's certificate is in the shared volume");

    // purser from the image's root, as the image's user, with the image's configuration and
    // the compose file's environment; the test's runtime adds the ports and the directory.
    let port = free_port();
    let metrics_port = free_port();
    require_program("/usr/sbin/chroot", "coreutils");
    let mut cmd = Command::new("/usr/sbin/chroot");
    cmd.arg("--userspec=65532:65532")
        .arg(&rootfs)
        .args([
            "/usr/bin/purser",
            "serve",
            "--config",
            "/etc/purser/purser.yaml",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .env_clear()
        .envs(
            svc["purser"]["environment"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())),
        )
        .env(
            "PURSER_METRICS__LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("PURSER_AUTHN__ORDER", "[htpasswd, ldap]")
        .env(
            "PURSER_AUTHN__LDAP__URLS",
            format!("[\"ldap://{LDAP_HOST}:{ldap_port}\"]"),
        )
        .env("PURSER_AUTHN__LDAP__BIND_DN", slapd::SERVICE_DN)
        .env("PURSER_AUTHN__LDAP__BIND_PASSWORD", slapd::SERVICE_PASSWORD)
        .env("PURSER_AUTHN__LDAP__USER_BASE", slapd::PEOPLE);
    let key = rootfs.join("var/lib/purser/signing.pem");
    let dir = tempfile::Builder::new()
        .prefix("purser-image-run-")
        .tempdir()
        .unwrap();
    let p = Purser::launch_command(dir, cmd, port, metrics_port, key.clone());
    let status =
        fs::read_to_string(format!("/proc/{}/status", purser_testkit::ops::pid(&p))).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("65532")),
        "purser runs as 65532:\n{status}"
    );
    let k = fs::metadata(&key).unwrap();
    assert_eq!(k.uid(), 65532, "the key generated by the image's user");

    let registry = Registry::start(RegistryAuth::Token {
        realm: p.token_url(),
        service: reg_env["REGISTRY_AUTH_TOKEN_SERVICE"]
            .as_str()
            .unwrap()
            .to_string(),
        issuer: reg_env["REGISTRY_AUTH_TOKEN_ISSUER"]
            .as_str()
            .unwrap()
            .to_string(),
        rootcertbundle: rootfs.join("var/lib/purser").join(bundle),
    });
    let skopeo = Skopeo::new();
    let image = OciImage::build(1);
    let logs = || format!("{}\n{}", p.log_tail(), registry.log_tail());

    // An htpasswd user of the image's users file.
    let out = skopeo.push(&image, &registry, "alice/app:1", Creds::of(ALICE));
    assert!(out.ok, "push as alice: {}\n{}", out.stderr, logs());
    let (out, pulled) = skopeo.pull_to_dir(&registry, "alice/app:1", Creds::of(ALICE));
    assert!(out.ok, "pull as alice: {}\n{}", out.stderr, logs());
    image.assert_same_as_dir(&pulled);

    // A directory user: the LDAP URL names a host only the image's /etc/hosts knows.
    let carol_pw = slapd::password_of("carol");
    let carol = ("carol", carol_pw.as_str());
    let out = skopeo.push(&image, &registry, "carol/app:1", Creds::of(carol));
    assert!(out.ok, "push as carol (LDAP): {}\n{}", out.stderr, logs());
    let (out, pulled) = skopeo.pull_to_dir(&registry, "carol/app:1", Creds::of(carol));
    assert!(out.ok, "pull as carol (LDAP): {}\n{}", out.stderr, logs());
    image.assert_same_as_dir(&pulled);
    assert!(
        slapd.binds_as(&slapd::user_dn("carol")) > 0,
        "slapd saw carol's bind"
    );

    // And a wrong password is refused through the same path.
    let out = skopeo.push(
        &image,
        &registry,
        "carol/app:2",
        Creds::of(("carol", "wrong")),
    );
    assert!(!out.ok, "a wrong password pushed");
}
