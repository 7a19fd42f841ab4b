//! The interner: one allocation per distinct label string, pair and set, shared by the
//! series that carry them.

use std::sync::Arc;

use super::{pair_hash, sorted_unique, Label, LabelPair, LabelRole, Labels, Repr};

/// Shares one allocation per distinct label string and per distinct label pair: most label
/// names and values repeat across series (`reporter="destination"`, namespaces, workloads), so
/// a series costs a pointer per label instead of two strings. Used on the slow path only (new
/// series).
#[derive(Default)]
pub struct Interner {
    state: std::sync::Mutex<InternerState>,
}

#[derive(Default)]
struct InternerState {
    strings: std::collections::HashSet<Arc<str>>,
    /// Pairs by the hash of (name, value); `hashbrown`'s table finds them from borrowed
    /// strings without building a key.
    pairs: hashbrown::HashTable<Label>,
    /// Label sets by `set_hash`, shared by the series that carry them.
    sets: hashbrown::HashTable<Arc<[Label]>>,
    /// Sizes after the last sweep; the next sweep happens when a table doubles.
    strings_swept_at: usize,
    pairs_swept_at: usize,
    sets_swept_at: usize,
}

/// A hash of a label set from the hashes its pairs keep.
fn set_hash(labels: &[Label]) -> u64 {
    labels.iter().fold(labels.len() as u64, |h, l| {
        (h.rotate_left(5) ^ l.pair_hash()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    })
}

/// Sets with fewer labels than this are not spliced: their own copy costs no more.
const SPLICE_FROM: usize = 6;

impl InternerState {
    fn string(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        // Forget strings nobody else holds any more (series that went away).
        if self.strings.len() >= 2 * self.strings_swept_at.max(1024) {
            self.strings.retain(|a| Arc::strong_count(a) > 1);
            self.strings_swept_at = self.strings.len();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }
}

impl Interner {
    fn lock(&self) -> Option<std::sync::MutexGuard<'_, InternerState>> {
        self.state.lock().ok()
    }

    pub fn intern(&self, s: &str) -> Arc<str> {
        match self.lock() {
            Some(mut st) => st.string(s),
            None => Arc::from(s),
        }
    }

    /// The shared label `name=value`.
    pub fn label(&self, name: &str, value: &str) -> Label {
        let Some(mut st) = self.lock() else {
            return Label::new(name, value);
        };
        let hash = pair_hash(name, value);
        if let Some(l) = st
            .pairs
            .find(hash, |l| &*l.name == name && &*l.value == value)
        {
            return l.clone();
        }
        // Forget pairs nobody else holds any more (their strings follow at a later sweep).
        if st.pairs.len() >= 2 * st.pairs_swept_at.max(1024) {
            st.pairs.retain(|l| Arc::strong_count(&l.0) > 1);
            st.pairs_swept_at = st.pairs.len();
        }
        let label = Label(Arc::new(LabelPair::new(st.string(name), st.string(value))));
        st.pairs
            .insert_unique(hash, label.clone(), |l| l.pair_hash());
        label
    }

    /// The label set of `labels` (as `Labels::from_vec` takes them), sharing memory with the
    /// sets built before: an equal set is the same allocation (`foo_sum`, `foo_count` and
    /// `foo_total` of one target usually carry one set), and a set with a bucket bound or a
    /// quantile is the shared set without it plus that label.
    pub fn label_set(&self, labels: Vec<Label>) -> Labels {
        let mut all = sorted_unique(labels);
        let bound = all
            .iter()
            .position(|l| matches!(l.role(), LabelRole::Le | LabelRole::Quantile));
        match bound {
            Some(at) if all.len() >= SPLICE_FROM => {
                let extra = all.remove(at);
                Labels::spliced(self.shared_set(all), extra)
            }
            _ => Labels(Repr::Flat(self.shared_set(all))),
        }
    }

    /// The shared set of `labels`, sorted and unique.
    fn shared_set(&self, labels: Vec<Label>) -> Arc<[Label]> {
        let Some(mut st) = self.lock() else {
            return Arc::from(labels);
        };
        let hash = set_hash(&labels);
        if let Some(set) = st.sets.find(hash, |s| **s == *labels) {
            return set.clone();
        }
        // Forget sets no series holds any more.
        if st.sets.len() >= 2 * st.sets_swept_at.max(1024) {
            st.sets.retain(|s| Arc::strong_count(s) > 1);
            st.sets_swept_at = st.sets.len();
        }
        let set: Arc<[Label]> = Arc::from(labels);
        st.sets.insert_unique(hash, set.clone(), |s| set_hash(s));
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_labels_share_one_pair() {
        let i = Interner::default();
        let a = i.label("reporter", "destination");
        let b = i.label("reporter", "destination");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, Label::new("reporter", "destination"));
        assert_ne!(a, i.label("reporter", "source"));
        assert_eq!(std::mem::size_of::<Label>(), 8);
        // Pairs nobody holds any more are forgotten once the table has doubled.
        for n in 0..5000 {
            i.label("n", &n.to_string());
        }
        let st = i.lock().expect("lock");
        assert!(st.pairs.len() < 5000, "{} pairs kept", st.pairs.len());
        let kept = st.pairs.find(pair_hash("reporter", "destination"), |l| {
            &*l.value == "destination"
        });
        assert!(kept.is_some(), "a pair still held stays");
    }
}
