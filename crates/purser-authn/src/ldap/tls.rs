//! Trusting the directory's certificate, and saying why when it is not trusted.
//!
//! rustls verifies a server the way browsers do: the name only in subjectAltName, and a CA
//! certificate never as the server's own. Directories are often set up otherwise: Samba's
//! generated certificate names the host in its subject CN only, and an `openssl req -x509`
//! certificate (CA:TRUE by default) is given as its own `ca_file`. OpenLDAP's client accepts
//! both, and so does [`DirectoryVerifier`], without dropping a check:
//!
//! - a certificate of `ca_file` that is itself the server's certificate is trusted as that exact
//!   certificate (byte for byte), still within its validity period and for the name;
//! - otherwise rustls' own verifier checks the chain, the signatures, the validity period and the
//!   usage, then the name; when the name check alone fails and the certificate has no
//!   subjectAltName, its subject CN is compared with the name instead (RFC 6125 section 6.4.4);
//! - the name is always checked: the URL's host, or `tls_server_name` when set.
//!
//! Every decision is written to a [`TlsReport`]: the certificate's subject, issuer, validity and
//! names, and why it was trusted or, in words an operator acts on, why not.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::error::CaFileError;

/// Largest `ca_file` read (a bundle of every public CA is about 200 KiB).
const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Where the trusted certificates come from, for messages.
#[derive(Clone, Debug)]
enum Source {
    CaFile(PathBuf),
    System,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::CaFile(p) => write!(f, "authn.ldap.ca_file ({})", p.display()),
            Source::System => {
                f.write_str("the system's trusted roots (authn.ldap.ca_file is empty)")
            }
        }
    }
}

/// What the directory is trusted with: built once from the settings, shared by every connection.
pub(crate) struct Trust {
    webpki: Arc<WebPkiServerVerifier>,
    /// Every certificate of `ca_file`, each also trusted as a server certificate byte for byte.
    pinned: Vec<CertificateDer<'static>>,
    source: Source,
    /// `tls_server_name`: the name to verify instead of the URL's host.
    server_name: Option<ServerName<'static>>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("source", &self.source)
            .field("pinned", &self.pinned.len())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Trust {
    /// Trusts the certificates of the PEM file `ca_file`, or the system's roots when it is
    /// empty; `server_name` (may be empty) replaces the URL's host in the name check.
    pub(crate) fn new(ca_file: &Path, server_name: &str) -> Result<Self, CaFileError> {
        let provider = Arc::new(ring::default_provider());
        let server_name = if server_name.is_empty() {
            None
        } else {
            Some(
                server_name_of(server_name).ok_or_else(|| CaFileError::ServerName {
                    name: server_name.to_owned(),
                })?,
            )
        };
        let mut roots = RootCertStore::empty();
        let (pinned, source) = if ca_file.as_os_str().is_empty() {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system root rustls cannot use is skipped, as every rustls client does.
                let _ = roots.add(cert);
            }
            (Vec::new(), Source::System)
        } else {
            let bytes = purser_fs::read_bytes(ca_file, MAX_CA_FILE_BYTES)?;
            let blocks = pem::parse_many(&bytes).map_err(|source| CaFileError::NotPem {
                path: ca_file.to_path_buf(),
                source,
            })?;
            let mut pinned = Vec::new();
            for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
                let der = CertificateDer::from(block.contents().to_vec());
                if X509Certificate::from_der(&der).is_err() {
                    return Err(CaFileError::Unusable {
                        path: ca_file.to_path_buf(),
                        reason: "a CERTIFICATE block is not an X.509 certificate".into(),
                    });
                }
                // A leaf certificate is no trust anchor for webpki's chain building, but it
                // is still trusted below as that exact certificate.
                let _ = roots.add(der.clone());
                pinned.push(der);
            }
            if pinned.is_empty() {
                return Err(CaFileError::NoCertificate {
                    path: ca_file.to_path_buf(),
                });
            }
            (pinned, Source::CaFile(ca_file.to_path_buf()))
        };
        let webpki = if roots.is_empty() {
            None
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .ok()
        };
        let webpki = match webpki {
            Some(v) => v,
            // No usable anchor at all: nothing could ever be trusted.
            None => {
                return Err(match source {
                    Source::CaFile(path) => CaFileError::NoCertificate { path },
                    Source::System => CaFileError::NoSystemRoots,
                })
            }
        };
        Ok(Trust {
            webpki,
            pinned,
            source,
            server_name,
            provider,
        })
    }

    /// A client configuration for one connection, whose verifier writes into `report`.
    pub(crate) fn client_config(
        self: &Arc<Self>,
        report: Arc<Mutex<Option<TlsReport>>>,
    ) -> Result<Arc<ClientConfig>, rustls::Error> {
        let verifier = DirectoryVerifier {
            trust: self.clone(),
            report,
        };
        Ok(Arc::new(
            ClientConfig::builder_with_provider(self.provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth(),
        ))
    }
}

