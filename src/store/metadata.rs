//! Type, help and unit of the metric families the store holds, as Prometheus's
//! `/api/v1/metadata` lists them: every distinct triple seen per family name, forgotten once
//! not seen within the window (as Prometheus forgets a target's metadata with the target).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use crate::model::{MetricFamily, MetricKind};

/// Most (family, metadata) entries kept: each family name also makes series, which the
/// store's own series bound limits; this bounds a sender varying only help texts.
const MAX_ENTRIES: usize = 100_000;
/// Most distinct metadata kept for one family name (targets disagreeing on a help text).
const MAX_PER_FAMILY: usize = 16;

/// One family's metadata as exposed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FamilyMetadata {
    pub kind: &'static str,
    pub help: Arc<str>,
    pub unit: Arc<str>,
}

struct Entry {
    kind: MetricKind,
    help: Arc<str>,
    unit: Arc<str>,
    last_seen_ms: AtomicI64,
}

impl Entry {
    fn same(&self, f: &MetricFamily) -> bool {
        self.kind == f.kind && self.help == f.help && self.unit == f.unit
    }
}

#[derive(Default)]
pub struct MetadataTable {
    families: RwLock<HashMap<Arc<str>, Vec<Entry>>>,
    entries: std::sync::atomic::AtomicUsize,
}

impl MetadataTable {
    /// Notes that `f` was seen at `now_ms`. A family seen before with the same metadata costs
    /// one read lock and a lookup.
    pub fn note(&self, f: &MetricFamily, now_ms: i64) {
        if let Ok(families) = self.families.read() {
            if let Some(e) = families
                .get(&f.name)
                .and_then(|list| list.iter().find(|e| e.same(f)))
            {
                e.last_seen_ms.fetch_max(now_ms, Ordering::Relaxed);
                return;
            }
        }
        if self.entries.load(Ordering::Relaxed) >= MAX_ENTRIES {
            return;
        }
        let Ok(mut families) = self.families.write() else {
            return;
        };
        let list = families.entry(f.name.clone()).or_default();
        if list.iter().any(|e| e.same(f)) || list.len() >= MAX_PER_FAMILY {
            return;
        }
        list.push(Entry {
            kind: f.kind,
            help: f.help.clone(),
            unit: f.unit.clone(),
            last_seen_ms: AtomicI64::new(now_ms),
        });
        self.entries.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets what was last seen before `min_t`.
    pub fn trim(&self, min_t: i64) {
        let Ok(mut families) = self.families.write() else {
            return;
        };
        let mut removed = 0;
        families.retain(|_, list| {
            let before = list.len();
            list.retain(|e| e.last_seen_ms.load(Ordering::Relaxed) >= min_t);
            removed += before - list.len();
            !list.is_empty()
        });
        self.entries.fetch_sub(removed, Ordering::Relaxed);
    }

    /// The metadata of `metric` (every family when empty), by family name, at most `limit`
    /// families (0: all), the first by name.
    pub fn list(&self, metric: &str, limit: usize) -> BTreeMap<String, Vec<FamilyMetadata>> {
        let mut out = BTreeMap::new();
        let Ok(families) = self.families.read() else {
            return out;
        };
        for (name, list) in families.iter() {
            if !metric.is_empty() && **name != *metric {
                continue;
            }
            let mut metas: Vec<FamilyMetadata> = list
                .iter()
                .map(|e| FamilyMetadata {
                    kind: e.kind.as_str(),
                    help: e.help.clone(),
                    unit: e.unit.clone(),
                })
                .collect();
            metas.sort();
            out.insert(name.to_string(), metas);
        }
        if limit > 0 {
            while out.len() > limit {
                out.pop_last();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(name: &str, kind: MetricKind, help: &str) -> MetricFamily {
        MetricFamily {
            name: name.into(),
            kind,
            help: help.into(),
            unit: "".into(),
            samples: Vec::new(),
        }
    }

    #[test]
    fn distinct_metadata_kept_until_unseen() {
        let t = MetadataTable::default();
        t.note(&family("up", MetricKind::Gauge, "a"), 1000);
        t.note(&family("up", MetricKind::Gauge, "a"), 2000);
        t.note(&family("up", MetricKind::Gauge, "b"), 1000);
        t.note(&family("x_total", MetricKind::Counter, "c"), 3000);
        let all = t.list("", 0);
        assert_eq!(all.len(), 2);
        assert_eq!(all["up"].len(), 2);
        assert_eq!(all["x_total"][0].kind, "counter");
        assert_eq!(t.list("up", 0).len(), 1);
        assert_eq!(t.list("", 1).keys().collect::<Vec<_>>(), vec!["up"]);
        t.trim(1500);
        let left = t.list("", 0);
        assert_eq!(left["up"].len(), 1);
        assert_eq!(&*left["up"][0].help, "a");
        t.trim(2500);
        assert_eq!(t.list("", 0).keys().collect::<Vec<_>>(), vec!["x_total"]);
    }
}
