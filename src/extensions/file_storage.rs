//! `file_storage`: a directory where exporters keep their sending queues on disk
//! (`sending_queue: {storage: file_storage}`), so queued data survives restarts and crashes.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileStorageConfig {
    /// The collector's default location.
    #[serde(default = "default_directory")]
    pub directory: String,
    /// Create the directory when it does not exist (the collector's default is not to).
    #[serde(default)]
    pub create_directory: bool,
    /// Flush each queued batch to the device before accepting the next, so a power loss
    /// loses nothing either. On by default: durability is what this extension is for.
    #[serde(default = "yes")]
    pub fsync: bool,
    /// Bound on the bytes all queues in this directory may hold; beyond it new batches are
    /// kept in memory (and counted) until the backend drains the disk.
    #[serde(default = "default_max_size_mib")]
    pub max_size_mib: u64,
}

fn default_directory() -> String {
    "/var/lib/otelcol/file_storage".into()
}

fn yes() -> bool {
    true
}

fn default_max_size_mib() -> u64 {
    1024
}

impl Default for FileStorageConfig {
    fn default() -> Self {
        FileStorageConfig {
            directory: default_directory(),
            create_directory: false,
            fsync: true,
            max_size_mib: default_max_size_mib(),
        }
    }
}

impl FileStorageConfig {
    /// Makes its directory when `create_directory` asks for it; the exporters that name it
    /// keep their queues there.
    pub fn start(&self) -> Result<(), String> {
        if self.create_directory {
            std::fs::create_dir_all(&self.directory)
                .map_err(|e| format!("{}: {e}", self.directory))?;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.max_size_mib == 0 {
            return Err("max_size_mib must be above 0".into());
        }
        let dir = Path::new(&self.directory);
        if !self.create_directory && !dir.is_dir() {
            return Err(format!(
                "directory {:?} does not exist (create it, or set create_directory: true)",
                self.directory
            ));
        }
        Ok(())
    }

    /// The directory one exporter's queue lives in.
    pub fn queue_dir(&self, exporter: &str) -> PathBuf {
        let safe: String = exporter
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Path::new(&self.directory).join(format!("exporter_{safe}"))
    }
}
