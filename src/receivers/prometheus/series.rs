//! A target's series between scrapes: what each raw series became after labeling
//! (`RawSeries`) and the final series of the last scrape, for staleness (`Tracks`).
//!
//! A target exposes the same series in the same order scrape after scrape, so both are kept
//! in that order and a sample's state is usually the slot after the last one: read in
//! sequence instead of through two hash probes per sample, which missed the CPU caches and
//! were the scrape loop's largest cost. The hash tables hold slot numbers and are consulted
//! only where the order changes.

use std::sync::Arc;

use hashbrown::HashTable;

use crate::model::{Label, Labels, MetricKind};

/// A series as labeling and relabeling left it.
#[derive(Debug)]
pub(super) struct SeriesEntry {
    pub name: Arc<str>,
    pub labels: Labels,
    /// `job` and `instance` as shared labels: one pointer each instead of a fat `Arc<str>`.
    pub job: Label,
    pub instance: Label,
    /// Identity for staleness tracking.
    pub hash: u64,
}

/// One distinct raw series (`name{labels}` as exposed).
pub(super) struct RawSlot {
    /// A 128-bit hash of the raw bytes: keeping the bytes themselves would cost as much
    /// memory as the exposition (a collision needs ~2^64 series). Two `u64`s: a `u128`
    /// would be 16-byte aligned, and every slot 8 bytes larger.
    key: [u64; 2],
    /// `None` when relabeling dropped it.
    pub entry: Option<Arc<SeriesEntry>>,
    /// Where its final series was in `Tracks` when last seen (checked before use).
    pub track: u32,
    /// Number of the scrape that last reached it.
    visited: u32,
    /// Lengths of the raw bytes and of the name within them: the parser's guess for the
    /// line that comes next.
    series_len: u32,
    name_len: u32,
}

/// What each raw series became, in the order of the last complete scrape.
#[derive(Default)]
pub(super) struct RawSeries {
    slots: Vec<RawSlot>,
    /// Slot numbers by `key[0]`.
    index: HashTable<u32>,
    /// Where the next sample's slot is expected.
    cursor: usize,
    /// Slots reached in this scrape, in order, each once.
    order: Vec<u32>,
    scrape: u32,
    /// Every sample of this scrape so far was found at `cursor`.
    in_order: bool,
}

impl RawSeries {
    pub fn begin(&mut self) {
        self.scrape = self.scrape.wrapping_add(1);
        self.cursor = 0;
        self.order.clear();
        self.in_order = true;
    }

    /// The slot of a raw series seen before.
    pub fn find(&mut self, key: [u64; 2]) -> Option<usize> {
        let i = match self.slots.get(self.cursor) {
            Some(s) if s.key == key => self.cursor,
            _ => {
                self.in_order = false;
                let slots = &self.slots;
                *self.index.find(key[0], |&i| slots[i as usize].key == key)? as usize
            }
        };
        self.reach(i);
        Some(i)
    }

    /// The series (lengths of its bytes and of its name) the next sample probably is: the
    /// one after the last found.
    pub fn expected(&self) -> Option<(usize, usize)> {
        let s = self.slots.get(self.cursor)?;
        Some((s.series_len as usize, s.name_len as usize))
    }

    /// Adds a raw series not seen before: its hash, the lengths of its bytes and of its name,
    /// what it became; returns its slot.
    pub fn insert(
        &mut self,
        key: [u64; 2],
        (series_len, name_len): (usize, usize),
        entry: Option<Arc<SeriesEntry>>,
    ) -> usize {
        let i = self.slots.len();
        self.slots.push(RawSlot {
            key,
            entry,
            track: u32::MAX,
            visited: self.scrape.wrapping_sub(1),
            // A length past u32 (no such body is accepted) only makes the guess fail.
            series_len: u32::try_from(series_len).unwrap_or(u32::MAX),
            name_len: u32::try_from(name_len).unwrap_or(u32::MAX),
        });
        let slots = &self.slots;
        self.index
            .insert_unique(key[0], i as u32, |&j| slots[j as usize].key[0]);
        self.in_order = false;
        self.reach(i);
        i
    }

