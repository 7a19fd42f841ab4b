//! How pipeline samples find their series: a batch's samples are matched to the series
//! their target's last batch went to, else hashed from their own labels merged with the
//! name, instance and job kept apart, then appended shard by shard.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Label, Labels, Metrics, Sample, Store, StoreStats, FUTURE_LIMIT_MS, SHARDS};

/// A full label set's hash, from its pairs' hashes in order (a shared pair's is kept in it,
/// so a scraped series costs a load and a multiply per label, not a pass over its bytes).
pub(super) fn hash_pairs(pairs: MergedPairs<'_>) -> u64 {
    let mut h = 0x2545_f491_4f6c_dd1d_u64;
    pairs.for_each_hash(|p| {
        h = (h.rotate_left(23) ^ p).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    });
    h ^ (h >> 29)
}

/// How a pipeline sample came: its label set and the `__name__`, `instance` and `job` that
/// `append_metrics` keeps apart from it.
#[derive(Clone, Copy)]
pub(super) struct SentAs<'a> {
    pub(super) labels: &'a Labels,
    pub(super) apart: [&'a str; 3],
}

/// One sample on its way into a shard: its full label set's hash and pairs, and how it came.
pub(super) struct Pending<'a> {
    pub(super) hash: u64,
    pub(super) pairs: MergedPairs<'a>,
    pub(super) sent: Option<SentAs<'a>>,
}

/// A series' place: its shard and its id there.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SeriesRef(u64);

impl SeriesRef {
    const NONE: SeriesRef = SeriesRef(u64::MAX);

    fn new(shard: usize, id: u32) -> Self {
        SeriesRef(((shard as u64) << 32) | u64::from(id))
    }

    fn is_none(self) -> bool {
        self == Self::NONE
    }

    fn shard(self) -> usize {
        (self.0 >> 32) as usize
    }

    fn id(self) -> u32 {
        self.0 as u32
    }
}

/// One pipeline sample of a batch on its way into the store.
struct Incoming<'a> {
    sample: &'a Sample,
    keys: &'a ResourceKeys<'a>,
    name_hash: u64,
    /// Its full label set's hash; worked out only when `was` does not find its series.
    hash: u64,
    /// Where the sample at its position in its target's last batch went.
    was: SeriesRef,
    resource: u32,
    /// Its place among its resource's samples.
    position: u32,
}

impl<'a> Incoming<'a> {
    fn pairs(&self) -> MergedPairs<'a> {
        MergedPairs::new(
            &self.sample.labels,
            self.keys.extra(&self.sample.name, self.name_hash),
        )
    }

    fn sent(&self) -> SentAs<'a> {
        SentAs {
            labels: &self.sample.labels,
            apart: [&self.sample.name, self.keys.instance, &self.keys.job],
        }
    }
}

/// Indices of `items` by the shard `shard_of` gives each (`None`: in none), in order.
fn group_by_shard<T>(items: &[T], shard_of: impl Fn(&T) -> Option<usize>) -> [Vec<u32>; SHARDS] {
    let mut groups: [Vec<u32>; SHARDS] = std::array::from_fn(|_| Vec::new());
    for (i, item) in items.iter().enumerate() {
        if let Some(sh) = shard_of(item) {
            groups[sh % SHARDS].push(i as u32);
        }
    }
    groups
}

/// Where each sample position of a target's last batch went, by target (`job` and
/// `instance`; samples without an instance are not kept here).
#[derive(Default)]
pub(super) struct Positions {
    state: std::sync::Mutex<PositionsState>,
}

#[derive(Default)]
struct PositionsState {
    by_target: HashMap<String, (Vec<SeriesRef>, i64)>,
    /// References held over all targets.
    held: usize,
}

/// The most targets `Positions` keeps: far beyond the targets one agent scrapes, and a
/// bound on what senders of made-up instances can make it hold.
const POSITIONS_MAX_TARGETS: usize = 16_384;

impl Positions {
    fn key(keys: &ResourceKeys) -> Option<String> {
        (!keys.instance.is_empty()).then(|| format!("{}\u{0}{}", keys.job, keys.instance))
    }

