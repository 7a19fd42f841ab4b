//! What the running agent knows of itself, kept across reloads and shown by the pages and
//! endpoints that describe it (zpages, the query façade's `/api/v1/status/*` and `/targets`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::ConfigOverview;
use crate::model::relabel::LabelMap;

/// The last config reload's outcome (`None` until a reload happens).
pub type ReloadStatus = Arc<arc_swap::ArcSwap<Option<String>>>;

pub struct AgentState {
    /// What the pages show of the config running now.
    pub config: arc_swap::ArcSwap<ConfigOverview>,
    pub started: SystemTime,
    /// When the running config was applied, and whether the last reload attempt succeeded.
    pub applied: arc_swap::ArcSwap<(SystemTime, bool)>,
    pub reload: ReloadStatus,
    pub targets: TargetRegistry,
}

impl AgentState {
    /// The port of the running config's zpages extension, when it has one.
    pub fn zpages_port(&self) -> Option<String> {
        self.config.load().zpages_port.clone()
    }

    pub fn new(config: Arc<ConfigOverview>) -> Self {
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

/// What zpages show about a target.
#[derive(Debug, Clone, Default)]
pub struct TargetStatus {
    pub job: String,
    pub url: String,
    pub labels: LabelMap,
    pub discovered: LabelMap,
    pub last_scrape_unix_ms: i64,
    pub last_duration: Duration,
    pub last_samples: usize,
    /// Samples of the last scrape dropped for a timestamp out of bounds.
    pub last_out_of_bounds: usize,
    /// Out-of-bounds samples dropped since the target was found.
    pub out_of_bounds_total: u64,
    pub last_error: Option<String>,
    pub health: &'static str,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Every live target's status by target key, and the targets relabeling dropped, by job:
/// what targetz and `/api/v1/targets` show.
#[derive(Default)]
pub struct TargetTable {
    pub active: Mutex<std::collections::BTreeMap<u64, TargetStatus>>,
    pub dropped: Mutex<std::collections::BTreeMap<String, DroppedTargets>>,
}

/// One job's dropped targets: how many, and the discovered labels of the first
/// [`DroppedTargets::SHOWN`] (a cluster-wide pod discovery can drop thousands).
#[derive(Debug, Clone, Default)]
pub struct DroppedTargets {
    pub count: usize,
    pub shown: Vec<LabelMap>,
}

impl DroppedTargets {
    pub const SHOWN: usize = 1000;
}

pub type TargetRegistry = Arc<TargetTable>;
