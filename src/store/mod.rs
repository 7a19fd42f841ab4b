//! The recent-window store behind the query façade: a series index with postings per label
//! pair, samples in Gorilla chunks, retention that drops whole chunks.
//!
//! Sharded by series hash so ingest takes one short write lock per shard, and a query reads
//! shard by shard. Appends follow Prometheus's head: a sample older than the series' last one
//! is refused as out of order; one at the same timestamp is ignored when identical and
//! refused otherwise; staleness markers are stored like any sample.

pub mod chunk;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use self::chunk::Chunk;
use crate::model::{Label, Labels, Metrics};
use crate::promql::{LabelMatcher, Queryable, SeriesSamples};

const SHARDS: usize = 16;

/// Why a sample was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendError {
    OutOfOrder,
    Duplicate,
    SeriesLimit,
}

struct MemSeries {
    labels: Labels,
    chunks: Vec<Chunk>,
    last_t: i64,
    last_v: u64,
}

impl MemSeries {
    fn samples_in(&self, mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) {
        for c in &self.chunks {
            if c.count == 0 || c.max_t < mint || c.min_t > maxt {
                continue;
            }
            c.for_each(|t, v| {
                if t >= mint && t <= maxt {
                    out.push((t, v));
                }
            });
        }
    }
}

#[derive(Default)]
struct Shard {
    series: HashMap<u64, MemSeries>,
    /// Label-set hash → series ids with that hash (collisions are checked).
    by_hash: HashMap<u64, Vec<u64>>,
    /// Label → sorted series ids.
    postings: HashMap<Label, Vec<u64>>,
}

impl Shard {
    fn find(&self, hash: u64, labels: &Labels) -> Option<u64> {
        self.by_hash
            .get(&hash)?
            .iter()
            .copied()
            .find(|id| self.series.get(id).is_some_and(|s| &s.labels == labels))
    }

    fn remove(&mut self, id: u64, hash: u64) {
        if let Some(s) = self.series.remove(&id) {
            for l in s.labels.iter() {
                if let Some(p) = self.postings.get_mut(l) {
                    p.retain(|x| *x != id);
                    if p.is_empty() {
                        self.postings.remove(l);
                    }
                }
            }
        }
        if let Some(ids) = self.by_hash.get_mut(&hash) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                self.by_hash.remove(&hash);
            }
        }
    }

    /// Candidate ids from the equality matchers (all series when there are none).
    fn candidates(&self, matchers: &[LabelMatcher]) -> Vec<u64> {
        let mut lists: Vec<&Vec<u64>> = Vec::new();
        for m in matchers {
            if let Some(v) = m.equal_value() {
                if v.is_empty() {
                    continue;
                }
                match self.postings.get(&Label::new(m.name.as_str(), v)) {
                    Some(p) => lists.push(p),
                    None => return Vec::new(),
                }
            }
        }
        if lists.is_empty() {
            let mut all: Vec<u64> = self.series.keys().copied().collect();
            all.sort_unstable();
            return all;
        }
        lists.sort_by_key(|l| l.len());
        let mut out = lists[0].clone();
        for l in &lists[1..] {
            out.retain(|id| l.binary_search(id).is_ok());
        }
        out
    }
}

