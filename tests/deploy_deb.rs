//! The Debian package: `scripts/deb` builds it with cargo-deb (the release binary, the systemd
//! unit, /etc/purser as conffiles, the maintainer scripts, completions for bash, zsh and fish,
//! and the manual pages generated from the clap definitions); it installs into a scratch root
//! with the real dpkg (`dpkg --root`, its maintainer scripts run on the host with DPKG_ROOT
//! set, `--force-script-chrootless`: the scratch root has no shell or useradd to chroot into,
//! and a test must not add a user to the machine it runs on), which registers the conffiles
//! and makes the system user there; the files are checked, `purser --version` runs from the
//! root, `man -l` renders the pages, `systemd-analyze verify` passes on the installed unit, and
//! a purge removes the data folder.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use purser_testkit::*;

fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    String::from_utf8(out.stdout).unwrap()
}

/// A root with what every Debian system has and the package relies on: the account files
/// (the postinst adds to them) and an empty dpkg database.
fn scratch_root(root: &Path) {
    for d in [
        "etc",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "var/log",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for (f, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
        ("etc/shadow", "root:*:20000:0:99999:7:::\n"),
        ("etc/gshadow", "root:*::\n"),
        ("var/lib/dpkg/status", ""),
        ("var/lib/dpkg/available", ""),
    ] {
        fs::write(root.join(f), text).unwrap();
    }
    fs::set_permissions(root.join("etc/shadow"), fs::Permissions::from_mode(0o640)).unwrap();
}

fn dpkg(root: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", root.join("var/log/dpkg.log").display()))
        .arg("--force-script-chrootless")
        // libc6 and the rest of $auto are the host's, not in the scratch root's database.
        .arg("--force-depends")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(cmd, &format!("dpkg {args:?}"))
}

#[test]
fn the_package_installs_into_a_scratch_root_with_unit_config_completions_and_manual() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let has_deb = Command::new(&cargo)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_deb,
        "cargo-deb is missing: cargo install --locked cargo-deb (scripts/test does it)"
    );
    require_root("dpkg --root (files owned by the package's user)");
    let release = release_purser_bin();
    let target = release.parent().unwrap().parent().unwrap();
    let mut script = Command::new("scripts/deb");
    script
        .arg("--binary")
        .arg(release)
        .env("CARGO_TARGET_DIR", target);
    let out = run(script, "scripts/deb");
    let deb = out.lines().last().unwrap().trim().to_string();
    assert!(
        deb.ends_with("_amd64.deb") && Path::new(&deb).is_file(),
        "{out}"
    );

    let mut fields = Command::new("dpkg-deb");
    fields.args(["-f", &deb, "Package", "Version", "Depends", "Section"]);
    let fields = run(fields, "dpkg-deb -f");
    assert!(fields.contains("Package: purser"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{fields}"
    );
    assert!(fields.contains("libc6"), "{fields}");

    let root_dir = tempfile::Builder::new()
        .prefix("purser-deb-root-")
        .tempdir()
        .unwrap();
    let root = root_dir.path();
    scratch_root(root);
    dpkg(root, &["-i", &deb]);

    // The binary runs from there (the host's libraries; the package depends on them).
    let mut version = Command::new(root.join("usr/bin/purser"));
    version.arg("--version");
    assert_eq!(
        run(version, "purser --version").trim(),
        format!("purser {}", env!("CARGO_PKG_VERSION"))
    );

    // The unit, as in the repository.
    assert_eq!(
        fs::read_to_string(root.join("usr/lib/systemd/system/purser.service")).unwrap(),
        fs::read_to_string("deploy/systemd/purser.service").unwrap()
    );

    // The configuration, registered as conffiles by dpkg.
    let conffiles = fs::read_to_string(root.join("var/lib/dpkg/info/purser.conffiles")).unwrap();
    for f in ["purser.yaml", "policy.yaml", "users.htpasswd"] {
        let path = format!("/etc/purser/{f}");
        assert!(
            conffiles.lines().any(|l| l == path),
            "{path} not a conffile:\n{conffiles}"
        );
        assert!(root.join(&path[1..]).is_file());
    }
    let mut query = Command::new("dpkg-query");
    query
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Status}\n${Conffiles}\n", "purser"]);
    let status = run(query, "dpkg-query");
    assert!(status.starts_with("install ok installed"), "{status}");
    assert!(status.contains("/etc/purser/purser.yaml "), "{status}");

    // The postinst's system user, data folder and the users file's group.
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    let entry: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("purser:"))
        .unwrap_or_else(|| panic!("no purser user:\n{passwd}"))
        .split(':')
        .collect();
    let uid: u32 = entry[2].parse().unwrap();
    let gid: u32 = entry[3].parse().unwrap();
    assert!(uid < 1000, "a system user: {entry:?}");
    assert_eq!(entry[5], "/var/lib/purser");
    assert_eq!(entry[6], "/usr/sbin/nologin");
    let group = fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group.contains(&format!("purser:x:{gid}:")), "{group}");
    let data = fs::metadata(root.join("var/lib/purser")).unwrap();
    assert_eq!((data.uid(), data.gid()), (uid, gid));
    assert_eq!(data.mode() & 0o777, 0o750);
    let users = fs::metadata(root.join("etc/purser/users.htpasswd")).unwrap();
    assert_eq!((users.gid(), users.mode() & 0o777), (gid, 0o640));

    // The default configuration is valid where it is installed.
    let mut check = Command::new(root.join("usr/bin/purser"));
    check
        .args(["check-config", "--config"])
        .arg(root.join("etc/purser/purser.yaml"))
        .env(
            "PURSER_TOKEN__SIGNING_KEY_FILE",
            root.join("var/lib/purser/signing.pem"),
        );
    run(check, "check-config of the package's configuration");

    // Completions: each shell's file, loadable by bash.
    for (f, shell) in [
        ("usr/share/bash-completion/completions/purser", "bash"),
        ("usr/share/zsh/vendor-completions/_purser", "zsh"),
        ("usr/share/fish/vendor_completions.d/purser.fish", "fish"),
    ] {
        let text = fs::read_to_string(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(
            text.contains("check-config"),
            "{shell} completion names the commands"
        );
    }
    let mut bash = Command::new("bash");
    bash.arg("-c").arg(format!(
        "source {} && complete -p purser",
        root.join("usr/share/bash-completion/completions/purser")
            .display()
    ));
    assert!(run(bash, "bash completion").contains("purser"));

    // The manual: a page per command, rendered by man.
    let man1 = root.join("usr/share/man/man1");
    for page in [
        "purser.1.gz",
        "purser-serve.1.gz",
        "purser-check-config.1.gz",
    ] {
        assert!(man1.join(page).is_file(), "{page} missing");
    }
    let render = |page: &str| {
        let mut man = Command::new(require_on_path("man", "man-db"));
        man.arg("-l")
            .arg(man1.join(page))
            .env("MANWIDTH", "100")
            .env("PAGER", "cat")
            .env("MANPAGER", "cat");
        run(man, &format!("man -l {page}"))
    };
    let top = render("purser.1.gz");
    assert!(
        top.contains("NAME") && top.contains("purser - Token authentication server"),
        "{top}"
    );
    assert!(
        top.contains("SUBCOMMANDS") && top.contains("purser-serve(1)"),
        "{top}"
    );
    let serve = render("purser-serve.1.gz");
    assert!(
        serve.contains("--config") && serve.contains("--listen"),
        "{serve}"
    );

    // systemd-analyze verify on the installed unit, its documentation pages found in the root.
    let verify_root = tempfile::tempdir().unwrap();
    let cp = Command::new("cp")
        .args(["-a", "--"])
        .arg(format!("{}/.", root.display()))
        .arg(verify_root.path())
        .status()
        .unwrap();
    assert!(cp.success());
    let vr = verify_root.path();
    fs::create_dir_all(vr.join("bin")).unwrap();
    fs::create_dir_all(vr.join("usr/lib/systemd")).unwrap();
    let kill = if Path::new("/usr/bin/kill").is_file() {
        "/usr/bin/kill"
    } else {
        "/bin/kill"
    };
    fs::copy(kill, vr.join("bin/kill")).unwrap();
    let cp = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(vr.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(cp.success());
    let mut verify = Command::new(require_on_path("systemd-analyze", "systemd"));
    verify
        .arg("verify")
        .arg(format!("--root={}", vr.display()))
        .arg("--man=no")
        .arg("/usr/lib/systemd/system/purser.service");
    let out = verify.output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A purge takes the data folder (the generated key) and the configuration; the user stays.
    dpkg(root, &["--purge", "purser"]);
    assert!(!root.join("var/lib/purser").exists());
    assert!(!root.join("etc/purser/purser.yaml").exists());
    assert!(!root.join("usr/bin/purser").exists());
    assert!(fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .contains("purser:"));
}
