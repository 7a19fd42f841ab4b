//! Labels: shared (name, value) pairs, the label sets made of them (one slice, a slice with
//! one label spliced in, or a set joined with labels kept apart), and the interner that
//! shares pairs and sets between series.

mod interner;

pub use interner::Interner;

use std::sync::Arc;

/// One label: a pointer to a shared (name, value) pair.
///
/// Most pairs repeat across series (`reporter="destination"`, a namespace, a workload), so
/// with pairs interned a series pays 8 bytes per label instead of two fat `Arc<str>`s (32).
/// Fields read through `Deref`: `label.name`, `label.value`.
#[derive(Clone)]
pub struct Label(Arc<LabelPair>);

/// A (name, value) pair, with what the exporters need per pair worked out once: a pair is
/// shared by every series that carries it, so per-sample work becomes per-pair work.
pub struct LabelPair {
    pub name: Arc<str>,
    pub value: Arc<str>,
    role: LabelRole,
    /// The value as a bucket bound or quantile, parsed once (`le` and `quantile` only).
    bound: Option<f64>,
    /// The pair as an OTLP `KeyValue`, length-prefixed, built on first use.
    otlp: std::sync::OnceLock<Box<[u8]>>,
    /// `pair_hash` of the pair: the store hashes every sample's label set on ingest, and
    /// combining these is a load per label instead of hashing its bytes again.
    hash: u64,
}

/// A hash of one (name, value) pair by content: the same whether the pair is a shared
/// `LabelPair` (which keeps it) or two strings.
///
/// Seeded once per process: label values come from whoever runs a scraped target, and the
/// store's series table and a query's label-set tables are keyed by these hashes, so nobody
/// outside may compute them ahead to make a table's keys collide.
pub fn pair_hash(name: &str, value: &str) -> u64 {
    use xxhash_rust::xxh3::xxh3_64_with_seed;
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x6d6d_u64)
    });
    xxh3_64_with_seed(value.as_bytes(), xxh3_64_with_seed(name.as_bytes(), seed))
}

/// Names that mean something to the model beyond being an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelRole {
    Plain,
    /// `le`: a histogram bucket's upper bound.
    Le,
    /// `quantile`: a summary's quantile.
    Quantile,
    /// `otel_scope_name` / `otel_scope_version`: the OTel instrumentation scope.
    ScopeName,
    ScopeVersion,
}

impl LabelPair {
    fn new(name: Arc<str>, value: Arc<str>) -> LabelPair {
        let role = match &*name {
            "le" => LabelRole::Le,
            "quantile" => LabelRole::Quantile,
            "otel_scope_name" => LabelRole::ScopeName,
            "otel_scope_version" => LabelRole::ScopeVersion,
            _ => LabelRole::Plain,
        };
        let bound = match role {
            LabelRole::Le | LabelRole::Quantile => parse_bound(&value),
            _ => None,
        };
        LabelPair {
            hash: pair_hash(&name, &value),
            name,
            value,
            role,
            bound,
            otlp: std::sync::OnceLock::new(),
        }
    }

    /// `pair_hash(name, value)`, computed once.
    pub fn pair_hash(&self) -> u64 {
        self.hash
    }

    pub fn role(&self) -> LabelRole {
        self.role
    }

    /// The value as a number, for `le` and `quantile` (`+Inf` included); `None` for other
    /// names or a value that is not a number.
    pub fn bound(&self) -> Option<f64> {
        self.bound
    }

    /// The pair as the bytes of an OTLP `KeyValue` with a string value, preceded by their
    /// length: a field holding it is its tag followed by these bytes. `encode` (the OTLP
    /// encoder's, the one user) makes them on first use; the model knows no wire format.
    pub fn otlp_key_value(&self, encode: impl FnOnce(&str, &str) -> Box<[u8]>) -> &[u8] {
        self.otlp.get_or_init(|| encode(&self.name, &self.value))
    }
}

/// A bucket bound or quantile as Prometheus writes them (`+Inf` for the last bucket).
fn parse_bound(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

// Identity is the (name, value) pair; the rest is derived from it.
impl PartialEq for LabelPair {
    fn eq(&self, other: &LabelPair) -> bool {
        self.name == other.name && self.value == other.value
    }
}

impl Eq for LabelPair {}

impl std::hash::Hash for LabelPair {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.value.hash(state);
    }
}

