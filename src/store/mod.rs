//! The recent-window store behind the query façade: a series index with postings per label
//! pair, samples in Gorilla chunks, retention that drops whole chunks.
//!
//! Sharded by series hash so ingest takes one short write lock per shard, and a query reads
//! shard by shard. Appends follow Prometheus's head: a sample older than the series' last one
//! is refused as out of order; one at the same timestamp is ignored when identical and
//! refused otherwise; staleness markers are stored like any sample.

pub mod chunk;
mod ingest;
pub mod metadata;

use roaring::RoaringBitmap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;

use self::chunk::{ChunkView, ClosedChunk, HeadChunk};
use self::ingest::{hash_pairs, AppendCounts, MergedPairs, Pending, Positions, SentAs};
use crate::model::{Label, Labels, Metrics, Sample};
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
    /// The labels as the pipeline carried them: for a scraped series the very set its scrape
    /// cache entry holds, so the store keeps no copy of its own.
    labels: Labels,
    /// `__name__`, `instance` and `job`, in that (name) order, when they arrived apart from
    /// `labels` (the sample's name and its resource); `None` when `labels` holds them.
    apart: [Option<Label>; 3],
    /// Full chunks, oldest first (exactly as many as held: a window holds a few).
    closed: Box<[ClosedChunk]>,
    head: HeadChunk,
    /// The last sample's time and value bits (`i64::MIN` before the first).
    last_t: i64,
    last_v: u64,
    /// Store-wide creation number: selections come out in creation order, as from
    /// Prometheus's head.
    created: u64,
}

impl MemSeries {
    /// The full label set, in name order, without building it.
    fn pairs(&self) -> MergedPairs<'_> {
        let extra = self.apart.each_ref().map(|l| {
            l.as_ref()
                .map_or(("", "", 0), |l| (&*l.name, &*l.value, l.pair_hash()))
        });
        MergedPairs::new(&self.labels, extra)
    }

    /// Whether a pipeline sample sent as `sent` is this series: the very label set it was
    /// stored with, and the same name, instance and job.
    fn is_sent_as(&self, sent: &SentAs<'_>) -> bool {
        self.labels.ptr_eq(sent.labels) && self.apart_values() == sent.apart
    }

    /// `__name__`, `instance` and `job` as kept apart, `""` for each one not.
    fn apart_values(&self) -> [&str; 3] {
        self.apart
            .each_ref()
            .map(|l| l.as_ref().map_or("", |l| &*l.value))
    }

    fn get(&self, name: &str) -> Option<&str> {
        match self.apart.iter().flatten().find(|l| &*l.name == name) {
            Some(l) => Some(&l.value),
            None => self.labels.get(name),
        }
    }

    fn label_count(&self) -> usize {
        self.labels.len() + self.apart.iter().flatten().count()
    }

    /// Every label (`labels` never holds a name kept apart: see `append_metrics`).
    fn each_label(&self) -> impl Iterator<Item = &Label> {
        self.labels.iter().chain(self.apart.iter().flatten())
    }

    /// The full label set, for a query's answer: the scrape's set joined with the three kept
    /// apart, sharing both (see `Labels::joined`).
    fn full_labels(&self) -> Labels {
        Labels::joined(self.labels.clone(), self.apart.clone())
    }

    /// Every chunk with samples, oldest first.
    fn chunks(&self) -> impl Iterator<Item = ChunkView<'_>> {
        let head = (self.head.count > 0).then(|| self.head.view(self.last_t));
        self.closed.iter().map(ClosedChunk::view).chain(head)
    }

    /// Whether the series holds no sample.
    fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.head.count == 0
    }

    fn samples_in(&self, mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) {
        let overlaps = |c: &ChunkView<'_>| c.count > 0 && c.max_t >= mint && c.min_t <= maxt;
        // Sized once, for the part of each chunk inside the window (samples come at a steady
        // interval): growing the buffer reallocated it several times per series, and a whole
        // chunk's count for a 1-minute window asked ten times the memory used.
        out.reserve(
            self.chunks()
                .filter(overlaps)
                .map(|c| {
                    let span = (i128::from(c.max_t) - i128::from(c.min_t)).max(1);
                    let inside = i128::from(c.max_t.min(maxt)) - i128::from(c.min_t.max(mint));
                    usize::try_from(i128::from(c.count) * inside / span).unwrap_or(0) + 1
                })
                .sum(),
        );
        for c in self.chunks().filter(overlaps) {
            c.for_each(|t, v| {
                if t >= mint && t <= maxt {
                    out.push((t, v));
                }
            });
        }
    }
}