/// What one TLS handshake showed of the directory's certificate, and the decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsReport {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    /// subjectAltName DNS names and addresses, or the subject CN when there is no
    /// subjectAltName.
    pub names: Vec<String>,
    /// The name checked: the URL's host, or `tls_server_name`.
    pub checked_name: String,
    /// Why the certificate was trusted, or why not (in words an operator acts on).
    pub verdict: Result<String, String>,
}

/// The verifier of one connection; see the module documentation.
#[derive(Debug)]
struct DirectoryVerifier {
    trust: Arc<Trust>,
    report: Arc<Mutex<Option<TlsReport>>>,
}

impl DirectoryVerifier {
    fn decide(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> (Option<Described>, Result<String, String>) {
        let described = Described::of(end_entity);
        let Some(d) = &described else {
            return (
                None,
                Err("the directory's certificate cannot be parsed as X.509".into()),
            );
        };
        let checked = name_string(name);
        // The exact certificate given in ca_file: its own validity and the name still count.
        if self
            .trust
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            let at = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            let valid = x509_parser::time::ASN1Time::from_timestamp(at)
                .map(|t| d.valid_at(t))
                .unwrap_or(false);
            if !valid {
                return (
                    described.clone(),
                    Err(format!(
                        "the directory's certificate (subject {}) is outside its validity period ({} to {}): renew it on the directory, and put the new one in {}",
                        d.subject, d.not_before, d.not_after, self.trust.source
                    )),
                );
            }
            if !d.matches(&checked) {
                return (described.clone(), Err(d.wrong_name(&checked)));
            }
            return (
                described.clone(),
                Ok(format!(
                    "it is this exact certificate in {} (a self-signed or pinned server certificate)",
                    self.trust.source
                )),
            );
        }
        match self
            .trust
            .webpki
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
        {
            Ok(_) => (
                described.clone(),
                Ok(format!(
                    "issued by {}, a CA in {}; valid for {}",
                    d.issuer, self.trust.source, checked
                )),
            ),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !d.has_san && d.matches(&checked) => (
                described.clone(),
                Ok(format!(
                    "issued by {}, a CA in {}; no subjectAltName, so its subject CN {} was checked against {} (as OpenLDAP's client does)",
                    d.issuer,
                    self.trust.source,
                    d.names.first().map(String::as_str).unwrap_or(""),
                    checked
                )),
            ),
            Err(e) => (described.clone(), Err(self.explain(d, &checked, &e))),
        }
    }

    fn explain(&self, d: &Described, checked: &str, e: &rustls::Error) -> String {
        let who = format!("the directory's certificate (subject {})", d.subject);
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                    "{who} expired on {}: renew it on the directory",
                    d.not_after
                ),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    format!(
                        "{who} is not valid before {}: check the clocks of this host and of the directory",
                        d.not_before
                    )
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => d.wrong_name(checked),
                CertificateError::UnknownIssuer => format!(
                    "{who} is issued by {}, which is not in {}: put the CA that issued it (or, for a self-signed certificate, the certificate itself) in authn.ldap.ca_file",
                    d.issuer, self.trust.source
                ),
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => format!(
                    "{who} is not for TLS servers (its extended key usage lacks serverAuth): issue one for a server"
                ),
                CertificateError::BadSignature
                | CertificateError::UnsupportedSignatureAlgorithmContext { .. } => format!(
                    "{who} has a signature that does not verify with an algorithm rustls accepts (issuer {}): {e}",
                    d.issuer
                ),
                CertificateError::Revoked => format!("{who} is revoked"),
                // webpki's CaUsedAsEndEntity reaches rustls' error only as an "other" error.
                _ if d.is_ca => format!(
                    "{who} is a CA certificate (CA:TRUE) used as the server's own: put this exact certificate in authn.ldap.ca_file to trust it as it is"
                ),
                _ => format!("{who} is refused: {e}"),
            },
            _ => format!("{who} is refused: {e}"),
        }
    }
}

