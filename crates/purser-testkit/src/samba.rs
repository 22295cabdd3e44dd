//! A throwaway Active Directory for tests: Samba 4 as a domain controller.
//!
//! `Samba::start()` provisions the domain `EXAMPLE.TEST` (NetBIOS `EXAMPLE`) into a temporary
//! folder with `samba-tool domain provision` from an empty base configuration, on a loopback
//! address of its own (`127.0.0.2`, `.3`, ...: the LDAP ports 389 and 636 are fixed, so two
//! directories cannot share an address), runs `samba -i -M single` with the LDAP service only,
//! waits until both ports accept connections and loads the seed (one `ldapadd` over LDAPS as the
//! domain's Administrator). Samba makes its own CA and server certificate at first start
//! (`private/tls/ca.pem`, `cert.pem`: `CN=DC1.example.test`, no subjectAltName): [`Samba::ca_file`].
//! `stop()` and `start_again()` stop and restart it with the same data; dropping it kills it.
//! Start one per test binary and share it (provisioning takes about 10 s).
//!
//! Requires the Debian packages `samba-ad-dc`, `samba`, `samba-ad-provision` and `ldap-utils`;
//! a missing program is a test failure (scripts/test installs them).
//!
//! The seed, under `CN=Users,DC=example,DC=test` (every password is [`password_of`] the name):
//! - `alice`: in `developers`, which is itself a member of `engineering` (a nested group);
//! - `bob`: in `auditors` only; `zoë`: a non-ASCII name, in `developers`;
//! - `dave`: disabled (`userAccountControl` 514); `erin`: must change her password
//!   (`pwdLastSet` 0: her password counts as expired);
//! - the service account `purser` ([`SERVICE_UPN`], [`SERVICE_PASSWORD`]).

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{stop_child, wait_port_closed, wait_started};

/// The Samba server program.
pub const SAMBA: &str = "/usr/sbin/samba";
/// Samba's administration tool.
pub const SAMBA_TOOL: &str = "/usr/bin/samba-tool";
/// The domain's DNS name (the realm, lower case).
pub const DOMAIN: &str = "example.test";
/// The NetBIOS domain name.
pub const NETBIOS: &str = "EXAMPLE";
/// The naming context.
pub const BASE: &str = "DC=example,DC=test";
/// Where the seeded users and groups are.
pub const USERS_BASE: &str = "CN=Users,DC=example,DC=test";
/// The name in the certificate Samba generates.
pub const HOST_NAME: &str = "dc1.example.test";
/// The Administrator's password.
pub const ADMIN_PASSWORD: &str = "Adm1n-Secret!";
/// The service account's user principal name.
pub const SERVICE_UPN: &str = "purser@example.test";
/// The service account's password.
pub const SERVICE_PASSWORD: &str = "Svc-secret-1!";
/// Users that can log in.
pub const USERS: &[&str] = &["alice", "bob", "zoë"];
/// A disabled account.
pub const DISABLED: &str = "dave";
/// An account whose password must be changed (expired).
pub const EXPIRED: &str = "erin";

/// How long the server gets to start or stop before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// The password of a seeded user (complex enough for the domain's default policy).
pub fn password_of(name: &str) -> String {
    format!("Pw-{name}-1!")
}

/// The DN of a seeded user or group.
pub fn dn_of(name: &str) -> String {
    format!("CN={name},{USERS_BASE}")
}

/// A running Samba AD DC (see the module's documentation), killed on drop.
pub struct Samba {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The loopback address it listens on (ports 389 and 636).
    pub ip: Ipv4Addr,
    /// How long provisioning, the first start and the seed took.
    pub setup_time: Duration,
}