    /// The target's last positions, taken out (a batch of the same target at the same time
    /// starts without them).
    fn take(&self, keys: &ResourceKeys) -> Vec<SeriesRef> {
        let Some(key) = Self::key(keys) else {
            return Vec::new();
        };
        let Ok(mut st) = self.state.lock() else {
            return Vec::new();
        };
        match st.by_target.remove(&key) {
            Some((refs, _)) => {
                st.held -= refs.len();
                refs
            }
            None => Vec::new(),
        }
    }

    /// Keeps `refs` for the target's next batch, unless that would hold more than
    /// `max_held` references in all (a scraped target's count about its series, so a bound
    /// a little over the store's series keeps them all; pushes of huge made-up batches are
    /// not kept).
    fn put(&self, keys: &ResourceKeys, refs: Vec<SeriesRef>, now: i64, max_held: usize) {
        let Some(key) = Self::key(keys) else {
            return;
        };
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let st = &mut *st;
        if st.by_target.len() >= POSITIONS_MAX_TARGETS || st.held + refs.len() > max_held {
            return;
        }
        st.held += refs.len();
        if let Some((old, _)) = st.by_target.insert(key, (refs, now)) {
            st.held -= old.len();
        }
    }

    /// Forgets targets not sent since `t` (ms).
    pub(super) fn forget_unused_since(&self, t: i64) {
        if let Ok(mut st) = self.state.lock() {
            let st = &mut *st;
            let held = &mut st.held;
            st.by_target.retain(|_, (refs, used)| {
                let keep = *used >= t;
                if !keep {
                    *held -= refs.len();
                }
                keep
            });
        }
    }

    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.state.lock().map_or(0, |st| st.held)
    }
}

/// A resource's `job` and `instance` as a Prometheus server would label its samples, with
/// their pair hashes.
struct ResourceKeys<'a> {
    job: std::borrow::Cow<'a, str>,
    instance: &'a str,
    job_hash: u64,
    instance_hash: u64,
}

impl<'a> ResourceKeys<'a> {
    fn of(r: &'a crate::model::ResourceMetrics) -> Self {
        // The spec's rule: `service.namespace/service.name` when there is a namespace
        // (scraped targets have none; OTel SDKs may set one).
        let name = r.resource_attr("service.name").unwrap_or("");
        let job = match r.resource_attr("service.namespace") {
            Some(ns) if !ns.is_empty() => std::borrow::Cow::Owned(format!("{ns}/{name}")),
            _ => std::borrow::Cow::Borrowed(name),
        };
        let instance = r.resource_attr("service.instance.id").unwrap_or("");
        ResourceKeys {
            job_hash: crate::model::pair_hash("job", &job),
            instance_hash: crate::model::pair_hash("instance", instance),
            job,
            instance,
        }
    }

    /// The three labels a sample named `name` (whose pair hash is `name_hash`) has apart.
    fn extra<'s>(&'s self, name: &'s str, name_hash: u64) -> [ApartPair<'s>; 3] {
        [
            ("__name__", name, name_hash),
            ("instance", self.instance, self.instance_hash),
            ("job", &self.job, self.job_hash),
        ]
    }
}

/// What one append call counted, added to the shared `StoreStats` once at its end.
#[derive(Default)]
pub(super) struct AppendCounts {
    pub(super) appended: u64,
    pub(super) out_of_order: u64,
    pub(super) duplicates: u64,
    pub(super) series_refused: u64,
    pub(super) out_of_bounds: u64,
}