    fn reach(&mut self, i: usize) {
        self.cursor = i + 1;
        let slot = &mut self.slots[i];
        if slot.visited != self.scrape {
            slot.visited = self.scrape;
            self.order.push(i as u32);
        }
    }

    pub fn slot(&mut self, i: usize) -> &mut RawSlot {
        &mut self.slots[i]
    }

    /// After a scrape that read the whole body: raw series it did not reach are forgotten
    /// (they are labeled again if they come back), and the rest are put in the order it
    /// reached them, when that changed.
    pub fn finish(&mut self) {
        if self.in_order && self.order.len() == self.slots.len() {
            return;
        }
        let mut old: Vec<Option<RawSlot>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(Some)
            .collect();
        self.slots = Vec::with_capacity(self.order.len());
        self.slots
            .extend(self.order.iter().filter_map(|&i| old[i as usize].take()));
        let slots = &self.slots;
        let mut index = HashTable::with_capacity(slots.len());
        for (i, s) in slots.iter().enumerate() {
            index.insert_unique(s.key[0], i as u32, |&j| slots[j as usize].key[0]);
        }
        self.index = index;
    }

    /// Forgets every raw series (a change of exposition format).
    pub fn clear(&mut self) {
        *self = RawSeries::default();
    }
}

/// A final series of the last successful scrape, to mark stale if it does not show up again.
#[derive(Clone)]
pub(super) struct Tracked {
    pub entry: Arc<SeriesEntry>,
    pub family: Arc<str>,
    pub kind: MetricKind,
    /// Number of the scrape that saw it last (duplicates within one body are dropped).
    /// Wrapping: only equality with the current or the last completed scrape matters.
    pub seen: u32,
    /// Scraped without an explicit timestamp last time: it gets a staleness marker when it
    /// goes away (Prometheus leaves timestamped series alone).
    pub marks: bool,
    /// `marks` as the last successful scrape left it, while a scrape is under way.
    pub marked_before: bool,
}

/// The final series of the last scrape, by `SeriesEntry::hash`.
#[derive(Default)]
pub(super) struct Tracks {
    list: Vec<Tracked>,
    /// Positions in `list` by `entry.hash`.
    index: HashTable<u32>,
}

impl Tracks {
    /// Where the final series of `entry` is, trying `hint` (where it was last time) first.
    pub fn find(&self, hint: u32, entry: &Arc<SeriesEntry>) -> Option<usize> {
        if let Some(t) = self.list.get(hint as usize) {
            if Arc::ptr_eq(&t.entry, entry) || t.entry.hash == entry.hash {
                return Some(hint as usize);
            }
        }
        let list = &self.list;
        self.index
            .find(entry.hash, |&i| list[i as usize].entry.hash == entry.hash)
            .map(|&i| i as usize)
    }

    pub fn insert(&mut self, t: Tracked) -> usize {
        let i = self.list.len();
        let hash = t.entry.hash;
        self.list.push(t);
        let list = &self.list;
        self.index
            .insert_unique(hash, i as u32, |&j| list[j as usize].entry.hash);
        i
    }

