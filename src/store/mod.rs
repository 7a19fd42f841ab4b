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
mod tests;