impl AppendCounts {
    pub(super) fn publish(&self, stats: &StoreStats) {
        for (n, to) in [
            (self.appended, &stats.appended),
            (self.out_of_order, &stats.out_of_order),
            (self.duplicates, &stats.duplicates),
            (self.series_refused, &stats.series_refused),
            (self.out_of_bounds, &stats.out_of_bounds),
        ] {
            if n > 0 {
                to.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

/// A pipeline sample's full label set without building it: its labels merged, in name order,
/// with `__name__`, `instance` and `job` (which sort in that order; empty ones are absent, and
/// they win over a sample label of the same name, as `Labels::from_vec` would have it).
#[derive(Clone)]
pub(super) struct MergedPairs<'a> {
    labels: crate::model::LabelsIter<'a>,
    extra: [(&'a str, &'a str, u64); 3],
    next_extra: usize,
}

/// One label kept apart: name, value and `pair_hash` (worked out once per resource, or per
/// run of samples with one name, not once per sample).
pub(super) type ApartPair<'a> = (&'a str, &'a str, u64);

impl<'a> MergedPairs<'a> {
    /// `labels` merged with `extra`: `__name__`, `instance` and `job` (in that order; those
    /// with an empty value are absent).
    pub(super) fn new(labels: &'a Labels, extra: [ApartPair<'a>; 3]) -> Self {
        let mut kept = [("", "", 0); 3];
        let mut n = 0;
        for e in extra {
            if !e.1.is_empty() {
                kept[n] = e;
                n += 1;
            }
        }
        let extra = kept;
        // Unused places stay at the end, marked by an empty name.
        MergedPairs {
            labels: labels.iter(),
            extra,
            next_extra: 0,
        }
    }

    /// Each pair's `pair_hash`, in the order `next` gives the pairs.
    pub(super) fn for_each_hash(mut self, mut f: impl FnMut(u64)) {
        while let Some(p) = self.next_merged() {
            f(match p {
                Merged::Label(l) => l.pair_hash(),
                Merged::Extra(_, _, h) => h,
            });
        }
    }

    /// The next pair in name order: a label, or one of the three kept apart, which wins over
    /// a label of the same name.
    fn next_merged(&mut self) -> Option<Merged<'a>> {
        let label = self.labels.clone().next();
        match (label, self.peek_extra()) {
            (Some(l), Some((k, _, _))) if *l.name < *k => {
                self.labels.next();
                Some(Merged::Label(l))
            }
            (label, Some((k, v, h))) => {
                if label.is_some_and(|l| *l.name == *k) {
                    self.labels.next();
                }
                self.next_extra += 1;
                Some(Merged::Extra(k, v, h))
            }
            (Some(l), None) => {
                self.labels.next();
                Some(Merged::Label(l))
            }
            (None, None) => None,
        }
    }

    fn peek_extra(&self) -> Option<ApartPair<'a>> {
        self.extra
            .get(self.next_extra)
            .copied()
            .filter(|(k, _, _)| !k.is_empty())
    }
}

/// One pair of `MergedPairs`: a shared label (which keeps its hash) or two strings.
enum Merged<'a> {
    Label(&'a Label),
    Extra(&'a str, &'a str, u64),
}

impl<'a> Iterator for MergedPairs<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        self.next_merged().map(|p| match p {
            Merged::Label(l) => (&*l.name, &*l.value),
            Merged::Extra(k, v, _) => (k, v),
        })
    }
}

