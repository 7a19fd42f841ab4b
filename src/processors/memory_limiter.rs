//! `memory_limiter`: keeps the agent's resident memory under a limit by refusing new data at
//! the source. Above the soft limit (`limit - spike_limit`) scrape loops of the pipelines it
//! is in skip their scrapes (counted, and shown on zpages) instead of starting them: a scrape
//! is never cut mid-body, and data already accepted is never dropped. Scraping resumes once
//! memory is back under the soft limit.

use serde::Deserialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::units::de_duration;

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemoryLimiterConfig {
    /// Required, as in the collector (1s is typical).
    #[serde(default, deserialize_with = "de_duration")]
    #[schemars(with = "crate::config::units::DurationText")]
    pub check_interval: Duration,
    /// The memory limit in MiB (or `limit_percentage` of the container's).
    #[serde(default)]
    pub limit_mib: u64,
    /// Headroom below the limit; defaults to 20% of it.
    #[serde(default)]
    pub spike_limit_mib: u64,
    /// The limit as a share of the memory available to the process (cgroup limit, else RAM).
    #[serde(default)]
    pub limit_percentage: u64,
    /// The headroom below the limit, in percent of the memory available; data is refused above
    /// the limit minus it.
    #[serde(default)]
    pub spike_limit_percentage: u64,
}

impl MemoryLimiterConfig {
    /// The `memory_limiter` processor: no stage, a gate at its pipelines' receivers.
    pub fn stage(&self) -> super::Stage {
        super::Stage::Gate(self.clone())
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.check_interval.is_zero() {
            return Err("check_interval must be set and above 0 (e.g. 1s)".into());
        }
        match (self.limit_mib, self.limit_percentage) {
            (0, 0) => Err("set limit_mib or limit_percentage".into()),
            (l, p) if l > 0 && p > 0 => Err("limit_mib and limit_percentage are exclusive".into()),
            (0, p) if p > 100 || self.spike_limit_percentage >= p => {
                Err("limit_percentage must be at most 100 and above spike_limit_percentage".into())
            }
            (l, _) if l > 0 && self.spike_limit_mib >= l => {
                Err("spike_limit_mib must be below limit_mib".into())
            }
            _ => Ok(()),
        }
    }

    /// (hard limit, soft limit) in bytes.
    pub fn limits(&self) -> (u64, u64) {
        const MIB: u64 = 1 << 20;
        let (limit, spike) = if self.limit_mib > 0 {
            let limit = self.limit_mib * MIB;
            let spike = if self.spike_limit_mib > 0 {
                self.spike_limit_mib * MIB
            } else {
                limit / 5
            };
            (limit, spike)
        } else {
            let total = available_memory();
            let limit = total / 100 * self.limit_percentage;
            let spike = if self.spike_limit_percentage > 0 {
                total / 100 * self.spike_limit_percentage
            } else {
                limit / 5
            };
            (limit, spike)
        };
        (limit, limit.saturating_sub(spike))
    }
}

/// The container's memory limit: the cgroup v2 or v1 limit, when one is set.
pub fn cgroup_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|s| s.trim().parse::<u64>().ok())
        // cgroup v1 says "no limit" with a number near 2^63.
        .filter(|&b| b < 1 << 60)
}

/// The memory the process may use: the cgroup v2 or v1 limit when set, else physical RAM.
pub fn available_memory() -> u64 {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cgroup = cgroup_limit();
    let ram = read("/proc/meminfo").and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    });
    match (cgroup, ram) {
        (Some(c), Some(r)) => c.min(r),
        (c, r) => c.or(r).unwrap_or(u64::MAX),
    }
}

/// Shared between the checker and the scrape loops of the limiter's pipelines.
#[derive(Debug, Default)]
pub struct MemoryGate {
    refusing: AtomicBool,
    /// Scrapes skipped because of it.
    pub skipped: AtomicU64,
}

impl MemoryGate {
    /// Whether new data may be taken in now.
    pub fn open(&self) -> bool {
        !self.refusing.load(Ordering::Relaxed)
    }

    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::Relaxed);
    }
}

/// The gates a receiver's scrape loops consult; replaced in place when a reload changes the
/// receiver's pipelines.
pub type SharedGates = Arc<arc_swap::ArcSwap<Vec<Arc<MemoryGate>>>>;

/// Checks resident memory every `check_interval` and opens or closes the gate.
pub async fn run(name: String, cfg: MemoryLimiterConfig, gate: Arc<MemoryGate>) {
    let (hard, soft) = cfg.limits();
    tracing::info!(processor = %name, limit_bytes = hard, soft_limit_bytes = soft, "memory limiter active");
    let mut ticker = tokio::time::interval(cfg.check_interval);
    loop {
        ticker.tick().await;
        let Some((rss, _)) = crate::telemetry::process_stats() else {
            continue;
        };
        let refusing = rss > soft;
        // A change of state: the gate is open while we now refuse, or the reverse.
        if refusing == gate.open() {
            if refusing {
                tracing::warn!(processor = %name, rss, soft_limit = soft, "memory above the soft limit; skipping scrapes until it drops");
            } else {
                tracing::info!(processor = %name, rss, "memory back under the soft limit; scraping again");
            }
        }
        gate.set_refusing(refusing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_checks() {
        let c: MemoryLimiterConfig =
            serde_saphyr::from_str("check_interval: 1s\nlimit_mib: 100\n").expect("parses");
        assert_eq!(c.limits(), (100 << 20, 80 << 20));
        let c: MemoryLimiterConfig =
            serde_saphyr::from_str("check_interval: 1s\nlimit_mib: 100\nspike_limit_mib: 30\n")
                .expect("parses");
        assert_eq!(c.limits().1, 70 << 20);
        let bad: MemoryLimiterConfig =
            serde_saphyr::from_str("check_interval: 1s\nlimit_mib: 100\nlimit_percentage: 50\n")
                .expect("parses");
        assert!(bad.validate().is_err());
        let pct: MemoryLimiterConfig = serde_saphyr::from_str(
            "check_interval: 1s\nlimit_percentage: 50\nspike_limit_percentage: 10\n",
        )
        .expect("parses");
        assert!(pct.validate().is_ok());
        let (hard, soft) = pct.limits();
        assert!(hard > soft && soft > 0);
    }
}