impl PartialOrd for LabelPair {
    fn partial_cmp(&self, other: &LabelPair) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for LabelPair {
    fn cmp(&self, other: &LabelPair) -> std::cmp::Ordering {
        (&self.name, &self.value).cmp(&(&other.name, &other.value))
    }
}

impl std::fmt::Debug for LabelPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={:?}", self.name, &*self.value)
    }
}

impl Label {
    /// A label of its own (not shared); `Interner::label` shares pairs between series.
    pub fn new(name: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Label {
        Label(Arc::new(LabelPair::new(name.into(), value.into())))
    }
}

impl std::ops::Deref for Label {
    type Target = LabelPair;
    fn deref(&self) -> &LabelPair {
        &self.0
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Label) -> bool {
        // Interned pairs compare by address; equal content in two allocations is still equal.
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for Label {}

impl std::hash::Hash for Label {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl PartialOrd for Label {
    fn partial_cmp(&self, other: &Label) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Label {
    fn cmp(&self, other: &Label) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl std::fmt::Debug for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={:?}", self.name, &*self.value)
    }
}

/// A label set, sorted by name, names unique. Cheap to clone.
///
/// Mostly one shared slice. The set of a histogram bucket or a summary quantile is the set
/// its siblings share plus its own `le` or `quantile`, spliced in where it sorts
/// (`Interner::label_set`): the buckets of a histogram differ in that one label only, and a
/// copy of the whole set per bucket was the largest part of a scrape cache's memory.
#[derive(Clone)]
pub struct Labels(Repr);

#[derive(Clone)]
enum Repr {
    Flat(Arc<[Label]>),
    Built(Arc<Built>),
}

/// A set made of shared parts (one variant of `Repr` for both: a third would not fit in two
/// words).
enum Built {
    Spliced(Spliced),
    Joined(Joined),
}

// Two words, as when every set was one slice: series entries and samples hold one each.
const _: () = assert!(std::mem::size_of::<Labels>() == 16);

/// `base` with `extra` inserted before `base[at]`.
struct Spliced {
    base: Arc<[Label]>,
    extra: Label,
    at: usize,
}

/// A set's labels in the pieces it is kept in (see `Labels::parts`).
struct Parts<'a> {
    head: &'a [Label],
    extra: Option<&'a Label>,
    tail: &'a [Label],
    /// Present labels only.
    joined: &'a [Option<Label>],
}

/// `base` and up to three labels kept apart from it, merged in name order as the set is read.
/// A stored series keeps its scrape's set and its name, instance and job apart; an answer
/// built from them this way costs one small allocation and four reference counts, not a copy
/// of every label (which a query paid for every series it selected, and again to drop
/// `__name__`).
struct Joined {
    /// Never a `Joined` itself.
    base: Labels,
    /// In name order, the present ones first; names `base` lacks, values non-empty.
    extra: [Option<Label>; 3],
}

impl Default for Labels {
    fn default() -> Self {
        Labels::empty()
    }
}

impl Labels {
    pub fn empty() -> Self {
        Labels(Repr::Flat(Arc::from(Vec::new())))
    }

    /// Builds a label set; sorts and keeps the last value of a repeated name.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut v: Vec<Label> = pairs
            .into_iter()
            .map(|(n, v)| Label::new(n.as_ref(), v.as_ref()))
            .collect();
        Self::from_vec(std::mem::take(&mut v))
    }

    /// Sorts, drops empty values (Prometheus treats them as absent), dedups by name.
    pub fn from_vec(v: Vec<Label>) -> Self {
        Labels(Repr::Flat(Arc::from(sorted_unique(v))))
    }

    /// A label set from labels already in name order, names unique and values non-empty
    /// (checked in debug builds): what `from_vec` gives without its sort. An iterator of
    /// known length (chained slices) is collected in a single allocation.
    pub fn from_sorted(labels: impl IntoIterator<Item = Label>) -> Self {
        let set: Arc<[Label]> = labels.into_iter().collect();
        debug_assert!(set.windows(2).all(|w| w[0].name < w[1].name));
        debug_assert!(set.iter().all(|l| !l.value.is_empty()));
        Labels(Repr::Flat(set))
    }

    /// The set `base` shares with its siblings, plus `extra` (a name `base` lacks).
    fn spliced(base: Arc<[Label]>, extra: Label) -> Self {
        let at = base.partition_point(|l| l.name < extra.name);
        debug_assert!(base.get(at).is_none_or(|l| l.name != extra.name));
        Labels(Repr::Built(Arc::new(Built::Spliced(Spliced {
            base,
            extra,
            at,
        }))))
    }

    /// `base` plus `extra` (in any order, `None`s skipped), which `base` lacks by name and
    /// which have non-empty values: the set they make together, without copying `base`.
    pub fn joined(base: Labels, mut extra: [Option<Label>; 3]) -> Labels {
        // Present ones first, in name order (three places: a sort by hand, no allocation).
        let out_of_order = |a: &Option<Label>, b: &Option<Label>| match (a, b) {
            (Some(a), Some(b)) => b.name < a.name,
            (None, Some(_)) => true,
            _ => false,
        };
        for (i, j) in [(0, 1), (1, 2), (0, 1)] {
            if out_of_order(&extra[i], &extra[j]) {
                extra.swap(i, j);
            }
        }
        if extra[0].is_none() {
            return base;
        }
        debug_assert!(extra
            .iter()
            .flatten()
            .all(|l| base.label(&l.name).is_none()));
        debug_assert!(extra.iter().flatten().all(|l| !l.value.is_empty()));
        if let Some(inner) = base.as_joined() {
            // One level only: a set joined twice is laid out flat.
            let mut all = inner.base.to_vec();
            all.extend(inner.extra.iter().chain(&extra).flatten().cloned());
            return Labels::from_vec(all);
        }
        Labels(Repr::Built(Arc::new(Built::Joined(Joined { base, extra }))))
    }

    /// The set as the labels before the spliced one, that one, and those after it (all in
    /// the first part for a set that is one slice), and the labels joined to them.
    fn parts(&self) -> Parts<'_> {
        match &self.0 {
            Repr::Flat(all) => Parts {
                head: all,
                extra: None,
                tail: &[],
                joined: &[],
            },
            Repr::Built(b) => match &**b {
                Built::Spliced(s) => Parts {
                    head: &s.base[..s.at],
                    extra: Some(&s.extra),
                    tail: &s.base[s.at..],
                    joined: &[],
                },
                Built::Joined(j) => {
                    let present = j.extra.iter().take_while(|l| l.is_some()).count();
                    Parts {
                        joined: &j.extra[..present],
                        ..j.base.parts()
                    }
                }
            },
        }
    }