/// A shard's series live in slots; a series' id is its slot number, reused once the series
/// is gone. Ids are therefore bounded by the shard's peak series count, and `u32` postings
/// (half the memory of store-wide `u64` ids) can never run out.
#[derive(Default)]
struct Shard {
    slots: Vec<Option<MemSeries>>,
    free: Vec<u32>,
    /// Ids by label-set hash (collisions are told apart by comparing the labels).
    by_hash: hashbrown::HashTable<u32>,
    /// Label → ids holding it: a compressed bitmap takes two bytes an id where a label's ids
    /// are sparse (a `Vec<u32>` took four, and up to twice that as it grew) and one bit where
    /// they are dense.
    postings: HashMap<Label, RoaringBitmap>,
}

impl Shard {
    fn get(&self, id: u32) -> Option<&MemSeries> {
        self.slots.get(id as usize)?.as_ref()
    }

    fn find(&self, hash: u64, pairs: MergedPairs<'_>, sent: Option<SentAs<'_>>) -> Option<u32> {
        let same = |series: &MemSeries| {
            // A scraped series arrives with the very label set it was stored with: then only
            // its name, instance and job need comparing, not every byte of every label.
            if sent.is_some_and(|sent| series.is_sent_as(&sent)) {
                return true;
            }
            let mut pairs = pairs.clone();
            series.pairs().all(|p| pairs.next() == Some(p)) && pairs.next().is_none()
        };
        self.by_hash
            .find(hash, |&id| self.get(id).is_some_and(same))
            .copied()
    }

    /// Whether series `id` is the one `sent` names: the very label set it was stored with,
    /// and the same name, instance and job.
    fn holds(&self, id: u32, sent: &SentAs<'_>) -> bool {
        self.get(id).is_some_and(|series| series.is_sent_as(sent))
    }

    fn insert(&mut self, hash: u64, series: MemSeries) -> u32 {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        for l in series.each_label() {
            self.postings.entry(l.clone()).or_default().insert(id);
        }
        self.slots[id as usize] = Some(series);
        let Shard { by_hash, slots, .. } = self;
        by_hash.insert_unique(hash, id, |&other| {
            slots[other as usize]
                .as_ref()
                .map_or(0, |s| hash_pairs(s.pairs()))
        });
        id
    }

    fn remove(&mut self, id: u32, hash: u64) {
        let Some(s) = self.slots.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        for l in s.each_label() {
            if let Some(p) = self.postings.get_mut(l) {
                p.remove(id);
                if p.is_empty() {
                    self.postings.remove(l);
                }
            }
        }
        if let Ok(entry) = self.by_hash.find_entry(hash, |&x| x == id) {
            entry.remove();
        }
        self.free.push(id);
    }

    /// Ids holding every non-empty equal value of `matchers` (all ids if there is none);
    /// `select_series` relies on this to check only the other matchers.
    fn candidates(&self, matchers: &[LabelMatcher]) -> Vec<u32> {
        let mut lists: Vec<&RoaringBitmap> = Vec::new();
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
        lists.sort_by_key(|l| l.len());
        let Some((smallest, rest)) = lists.split_first() else {
            return (0..self.slots.len() as u32)
                .filter(|&id| self.slots[id as usize].is_some())
                .collect();
        };
        smallest
            .iter()
            .filter(|&id| rest.iter().all(|l| l.contains(id)))
            .collect()
    }
}

/// Counts kept for self metrics and zpages.
#[derive(Default)]
pub struct StoreStats {
    pub appended: AtomicU64,
    pub out_of_order: AtomicU64,
    pub duplicates: AtomicU64,
    pub series_refused: AtomicU64,
    /// Samples refused for a timestamp outside `[now - window, now + 10m]`.
    pub out_of_bounds: AtomicU64,
}

