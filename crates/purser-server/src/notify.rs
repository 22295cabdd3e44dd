//! Readiness for systemd (`Type=notify`), without libsystemd: the service manager hands the
//! address of a datagram socket in `$NOTIFY_SOCKET`, and each state is one datagram of
//! `KEY=VALUE` lines (sd_notify(3)). `READY=1` once the listeners are bound, `RELOADING=1` then
//! `READY=1` around a SIGHUP reload, `STOPPING=1` when a shutdown begins. A path (`/run/...`)
//! and a Linux abstract address (`@name`) are both supported; without the variable nothing is
//! sent. A failed send is logged once and never stops the server.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where the notifications go.
#[derive(Debug)]
enum Target {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

/// Sends states to the service manager; cheap to clone, a no-op outside systemd.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    target: Target,
    socket: UnixDatagram,
    warned: AtomicBool,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`, or one that sends nothing when it is unset.
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(addr) if !addr.is_empty() => Notifier::at(&addr),
            _ => Notifier::default(),
        }
    }

    /// The notifier for an address in `$NOTIFY_SOCKET`'s syntax: a path, or `@` and an
    /// abstract name.
    pub fn at(addr: &std::ffi::OsStr) -> Notifier {
        use std::os::unix::ffi::OsStrExt;
        let bytes = addr.as_bytes();
        let target = match bytes.first() {
            Some(b'/') => Target::Path(addr.into()),
            Some(b'@') => Target::Abstract(bytes[1..].to_vec()),
            _ => {
                tracing::warn!(
                    notify_socket = %addr.to_string_lossy(),
                    "NOTIFY_SOCKET is neither a path nor an abstract address (@name); systemd is not told of readiness"
                );
                return Notifier::default();
            }
        };
        match UnixDatagram::unbound() {
            Ok(socket) => Notifier {
                inner: Some(Arc::new(Inner {
                    target,
                    socket,
                    warned: AtomicBool::new(false),
                })),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a socket for NOTIFY_SOCKET; systemd is not told of readiness");
                Notifier::default()
            }
        }
    }

    /// `READY=1`: serving (at start, and after a reload).
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// `RELOADING=1`: a reload of the watched files has begun.
    pub fn reloading(&self) {
        self.send("RELOADING=1\nSTATUS=reloading the watched files");
    }

    /// `STOPPING=1`: the shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: answering the requests in flight");
    }

    fn send(&self, message: &str) {
        let Some(inner) = &self.inner else { return };
        let sent = match &inner.target {
            Target::Path(p) => inner.socket.send_to(message.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| inner.socket.send_to_addr(message.as_bytes(), &a))
            }
        };
        match sent {
            Ok(_) => tracing::debug!(message = %message.replace('\n', " "), "told systemd"),
            Err(e) => {
                if !inner.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(target_socket = ?inner.target, error = %e, "cannot notify systemd");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::at(path.as_os_str());
        n.ready("serving");
        n.reloading();
        n.stopping();
        assert_eq!(received(&socket), "READY=1\nSTATUS=serving");
        assert!(received(&socket).starts_with("RELOADING=1\n"));
        assert!(received(&socket).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn sends_to_an_abstract_address() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("purser-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::at(std::ffi::OsStr::new(&format!("@{name}"))).ready("serving");
        assert_eq!(received(&socket), "READY=1\nSTATUS=serving");
    }

    #[test]
    fn nothing_without_an_address() {
        let n = Notifier::at(std::ffi::OsStr::new("vsock:2:1234"));
        assert!(n.inner.is_none());
        n.ready("serving");
    }
}