    pub fn get_mut(&mut self, i: usize) -> &mut Tracked {
        &mut self.list[i]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tracked> {
        self.list.iter()
    }

    /// Keeps the series `keep` says to, in order.
    pub fn retain(&mut self, keep: impl FnMut(&Tracked) -> bool) {
        let before = self.list.len();
        self.list.retain(keep);
        // The list grows by doubling while a target's first scrape adds its series: 2,224
        // series would keep room for 4,096 (60 KB per sidecar) for as long as it lives.
        let len = self.list.len();
        let roomy = self.list.capacity() > len + len / 4;
        if len == before && !roomy {
            return;
        }
        if roomy {
            self.list.shrink_to(len + len / 8);
        }
        let list = &self.list;
        let mut index = HashTable::with_capacity(list.len());
        for (i, t) in list.iter().enumerate() {
            index.insert_unique(t.entry.hash, i as u32, |&j| list[j as usize].entry.hash);
        }
        self.index = index;
    }

    /// Takes every series out.
    pub fn take(&mut self) -> Vec<Tracked> {
        self.index = HashTable::new();
        std::mem::take(&mut self.list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hash: u64) -> Arc<SeriesEntry> {
        Arc::new(SeriesEntry {
            name: Arc::from("m"),
            labels: Labels::empty(),
            job: Label::new("job", "j"),
            instance: Label::new("instance", "i"),
            hash,
        })
    }

    #[test]
    fn raw_series_follow_the_exposition_order() {
        let mut raw = RawSeries::default();
        raw.begin();
        for k in 0..4u64 {
            assert_eq!(raw.find([k, k]), None);
            raw.insert([k, k], (3, 1), Some(entry(k)));
        }
        raw.finish();
        // Same order: every lookup is the next slot.
        raw.begin();
        for k in 0..4u64 {
            assert_eq!(raw.find([k, k]), Some(k as usize));
        }
        assert!(raw.in_order);
        raw.finish();
        // Reordered, one gone, one new: found through the index, then laid out anew.
        raw.begin();
        for k in [2u64, 0, 3] {
            assert!(raw.find([k, k]).is_some());
        }
        assert_eq!(raw.find([1, 2]), None, "same first word, other series");
        raw.insert([9, 9], (5, 2), None);
        assert!(!raw.in_order);
        raw.finish();
        let keys: Vec<u64> = raw.slots.iter().map(|s| s.key[0]).collect();
        assert_eq!(keys, vec![2, 0, 3, 9]);
        raw.begin();
        for (i, k) in [2u64, 0, 3, 9].into_iter().enumerate() {
            let lengths = if k == 9 { (5, 2) } else { (3, 1) };
            assert_eq!(raw.expected(), Some(lengths));
            assert_eq!(raw.find([k, k]), Some(i));
        }
        assert_eq!(raw.expected(), None);
        assert_eq!(raw.find([1, 1]), None, "forgotten when not reached");
    }

    #[test]
    fn tracks_are_found_by_hint_or_hash() {
        let mut tracks = Tracks::default();
        let tracked = |hash| Tracked {
            entry: entry(hash),
            family: Arc::from("m"),
            kind: MetricKind::Gauge,
            seen: 0,
            marks: true,
            marked_before: false,
        };
        for h in 10..14 {
            tracks.insert(tracked(h));
        }
        let e = entry(12);
        assert_eq!(tracks.find(2, &e), Some(2));
        assert_eq!(
            tracks.find(0, &e),
            Some(2),
            "a wrong hint falls back to the hash"
        );
        assert_eq!(tracks.find(u32::MAX, &entry(99)), None);
        tracks.retain(|t| t.entry.hash != 11);
        assert_eq!(
            tracks.find(2, &e),
            Some(1),
            "positions move up after removal"
        );
        assert_eq!(tracks.take().len(), 3);
        assert_eq!(tracks.find(0, &e), None);
    }

    #[test]
    fn tracks_give_back_the_room_of_a_first_scrape() {
        let mut tracks = Tracks::default();
        for h in 0..2224 {
            tracks.insert(Tracked {
                entry: entry(h),
                family: Arc::from("m"),
                kind: MetricKind::Gauge,
                seen: 0,
                marks: true,
                marked_before: false,
            });
        }
        assert!(tracks.list.capacity() >= 4096, "grown by doubling");
        tracks.retain(|_| true);
        assert!(tracks.list.capacity() <= 2224 + 2224 / 4);
        for h in 0..2224 {
            assert_eq!(tracks.find(u32::MAX, &entry(h)), Some(h as usize));
        }
    }
}
