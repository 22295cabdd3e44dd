//! OCI image layouts built by the tests: random gzip-compressed tar layers, a config and a
//! manifest, written as `oci-layout`, `index.json` and `blobs/sha256/...`.

use std::fs;
use std::io::Write;
use std::path::Path;

use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::process::random_hex;

/// A content-addressed blob of an image.
#[derive(Clone, Debug)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// The content.
    pub bytes: Vec<u8>,
}

impl Blob {
    /// A blob of `bytes`, with its digest.
    pub fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: sha256_digest(&bytes),
            bytes,
        }
    }
    /// The digest's hex part (the blob's file name in a layout or a `dir:` copy).
    pub fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        data_encoding::HEXLOWER.encode(&Sha256::digest(bytes))
    )
}

/// An OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/...`) holding one
/// image: a config and gzip-compressed tar layers of random content. The layers are compressed
/// already so that a push keeps them (and the manifest) byte for byte.
pub struct OciImage {
    dir: TempDir,
    /// The tag in `index.json` (`latest`).
    pub tag: String,
    /// The image manifest.
    pub manifest: Blob,
    /// The image config.
    pub config: Blob,
    /// The layers, gzip-compressed tars.
    pub layers: Vec<Blob>,
}

impl OciImage {
    /// Builds an image of `layer_count` layers of random content in a fresh folder.
    pub fn build(layer_count: usize) -> OciImage {
        let dir = tempfile::Builder::new()
            .prefix("oci-e2e-")
            .tempdir()
            .expect("tempdir");
        let blobs = dir.path().join("blobs").join("sha256");
        fs::create_dir_all(&blobs).expect("mkdir blobs");
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for i in 0..layer_count {
            let mut content = vec![0u8; 2048 + 512 * i];
            rand::thread_rng().fill_bytes(&mut content);
            let tar = tar_archive(&[(&format!("data/file-{i}.bin"), &content)]);
            diff_ids.push(sha256_digest(&tar));
            layers.push(Blob::new(gzip(&tar)));
        }
        let config = Blob::new(
            serde_json::to_vec(&json!({
                "architecture": "amd64",
                "os": "linux",
                "config": { "Labels": { "e2e": random_hex(8) } },
                "rootfs": { "type": "layers", "diff_ids": diff_ids },
                "history": [],
            }))
            .expect("json"),
        );
        let manifest = Blob::new(
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config.digest,
                    "size": config.bytes.len(),
                },
                "layers": layers.iter().map(|l| json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": l.digest,
                    "size": l.bytes.len(),
                })).collect::<Vec<_>>(),
            }))
            .expect("json"),
        );
        let tag = "latest".to_string();
        for b in layers.iter().chain([&config, &manifest]) {
            fs::write(blobs.join(b.hex()), &b.bytes).expect("write blob");
        }
        fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("write oci-layout");
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest.digest,
                "size": manifest.bytes.len(),
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        fs::write(
            dir.path().join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("write index");
        OciImage {
            dir,
            tag,
            manifest,
            config,
            layers,
        }
    }

    /// The layout's folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// `oci:DIR:TAG`, skopeo's source reference.
    pub fn reference(&self) -> String {
        format!("oci:{}:{}", self.dir.path().display(), self.tag)
    }

    /// Panics unless the `dir:` copy at `pulled` holds this image byte for byte: the same
    /// manifest, config and layers.
    pub fn assert_same_as_dir(&self, pulled: &Path) {
        let manifest = fs::read(pulled.join("manifest.json")).expect("pulled manifest.json");
        assert_eq!(
            sha256_digest(&manifest),
            self.manifest.digest,
            "pulled manifest differs: {}",
            String::from_utf8_lossy(&manifest)
        );
        for b in self.layers.iter().chain([&self.config]) {
            let got = fs::read(pulled.join(b.hex()))
                .unwrap_or_else(|e| panic!("pulled blob {} missing: {e}", b.digest));
            assert!(got == b.bytes, "pulled blob {} differs", b.digest);
        }
    }
}

/// A ustar archive of regular files, built by hand.
pub fn tar_archive(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content) in files {
        assert!(name.len() < 100, "tar name too long");
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], v: u64| {
            let s = format!("{:0width$o}\0", v, width = field.len() - 1);
            field.copy_from_slice(s.as_bytes());
        };
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], content.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        // The checksum is computed with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(content);
        let pad = (512 - content.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// `data` gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}