    fn as_joined(&self) -> Option<&Joined> {
        match &self.0 {
            Repr::Built(b) => match &**b {
                Built::Joined(j) => Some(j),
                Built::Spliced(_) => None,
            },
            Repr::Flat(_) => None,
        }
    }

    pub fn iter(&self) -> LabelsIter<'_> {
        let Parts {
            head,
            extra,
            tail,
            joined,
        } = self.parts();
        LabelsIter {
            head: head.iter(),
            extra,
            tail: tail.iter(),
            joined,
        }
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Flat(all) => all.len(),
            Repr::Built(b) => match &**b {
                Built::Spliced(s) => s.base.len() + 1,
                Built::Joined(j) => j.base.len() + j.extra.iter().flatten().count(),
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.label(name).map(|l| &*l.value)
    }

    /// The label named `name`, shared pair and all.
    pub fn label(&self, name: &str) -> Option<&Label> {
        if let Some(j) = self.as_joined() {
            return match j.extra.iter().flatten().find(|l| &*l.name == name) {
                Some(l) => Some(l),
                None => j.base.label(name),
            };
        }
        let Parts {
            head, extra, tail, ..
        } = self.parts();
        let find = |part: &'_ [Label]| -> Option<usize> {
            part.binary_search_by(|l| (*l.name).cmp(name)).ok()
        };
        match extra {
            Some(e) if &*e.name == name => Some(e),
            Some(e) if name > &*e.name => find(tail).map(|i| &tail[i]),
            _ => find(head).map(|i| &head[i]),
        }
    }

