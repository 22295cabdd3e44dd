//! The systemd unit (deploy/systemd/purser.service) and purser's side of `Type=notify`:
//! `systemd-analyze verify` passes on the unit and on the drop-ins of docs/deploy.md, and
//! purser sends `READY=1` once it serves, `RELOADING=1` and `READY=1` around a SIGHUP reload
//! (the reload done by then), and `STOPPING=1` at shutdown, on a path and on an abstract socket.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use purser_testkit::ops::{send_signal, wait_exit};
use purser_testkit::*;

const UNIT: &str = "deploy/systemd/purser.service";
const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

/// A scratch root for `systemd-analyze verify --root`: the unit, what its Exec lines run
/// (purser, kill) and the system's own units that it names (multi-user.target, ...).
fn verify_root(unit: &str) -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("purser-systemd-")
        .tempdir()
        .unwrap();
    let r = root.path();
    for d in ["etc/systemd/system", "usr/bin", "bin", "usr/lib/systemd"] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::write(r.join("etc/systemd/system/purser.service"), unit).unwrap();
    fs::copy(purser_bin(), r.join("usr/bin/purser")).unwrap();
    let kill = if Path::new("/usr/bin/kill").is_file() {
        "/usr/bin/kill"
    } else {
        "/bin/kill"
    };
    require_program(kill, "procps");
    fs::copy(kill, r.join("bin/kill")).unwrap();
    let cp = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(cp.success(), "copy the system's units");
    root
}

/// `systemd-analyze verify` on the unit in `root`: (success, everything it printed).
fn verify(root: &Path) -> (bool, String) {
    require_program(SYSTEMD_ANALYZE, "systemd");
    let out = Command::new(SYSTEMD_ANALYZE)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("--man=no")
        .arg("/etc/systemd/system/purser.service")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_unit_passes_systemd_analyze_verify_with_the_settings_it_promises() {
    let unit = fs::read_to_string(UNIT).unwrap();
    let root = verify_root(&unit);
    let (ok, out) = verify(root.path());
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );

    // What the unit promises, line by line (each `Key=value` as written in [Service]).
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/bin/purser serve --config /etc/purser/purser.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=purser",
        "Group=purser",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/purser",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
    ] {
        assert!(lines.contains(&want), "{UNIT} lacks `{want}`");
    }
    let writable: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("ReadWritePaths=") || l.starts_with("StateDirectory="))
        .collect();
    assert_eq!(
        writable,
        [&"ReadWritePaths=/var/lib/purser"],
        "only the data folder is writable"
    );

    // The check is not vacuous: a misspelt setting is reported.
    let broken = unit.replace("Type=notify", "Type=notfy");
    let root = verify_root(&broken);
    let (_, out) = verify(root.path());
    assert!(out.contains("notfy"), "a bad Type= went unnoticed:\n{out}");
}

/// docs/deploy.md's drop-ins (a secret through LoadCredential, a port below 1024) verify too.
#[test]
fn the_drop_ins_of_deploy_md_verify() {
    let unit = fs::read_to_string(UNIT).unwrap();
    let root = verify_root(&unit);
    let dropins = root.path().join("etc/systemd/system/purser.service.d");
    fs::create_dir_all(&dropins).unwrap();
    for (name, first) in [
        (
            "secrets.conf",
            "# /etc/systemd/system/purser.service.d/secrets.conf",
        ),
        (
            "low-port.conf",
            "# /etc/systemd/system/purser.service.d/low-port.conf",
        ),
    ] {
        let text = doc_block("docs/deploy.md", first);
        fs::write(dropins.join(name), &text).unwrap();
        let (ok, out) = verify(root.path());
        assert!(
            ok && out.trim().is_empty(),
            "with the drop-in {name}:\n{text}\nsystemd-analyze verify:\n{out}"
        );
    }
}

/// Receives one datagram within `bound`.
fn next_message(socket: &UnixDatagram, bound: Duration) -> String {
    socket.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification within {bound:?}: {e}"));
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn start_notifying(notify_socket: &str) -> Purser {
    let p = Prepared::new(base_config(), &[], "purser-notify-");
    let cwd = p.dir.path().to_path_buf();
    let args = [
        "serve".to_string(),
        "--config".to_string(),
        p.cfg_path.display().to_string(),
    ];
    Purser::spawn(
        p.dir,
        &cwd,
        &args,
        &[("NOTIFY_SOCKET".to_string(), notify_socket.to_string())],
        p.port,
        p.metrics_port,
        p.key_file,
    )
}

#[test]
fn purser_tells_systemd_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut p = start_notifying(path.to_str().unwrap());

    let ready = next_message(&socket, READY_TIMEOUT);
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first message: {ready:?}\n{}",
        p.log_tail()
    );
    // READY=1 comes once the listener is bound and serving: answered at once, no retry.
    let health = Http::get(&format!("{}/healthz", p.base_url()))
        .send()
        .unwrap();
    assert_eq!(health.status, 200);

    let policy_loads = |p: &Purser| {
        p.metric(
            "purser_reloads_total",
            &[("source", "policy"), ("outcome", "success")],
        )
    };
    let before = policy_loads(&p);
    send_signal(&p, "HUP");
    let reloading = next_message(&socket, Duration::from_secs(20));
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "after SIGHUP: {reloading:?}"
    );
    let again = next_message(&socket, Duration::from_secs(20));
    assert!(
        again.lines().any(|l| l == "READY=1"),
        "after the reload: {again:?}"
    );
    // READY=1 follows the reload's end: the policy's load is already counted.
    assert_eq!(policy_loads(&p), before + 1.0);

    send_signal(&p, "TERM");
    let stopping = next_message(&socket, Duration::from_secs(20));
    assert!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "after SIGTERM: {stopping:?}"
    );
    assert_eq!(wait_exit(&mut p, Duration::from_secs(40)), Some(0));
}

#[test]
fn purser_notifies_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("purser-test-notify-{}", random_hex(8));
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let p = start_notifying(&format!("@{name}"));
    let ready = next_message(&socket, READY_TIMEOUT);
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first message: {ready:?}\n{}",
        p.log_tail()
    );
}
