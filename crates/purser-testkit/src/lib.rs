//! purser's end-to-end test kit: what the tests under `tests/` (and purser-authn's LDAP tests)
//! need to run real processes and talk to them.
//!
//! ```no_run
//! use purser_testkit::*;
//!
//! // purser with the standard test users and policy, a registry trusting its key, and skopeo.
//! let stack = Stack::start(base_config());
//! let image = OciImage::build(1);
//! stack.push_ok(&image, "alice/app:1", Creds::of(ALICE));
//! stack.pull_identical(&image, "alice/app:1", Creds::of(BOB));
//! ```
//!
//! Every process listens on 127.0.0.1 on a port from [`free_port`], writes its logs into its own
//! temporary folder and is stopped when its handle drops, so test binaries and the tests in them
//! run in parallel. Waits poll with a bound ([`wait_until`]), never a fixed sleep. Programs the
//! tests need (skopeo, docker-registry, slapd, openssl, ...) must be installed: a missing one
//! fails the test with a message naming the Debian package (`scripts/test` installs them).
//!
//! One module per concern. The everyday ones are re-exported here, so a test says
//! `use purser_testkit::*;`; the specialised ones are used by path: [`slapd`] (OpenLDAP),
//! [`samba`] (Active Directory: a Samba domain controller),
//! [`redis`] (a throwaway redis-server), [`kube`] (a ConfigMap volume as the kubelet writes it),
//! [`clients`] (docker, containerd, podman, buildah and the host guard), [`ops`] (TLS, signals,
//! JSON logs) and [`policy`] (live policy edits, the request loop, `policy explain` output).
//!
//! The purser binary is found by [`purser_bin`]: cargo builds it, and says where, only for the
//! root package's own test targets, so only those can start purser.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clients;
pub mod docs;
pub mod http;
pub mod jwt;
pub mod kube;
pub mod metrics;
pub mod oci;
pub mod oidc;
pub mod openssl;
pub mod ops;
pub mod policy;
pub mod ports;
pub mod process;
pub mod purser;
pub mod redis;
pub mod registry;
pub mod samba;
pub mod skopeo;
pub mod slapd;
pub mod stack;
pub mod wait;

pub use docs::*;
pub use http::*;
pub use jwt::*;
pub use metrics::*;
pub use oci::*;
pub use openssl::*;
pub use ports::*;
pub use process::*;
pub use purser::*;
pub use registry::*;
pub use skopeo::*;
pub use stack::*;
pub use wait::*;
