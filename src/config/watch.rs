//! Noticing that the config file changed, including the way Kubernetes updates a mounted
//! ConfigMap: `config.yaml -> ..data/config.yaml`, where `..data` is a symlink swapped
//! atomically to a new timestamped directory. Modification times and inotify events on the
//! file itself miss that swap, so the file is re-read through its symlinks and its content
//! hash compared; a config is a few kilobytes, so once a second costs nothing.

use std::path::PathBuf;
use std::time::Duration;

pub struct ConfigWatcher {
    paths: Vec<PathBuf>,
    last: Option<u64>,
    every: Duration,
}

/// One hash of every file's content, in order; `None` while any is missing.
fn content_hash(paths: &[PathBuf]) -> Option<u64> {
    let mut all = Vec::new();
    for p in paths {
        all.extend_from_slice(&std::fs::read(p).ok()?);
        all.push(0);
    }
    Some(xxhash_rust::xxh3::xxh3_64(&all))
}

impl ConfigWatcher {
    /// Starts from the files' current content (the `--config` files, merged in order).
    pub fn new<P: Into<PathBuf>>(paths: impl IntoIterator<Item = P>, every: Duration) -> Self {
        let paths: Vec<PathBuf> = paths.into_iter().map(Into::into).collect();
        let last = content_hash(&paths);
        ConfigWatcher { paths, last, every }
    }

    /// Resolves when the content differs from the last seen. A file that is briefly missing
    /// (mid-swap) is not a change.
    pub async fn changed(&mut self) {
        loop {
            tokio::time::sleep(self.every).await;
            if let Some(h) = content_hash(&self.paths) {
                if self.last != Some(h) {
                    self.last = Some(h);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[tokio::test]
    async fn notices_a_configmap_style_symlink_swap() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        std::fs::create_dir(d.join("..2026_11_27_07_00_00.1")).expect("mkdir");
        std::fs::write(d.join("..2026_11_27_07_00_00.1/config.yaml"), "a: 1\n").expect("write");
        symlink("..2026_11_27_07_00_00.1", d.join("..data")).expect("link");
        symlink("..data/config.yaml", d.join("config.yaml")).expect("link");
        let mut w = ConfigWatcher::new([d.join("config.yaml")], Duration::from_millis(10));
        let unchanged = tokio::time::timeout(Duration::from_millis(100), w.changed()).await;
        assert!(
            unchanged.is_err(),
            "no change reported for an untouched file"
        );
        // What the kubelet does: new directory, new link, rename over `..data`.
        std::fs::create_dir(d.join("..2026_11_27_07_05_00.2")).expect("mkdir");
        std::fs::write(d.join("..2026_11_27_07_05_00.2/config.yaml"), "a: 2\n").expect("write");
        symlink("..2026_11_27_07_05_00.2", d.join("..data_tmp")).expect("link");
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("swap");
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("the swap is noticed");
    }
}