pub struct Store {
    shards: Box<[RwLock<Shard>]>,
    next_created: AtomicU64,
    series_count: AtomicUsize,
    max_series: usize,
    pub stats: StoreStats,
    /// Type, help and unit of the families stored.
    pub metadata: metadata::MetadataTable,
    /// Shares `job`/`instance`/`__name__` strings between the series built here.
    interner: crate::model::Interner,
    /// Where each target's samples went last time (see `append_metrics`).
    positions: Positions,
    /// When this store was made (ms): its window holds nothing older that it was sent live.
    pub born_ms: i64,
    /// The window kept (ms; 0: unbounded): a pipeline sample older than this is refused,
    /// as is one more than [`FUTURE_LIMIT_MS`] ahead, so that no sample pins a series in
    /// the window past retention or stretches a chunk's time deltas.
    window_ms: std::sync::atomic::AtomicI64,
}

/// How far ahead of the clock a stored sample may be.
pub const FUTURE_LIMIT_MS: i64 = 10 * 60 * 1000;

impl Store {
    /// A store refusing new series beyond `max_series` (0 = unbounded).
    pub fn new(max_series: usize) -> Self {
        Store {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            next_created: AtomicU64::new(0),
            series_count: AtomicUsize::new(0),
            max_series,
            stats: StoreStats::default(),
            metadata: Default::default(),
            interner: crate::model::Interner::default(),
            positions: Positions::default(),
            window_ms: std::sync::atomic::AtomicI64::new(0),
            born_ms: crate::clock::now_ms(),
        }
    }

    /// The most series this store takes (0: no bound).
    pub fn max_series(&self) -> usize {
        self.max_series
    }

    pub fn series_count(&self) -> usize {
        self.series_count.load(Ordering::Relaxed)
    }

    /// Appends one sample of the series with these labels (including `__name__`).
    pub fn append(&self, labels: &Labels, t: i64, v: f64) -> Result<(), AppendError> {
        let pairs = MergedPairs::new(labels, [("", "", 0); 3]);
        let hash = hash_pairs(pairs.clone());
        let mut s = self.shard(hash);
        let mut counts = AppendCounts::default();
        let created = self.next_created.fetch_add(1, Ordering::Relaxed);
        let p = Pending {
            hash,
            pairs,
            sent: None,
        };
        let build = || (labels.clone(), [None, None, None]);
        let r = match self.find_or_add(&mut s, p, build, created, &mut counts) {
            Some(id) => self.append_at(&mut s, id, (t, v), &mut counts),
            None => Err(AppendError::SeriesLimit),
        };
        drop(s);
        counts.publish(&self.stats);
        r
    }

    fn shard(&self, hash: u64) -> std::sync::RwLockWriteGuard<'_, Shard> {
        let shard = &self.shards[(hash as usize) % SHARDS];
        shard.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The series `p` names, in a shard already locked; `build` makes the series' labels and
    /// its `__name__`/`instance`/`job` kept apart, called only when the series is new, which
    /// then gets the creation number `created`. `None` when the series limit refuses it.
    fn find_or_add(
        &self,
        s: &mut Shard,
        p: Pending<'_>,
        build: impl FnOnce() -> (Labels, [Option<Label>; 3]),
        created: u64,
        counts: &mut AppendCounts,
    ) -> Option<u32> {
        if let Some(id) = s.find(p.hash, p.pairs, p.sent) {
            return Some(id);
        }
        if self.max_series > 0 && self.series_count.load(Ordering::Relaxed) >= self.max_series {
            counts.series_refused += 1;
            return None;
        }
        let (labels, apart) = build();
        let series = MemSeries {
            labels,
            apart,
            closed: Box::default(),
            head: HeadChunk::default(),
            last_t: i64::MIN,
            last_v: 0,
            created,
        };
        self.series_count.fetch_add(1, Ordering::Relaxed);
        Some(s.insert(p.hash, series))
    }

    /// Appends one sample to series `id` of a shard already locked, by Prometheus's head
    /// rules.
    fn append_at(
        &self,
        s: &mut Shard,
        id: u32,
        (t, v): (i64, f64),
        counts: &mut AppendCounts,
    ) -> Result<(), AppendError> {
        let Some(series) = s.slots.get_mut(id as usize).and_then(Option::as_mut) else {
            return Ok(());
        };
        if t < series.last_t {
            counts.out_of_order += 1;
            return Err(AppendError::OutOfOrder);
        }
        if t == series.last_t {
            if v.to_bits() == series.last_v {
                return Ok(());
            }
            counts.duplicates += 1;
            return Err(AppendError::Duplicate);
        }
        if series.head.is_full() {
            let mut closed = std::mem::take(&mut series.closed).into_vec();
            closed.reserve_exact(1);
            closed.push(series.head.close(series.last_t));
            series.closed = closed.into_boxed_slice();
        }
        series.head.append(t, v, series.last_t, series.last_v);
        series.last_t = t;
        series.last_v = v.to_bits();
        counts.appended += 1;
        Ok(())
    }

