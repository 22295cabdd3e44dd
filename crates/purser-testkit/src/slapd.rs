//! A throwaway OpenLDAP server for tests.
//!
//! `Slapd::start()` writes a `slapd.conf`, a CA and a server certificate (with the `openssl`
//! command) and a seed directory into a temporary folder, loads the seed with `slapadd`, and
//! runs `/usr/sbin/slapd` in the foreground, listening on `ldap://127.0.0.1:PORT` (plain and
//! StartTLS) and `ldaps://127.0.0.1:PORT2`. It returns once both ports accept connections.
//! `stop()` and `start_again()` stop and restart it on the same ports with the same data;
//! dropping it kills it. The server's log (stats level: connections, binds, searches) is in
//! `log()`.
//!
//! Requires the Debian packages `slapd` and `openssl`; a missing program is a test failure.
//!
//! The seed (see [`USERS`]): `dc=example,dc=org` with
//! - `ou=people`: `alice`, `bob`, `carol`, `zoë` (non-ASCII uid and cn), `dan, jr` (a comma in
//!   the uid), `user01`..`user20`, `twin` twice (once in `ou=contractors,ou=people`), and
//!   [`MULTI_UID`] with a second `uid` value; `alice` and `bob` carry the attributes of
//!   [`ATTRIBUTES`] (`departmentNumber`, `title`, a long `description`), the others none;
//! - `ou=services`: the service account [`SERVICE_DN`] / [`SERVICE_PASSWORD`];
//! - `ou=groups`: groupOfNames `developers` (alice, zoë, user01..user20) and `admins` (alice);
//!   posixGroup `contractors` (`memberUid: bob`, for `(memberUid={username})` filters).
//!
//! Every user's password is [`password_of`] its uid.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ports::free_port;
use crate::process::{stop_child, wait_port_closed, wait_started};

/// The OpenLDAP server program.
pub const SLAPD: &str = "/usr/sbin/slapd";
/// The directory's suffix.
pub const SUFFIX: &str = "dc=example,dc=org";
/// The database's root DN (bypasses access control).
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
/// The root DN's password.
pub const ROOT_PASSWORD: &str = "root-secret";
/// The service account purser binds as to search.
pub const SERVICE_DN: &str = "cn=purser,ou=services,dc=example,dc=org";
/// The service account's password.
pub const SERVICE_PASSWORD: &str = "service-secret";
/// Where the users are.
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
/// Where the groups are.
pub const GROUPS: &str = "ou=groups,dc=example,dc=org";
/// The users of the seed besides `user01`..`user20`.
pub const USERS: &[&str] = &["alice", "bob", "carol", "zoë", "dan, jr"];

/// Attributes of some users' entries beyond their names, for labels: (uid, attribute, value).
/// `carol` and the others have none of them.
pub const ATTRIBUTES: &[(&str, &str, &str)] = &[
    ("alice", "departmentNumber", "eng"),
    ("alice", "title", "Staff Engineer"),
    ("bob", "departmentNumber", "ops"),
];

/// `alice`'s `description`: 401 bytes, `x` then 200 times `é` (2 bytes each), longer than a
/// label may be.
pub fn long_description() -> String {
    format!("x{}", "é".repeat(200))
}

/// A user whose entry has two `uid` values (`pat` and `patricia`).
pub const MULTI_UID: &str = "pat";

/// How long the server gets to start or stop before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// The password of a seeded user.
pub fn password_of(uid: &str) -> String {
    format!("pw-{uid}")
}

/// The numbered users `user01`..`user20`.
pub fn numbered_users() -> Vec<String> {
    (1..=20).map(|i| format!("user{i:02}")).collect()
}

/// The certificate slapd presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerCert {
    /// Signed by a test CA (`ca.pem`), for `IP:127.0.0.1, DNS:localhost`.
    SignedByCa,
    /// Self-signed as `openssl req -x509` makes it (CA:TRUE by default) with this
    /// subjectAltName (e.g. `DNS:ldap.other.test`); `ca.pem` is then the certificate itself.
    SelfSigned(&'static str),
}

/// A running slapd (see the module's documentation), killed on drop.
pub struct Slapd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The `ldap://` port (plain and StartTLS).
    pub port: u16,
    /// The `ldaps://` port.
    pub tls_port: u16,
}

impl Slapd {
    /// Prepares and starts a server; panics with the reason when it cannot.
    pub fn start() -> Slapd {
        Slapd::start_with(ServerCert::SignedByCa)
    }

