//! skopeo, the registry client of most end-to-end tests, with a home of its own.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use data_encoding::BASE64;
use serde_json::json;
use tempfile::TempDir;

use crate::oci::OciImage;
use crate::process::{random_hex, require_on_path, Outcome};
use crate::registry::Registry;

/// How skopeo authenticates to a registry.
#[derive(Clone, Copy, Debug)]
pub enum Creds<'a> {
    /// Anonymous (`--*-no-creds`).
    None,
    /// `--*-creds USER:PASSWORD`.
    User(&'a str, &'a str),
    /// `--*-authfile FILE`.
    AuthFile(&'a Path),
}

impl<'a> Creds<'a> {
    /// `--*-creds` for a (name, password) pair such as [`crate::ALICE`].
    pub fn of(user: (&'a str, &'a str)) -> Creds<'a> {
        Creds::User(user.0, user.1)
    }
    fn args(&self, prefix: &str) -> Vec<String> {
        match self {
            Creds::None => vec![format!("--{prefix}no-creds")],
            Creds::User(u, p) => vec![format!("--{prefix}creds"), format!("{u}:{p}")],
            Creds::AuthFile(f) => vec![format!("--{prefix}authfile"), f.display().to_string()],
        }
    }
}

/// skopeo with its own HOME, XDG_RUNTIME_DIR and a permissive policy, so nothing is shared
/// with the machine's configuration.
pub struct Skopeo {
    home: TempDir,
    policy: PathBuf,
    bin: PathBuf,
}

impl Default for Skopeo {
    fn default() -> Self {
        Skopeo::new()
    }
}

impl Skopeo {
    /// A skopeo with a fresh home; panics when skopeo is not installed.
    pub fn new() -> Skopeo {
        let bin = require_on_path("skopeo", "skopeo");
        let home = tempfile::Builder::new()
            .prefix("skopeo-e2e-")
            .tempdir()
            .expect("tempdir");
        let policy = home.path().join("policy.json");
        fs::write(
            &policy,
            br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("write policy");
        fs::create_dir_all(home.path().join("run")).expect("mkdir run");
        fs::create_dir_all(home.path().join("tmp")).expect("mkdir tmp");
        Skopeo { home, policy, bin }
    }

    /// A fresh folder under this skopeo's home.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.home.path().join(format!("{name}-{}", random_hex(4)));
        fs::create_dir_all(&p).expect("mkdir scratch");
        p
    }

    /// Runs `skopeo --policy P ARGS`.
    pub fn run(&self, args: &[String]) -> Outcome {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--policy")
            .arg(&self.policy)
            .args(args)
            .env("HOME", self.home.path())
            .env("XDG_RUNTIME_DIR", self.home.path().join("run"))
            .env("TMPDIR", self.home.path().join("tmp"))
            .stdin(Stdio::null());
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("REGISTRY_")
                || k.starts_with("CONTAINERS_")
                || k == "DOCKER_CONFIG"
                || k.starts_with("XDG_CONFIG")
            {
                cmd.env_remove(k);
            }
        }
        let out = cmd.output().expect("run skopeo");
        Outcome {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    /// `skopeo copy SRC DST`, TLS verification off and credentials for each `docker://` side.
    pub fn copy(&self, src: &str, dst: &str, src_creds: Creds, dst_creds: Creds) -> Outcome {
        let mut args = vec!["copy".to_string()];
        if src.starts_with("docker://") {
            args.push("--src-tls-verify=false".into());
            args.extend(src_creds.args("src-"));
        }
        if dst.starts_with("docker://") {
            args.push("--dest-tls-verify=false".into());
            args.extend(dst_creds.args("dest-"));
        }
        args.push(src.into());
        args.push(dst.into());
        self.run(&args)
    }

    /// Pushes `image` to `registry` as `repo_tag` (`alice/app:1`).
    pub fn push(
        &self,
        image: &OciImage,
        registry: &Registry,
        repo_tag: &str,
        creds: Creds,
    ) -> Outcome {
        self.copy(
            &image.reference(),
            &registry.reference(repo_tag),
            Creds::None,
            creds,
        )
    }

    /// Pulls `repo_tag` into a fresh `dir:` folder; returns the outcome and the folder.
    pub fn pull_to_dir(
        &self,
        registry: &Registry,
        repo_tag: &str,
        creds: Creds,
    ) -> (Outcome, PathBuf) {
        let dest = self.scratch("pulled");
        let out = self.copy(
            &registry.reference(repo_tag),
            &format!("dir:{}", dest.display()),
            creds,
            Creds::None,
        );
        (out, dest)
    }

    /// `skopeo inspect --raw` (the manifest as stored).
    pub fn inspect_raw(&self, reference: &str, creds: Creds) -> Outcome {
        let mut args = vec![
            "inspect".to_string(),
            "--raw".to_string(),
            "--tls-verify=false".to_string(),
        ];
        args.extend(creds.args(""));
        args.push(reference.into());
        self.run(&args)
    }

    /// `skopeo delete REFERENCE`.
    pub fn delete(&self, reference: &str, creds: Creds) -> Outcome {
        let mut args = vec!["delete".to_string(), "--tls-verify=false".to_string()];
        args.extend(creds.args(""));
        args.push(reference.into());
        self.run(&args)
    }

    /// Writes an auth file for `host` holding an identity (refresh) token as the docker CLI
    /// writes it after a login that returned one: `auth` = base64("USER:") beside
    /// `identitytoken`. containers/image (skopeo 1.9) ignores an entry without a decodable
    /// `auth`, and then uses the token only through the POST refresh grant.
    pub fn identity_token_authfile(&self, host: &str, user: &str, token: &str) -> PathBuf {
        let path = self.scratch("auth").join("auth.json");
        let entry = json!({
            "auth": BASE64.encode(format!("{user}:").as_bytes()),
            "identitytoken": token,
        });
        let mut auths = serde_json::Map::new();
        auths.insert(host.to_string(), entry);
        fs::write(
            &path,
            serde_json::to_vec_pretty(&json!({ "auths": auths })).expect("json"),
        )
        .expect("write authfile");
        path
    }
}