    /// Sets the window kept: pipeline samples older than it are refused (see `window_ms`).
    pub fn set_window(&self, window: std::time::Duration) {
        let ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        self.window_ms.store(ms, Ordering::Relaxed);
    }

    /// Drops chunks entirely older than `min_t`, and series left without samples.
    pub fn trim(&self, min_t: i64) {
        self.metadata.trim(min_t);
        self.positions.forget_unused_since(min_t);
        for shard in self.shards.iter() {
            let mut s = shard.write().unwrap_or_else(|e| e.into_inner());
            let mut dead = Vec::new();
            for (id, slot) in s.slots.iter_mut().enumerate() {
                let Some(series) = slot else { continue };
                if series.closed.first().is_some_and(|c| c.max_t < min_t) {
                    let mut closed = std::mem::take(&mut series.closed).into_vec();
                    closed.retain(|c| c.max_t >= min_t);
                    series.closed = closed.into_boxed_slice();
                }
                // Keep the chunk being appended to unless it is entirely old too.
                if series.last_t < min_t {
                    series.head = HeadChunk::default();
                }
                if series.is_empty() {
                    dead.push((id as u32, hash_pairs(series.pairs())));
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
        self.select_bounded(matchers, mint, maxt, with_samples, &SelectBounds::default())
            .unwrap_or_default()
    }

    /// As `select_series`, failing as soon as what it gathered costs more than
    /// `bounds.max_bytes` (`promql::memory_cost`) or the deadline passes: a caller asking for
    /// every series of a large store is refused at the bound, not after the whole selection
    /// was built. With `bounds.max_series`, it stops at that many series of some shard(s).
    pub fn select_bounded(
        &self,
        matchers: &[LabelMatcher],
        mint: i64,
        maxt: i64,
        with_samples: bool,
        bounds: &SelectBounds,
    ) -> Result<Vec<SeriesSamples>, SelectStop> {
        let mut out: Vec<(u64, SeriesSamples)> = Vec::new();
        let mut points = 0usize;
        let mut label_pairs = 0usize;
        // Candidates come from the postings of every matcher with a non-empty equal value
        // (see `candidates`): only the others need checking per series.
        let rest: Vec<&LabelMatcher> = matchers
            .iter()
            .filter(|m| m.equal_value().is_none_or(str::is_empty))
            .collect();
        for shard in self.shards.iter() {
            let s = shard.read().unwrap_or_else(|e| e.into_inner());
            let candidates = s.candidates(matchers);
            out.reserve(candidates.len());
            for id in candidates {
                let Some(series) = s.get(id) else {
                    continue;
                };
                if !rest
                    .iter()
                    .all(|m| m.matches(series.get(&m.name).unwrap_or("")))
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
                        series.chunks().next().map_or(i64::MAX, |c| c.min_t),
                        series.last_t,
                    );
                    if hi < mint || lo > maxt {
                        continue;
                    }
                }
                if bounds.max_series > 0 && out.len() >= bounds.max_series {
                    break;
                }
                points += samples.len();
                label_pairs += series.label_count();
                // A label set costs about what 2 samples a pair do, beyond the fixed part.
                let cost = crate::promql::memory_cost(points + 2 * label_pairs, out.len() + 1);
                if bounds.max_bytes > 0 && cost > bounds.max_bytes {
                    return Err(SelectStop::Budget);
                }
                if out.len() % 1024 == 1023
                    && (bounds
                        .deadline
                        .is_some_and(|d| std::time::Instant::now() > d)
                        || bounds
                            .abandoned
                            .as_ref()
                            .is_some_and(|a| a.load(Ordering::Relaxed)))
                {
                    return Err(SelectStop::Deadline);
                }
                out.push((
                    series.created,
                    SeriesSamples {
                        labels: series.full_labels(),
                        samples,
                    },
                ));
            }
        }
        // Creation order, as Prometheus's head returns an unsorted selection.
        out.sort_by_key(|(id, _)| *id);
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    /// Bytes held in chunks (for reports).
    pub fn chunk_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|sh| {
                let s = sh.read().unwrap_or_else(|e| e.into_inner());
                s.slots
                    .iter()
                    .flatten()
                    .map(|x| x.head.size() + x.closed.iter().map(ClosedChunk::size).sum::<usize>())
                    .sum::<usize>()
            })
            .sum()
    }
}