impl ServerCertVerifier for DirectoryVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.trust.server_name.as_ref().unwrap_or(server_name);
        let (described, verdict) = self.decide(end_entity, intermediates, name, ocsp_response, now);
        let report = TlsReport {
            subject: described
                .as_ref()
                .map(|d| d.subject.clone())
                .unwrap_or_default(),
            issuer: described
                .as_ref()
                .map(|d| d.issuer.clone())
                .unwrap_or_default(),
            not_before: described
                .as_ref()
                .map(|d| d.not_before.clone())
                .unwrap_or_default(),
            not_after: described
                .as_ref()
                .map(|d| d.not_after.clone())
                .unwrap_or_default(),
            names: described.map(|d| d.names).unwrap_or_default(),
            checked_name: name_string(name),
            verdict: verdict.clone(),
        };
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
        match verdict {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(why) => Err(rustls::Error::General(why)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

impl DirectoryVerifier {
    fn algorithms(&self) -> WebPkiSupportedAlgorithms {
        self.trust.provider.signature_verification_algorithms
    }
}

/// `tls_server_name` as rustls takes it: a DNS name or an IP address.
pub(crate) fn server_name_of(name: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(name.to_owned()).ok()
}

fn name_string(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// The parts of a certificate the report and the checks read.
#[derive(Clone, Debug)]
struct Described {
    subject: String,
    issuer: String,
    not_before: String,
    not_after: String,
    not_before_ts: i64,
    not_after_ts: i64,
    has_san: bool,
    is_ca: bool,
    names: Vec<String>,
}

impl Described {
    fn of(der: &CertificateDer<'_>) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        let san = cert.subject_alternative_name().ok().flatten();
        let has_san = san.is_some();
        let names: Vec<String> = match san {
            Some(san) => san
                .value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(b) => ip_string(b),
                    _ => None,
                })
                .collect(),
            None => cert
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
                .collect(),
        };
        let validity = cert.validity();
        Some(Described {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
            not_before_ts: validity.not_before.timestamp(),
            not_after_ts: validity.not_after.timestamp(),
            has_san,
            is_ca: cert.is_ca(),
            names,
        })
    }

    fn valid_at(&self, t: x509_parser::time::ASN1Time) -> bool {
        let t = t.timestamp();
        self.not_before_ts <= t && t <= self.not_after_ts
    }

    /// Whether one of the certificate's names (subjectAltName, or the subject CN without one)
    /// is `name`: case-insensitive, a `*.` wildcard standing for one leftmost label.
    fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|n| {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            if let Some(rest) = n.strip_prefix("*.") {
                match name.split_once('.') {
                    Some((label, tail)) => !label.is_empty() && tail == rest && rest.contains('.'),
                    None => false,
                }
            } else {
                n == name
            }
        })
    }

    fn wrong_name(&self, checked: &str) -> String {
        let names = if self.names.is_empty() {
            "no name at all".to_owned()
        } else {
            self.names.join(", ")
        };
        let whence = if self.has_san {
            "subjectAltName"
        } else {
            "subject CN, no subjectAltName"
        };
        format!(
            "the directory's certificate (subject {}) is for {names} ({whence}), not for {checked}: put one of these names in the URL, or set authn.ldap.tls_server_name to it",
            self.subject
        )
    }
}

