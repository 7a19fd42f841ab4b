//! What the running agent knows of itself, kept across reloads and shown by the pages and
//! endpoints that describe it (zpages, the query façade's `/api/v1/status/*` and `/targets`).

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::Config;
use crate::receivers::prometheus::scrape::TargetRegistry;

/// The last config reload's outcome (`None` until a reload happens).
pub type ReloadStatus = Arc<arc_swap::ArcSwap<Option<String>>>;

pub struct AgentState {
    /// The config running now.
    pub config: arc_swap::ArcSwap<Config>,
    pub started: SystemTime,
    /// When the running config was applied, and whether the last reload attempt succeeded.
    pub applied: arc_swap::ArcSwap<(SystemTime, bool)>,
    pub reload: ReloadStatus,
    pub targets: TargetRegistry,
}

impl AgentState {
    /// The port of the running config's zpages extension, when it has one.
    pub fn zpages_port(&self) -> Option<String> {
        let cfg = self.config.load();
        cfg.raw.extensions.0.iter().find_map(|(_, e)| match e {
            crate::config::ExtensionConfig::Zpages(z) => {
                z.endpoint.rsplit_once(':').map(|(_, p)| p.to_string())
            }
            _ => None,
        })
    }

    pub fn new(config: Arc<Config>) -> Self {
        let now = SystemTime::now();
        AgentState {
            config: arc_swap::ArcSwap::new(config),
            started: now,
            applied: arc_swap::ArcSwap::from_pointee((now, true)),
            reload: Arc::default(),
            targets: Arc::default(),
        }
    }
}

/// A fresh random number (std's per-hasher random keys, the process and the clock).
pub fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_i64(crate::clock::now_ms());
    h.finish()
}