    /// The `i`-th label in name order.
    pub fn nth(&self, i: usize) -> Option<&Label> {
        if self.as_joined().is_some() {
            return self.iter().nth(i);
        }
        let Parts {
            head, extra, tail, ..
        } = self.parts();
        match (i.checked_sub(head.len()), extra) {
            (None, _) => head.get(i),
            (Some(0), Some(e)) => Some(e),
            (Some(k), Some(_)) => tail.get(k - 1),
            (Some(_), None) => None,
        }
    }

    /// The labels spliced into `self` and `other` when both are the very same shared set
    /// plus one label at the same place: the two differ in those at most.
    pub fn spliced_apart<'a>(&'a self, other: &'a Labels) -> Option<(&'a Label, &'a Label)> {
        match (&self.0, &other.0) {
            (Repr::Built(a), Repr::Built(b)) => match (&**a, &**b) {
                (Built::Spliced(a), Built::Spliced(b))
                    if Arc::ptr_eq(&a.base, &b.base) && a.at == b.at =>
                {
                    Some((&a.extra, &b.extra))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The label spliced into `self` when `self` is the very set `other` plus that label
    /// (a histogram's bucket and its `_sum`, `_count`).
    pub fn spliced_onto<'a>(&'a self, other: &Labels) -> Option<&'a Label> {
        match (&self.0, &other.0) {
            (Repr::Built(a), Repr::Flat(b)) => match &**a {
                Built::Spliced(a) if Arc::ptr_eq(&a.base, b) => Some(&a.extra),
                _ => None,
            },
            _ => None,
        }
    }

    /// The very same set (not only equal labels).
    pub fn ptr_eq(&self, other: &Labels) -> bool {
        match (&self.0, &other.0) {
            (Repr::Flat(a), Repr::Flat(b)) => Arc::ptr_eq(a, b),
            (Repr::Built(a), Repr::Built(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    pub fn to_vec(&self) -> Vec<Label> {
        self.iter().cloned().collect()
    }

    /// A copy with `name` set to `value` (removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut v: Vec<Label> = self.iter().filter(|l| &*l.name != name).cloned().collect();
        if !value.is_empty() {
            v.push(Label::new(name, value));
        }
        Labels::from_vec(v)
    }

    /// A copy without `name`.
    pub fn without(&self, name: &str) -> Labels {
        self.without_any(&[name])
    }

    /// A copy without any of `names`, in one pass (the set itself when it has none).
    pub fn without_any(&self, names: &[&str]) -> Labels {
        // Dropping a name drops `__name__`, `__type__` and `__unit__`: one search for their
        // common prefix tells a set holding none of them, instead of a search for each.
        let prefix = common_prefix(names);
        let may_hold = |l: &Labels| prefix.is_empty() || l.any_name_starting(prefix);
        if !may_hold(self) {
            return self.clone();
        }
        let mut found = names.iter().filter_map(|n| self.label(n));
        let Some(first) = found.next() else {
            return self.clone();
        };
        if let Some(j) = self.as_joined() {
            if !may_hold(&j.base) || names.iter().all(|n| j.base.label(n).is_none()) {
                // Only joined labels go (a stored series' `__name__`): the base stays shared.
                let kept = j
                    .extra
                    .each_ref()
                    .map(|l| l.clone().filter(|l| !names.contains(&&*l.name)));
                return Labels::joined(j.base.clone(), kept);
            }
        }
        if let (None, Repr::Flat(all)) = (found.next(), &self.0) {
            // The usual case (only `__name__`): the two slices around it, one allocation.
            let at = all.partition_point(|l| l.name < first.name);
            let (before, after) = (&all[..at], &all[at + 1..]);
            return Labels::from_sorted(before.iter().chain(after).cloned());
        }
        Labels::from_sorted(
            self.iter()
                .filter(|l| !names.contains(&&*l.name))
                .cloned()
                .collect::<Vec<_>>(),
        )
    }
}

impl Labels {
    /// Whether some label's name starts with `prefix`: a binary search per sorted piece.
    fn any_name_starting(&self, prefix: &str) -> bool {
        let in_slice = |s: &[Label]| {
            let at = s.partition_point(|l| *l.name < *prefix);
            s.get(at).is_some_and(|l| l.name.starts_with(prefix))
        };
        let p = self.parts();
        let starts = |l: &Label| l.name.starts_with(prefix);
        in_slice(p.head)
            || p.extra.is_some_and(starts)
            || in_slice(p.tail)
            || p.joined.iter().flatten().any(starts)
    }
}

/// The longest prefix all of `names` share.
fn common_prefix<'a>(names: &[&'a str]) -> &'a str {
    let Some((first, rest)) = names.split_first() else {
        return "";
    };
    let len = rest.iter().fold(first.len(), |len, n| {
        first.as_bytes()[..len]
            .iter()
            .zip(n.as_bytes())
            .take_while(|(a, b)| a == b)
            .count()
    });
    // A prefix ending inside a multi-byte character would not be a `str`.
    let mut len = len;
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    &first[..len]
}

/// Sorted by name, empty values dropped (Prometheus treats them as absent), the last value
/// of a repeated name kept.
fn sorted_unique(mut v: Vec<Label>) -> Vec<Label> {
    v.retain(|l| !l.value.is_empty());
    v.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<Label> = Vec::with_capacity(v.len());
    for l in v {
        match out.last_mut() {
            Some(last) if last.name == l.name => *last = l,
            _ => out.push(l),
        }
    }
    out
}

/// The labels of a set in name order.
#[derive(Clone)]
pub struct LabelsIter<'a> {
    head: std::slice::Iter<'a, Label>,
    extra: Option<&'a Label>,
    tail: std::slice::Iter<'a, Label>,
    /// Joined labels not yet given (all present), merged in by name.
    joined: &'a [Option<Label>],
}