/// Where a bounded selection stops (0 and `None`: no bound).
#[derive(Debug, Clone, Default)]
pub struct SelectBounds {
    pub max_bytes: usize,
    pub max_series: usize,
    pub deadline: Option<std::time::Instant>,
    /// Set when whoever asked is gone: the selection stops as at the deadline.
    pub abandoned: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Why a bounded selection gave up (reaching `max_series` is no failure: the caller asked
/// for that many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectStop {
    Budget,
    Deadline,
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

    fn select_within(
        &self,
        matchers: &[LabelMatcher],
        mint: i64,
        maxt: i64,
        max_bytes: usize,
    ) -> Result<Option<Vec<SeriesSamples>>, String> {
        let bounds = SelectBounds {
            max_bytes,
            ..Default::default()
        };
        match self.select_bounded(matchers, mint, maxt, true, &bounds) {
            Ok(s) => Ok(Some(s)),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::MatchKind;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn hash_labels(labels: &Labels) -> u64 {
        hash_pairs(MergedPairs::new(labels, [("", "", 0); 3]))
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

    fn batch(job: &str, instance: &str, samples: &[(&str, Labels, i64, f64)]) -> Metrics {
        use crate::model::{MetricFamily, MetricKind, ResourceMetrics, Sample};
        let mut resource = vec![("service.name".to_string(), job.to_string())];
        if !instance.is_empty() {
            resource.push(("service.instance.id".into(), instance.into()));
        }
        Metrics {
            resources: vec![ResourceMetrics {
                resource,
                scope_name: String::new(),
                scope_version: String::new(),
                families: vec![MetricFamily {
                    name: "f".into(),
                    kind: MetricKind::Gauge,
                    help: "".into(),
                    unit: "".into(),
                    samples: samples
                        .iter()
                        .map(|(name, labels, t, v)| Sample {
                            name: (*name).into(),
                            labels: labels.clone(),
                            value: *v,
                            timestamp_ms: *t,
                        })
                        .collect(),
                }],
            }],
        }
    }

    #[test]
    fn merged_pairs_are_the_label_set_from_vec_builds() {
        let cases = [
            (l(&[("a", "1"), ("z", "2")]), "m", "i:1", "j"),
            (l(&[]), "m", "", "j"),
            (
                l(&[("A", "x"), ("_b", "y"), ("instancf", "z")]),
                "m",
                "i",
                "",
            ),
            // A sample label named like a resource one loses to it, as in `from_vec`.
            (l(&[("job", "shadowed"), ("k", "v")]), "m", "i", "j"),
            (l(&[("job", "kept")]), "m", "i", ""),
        ];
        for (labels, name, instance, job) in cases {
            let mut v = labels.to_vec();
            for (k, val) in [("__name__", name), ("job", job), ("instance", instance)] {
                if !val.is_empty() {
                    v.push(Label::new(k, val));
                }
            }
            let built = Labels::from_vec(v);
            let extra = [("__name__", name), ("instance", instance), ("job", job)]
                .map(|(k, v)| (k, v, crate::model::pair_hash(k, v)));
            let merged: Vec<(&str, &str)> = MergedPairs::new(&labels, extra).collect();
            let want: Vec<(&str, &str)> = built.iter().map(|l| (&*l.name, &*l.value)).collect();
            assert_eq!(merged, want, "{labels}");
            assert_eq!(
                hash_pairs(MergedPairs::new(&labels, extra)),
                hash_labels(&built)
            );
        }
    }

    #[test]
    fn pipeline_samples_and_full_label_sets_are_one_series() {
        let s = Store::new(0);
        let sample_labels = l(&[("code", "200")]);
        for t in [1000, 2000] {
            let m = batch(
                "mesh",
                "10.0.0.1:15090",
                &[("req_total", sample_labels.clone(), t, 1.0)],
            );
            assert_eq!(s.append_metrics(&m), 1);
        }
        let full = l(&[
            ("__name__", "req_total"),
            ("code", "200"),
            ("instance", "10.0.0.1:15090"),
            ("job", "mesh"),
        ]);
        assert_eq!(s.append(&full, 3000, 2.0), Ok(()));
        assert_eq!(s.series_count(), 1);
        let got = s
            .select(
                &[LabelMatcher::new("code", MatchKind::Equal, "200").expect("m")],
                0,
                5000,
            )
            .expect("select");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels, full);
        assert_eq!(got[0].samples, vec![(1000, 1.0), (2000, 1.0), (3000, 2.0)]);
        // The stored series holds the sample's own label set, not a copy.
        let shard = s.shards.iter().find_map(|sh| {
            let sh = sh.read().expect("lock");
            sh.slots.iter().flatten().next().map(|x| x.labels.clone())
        });
        let held = shard.expect("one series");
        assert!(held.ptr_eq(&sample_labels));

        // A sample label named like the resource's loses to it, as in a built set.
        let odd = l(&[("job", "from-sample"), ("k", "v")]);
        let m = batch("mesh", "", &[("odd", odd, 1000, 5.0)]);
        assert_eq!(s.append_metrics(&m), 1);
        let job = LabelMatcher::new("job", MatchKind::Equal, "mesh").expect("m");
        let k = LabelMatcher::new("k", MatchKind::Equal, "v").expect("m");
        let got = s.select(&[job, k], 0, 5000).expect("select");
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].labels,
            l(&[("__name__", "odd"), ("job", "mesh"), ("k", "v")])
        );
        let shadowed = LabelMatcher::new("job", MatchKind::Equal, "from-sample").expect("m");
        assert!(s.select(&[shadowed], 0, 5000).expect("select").is_empty());

        // The answer's label set is merged in name order around the three kept apart.
        let around = l(&[("A", "x"), ("_b", "y"), ("instancf", "z"), ("zz", "w")]);
        let m = batch("mesh", "i:1", &[("around", around.clone(), 1000, 6.0)]);
        assert_eq!(s.append_metrics(&m), 1);
        let zz = LabelMatcher::new("zz", MatchKind::Equal, "w").expect("m");
        let got = s.select(&[zz], 0, 5000).expect("select");
        let mut want = around.to_vec();
        for (k, v) in [("__name__", "around"), ("instance", "i:1"), ("job", "mesh")] {
            want.push(Label::new(k, v));
        }
        assert_eq!(got[0].labels, Labels::from_vec(want));
    }

    /// A batch is appended shard by shard, yet reads as if appended sample by sample: new
    /// series in the batch's order, one series' samples in theirs, the counts all there.
    #[test]
    fn a_batch_reads_as_appended_in_its_order() {
        let s = Store::new(0);
        let mut samples = Vec::new();
        for i in 0..200 {
            samples.push(("up", l(&[("i", &i.to_string())]), 1000, i as f64));
        }
        // The same series again, later and then earlier (refused), and a duplicate.
        samples.push(("up", l(&[("i", "7")]), 2000, 1.0));
        samples.push(("up", l(&[("i", "7")]), 1500, 1.0));
        samples.push(("up", l(&[("i", "8")]), 1000, 99.0));
        let m = batch("mesh", "i:1", &samples);
        assert_eq!(s.append_metrics(&m), 201);
        assert_eq!(s.stats.appended.load(Ordering::Relaxed), 201);
        assert_eq!(s.stats.out_of_order.load(Ordering::Relaxed), 1);
        assert_eq!(s.stats.duplicates.load(Ordering::Relaxed), 1);
        let up = LabelMatcher::new("__name__", MatchKind::Equal, "up").expect("m");
        let got = s.select(&[up], 0, 5000).expect("select");
        let order: Vec<String> = got
            .iter()
            .map(|x| x.labels.get("i").unwrap_or("").to_string())
            .collect();
        let want: Vec<String> = (0..200).map(|i: i32| i.to_string()).collect();
        assert_eq!(order, want, "creation order is the batch's");
        assert_eq!(got[7].samples, vec![(1000, 7.0), (2000, 1.0)]);
        assert_eq!(got[8].samples, vec![(1000, 8.0)]);
        // A second batch finds the same series (no new ones), by label set alone.
        let again: Vec<_> = (0..200)
            .map(|i| ("up", l(&[("i", &i.to_string())]), 3000, 0.0))
            .collect();
        assert_eq!(s.append_metrics(&batch("mesh", "i:1", &again)), 200);
        assert_eq!(s.series_count(), 200);
    }

    /// A target's next batch finds its series where the last one's samples went, checked by
    /// label-set identity: whatever the order, and after their slots went to other series.
    #[test]
    fn a_targets_next_batch_finds_its_series_where_they_were() {
        let s = Store::new(0);
        let sets: Vec<Labels> = (0..10).map(|i| l(&[("i", &i.to_string())])).collect();
        let send = |instance: &str, t: i64, order: &[usize]| {
            let samples: Vec<_> = order
                .iter()
                .map(|&i| ("up", sets[i].clone(), t, (i as i64 * 1000 + t) as f64))
                .collect();
            s.append_metrics(&batch("mesh", instance, &samples))
        };
        let forward: Vec<usize> = (0..10).collect();
        let backward: Vec<usize> = (0..10).rev().collect();
        assert_eq!(send("i:1", 1000, &forward), 10);
        assert_eq!(send("i:1", 2000, &forward), 10);
        assert_eq!(send("i:1", 3000, &backward), 10);
        // Same sample labels, another target: other series.
        assert_eq!(send("i:2", 3000, &forward), 10);
        assert_eq!(s.series_count(), 20);
        let i1 = LabelMatcher::new("instance", MatchKind::Equal, "i:1").expect("m");
        for x in s
            .select(std::slice::from_ref(&i1), 0, 10_000)
            .expect("select")
        {
            let i: i64 = x.labels.get("i").unwrap_or("").parse().expect("i");
            let want: Vec<(i64, f64)> = [1000, 2000, 3000]
                .iter()
                .map(|&t| (t, (i * 1000 + t) as f64))
                .collect();
            assert_eq!(x.samples, want, "series i={i}");
        }
        // The target's series go away and their slots go to others; its next batch must
        // not land in them.
        s.trim(5000);
        assert_eq!(s.series_count(), 0);
        for i in 0..20 {
            let other = l(&[("__name__", "other"), ("k", &i.to_string())]);
            assert_eq!(s.append(&other, 6000, 1.0), Ok(()));
        }
        assert_eq!(send("i:1", 7000, &forward), 10);
        assert_eq!(s.series_count(), 30);
        let got = s.select(&[i1], 0, 10_000).expect("select");
        assert_eq!(got.len(), 10);
        for x in &got {
            assert_eq!(x.labels.get("__name__"), Some("up"));
            assert_eq!(x.samples.len(), 1);
        }
        let other = LabelMatcher::new("__name__", MatchKind::Equal, "other").expect("m");
        for x in s.select(&[other], 0, 10_000).expect("select") {
            assert_eq!(x.samples, vec![(6000, 1.0)]);
        }
    }

    /// Pushes of made-up targets with huge batches cannot make the store keep their
    /// positions beyond a bound set by the series it holds.
    #[test]
    fn positions_of_made_up_targets_stay_bounded() {
        let s = Store::new(10);
        let sets: Vec<Labels> = (0..2_000).map(|i| l(&[("i", &i.to_string())])).collect();
        for target in 0..60 {
            let samples: Vec<_> = sets.iter().map(|x| ("up", x.clone(), 1000, 1.0)).collect();
            s.append_metrics(&batch("push", &format!("made-up-{target}"), &samples));
        }
        assert_eq!(s.series_count(), 10);
        let held = s.positions.held();
        assert!(held <= 2 * 10 + 65_536, "{held} positions held");
        assert!(held > 0, "the first targets' positions are kept");
    }

    #[test]
    fn freed_ids_are_reused_and_selections_keep_creation_order() {
        let s = Store::new(0);
        // Enough series that every shard holds several, then the oldest go away.
        for i in 0..64 {
            let labels = l(&[("__name__", "up"), ("i", &i.to_string())]);
            assert_eq!(s.append(&labels, 1000 + i, 1.0), Ok(()));
        }
        for i in 0..32 {
            let labels = l(&[("__name__", "up"), ("i", &i.to_string())]);
            assert_eq!(s.append(&labels, 100_000 + i, 1.0), Ok(()));
        }
        // Which shard a series lands in follows the per-process hash seed, so slot counts are
        // checked shard by shard.
        let slot_counts = || -> Vec<(usize, usize)> {
            s.shards
                .iter()
                .map(|sh| {
                    let sh = sh.read().expect("lock");
                    (sh.slots.len(), sh.slots.iter().flatten().count())
                })
                .collect()
        };
        let before = slot_counts();
        s.trim(50_000);
        assert_eq!(s.series_count(), 32);
        for i in 64..96 {
            let labels = l(&[("__name__", "up"), ("i", &i.to_string())]);
            assert_eq!(s.append(&labels, 200_000, 1.0), Ok(()));
        }
        assert_eq!(s.series_count(), 64);
        // A shard grows only by the new series its freed slots could not take.
        for (shard, ((had, _), (has, live))) in before.into_iter().zip(slot_counts()).enumerate() {
            assert_eq!(
                has,
                had.max(live),
                "shard {shard}: {has} slots for {live} series (it had {had}): freed ones were not reused"
            );
        }
        let up = LabelMatcher::new("__name__", MatchKind::Equal, "up").expect("m");
        let order: Vec<String> = s
            .select(&[up], 0, 300_000)
            .expect("select")
            .iter()
            .map(|x| x.labels.get("i").unwrap_or("").to_string())
            .collect();
        let want: Vec<String> = (0..32).chain(64..96).map(|i: i32| i.to_string()).collect();
        assert_eq!(order, want);
        // Postings stayed sorted: an equality match on a reused id still finds it.
        for i in [0, 31, 64, 95] {
            let m = LabelMatcher::new("i", MatchKind::Equal, &i.to_string()).expect("m");
            assert_eq!(
                s.select(&[m], 0, 300_000).expect("select").len(),
                1,
                "i={i}"
            );
        }
    }

    /// What every series costs before its samples: a window of 111,200 series holds one of
    /// each per series, and a closed chunk per 120 samples.
    #[test]
    fn per_series_structures_stay_small() {
        assert_eq!(std::mem::size_of::<ClosedChunk>(), 24);
        assert_eq!(std::mem::size_of::<HeadChunk>(), 40);
        assert_eq!(std::mem::size_of::<Option<MemSeries>>(), 120);
    }

    /// A series' samples read the same across closed chunks and the one being appended to;
    /// retention drops a closed chunk once its last sample is old, and the series once the
    /// chunk being appended to is old too.
    #[test]
    fn samples_cross_chunks_and_retention_drops_whole_old_chunks() {
        let s = Store::new(0);
        let series = l(&[("__name__", "x"), ("job", "a")]);
        let value = |i: i64| {
            if i % 7 == 0 {
                i as f64 * 1.5
            } else {
                (i / 3) as f64
            }
        };
        for i in 1..=250 {
            s.append(&series, i * 1000, value(i)).expect("append");
        }
        let m = LabelMatcher::new("job", MatchKind::Equal, "a").expect("m");
        let read = |mint: i64, maxt: i64| -> Vec<(i64, f64)> {
            let mut got = s
                .select(std::slice::from_ref(&m), mint, maxt)
                .expect("select");
            got.pop().map(|x| x.samples).unwrap_or_default()
        };
        let want = |from: i64, to: i64| -> Vec<(i64, f64)> {
            (from..=to).map(|i| (i * 1000, value(i))).collect()
        };
        assert_eq!(read(0, i64::MAX), want(1, 250));
        // Across the first chunk's end (120 samples) and into the open one (from 241).
        assert_eq!(read(100_500, 130_000), want(101, 130));
        assert_eq!(read(239_000, 245_000), want(239, 245));
        assert!(s.chunk_bytes() > 0);
        s.trim(120_001);
        assert_eq!(read(0, i64::MAX), want(121, 250));
        // The second chunk's last sample (240 s) is not older than the bound: kept whole.
        s.trim(240_000);
        assert_eq!(read(0, i64::MAX), want(121, 250));
        s.trim(250_001);
        assert_eq!((s.series_count(), s.chunk_bytes()), (0, 0));
        s.append(&series, 260_000, 1.0).expect("append");
        assert_eq!(read(0, i64::MAX), vec![(260_000, 1.0)]);
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