    /// As [`Slapd::start`], presenting the certificate `cert`.
    pub fn start_with(cert: ServerCert) -> Slapd {
        assert!(
            Path::new(SLAPD).exists(),
            "{SLAPD} not found: the LDAP tests need OpenLDAP's server (apt-get install slapd ldap-utils)"
        );
        let dir = tempfile::tempdir().expect("temporary folder");
        let root = dir.path();
        fs::create_dir(root.join("data")).unwrap();
        match cert {
            ServerCert::SignedByCa => make_certificates(root),
            ServerCert::SelfSigned(san) => make_self_signed(root, san),
        }
        fs::write(root.join("slapd.conf"), config(root)).unwrap();
        fs::write(root.join("seed.ldif"), seed()).unwrap();
        run(
            Command::new(SLAPD)
                .args(["-T", "add", "-f"])
                .arg(root.join("slapd.conf"))
                .arg("-l")
                .arg(root.join("seed.ldif")),
            "slapadd (loading the seed)",
        );
        let mut slapd = Slapd {
            dir,
            child: None,
            port: free_port(),
            tls_port: free_port(),
        };
        slapd.start_again();
        slapd
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The `authn.ldap` block for this directory in search-then-bind mode, as a JSON object
    /// (YAML too) to extend: its URL, the service account, the people base and `(uid={username})`.
    pub fn search_bind(&self) -> serde_json::Value {
        serde_json::json!({
            "urls": [self.url()],
            "bind_dn": SERVICE_DN,
            "bind_password": SERVICE_PASSWORD,
            "user_base": PEOPLE,
            "user_filter": "(uid={username})",
        })
    }

    /// `ldaps://127.0.0.1:TLS_PORT`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's own certificate (PEM).
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    /// Everything the server logged so far, across restarts.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// Starts the server (again) on the same ports with the same data; returns when both
    /// ports accept connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "slapd is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let urls = format!("{} {}", self.url(), self.ldaps_url());
        let child = Command::new(SLAPD)
            .arg("-d")
            .arg("stats")
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(urls)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {SLAPD}: {e}"));
        let mut child = child;
        let up = |port| TcpStream::connect(("127.0.0.1", port)).is_ok();
        let ports = (self.port, self.tls_port);
        wait_started(
            &mut child,
            "slapd",
            DEADLINE,
            || up(ports.0) && up(ports.1),
            || self.log(),
        );
        self.child = Some(child);
    }

    /// Stops the server (SIGTERM, then SIGKILL at the deadline) and waits until it is gone.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        stop_child(&mut child, "slapd", DEADLINE);
        wait_port_closed(([127, 0, 0, 1], self.port).into(), DEADLINE);
    }

    /// The most connections bound as `dn` that were open at the same time, according to the
    /// server's log (`ACCEPT`, `BIND dn=`, `closed` lines).
    pub fn peak_connections_bound_as(&self, dn: &str) -> usize {
        let needle = format!("bind dn=\"{}\"", dn.to_ascii_lowercase());
        let mut open_as_dn = std::collections::HashSet::new();
        let mut peak = 0;
        for line in self.log().lines() {
            let Some(conn) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("conn="))
                .map(str::to_owned)
            else {
                continue;
            };
            if line.to_ascii_lowercase().contains(&needle) {
                open_as_dn.insert(conn);
                peak = peak.max(open_as_dn.len());
            } else if line.contains(" closed") {
                open_as_dn.remove(&conn);
            }
        }
        peak
    }

    /// How many binds as `dn` the server received.
    pub fn binds_as(&self, dn: &str) -> usize {
        let needle = format!("bind dn=\"{}\" method=", dn.to_ascii_lowercase());
        self.log()
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains(&needle))
            .count()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl command.
fn make_certificates(root: &Path) {
    let p = |name: &str| root.join(name);
    run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=purser test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem")),
        "openssl (CA certificate)",
    );
    run(
        Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")),
        "openssl (server key)",
    );
    fs::write(
        p("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("server.ext"))
            .arg("-out")
            .arg(p("server.pem")),
        "openssl (server certificate)",
    );
}

/// A self-signed server certificate as `openssl req -x509` makes it (its defaults add
/// `basicConstraints=CA:TRUE`), with subjectAltName `san`; `ca.pem` is a copy.
fn make_self_signed(root: &Path, san: &str) {
    let p = |name: &str| root.join(name);
    run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=ldap self-signed"])
            .args(["-addext", &format!("subjectAltName={san}")])
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.pem")),
        "openssl (self-signed server certificate)",
    );
    fs::copy(p("server.pem"), p("ca.pem")).unwrap();
}

