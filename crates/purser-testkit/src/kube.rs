//! A Kubernetes ConfigMap (or Secret) volume, written the way the kubelet's atomic writer
//! writes it (`pkg/volume/util/atomic_writer.go`): each version in a timestamped folder
//! (`..2026_11_30_16_41_19.123456789`), a `..data` link to the current one, replaced by creating
//! `..data_tmp` and renaming it over `..data`, and each file a link `NAME -> ..data/NAME`
//! created once. Pods see exactly this in a mounted volume, and purser must notice each swap.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::process::random_hex;

/// A volume folder with its current version.
pub struct ConfigMapVolume {
    dir: PathBuf,
}

impl ConfigMapVolume {
    /// Makes `dir` (created if missing) a volume holding `files` (name, content).
    pub fn create(dir: &Path, files: &[(&str, &str)]) -> ConfigMapVolume {
        fs::create_dir_all(dir).expect("create the volume folder");
        let volume = ConfigMapVolume {
            dir: dir.to_path_buf(),
        };
        volume.update(files);
        volume
    }

    /// The volume's folder (the mount point).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `name` as the pod sees it (a link into `..data`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Replaces the volume's content with `files`, in the kubelet's order: a new timestamped
    /// folder with every file, `..data_tmp` pointing at it, renamed over `..data`, links for new
    /// names, links of names no longer there removed, the old folder removed.
    pub fn update(&self, files: &[(&str, &str)]) {
        let data = self.dir.join("..data");
        let old = fs::read_link(&data).ok();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let stamp = format!(
            "..{}.{}",
            utc_stamp(now),
            u32::from_str_radix(&random_hex(4), 16).expect("hex")
        );
        let version = self.dir.join(&stamp);
        fs::create_dir(&version).expect("create the timestamped folder");
        for (name, content) in files {
            fs::write(version.join(name), content).expect("write a file of the new version");
        }
        let tmp = self.dir.join("..data_tmp");
        symlink(&stamp, &tmp).expect("link ..data_tmp");
        fs::rename(&tmp, &data).expect("rename ..data_tmp over ..data");
        for (name, _) in files {
            let link = self.dir.join(name);
            if fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(name), &link).expect("link a file into ..data");
            }
        }
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with("..") && !files.iter().any(|(n, _)| *n == name) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        if let Some(old) = old {
            fs::remove_dir_all(self.dir.join(old)).expect("remove the previous version");
        }
    }
}

/// `YYYY_MM_DD_HH_MM_SS` in UTC for a Unix time (the kubelet's folder names).
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_the_kubelets_shape() {
        assert_eq!(utc_stamp(0), "1970_01_01_00_00_00");
        assert_eq!(utc_stamp(1_796_056_879), "2026_11_30_16_41_19");
    }

    #[test]
    fn a_swap_leaves_one_version_behind_stable_links() {
        let tmp = tempfile::tempdir().unwrap();
        let v = ConfigMapVolume::create(tmp.path(), &[("a.yaml", "1"), ("b.yaml", "x")]);
        let first = fs::read_link(tmp.path().join("..data")).unwrap();
        assert_eq!(
            fs::read_link(v.path("a.yaml")).unwrap(),
            Path::new("..data/a.yaml")
        );
        v.update(&[("a.yaml", "2")]);
        assert_eq!(fs::read_to_string(v.path("a.yaml")).unwrap(), "2");
        assert!(!v.path("b.yaml").exists(), "a removed key's link goes");
        assert!(!tmp.path().join(&first).exists(), "the old version goes");
        assert!(!tmp.path().join("..data_tmp").exists());
        let versions = fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .count();
        assert_eq!(versions, 1);
    }
}