impl<'a> LabelsIter<'a> {
    #[inline]
    fn next_in_base(&mut self) -> Option<&'a Label> {
        if let Some(l) = self.head.next() {
            return Some(l);
        }
        if let Some(l) = self.extra.take() {
            return Some(l);
        }
        self.tail.next()
    }

    fn peek_base(&self) -> Option<&'a Label> {
        self.head
            .as_slice()
            .first()
            .or(self.extra)
            .or_else(|| self.tail.as_slice().first())
    }
}

impl<'a> Iterator for LabelsIter<'a> {
    type Item = &'a Label;

    #[inline]
    fn next(&mut self) -> Option<&'a Label> {
        if let Some((Some(j), rest)) = self.joined.split_first() {
            if self.peek_base().is_none_or(|b| j.name < b.name) {
                self.joined = rest;
                return Some(j);
            }
        }
        self.next_in_base()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.head.len()
            + usize::from(self.extra.is_some())
            + self.tail.len()
            + self.joined.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for LabelsIter<'_> {}

impl std::iter::FusedIterator for LabelsIter<'_> {}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = LabelsIter<'a>;
    fn into_iter(self) -> LabelsIter<'a> {
        self.iter()
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Labels) -> bool {
        if let (Repr::Flat(a), Repr::Flat(b)) = (&self.0, &other.0) {
            return a == b;
        }
        if let Some((a, b)) = self.spliced_apart(other) {
            return a == b;
        }
        if let (Some(a), Some(b)) = (self.as_joined(), other.as_joined()) {
            if a.base.ptr_eq(&b.base) {
                return a.extra == b.extra;
            }
        }
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Labels {}

impl std::hash::Hash for Labels {
    /// The sum of the pairs' own hashes: no label's bytes are hashed again, and (names being
    /// unique) the order they are read in does not matter, so a joined set need not be merged.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        fn sum(labels: &Labels) -> u64 {
            match labels.as_joined() {
                Some(j) => j
                    .extra
                    .iter()
                    .flatten()
                    .fold(sum(&j.base), |h, l| h.wrapping_add(l.pair_hash())),
                None => labels
                    .iter()
                    .fold(0u64, |h, l| h.wrapping_add(l.pair_hash())),
            }
        }
        state.write_usize(self.len());
        state.write_u64(sum(self));
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Labels) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Labels) -> std::cmp::Ordering {
        match (&self.0, &other.0) {
            (Repr::Flat(a), Repr::Flat(b)) => a.cmp(b),
            _ => self.iter().cmp(other.iter()),
        }
    }
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, &*l.value)?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bucket's set from the interner is its siblings' shared set plus `le`, and reads
    /// exactly as the same labels in one slice do: order, lookups, equality, hash, order
    /// among sets and copies.
    #[test]
    fn spliced_sets_read_as_flat_ones() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let interner = Interner::default();
        let names = ["app", "code", "method", "path", "pod", "zone"];
        let set = |le: Option<&str>| {
            let mut v: Vec<Label> = names
                .iter()
                .map(|n| interner.label(n, &format!("{n}-value")))
                .collect();
            if let Some(le) = le {
                v.push(interner.label("le", le));
            }
            v
        };
        let sum = interner.label_set(set(None));
        let count = interner.label_set(set(None));
        assert!(sum.ptr_eq(&count), "equal sets share one allocation");
        let b1 = interner.label_set(set(Some("0.5")));
        let b2 = interner.label_set(set(Some("+Inf")));
        let extra = b1.parts().extra;
        assert_eq!(extra.map(|l| &*l.name), Some("le"));
        assert!(b1.spliced_apart(&b2).is_some());
        // A bucket is its `_sum`'s very set plus `le`; a set equal to that one but built
        // apart is not told apart this way.
        assert_eq!(b1.spliced_onto(&sum).map(|l| &*l.value), Some("0.5"));
        assert!(sum.spliced_onto(&b1).is_none() && b1.spliced_onto(&b2).is_none());
        assert!(b1.spliced_onto(&Labels::from_vec(set(None))).is_none());
        let flat = Labels::from_vec(set(Some("0.5")));
        let hash =
            |l: &Labels| BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(l);
        assert_eq!(b1, flat);
        assert_eq!(flat, b1);
        assert_eq!(hash(&b1), hash(&flat));
        assert_eq!(b1.cmp(&flat), std::cmp::Ordering::Equal);
        assert_ne!(b1, b2);
        assert_eq!(b1.cmp(&b2), flat.cmp(&Labels::from_vec(set(Some("+Inf")))));
        assert_eq!(b1.len(), 7);
        let order: Vec<&str> = b1.iter().map(|l| &*l.name).collect();
        assert_eq!(
            order,
            ["app", "code", "le", "method", "path", "pod", "zone"]
        );
        assert_eq!(b1.iter().len(), 7);
        for (i, l) in flat.iter().enumerate() {
            assert_eq!(b1.nth(i), Some(l));
            assert_eq!(b1.get(&l.name), Some(&*l.value));
        }
        assert_eq!(b1.nth(7), None);
        assert_eq!(b1.get("absent"), None);
        assert_eq!(b1.get("a"), None);
        assert_eq!(b1.get("zz"), None);
        assert_eq!(b1.without("le"), sum);
        assert_eq!(
            b1.without_any(&["le", "app"]),
            Labels::from_vec(set(None)).without("app")
        );
        assert_eq!(b1.with("le", "1"), Labels::from_vec(set(Some("1"))));
        assert_eq!(format!("{b1}"), format!("{flat}"));
        // Short sets stay one slice: splicing would cost them more.
        let short = interner.label_set(vec![interner.label("le", "1")]);
        assert_eq!(short.parts().extra, None);
    }

    /// A stored series' answer set (its scrape's set joined with its name, instance and job)
    /// reads exactly as the same labels in one slice, over a flat and over a spliced base.
    #[test]
    fn joined_sets_read_as_flat_ones() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash =
            |l: &Labels| BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(l);
        let interner = Interner::default();
        let names = ["Zone", "app", "code", "jobs", "method", "path", "pod"];
        let own: Vec<Label> = names
            .iter()
            .map(|n| interner.label(n, &format!("{n}-value")))
            .collect();
        let flat_base = interner.label_set(own.clone());
        let mut with_le = own.clone();
        with_le.push(interner.label("le", "0.5"));
        let spliced_base = interner.label_set(with_le.clone());
        let apart = [
            Some(interner.label("__name__", "req_total")),
            Some(interner.label("instance", "10.0.0.1:9090")),
            Some(interner.label("job", "mesh")),
        ];
        for (base, labels) in [(flat_base, own), (spliced_base, with_le)] {
            // Any subset of the three, in any order given.
            for mask in 0..8u8 {
                let mut extra: [Option<Label>; 3] = Default::default();
                let mut all = labels.clone();
                for (i, a) in apart.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        extra[2 - i] = a.clone();
                        all.extend(a.clone());
                    }
                }
                let joined = Labels::joined(base.clone(), extra);
                let flat = Labels::from_vec(all);
                assert_eq!(joined, flat, "mask {mask}");
                assert_eq!(flat, joined);
                assert_eq!(hash(&joined), hash(&flat));
                assert_eq!(joined.cmp(&flat), std::cmp::Ordering::Equal);
                assert_eq!(joined.len(), flat.len());
                assert_eq!(joined.iter().len(), flat.len());
                assert!(joined.iter().eq(flat.iter()));
                for (i, l) in flat.iter().enumerate() {
                    assert_eq!(joined.nth(i), Some(l));
                    assert_eq!(joined.get(&l.name), Some(&*l.value));
                }
                assert_eq!(joined.get("absent"), None);
                assert_eq!(format!("{joined}"), format!("{flat}"));
                let names = ["__name__", "__type__", "__unit__"];
                assert_eq!(joined.without_any(&names), flat.without_any(&names));
                assert_eq!(joined.without("job"), flat.without("job"));
                assert_eq!(joined.without("app"), flat.without("app"));
                assert_eq!(joined.with("code", "500"), flat.with("code", "500"));
                let again = Labels::joined(joined.clone(), Default::default());
                assert!(again.ptr_eq(&joined));
                let zz = interner.label("zz", "1");
                let mut more = flat.to_vec();
                more.push(zz.clone());
                let twice = Labels::joined(joined.clone(), [None, Some(zz), None]);
                assert_eq!(twice, Labels::from_vec(more));
            }
        }
        // Two answers of one series are equal by their shared parts; others are not.
        let base = interner.label_set(vec![interner.label("a", "1")]);
        let one = Labels::joined(base.clone(), [apart[0].clone(), None, None]);
        let two = Labels::joined(base.clone(), [apart[0].clone(), None, None]);
        let other = Labels::joined(base, [Some(interner.label("__name__", "x")), None, None]);
        assert_eq!(one, two);
        assert_ne!(one, other);
        assert!(one < other || other < one);
    }

    /// Dropping the metric name finds `__type__`/`__unit__` wherever they sit, next to names
    /// that share part of their prefix, in flat, spliced and joined sets.
    #[test]
    fn dropping_names_finds_every_reserved_label() {
        let interner = Interner::default();
        let names = ["__name__", "__type__", "__unit__"];
        let cases: &[&[(&str, &str)]] = &[
            &[
                ("_a", "1"),
                ("__type__", "counter"),
                ("a", "2"),
                ("b", "3"),
                ("c", "4"),
                ("d", "5"),
            ],
            &[
                ("_", "1"),
                ("__unit__", "s"),
                ("_x", "2"),
                ("a", "3"),
                ("b", "4"),
                ("le", "1"),
            ],
            &[
                ("A", "1"),
                ("_", "2"),
                ("_`", "3"),
                ("a", "4"),
                ("b", "5"),
                ("c", "6"),
            ],
        ];
        for pairs in cases {
            let own: Vec<Label> = pairs.iter().map(|(n, v)| interner.label(n, v)).collect();
            let base = interner.label_set(own.clone());
            let name = interner.label("__name__", "m");
            let joined = Labels::joined(base.clone(), [Some(name.clone()), None, None]);
            let mut all = own.clone();
            all.push(name);
            let flat = Labels::from_vec(all);
            let want: Vec<Label> = flat
                .iter()
                .filter(|l| !names.contains(&&*l.name))
                .cloned()
                .collect();
            let want = Labels::from_vec(want);
            assert_eq!(joined.without_any(&names), want, "{flat}");
            assert_eq!(flat.without_any(&names), want, "{flat}");
            assert_eq!(base.without_any(&names), want, "{flat}");
        }
        assert_eq!(common_prefix(&names), "__");
        assert_eq!(common_prefix(&["é1", "é2"]), "é");
        assert_eq!(common_prefix(&["éa", "èa"]), "");
        assert_eq!(common_prefix(&[]), "");
    }

    #[test]
    fn labels_sorted_and_deduped() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
        assert_eq!(l.to_string(), "{a=\"1\", b=\"3\"}");
    }
}