impl Samba {
    /// Provisions, starts and seeds a domain controller; panics with the reason when it cannot.
    pub fn start() -> Samba {
        let started = Instant::now();
        for (program, package) in [
            (SAMBA, "samba-ad-dc"),
            (SAMBA_TOOL, "samba"),
            ("/usr/bin/ldapadd", "ldap-utils"),
        ] {
            crate::process::require_program(program, package);
        }
        assert!(
            Path::new("/usr/share/samba/setup").is_dir(),
            "/usr/share/samba/setup is missing: install the Debian package `samba-ad-provision` (scripts/test does it)"
        );
        let ip = free_loopback();
        let dir = tempfile::Builder::new()
            .prefix("purser-samba-")
            .tempdir()
            .expect("temporary folder");
        let root = dir.path();
        fs::write(root.join("empty.conf"), "").unwrap();
        let target = root.join("dc");
        run(
            Command::new(SAMBA_TOOL)
                .args(["domain", "provision", "-s"])
                .arg(root.join("empty.conf"))
                .arg(format!("--targetdir={}", target.display()))
                .args([
                    "--realm=EXAMPLE.TEST",
                    "--domain=EXAMPLE",
                    "--server-role=dc",
                    "--dns-backend=NONE",
                    "--use-rfc2307",
                    "--host-name=dc1",
                ])
                .arg(format!("--adminpass={ADMIN_PASSWORD}"))
                .arg(format!("--host-ip={ip}"))
                .args(["--option", &format!("interfaces={ip}/8")])
                .args(["--option", "bind interfaces only=yes"]),
            "samba-tool domain provision",
        );
        // Only the LDAP service: no SMB, Kerberos, DNS or replication to start or to clash.
        let conf = target.join("etc/smb.conf");
        let text = fs::read_to_string(&conf).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            if line.trim_start().starts_with("server services") {
                writeln!(out, "\tserver services = ldap").unwrap();
                writeln!(out, "\tpid directory = {}", target.join("run").display()).unwrap();
                writeln!(out, "\tlog file = {}", root.join("samba.log").display()).unwrap();
            } else {
                writeln!(out, "{line}").unwrap();
            }
        }
        fs::write(&conf, out).unwrap();
        fs::create_dir_all(target.join("run")).unwrap();
        let mut samba = Samba {
            dir,
            child: None,
            ip,
            setup_time: Duration::ZERO,
        };
        samba.start_again();
        samba.seed();
        samba.setup_time = started.elapsed();
        samba
    }

    /// `ldaps://IP` (port 636).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}", self.ip)
    }

    /// `ldap://IP` (port 389; Samba wants StartTLS before a simple bind there).
    pub fn ldap_url(&self) -> String {
        format!("ldap://{}", self.ip)
    }

    /// The CA Samba generated at its first start (it signed the server's certificate).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("dc/private/tls/ca.pem")
    }

    /// The server certificate Samba generated (`CN=DC1.example.test`, no subjectAltName).
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("dc/private/tls/cert.pem")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        for name in ["samba.log", "samba.stdout"] {
            text.push_str(&String::from_utf8_lossy(
                &fs::read(self.dir.path().join(name)).unwrap_or_default(),
            ));
        }
        text
    }

    /// Starts the server (again) with the same data; returns when ports 389 and 636 accept
    /// connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "samba is already running");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("samba.stdout"))
            .unwrap();
        let child = Command::new(SAMBA)
            .args(["-i", "-M", "single", "-s"])
            .arg(self.dir.path().join("dc/etc/smb.conf"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {SAMBA}: {e}"));
        let mut child = child;
        let ip = self.ip;
        let up =
            |port| TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(1)).is_ok();
        wait_started(
            &mut child,
            "samba",
            DEADLINE,
            || up(389) && up(636),
            || self.log(),
        );
        self.child = Some(child);
    }

    /// Stops the server (SIGTERM, then SIGKILL at the deadline) and waits until its ports close.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        stop_child(&mut child, "samba", DEADLINE / 4);
        wait_port_closed((self.ip, 636).into(), DEADLINE);
    }

    /// Runs `ldapadd` over LDAPS as the Administrator with `ldif`.
    pub fn ldapadd(&self, ldif: &str) {
        let path = self.dir.path().join("add.ldif");
        fs::write(&path, ldif).unwrap();
        // Setup only: the test's own checks of the certificate are purser's, not ldapadd's.
        run(
            Command::new("/usr/bin/ldapadd")
                .env("LDAPTLS_REQCERT", "never")
                .args(["-H", &self.ldaps_url(), "-x", "-D"])
                .arg(format!("Administrator@{DOMAIN}"))
                .args(["-w", ADMIN_PASSWORD, "-f"])
                .arg(&path),
            "ldapadd (the seed)",
        );
    }

    fn seed(&self) {
        let mut out = String::new();
        let mut user = |name: &str, control: u32, must_change: bool| {
            let pw = format!("\"{}\"", password_of(name));
            let utf16: Vec<u8> = pw.encode_utf16().flat_map(u16::to_le_bytes).collect();
            attr(&mut out, "dn", &dn_of(name));
            attr(&mut out, "objectClass", "user");
            attr(&mut out, "sAMAccountName", name);
            attr(&mut out, "userPrincipalName", &format!("{name}@{DOMAIN}"));
            writeln!(out, "unicodePwd:: {}", data_encoding::BASE64.encode(&utf16)).unwrap();
            attr(&mut out, "userAccountControl", &control.to_string());
            if must_change {
                attr(&mut out, "pwdLastSet", "0");
            }
            out.push('\n');
        };
        for name in USERS {
            user(name, 512, false);
        }
        user(DISABLED, 514, false);
        user(EXPIRED, 512, true);
        // The service account: its password is SERVICE_PASSWORD, not password_of.
        let pw = format!("\"{SERVICE_PASSWORD}\"");
        let utf16: Vec<u8> = pw.encode_utf16().flat_map(u16::to_le_bytes).collect();
        attr(&mut out, "dn", &dn_of("purser"));
        attr(&mut out, "objectClass", "user");
        attr(&mut out, "sAMAccountName", "purser");
        attr(&mut out, "userPrincipalName", SERVICE_UPN);
        writeln!(out, "unicodePwd:: {}", data_encoding::BASE64.encode(&utf16)).unwrap();
        attr(&mut out, "userAccountControl", "512");
        out.push('\n');
        let mut group = |name: &str, members: &[String]| {
            attr(&mut out, "dn", &dn_of(name));
            attr(&mut out, "objectClass", "group");
            attr(&mut out, "sAMAccountName", name);
            for m in members {
                attr(&mut out, "member", m);
            }
            out.push('\n');
        };
        group("developers", &[dn_of("alice"), dn_of("zoë")]);
        group("engineering", &[dn_of("developers")]);
        group("auditors", &[dn_of("bob")]);
        self.ldapadd(&out);
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback address whose ports 389 and 636 are free, starting from a place that differs
/// between test binaries running at once.
fn free_loopback() -> Ipv4Addr {
    let offset = u8::try_from(std::process::id() % 200).unwrap_or(0);
    for i in 0..250u8 {
        let last = 2 + (offset.wrapping_add(i) % 250);
        let ip = Ipv4Addr::new(127, 0, 0, last);
        let free = |port| TcpListener::bind((ip, port)).is_ok();
        if free(389) && free(636) {
            return ip;
        }
    }
    panic!("no loopback address with ports 389 and 636 free (binding them needs root)");
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `attr: value`, or `attr:: base64` when the value is not plain ASCII (LDIF, RFC 2849).
fn attr(out: &mut String, name: &str, value: &str) {
    let plain =
        value.bytes().all(|b| (0x20..0x7f).contains(&b)) && !value.starts_with([' ', ':', '<']);
    if plain {
        writeln!(out, "{name}: {value}").unwrap();
    } else {
        let b64 = data_encoding::BASE64.encode(value.as_bytes());
        writeln!(out, "{name}:: {b64}").unwrap();
    }
}
