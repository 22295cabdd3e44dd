//! purser, a registry trusting it and skopeo, started together.

use serde_json::Value;

use crate::oci::OciImage;
use crate::purser::{Purser, ADMIN};
use crate::registry::{Registry, RegistryAuth};
use crate::skopeo::{Creds, Skopeo};

/// A purser, a registry trusting its generated certificate, and a private skopeo.
pub struct Stack {
    /// The token server.
    pub purser: Purser,
    /// The registry, with `auth.token` pointing at `purser`.
    pub registry: Registry,
    /// A skopeo with its own home.
    pub skopeo: Skopeo,
}

impl Stack {
    /// Starts purser with `config` and `files` (see [`Purser::start`]) and a registry whose
    /// `rootcertbundle` is `bundle` (relative to purser's folder), by default the generated
    /// `keys/signing.crt`.
    pub fn start_with(config: Value, files: &[(&str, &str)], bundle: Option<&str>) -> Stack {
        let purser = Purser::start(config, files);
        let bundle = match bundle {
            Some(rel) => purser.dir().join(rel),
            None => purser.cert_file(),
        };
        let registry = Registry::start(RegistryAuth::purser(&purser, &bundle));
        Stack {
            purser,
            registry,
            skopeo: Skopeo::new(),
        }
    }

    /// [`Stack::start_with`] without extra files, the registry trusting `keys/signing.crt`.
    pub fn start(config: Value) -> Stack {
        Stack::start_with(config, &[], None)
    }

    /// Both processes' log tails, for failure messages.
    pub fn logs(&self) -> String {
        format!("{}\n{}", self.purser.log_tail(), self.registry.log_tail())
    }

    /// Pushes `image` as `repo_tag` with `creds`, panicking with the logs on failure.
    pub fn push_ok(&self, image: &OciImage, repo_tag: &str, creds: Creds) {
        let out = self.skopeo.push(image, &self.registry, repo_tag, creds);
        assert!(
            out.ok,
            "push of {repo_tag} failed:\n{}\n{}",
            out.stderr,
            self.logs()
        );
    }

    /// Pulls `repo_tag` with `creds` and checks it is `image` byte for byte.
    pub fn pull_identical(&self, image: &OciImage, repo_tag: &str, creds: Creds) {
        let (out, dir) = self.skopeo.pull_to_dir(&self.registry, repo_tag, creds);
        assert!(
            out.ok,
            "pull of {repo_tag} failed:\n{}\n{}",
            out.stderr,
            self.logs()
        );
        image.assert_same_as_dir(&dir);
    }

    /// True when `repo_tag` exists in the registry (checked as admin).
    pub fn exists(&self, repo_tag: &str) -> bool {
        self.skopeo
            .inspect_raw(&self.registry.reference(repo_tag), Creds::of(ADMIN))
            .ok
    }
}