fn hash_labels(labels: &Labels) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for l in labels.iter() {
        h.update(l.name.as_bytes());
        h.update(&[0xff]);
        h.update(l.value.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

/// Counts kept for self metrics and zpages.
#[derive(Default)]
pub struct StoreStats {
    pub appended: AtomicU64,
    pub out_of_order: AtomicU64,
    pub duplicates: AtomicU64,
    pub series_refused: AtomicU64,
}

pub struct Store {
    shards: Box<[RwLock<Shard>]>,
    next_id: AtomicU64,
    series_count: AtomicUsize,
    max_series: usize,
    pub stats: StoreStats,
    /// Shares `job`/`instance`/`__name__` strings between the series built here.
    interner: crate::model::Interner,
}

impl Store {
    /// A store refusing new series beyond `max_series` (0 = unbounded).
    pub fn new(max_series: usize) -> Self {
        Store {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            next_id: AtomicU64::new(1),
            series_count: AtomicUsize::new(0),
            max_series,
            stats: StoreStats::default(),
            interner: crate::model::Interner::default(),
        }
    }

    pub fn series_count(&self) -> usize {
        self.series_count.load(Ordering::Relaxed)
    }

    /// Appends one sample of the series with these labels (including `__name__`).
    pub fn append(&self, labels: &Labels, t: i64, v: f64) -> Result<(), AppendError> {
        let hash = hash_labels(labels);
        let shard = &self.shards[(hash as usize) % SHARDS];
        let mut s = shard.write().unwrap_or_else(|e| e.into_inner());
        let id = match s.find(hash, labels) {
            Some(id) => id,
            None => {
                if self.max_series > 0
                    && self.series_count.load(Ordering::Relaxed) >= self.max_series
                {
                    self.stats.series_refused.fetch_add(1, Ordering::Relaxed);
                    return Err(AppendError::SeriesLimit);
                }
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                for l in labels.iter() {
                    // Ids grow, so pushing keeps each postings list sorted.
                    s.postings.entry(l.clone()).or_default().push(id);
                }
                s.by_hash.entry(hash).or_default().push(id);
                s.series.insert(
                    id,
                    MemSeries {
                        labels: labels.clone(),
                        chunks: Vec::new(),
                        last_t: i64::MIN,
                        last_v: 0,
                    },
                );
                self.series_count.fetch_add(1, Ordering::Relaxed);
                id
            }
        };
        let series = s.series.get_mut(&id).expect("found or inserted above");
        if t < series.last_t {
            self.stats.out_of_order.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::OutOfOrder);
        }
        if t == series.last_t {
            if v.to_bits() == series.last_v {
                return Ok(());
            }
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::Duplicate);
        }
        if series.chunks.last().is_none_or(Chunk::is_full) {
            if let Some(c) = series.chunks.last_mut() {
                c.shrink();
            }
            series.chunks.push(Chunk::new());
        }
        if let Some(c) = series.chunks.last_mut() {
            c.append(t, v);
        }
        series.last_t = t;
        series.last_v = v.to_bits();
        self.stats.appended.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Appends a pipeline batch: `job`/`instance` come back from the resource, the sample
    /// name becomes `__name__`, as a Prometheus server scraping the same target would store it.
    pub fn append_metrics(&self, m: &Metrics) -> usize {
        let mut stored = 0;
        let mut cache: HashMap<(usize, usize, usize), Labels> = HashMap::new();
        for (ri, r) in m.resources.iter().enumerate() {
            // The spec's rule: `service.namespace/service.name` when there is a namespace
            // (scraped targets have none; OTel SDKs may set one).
            let name = r.resource_attr("service.name").unwrap_or("");
            let job = match r.resource_attr("service.namespace") {
                Some(ns) if !ns.is_empty() => std::borrow::Cow::Owned(format!("{ns}/{name}")),
                _ => std::borrow::Cow::Borrowed(name),
            };
            let job = job.as_ref();
            let instance = r.resource_attr("service.instance.id").unwrap_or("");
            for f in &r.families {
                for s in &f.samples {
                    // Samples of one series share their `Labels` allocation within a batch.
                    let key = (
                        ri,
                        s.labels.as_slice().as_ptr() as usize,
                        Arc::as_ptr(&s.name) as *const u8 as usize,
                    );
                    let labels = cache.entry(key).or_insert_with(|| {
                        let i = &self.interner;
                        let mut v: Vec<Label> = s.labels.to_vec();
                        v.push(i.label("__name__", &s.name));
                        if !job.is_empty() {
                            v.push(i.label("job", job));
                        }
                        if !instance.is_empty() {
                            v.push(i.label("instance", instance));
                        }
                        Labels::from_vec(v)
                    });
                    if self.append(labels, s.timestamp_ms, s.value).is_ok() {
                        stored += 1;
                    }
                }
            }
        }
        stored
    }

    /// Drops chunks entirely older than `min_t`, and series left without samples.
    pub fn trim(&self, min_t: i64) {
        for shard in self.shards.iter() {
            let mut s = shard.write().unwrap_or_else(|e| e.into_inner());
            let mut dead = Vec::new();
            for (id, series) in s.series.iter_mut() {
                // Keep the chunk being appended to unless it is entirely old too.
                series.chunks.retain(|c| c.max_t >= min_t);
                if series.chunks.is_empty() {
                    dead.push((*id, hash_labels(&series.labels)));
                }
            }
            for (id, hash) in dead {
                s.remove(id, hash);
                self.series_count.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Label sets (and, with `with_samples`, samples in [mint, maxt]) of matching series.
    pub fn select_series(
        &self,
        matchers: &[LabelMatcher],
        mint: i64,
        maxt: i64,
        with_samples: bool,
    ) -> Vec<SeriesSamples> {
        let mut out: Vec<(u64, SeriesSamples)> = Vec::new();
        for shard in self.shards.iter() {
            let s = shard.read().unwrap_or_else(|e| e.into_inner());
            for id in s.candidates(matchers) {
                let Some(series) = s.series.get(&id) else {
                    continue;
                };
                if !matchers
                    .iter()
                    .all(|m| m.matches(series.labels.get(&m.name).unwrap_or("")))
                {
                    continue;
                }
                let mut samples = Vec::new();
                if with_samples {
                    series.samples_in(mint, maxt, &mut samples);
                    if samples.is_empty() {
                        continue;
                    }
                } else {
                    let (lo, hi) = (
                        series.chunks.first().map(|c| c.min_t).unwrap_or(i64::MAX),
                        series.last_t,
                    );
                    if hi < mint || lo > maxt {
                        continue;
                    }
                }
                out.push((
                    id,
                    SeriesSamples {
                        labels: series.labels.clone(),
                        samples,
                    },
                ));
            }
        }
        // Creation order, as Prometheus's head returns an unsorted selection.
        out.sort_by_key(|(id, _)| *id);
        out.into_iter().map(|(_, s)| s).collect()
    }

    /// Bytes held in chunks (for reports).
    pub fn chunk_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|sh| {
                let s = sh.read().unwrap_or_else(|e| e.into_inner());
                s.series
                    .values()
                    .map(|x| x.chunks.iter().map(Chunk::size).sum::<usize>())
                    .sum::<usize>()
            })
            .sum()
    }
}

impl Queryable for Store {
    fn select(
        &self,
        matchers: &[LabelMatcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, String> {
        Ok(self.select_series(matchers, mint, maxt, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::MatchKind;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn append_rules_follow_prometheus_head() {
        let s = Store::new(0);
        let a = l(&[("__name__", "up"), ("job", "a")]);
        assert_eq!(s.append(&a, 1000, 1.0), Ok(()));
        assert_eq!(
            s.append(&a, 1000, 1.0),
            Ok(()),
            "identical duplicate is ignored"
        );
        assert_eq!(s.append(&a, 1000, 2.0), Err(AppendError::Duplicate));
        assert_eq!(s.append(&a, 999, 2.0), Err(AppendError::OutOfOrder));
        assert_eq!(s.append(&a, 2000, 3.0), Ok(()));
        let got = s
            .select(
                &[LabelMatcher::new("job", MatchKind::Equal, "a").expect("m")],
                0,
                5000,
            )
            .expect("select");
        assert_eq!(got[0].samples, vec![(1000, 1.0), (2000, 3.0)]);
    }

    #[test]
    fn postings_regex_and_retention() {
        let s = Store::new(2);
        for (i, job) in ["a", "b", "c"].iter().enumerate() {
            let r = s.append(
                &l(&[("__name__", "up"), ("job", job)]),
                1000 * (i as i64 + 1),
                1.0,
            );
            assert_eq!(r.is_ok(), i < 2, "the third series exceeds max_series");
        }
        let re = LabelMatcher::new("job", MatchKind::Re, "a|b").expect("m");
        assert_eq!(s.select(&[re], 0, 10_000).expect("select").len(), 2);
        let ne = LabelMatcher::new("job", MatchKind::NotEqual, "a").expect("m");
        assert_eq!(s.select(&[ne], 0, 10_000).expect("select").len(), 1);
        s.trim(1500);
        assert_eq!(s.series_count(), 1);
        let all = LabelMatcher::new("__name__", MatchKind::Equal, "up").expect("m");
        assert_eq!(s.select(&[all], 0, 10_000).expect("select").len(), 1);
    }
}
