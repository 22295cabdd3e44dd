//! Why the directory could not answer. Every one of these makes the backend unavailable (503),
//! never a refusal; the message goes to the log and to `/readyz`, never to the client.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The operation that failed, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    ServiceBind,
    UserSearch,
    EntryRead,
    Bind,
    GroupSearch,
    /// The round trip of a readiness probe.
    Probe,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::ServiceBind => "service account bind",
            Op::UserSearch => "user search",
            Op::EntryRead => "entry read",
            Op::Bind => "bind",
            Op::GroupSearch => "group search",
            Op::Probe => "readiness probe",
        })
    }
}

/// The directory could not be reached or did not answer usefully.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirectoryError {
    #[error("no URL configured")]
    NoUrl,
    #[error("{url}: no connection within {timeout:?}")]
    ConnectTimeout { url: String, timeout: Duration },
    #[error("{url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: ldap3::LdapError,
    },
    #[error("{url}: TLS refused: {reason}")]
    Tls { url: String, reason: String },
    #[error("no service account configured")]
    NoServiceAccount,
    #[error("no pooled connection free within {0:?}")]
    PoolBusy(Duration),
    #[error("connection pool closed")]
    PoolClosed,
    #[error("no bind slot free within {0:?}")]
    BindSlotBusy(Duration),
    #[error("bind slots closed")]
    BindSlotsClosed,
    #[error("service account bind refused (result code {rc}{}): check authn.ldap.bind_dn and bind_password", with_text(.text))]
    ServiceBindRefused { rc: u32, text: String },
    #[error("{op}: no answer within {timeout:?}")]
    Timeout { op: Op, timeout: Duration },
    #[error("{op}: {source}")]
    Protocol {
        op: Op,
        #[source]
        source: ldap3::LdapError,
    },
    #[error("{op} failed: result code {rc}{}", with_text(.text))]
    ResultCode { op: Op, rc: u32, text: String },
}

fn with_text(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(", {text}")
    }
}

/// Why an entry gives no account name (see `account_attribute`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NoAccount {
    #[error("its value is empty, too long or holds a NUL byte")]
    Unacceptable,
    #[error("the entry has no such attribute, or it cannot be read")]
    Missing,
    #[error("it has {0} values; name a single-valued attribute")]
    Several(usize),
    #[error("the user cannot read their own entry")]
    OwnEntryUnreadable,
}

/// Why `ca_file` cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CaFileError {
    #[error(transparent)]
    Read(#[from] purser_fs::ReadError),
    #[error("{}: not a PEM file: {source}", path.display())]
    NotPem {
        path: PathBuf,
        #[source]
        source: pem::PemError,
    },
    #[error("{}: unusable certificate: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
    #[error("{name:?} is neither a DNS name nor an IP address")]
    ServerName { name: String },
    #[error("ca_file is empty and the system has no trusted root certificate: give the CA that signed the directory's certificate in authn.ldap.ca_file")]
    NoSystemRoots,
    #[error("{} holds no CERTIFICATE block: give the PEM file of the CA that signed the directory's certificate", path.display())]
    NoCertificate { path: PathBuf },
}