fn config(root: &Path) -> String {
    let r = root.display();
    format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {r}/slapd.pid
argsfile {r}/slapd.args
TLSCACertificateFile {r}/ca.pem
TLSCertificateFile {r}/server.pem
TLSCertificateKeyFile {r}/server.key
database mdb
maxsize 104857600
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {r}/data
index objectClass eq
index uid eq
index member eq
access to attrs=userPassword
  by self write
  by anonymous auth
  by * none
access to *
  by users read
  by * none
"#
    )
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

/// The DN of a user under `ou=people` (RFC 4514 escaping of the few specials the seed uses).
pub fn user_dn(uid: &str) -> String {
    format!("uid={},{PEOPLE}", uid.replace(',', "\\,"))
}

fn seed() -> String {
    let mut out = String::new();
    let mut entry = |dn: &str, attrs: &[(&str, &str)]| {
        attr(&mut out, "dn", dn);
        for (k, v) in attrs {
            attr(&mut out, k, v);
        }
        out.push('\n');
    };
    entry(
        SUFFIX,
        &[
            ("objectClass", "dcObject"),
            ("objectClass", "organization"),
            ("dc", "example"),
            ("o", "Example"),
        ],
    );
    for ou in ["people", "services", "groups"] {
        entry(
            &format!("ou={ou},{SUFFIX}"),
            &[("objectClass", "organizationalUnit"), ("ou", ou)],
        );
    }
    entry(
        &format!("ou=contractors,{PEOPLE}"),
        &[("objectClass", "organizationalUnit"), ("ou", "contractors")],
    );
    entry(
        SERVICE_DN,
        &[
            ("objectClass", "organizationalRole"),
            ("objectClass", "simpleSecurityObject"),
            ("cn", "purser"),
            ("userPassword", SERVICE_PASSWORD),
        ],
    );
    let numbered = numbered_users();
    let all: Vec<&str> = USERS
        .iter()
        .copied()
        .chain(numbered.iter().map(String::as_str))
        .collect();
    let description = long_description();
    let mut person = |dn: &str, uid: &str| {
        let pw = password_of(uid);
        let mut attrs = vec![
            ("objectClass", "inetOrgPerson"),
            ("uid", uid),
            ("cn", uid),
            ("sn", uid),
            ("userPassword", pw.as_str()),
        ];
        attrs.extend(
            ATTRIBUTES
                .iter()
                .filter(|(u, _, _)| *u == uid)
                .map(|(_, k, v)| (*k, *v)),
        );
        if uid == "alice" {
            attrs.push(("description", description.as_str()));
        }
        entry(dn, &attrs);
    };
    for uid in &all {
        person(&user_dn(uid), uid);
    }
    person(&format!("uid=twin,{PEOPLE}"), "twin");
    person(&format!("uid=twin,ou=contractors,{PEOPLE}"), "twin");
    entry(
        &user_dn(MULTI_UID),
        &[
            ("objectClass", "inetOrgPerson"),
            ("uid", MULTI_UID),
            ("uid", "patricia"),
            ("cn", MULTI_UID),
            ("sn", MULTI_UID),
            ("userPassword", &password_of(MULTI_UID)),
        ],
    );
    let developers: Vec<String> = ["alice", "zoë"]
        .iter()
        .map(|u| user_dn(u))
        .chain(numbered.iter().map(|u| user_dn(u)))
        .collect();
    let mut group = |cn: &str, members: &[String]| {
        let dn = format!("cn={cn},{GROUPS}");
        let mut attrs = vec![("objectClass", "groupOfNames"), ("cn", cn)];
        attrs.extend(members.iter().map(|m| ("member", m.as_str())));
        entry(&dn, &attrs);
    };
    group("developers", &developers);
    group("admins", &[user_dn("alice")]);
    // RFC 2307 groups list member names, not DNs; memberUid matches exactly (caseExactIA5Match).
    entry(
        &format!("cn=contractors,{GROUPS}"),
        &[
            ("objectClass", "posixGroup"),
            ("cn", "contractors"),
            ("gidNumber", "5000"),
            ("memberUid", "bob"),
        ],
    );
    out
}

/// The e2e configuration ([`crate::base_config`]) with only `admin` as a static user, first in
/// the chain as in production setups, then the directory with the `authn.ldap` block `ldap`.
pub fn config_behind_admin(ldap: serde_json::Value) -> serde_json::Value {
    use crate::{base_config, bcrypt_hash, set_path, ADMIN};
    let mut c = base_config();
    set_path(
        &mut c,
        "authn.static.users",
        serde_json::json!({ ADMIN.0: { "password_hash": bcrypt_hash(ADMIN.1), "groups": ["admins"] } }),
    );
    set_path(&mut c, "authn.order", serde_json::json!(["static", "ldap"]));
    set_path(&mut c, "authn.ldap", ldap);
    c
}