fn ip_string(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration;

    use super::*;

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("the openssl command (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A CA (`ca.pem`) and a leaf it signed (`leaf.pem`) whose extensions are `ext`.
    fn ca_and_leaf(dir: &Path, ext: &str) {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(dir, &ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-subj",
            "/CN=ldap.example.test",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ]);
        openssl(dir, &csr);
        std::fs::write(dir.join("leaf.ext"), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "7",
                "-extfile",
                "leaf.ext",
                "-out",
                "leaf.pem",
            ],
        );
    }

    fn der(path: &Path) -> CertificateDer<'static> {
        let text = std::fs::read(path).unwrap();
        CertificateDer::from(pem::parse(text).unwrap().contents().to_vec())
    }

    /// The verdict on `leaf` for `name` at `now` (seconds from now).
    fn verdict(trust: Trust, leaf: &Path, name: &str, from_now: u64) -> Result<String, String> {
        let report = Arc::new(Mutex::new(None));
        let verifier = DirectoryVerifier {
            trust: Arc::new(trust),
            report: report.clone(),
        };
        use purser_core::Clock;
        let wall = purser_core::SystemClock
            .wall()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let now = UnixTime::since_unix_epoch(wall + Duration::from_secs(from_now));
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let result = verifier.verify_server_cert(&der(leaf), &[], &name, &[], now);
        let got = report.lock().unwrap().clone().unwrap().verdict;
        assert_eq!(result.is_ok(), got.is_ok());
        got
    }

    #[test]
    fn a_leaf_without_subject_alt_name_is_checked_against_its_cn() {
        let dir = tempfile::tempdir().unwrap();
        ca_and_leaf(
            dir.path(),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        );
        let trust = || Trust::new(&dir.path().join("ca.pem"), "").unwrap();
        let leaf = dir.path().join("leaf.pem");
        let ok = verdict(trust(), &leaf, "LDAP.example.test", 0).unwrap();
        assert!(ok.contains("subject CN ldap.example.test"), "{ok}");
        let no = verdict(trust(), &leaf, "other.example.test", 0).unwrap_err();
        assert!(
            no.contains("is for ldap.example.test (subject CN, no subjectAltName), not for other.example.test"),
            "{no}"
        );
        // Chain and validity still count: three days on, it has expired.
        let expired = verdict(trust(), &leaf, "ldap.example.test", 3 * 86400).unwrap_err();
        assert!(expired.contains("expired on"), "{expired}");
    }

    #[test]
    fn a_leaf_with_subject_alt_name_is_not_checked_against_its_cn() {
        let dir = tempfile::tempdir().unwrap();
        ca_and_leaf(
            dir.path(),
            "subjectAltName=DNS:dc1.example.test,IP:127.0.0.9\n",
        );
        let trust = || Trust::new(&dir.path().join("ca.pem"), "").unwrap();
        let leaf = dir.path().join("leaf.pem");
        assert!(verdict(trust(), &leaf, "dc1.example.test", 0).is_ok());
        assert!(verdict(trust(), &leaf, "127.0.0.9", 0).is_ok());
        let no = verdict(trust(), &leaf, "ldap.example.test", 0).unwrap_err();
        assert!(
            no.contains("is for dc1.example.test, 127.0.0.9 (subjectAltName)"),
            "{no}"
        );
        // tls_server_name replaces the URL's host.
        let renamed = Trust::new(&dir.path().join("ca.pem"), "dc1.example.test").unwrap();
        assert!(verdict(renamed, &leaf, "127.0.0.1", 0).is_ok());
    }

    #[test]
    fn a_pinned_certificate_keeps_its_validity_period_and_names() {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=self",
                "-addext",
                "subjectAltName=DNS:self.example.test",
                "-keyout",
                "self.key",
                "-out",
                "self.pem",
            ],
        );
        let cert = dir.path().join("self.pem");
        let trust = || Trust::new(&cert, "").unwrap();
        let ok = verdict(trust(), &cert, "self.example.test", 0).unwrap();
        assert!(ok.contains("this exact certificate"), "{ok}");
        let late = verdict(trust(), &cert, "self.example.test", 3 * 86400).unwrap_err();
        assert!(late.contains("outside its validity period"), "{late}");
        let name = verdict(trust(), &cert, "other.example.test", 0).unwrap_err();
        assert!(name.contains("self.example.test"), "{name}");
    }

    #[test]
    fn wildcards_stand_for_one_label() {
        let d = Described {
            subject: String::new(),
            issuer: String::new(),
            not_before: String::new(),
            not_after: String::new(),
            not_before_ts: 0,
            not_after_ts: 0,
            has_san: true,
            is_ca: false,
            names: vec!["*.example.test".into()],
        };
        assert!(d.matches("dc1.example.test"));
        assert!(!d.matches("a.dc1.example.test"));
        assert!(!d.matches("example.test"));
    }
}