impl Store {
    /// Appends a pipeline batch: `job`/`instance` come back from the resource, the sample
    /// name becomes `__name__`, as a Prometheus server scraping the same target would store it.
    /// A known series is found from the sample's own labels; only a new one gets a label set.
    ///
    /// - A scraped target sends the same series in the same order every time, so the series
    ///   each position of its last batch went to (`positions`) is tried first: checked by
    ///   label-set identity, it spares hashing the labels and probing the index. Any other
    ///   sample is hashed.
    /// - The batch is then appended shard by shard under one lock each: a lock per sample
    ///   (and a shared counter bumped per sample) kept every sample's cache misses from
    ///   overlapping with the next one's. Within a shard, samples keep their order; new
    ///   series are numbered in the batch's order.
    pub fn append_metrics(&self, m: &Metrics) -> usize {
        let now = crate::clock::now_ms();
        let window = self.window_ms.load(Ordering::Relaxed);
        let oldest = if window > 0 {
            now.saturating_sub(window)
        } else {
            i64::MIN
        };
        let newest = now.saturating_add(FUTURE_LIMIT_MS);
        let mut counts = AppendCounts::default();
        // `job` and `instance` per resource, with their pair hashes, worked out once.
        let resources: Vec<ResourceKeys> = m.resources.iter().map(ResourceKeys::of).collect();
        let mut last: Vec<Vec<SeriesRef>> =
            resources.iter().map(|k| self.positions.take(k)).collect();
        let mut pending: Vec<Incoming> = Vec::with_capacity(m.point_count());
        let mut name_hash: Option<(&Arc<str>, u64)> = None;
        for (ri, (r, keys)) in m.resources.iter().zip(&resources).enumerate() {
            let mut position = 0u32;
            for f in &r.families {
                self.metadata.note(f, now);
                for s in &f.samples {
                    let at = position;
                    position += 1;
                    if s.timestamp_ms < oldest || s.timestamp_ms > newest {
                        counts.out_of_bounds += 1;
                        continue;
                    }
                    // Samples of one family mostly share their name's allocation.
                    let nh = match name_hash {
                        Some((n, h)) if Arc::ptr_eq(n, &s.name) => h,
                        _ => {
                            let h = crate::model::pair_hash("__name__", &s.name);
                            name_hash = Some((&s.name, h));
                            h
                        }
                    };
                    let was = last[ri]
                        .get(at as usize)
                        .copied()
                        .unwrap_or(SeriesRef::NONE);
                    pending.push(Incoming {
                        sample: s,
                        keys,
                        name_hash: nh,
                        hash: 0,
                        was,
                        resource: ri as u32,
                        position: at,
                    });
                }
            }
        }
        // Where each went last time is checked under a read lock per shard; the rest, and
        // those whose series is no longer there, are hashed.
        let order = group_by_shard(&pending, |p| (!p.was.is_none()).then(|| p.was.shard()));
        for (sh, group) in order.iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let shard = self.shards[sh].read().unwrap_or_else(|e| e.into_inner());
            for &i in group {
                let p = &mut pending[i as usize];
                if !shard.holds(p.was.id(), &p.sent()) {
                    p.was = SeriesRef::NONE;
                }
            }
        }
        for p in pending.iter_mut().filter(|p| p.was.is_none()) {
            p.hash = hash_pairs(p.pairs());
        }
        for (ri, r) in m.resources.iter().enumerate() {
            last[ri].clear();
            last[ri].resize(r.point_count(), SeriesRef::NONE);
        }
        let order = group_by_shard(&pending, |p| {
            Some(if p.was.is_none() {
                (p.hash as usize) % SHARDS
            } else {
                p.was.shard()
            })
        });
        let first_created = self
            .next_created
            .fetch_add(pending.len() as u64, Ordering::Relaxed);
        let mut stored = 0;
        for (sh, group) in order.iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let mut shard = self.shards[sh].write().unwrap_or_else(|e| e.into_inner());
            for &i in group {
                let p = &pending[i as usize];
                let s = p.sample;
                let id = if !p.was.is_none() && shard.holds(p.was.id(), &p.sent()) {
                    Some(p.was.id())
                } else {
                    // Checked above but gone since (a trim in between): the same labels,
                    // so the same shard.
                    let hash = if p.was.is_none() {
                        p.hash
                    } else {
                        hash_pairs(p.pairs())
                    };
                    let build = || self.build_series_labels(s, p.keys);
                    let created = first_created + u64::from(i);
                    let pend = Pending {
                        hash,
                        pairs: p.pairs(),
                        sent: Some(p.sent()),
                    };
                    match self.find_or_add(&mut shard, pend, build, created, &mut counts) {
                        Some(id) => Some(id),
                        None => continue,
                    }
                };
                if let Some(id) = id {
                    last[p.resource as usize][p.position as usize] = SeriesRef::new(sh, id);
                    let at = (s.timestamp_ms, s.value);
                    if self.append_at(&mut shard, id, at, &mut counts).is_ok() {
                        stored += 1;
                    }
                }
            }
        }
        let max_held = 2 * self.series_count() + 65_536;
        for (keys, refs) in resources.iter().zip(last) {
            self.positions.put(keys, refs, now, max_held);
        }
        counts.publish(&self.stats);
        stored
    }

    /// A new pipeline series' labels: the sample's own set, and its name, instance and job
    /// kept apart from it.
    fn build_series_labels(&self, s: &Sample, keys: &ResourceKeys) -> (Labels, [Option<Label>; 3]) {
        let i = &self.interner;
        let apart = [
            Some(i.label("__name__", &s.name)),
            (!keys.instance.is_empty()).then(|| i.label("instance", keys.instance)),
            (!keys.job.is_empty()).then(|| i.label("job", &keys.job)),
        ];
        let shadowed = ["__name__", "instance", "job"]
            .iter()
            .any(|n| s.labels.get(n).is_some());
        if shadowed {
            // Not from our receivers, which keep these names out of sample labels; the merged
            // set is stored whole, as `MergedPairs` sees it.
            let mut v = s.labels.to_vec();
            v.extend(apart.into_iter().flatten());
            (Labels::from_vec(v), [None, None, None])
        } else {
            (s.labels.clone(), apart)
        }
    }
}
