//! Exemplars in memory: one circular buffer per tenant, as Prometheus's
//! `tsdb/exemplar.go` (`CircularExemplarStorage`) keeps them.
//!
//! The buffer holds the tenant's newest `limits.max_global_exemplars_per_user`
//! exemplars (0: exemplars are not stored); a new exemplar overwrites the
//! oldest slot, whatever its series. Each series with exemplars has an index
//! entry pointing at its oldest and newest slot, and slots of one series are
//! chained oldest to newest, so a series' exemplars are always in order.
//!
//! Admission per series, as Prometheus's (`validateExemplar`,
//! `AddExemplar`), with the tenant's `limits.out_of_order_time_window` as
//! its out-of-order window:
//! * an exemplar equal to the series' newest (labels, value, timestamp) is a
//!   duplicate: accepted without effect (a retried push);
//! * one older than the newest by less than the window is put in its place
//!   in time, unless the series has an exemplar at that timestamp already
//!   (then it is taken for a duplicate);
//! * one older than that, or at the newest's timestamp but ordered before
//!   it (by value, then labels), is refused as out of order;
//! * an exemplar whose label set is longer than 128 UTF-8 characters (names
//!   and values) or repeats a label name is refused as invalid.
//!
//! A series' slots are a doubly linked list in time order; eviction frees
//! slots in the order they were filled, which with out-of-order inserts is
//! not always a series' oldest, so a slot is unlinked wherever it is.
//!
//! The storage is deterministic: the same adds in the same order with the
//! same capacity leave the same contents, which is what makes WAL replay
//! give back the exemplars the pushes stored.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{Labels, Matcher};

/// Longest exemplar label set, in UTF-8 characters of names and values
/// (OpenMetrics; Prometheus's `exemplar.ExemplarMaxLabelSetLength`).
pub const MAX_LABEL_SET_LENGTH: usize = 128;

/// One exemplar: its own labels (e.g. `trace_id`), value and timestamp.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    /// Sorted by name.
    pub labels: Labels,
    pub value: f64,
    pub t: i64,
}

impl Exemplar {
    /// Equal labels, timestamp and value (bit for bit, so NaN equals NaN).
    fn same(&self, other: &Exemplar) -> bool {
        self.t == other.t
            && self.value.to_bits() == other.value.to_bits()
            && self.labels == other.labels
    }

    /// The order exemplars of one series are stored in: timestamp, value,
    /// labels.
    fn order(&self, other: &Exemplar) -> Ordering {
        self.t
            .cmp(&other.t)
            .then(self.value.total_cmp(&other.value))
            .then_with(|| self.labels.cmp(&other.labels))
    }
}

/// Why an exemplar was not stored.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ExemplarError {
    #[error(
        "exemplars are not stored for this tenant (raise limits.max_global_exemplars_per_user)"
    )]
    Disabled,
    #[error("exemplar label set is {length} characters long, more than {MAX_LABEL_SET_LENGTH}")]
    LabelSetTooLong { length: usize },
    #[error("exemplar label name {0:?} is not unique")]
    DuplicateLabelName(String),
    #[error(
        "out-of-order exemplar: timestamp {t} ms is before the series' newest exemplar at {newest} ms"
    )]
    OutOfOrder { t: i64, newest: i64 },
}

/// Checks what does not depend on stored exemplars: the label set's length
/// and unique names. `labels` as sent, in any order.
pub fn validate_labels<'a>(
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), ExemplarError> {
    let mut length = 0;
    let mut names: Vec<&str> = Vec::new();
    for (name, value) in labels {
        length += name.chars().count() + value.chars().count();
        names.push(name);
    }
    if length > MAX_LABEL_SET_LENGTH {
        return Err(ExemplarError::LabelSetTooLong { length });
    }
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(ExemplarError::DuplicateLabelName(pair[0].to_string()));
    }
    Ok(())
}

/// What [`ExemplarStorage::add`] did with an exemplar it did not refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    Stored,
    /// Equal to the series' newest: nothing changed.
    Duplicate,
}

struct Slot {
    exemplar: Exemplar,
    /// The series' labels, shared with its index entry's key (one copy a
    /// series, as Prometheus's slots point at their index entry).
    series: Arc<Labels>,
    /// The previous (older) and next (newer) slots of the same series.
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(Clone, Copy)]
struct IndexEntry {
    oldest: usize,
    newest: usize,
}

/// One series' exemplars, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesExemplars {
    pub series: Labels,
    pub exemplars: Vec<Exemplar>,
}

/// A tenant's exemplars. Not synchronised: the head keeps it under a lock.
#[derive(Default)]
pub struct ExemplarStorage {
    /// Grows to `capacity`, then wraps around.
    slots: Vec<Slot>,
    capacity: usize,
    /// The slot the next exemplar goes to once `slots` is full.
    next: usize,
    index: HashMap<Arc<Labels>, IndexEntry>,
    out_of_order: u64,
}

impl ExemplarStorage {
    /// Exemplars held now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Series with at least one exemplar.
    pub fn series(&self) -> usize {
        self.index.len()
    }

    /// Out-of-order exemplars refused so far.
    pub fn out_of_order_total(&self) -> u64 {
        self.out_of_order
    }

    /// Stores `exemplar` for the series `series`, keeping at most
    /// `capacity` exemplars in all (the tenant's limit, read on every add so
    /// that a changed limit applies at once); `ooo_window_ms` is the
    /// tenant's out-of-order window (0: none).
    pub fn add(
        &mut self,
        series: &Labels,
        exemplar: Exemplar,
        capacity: usize,
        ooo_window_ms: i64,
    ) -> Result<Added, ExemplarError> {
        if capacity != self.capacity {
            self.resize(capacity);
        }
        if capacity == 0 {
            return Err(ExemplarError::Disabled);
        }
        validate_labels(
            exemplar
                .labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
        )?;
        let entry = self.index.get(series).copied();
        if let Some(entry) = entry {
            let newest = &self.slots[entry.newest].exemplar;
            if newest.same(&exemplar) {
                return Ok(Added::Duplicate);
            }
            if exemplar.order(newest) == Ordering::Less {
                let within_window = ooo_window_ms > 0
                    && exemplar.t < newest.t
                    && exemplar.t > newest.t.saturating_sub(ooo_window_ms);
                if !within_window {
                    self.out_of_order += 1;
                    return Err(ExemplarError::OutOfOrder {
                        t: exemplar.t,
                        newest: newest.t,
                    });
                }
                // Checking value and labels too would walk every exemplar of
                // the timestamp (Prometheus does not either).
                if self
                    .last_at_or_before(entry, exemplar.t)
                    .is_some_and(|at| self.slots[at].exemplar.t == exemplar.t)
                {
                    return Ok(Added::Duplicate);
                }
            }
        }
        let series = match self.index.get_key_value(series) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::new(series.clone()),
        };
        self.push(series, exemplar);
        Ok(Added::Stored)
    }

    /// The series' newest slot at or before timestamp `t`, walking back
    /// from its newest (out-of-order exemplars land near the end), as
    /// Prometheus's `findInsertionIndex`.
    fn last_at_or_before(&self, entry: IndexEntry, t: i64) -> Option<usize> {
        let mut at = Some(entry.newest);
        while let Some(i) = at {
            if self.slots[i].exemplar.t <= t {
                return Some(i);
            }
            at = self.slots[i].prev;
        }
        None
    }

    /// Stores in a free slot, or in the slot filled longest ago (unlinked
    /// first), and links it into its series' list in time order.
    fn push(&mut self, series: Arc<Labels>, exemplar: Exemplar) {
        let slot = Slot {
            exemplar,
            series: Arc::clone(&series),
            prev: None,
            next: None,
        };
        let at = if self.slots.len() < self.capacity {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let at = self.next;
            self.unlink(at);
            self.slots[at] = slot;
            self.next = (at + 1) % self.capacity;
            at
        };
        let Some(entry) = self.index.get(&series).copied() else {
            self.index.insert(
                series,
                IndexEntry {
                    oldest: at,
                    newest: at,
                },
            );
            return;
        };
        let mut entry = entry;
        match self.last_at_or_before(entry, self.slots[at].exemplar.t) {
            Some(before) => {
                let after = self.slots[before].next;
                self.slots[at].prev = Some(before);
                self.slots[at].next = after;
                self.slots[before].next = Some(at);
                match after {
                    Some(after) => self.slots[after].prev = Some(at),
                    None => entry.newest = at,
                }
            }
            None => {
                self.slots[at].next = Some(entry.oldest);
                self.slots[entry.oldest].prev = Some(at);
                entry.oldest = at;
            }
        }
        self.index.insert(series, entry);
    }

    /// Takes the slot `at` out of its series' list; the series leaves the
    /// index with its last exemplar.
    fn unlink(&mut self, at: usize) {
        let (prev, next) = (self.slots[at].prev, self.slots[at].next);
        if let Some(prev) = prev {
            self.slots[prev].next = next;
        }
        if let Some(next) = next {
            self.slots[next].prev = prev;
        }
        let series = Arc::clone(&self.slots[at].series);
        if prev.is_none() && next.is_none() {
            self.index.remove(&series);
        } else if let Some(entry) = self.index.get_mut(&series) {
            match (prev, next) {
                (None, Some(next)) => entry.oldest = next,
                (Some(prev), None) => entry.newest = prev,
                _ => {}
            }
        }
    }

    /// Changes the capacity, keeping the newest exemplars.
    fn resize(&mut self, capacity: usize) {
        let mut filled = std::mem::take(&mut self.slots);
        // Oldest first: from `next` on, once the buffer has wrapped.
        if filled.len() == self.capacity {
            filled.rotate_left(self.next);
        }
        let skip = filled.len().saturating_sub(capacity);
        self.index.clear();
        self.capacity = capacity;
        self.next = 0;
        for slot in filled.into_iter().skip(skip) {
            self.push(slot.series, slot.exemplar);
        }
    }

    /// The exemplars from `start` to `end` (inclusive, milliseconds) of the
    /// series matching at least one of `matcher_sets`, sorted by series
    /// labels, each series' exemplars oldest first.
    pub fn select(
        &self,
        start: i64,
        end: i64,
        matcher_sets: &[Vec<Matcher>],
    ) -> Vec<SeriesExemplars> {
        let mut out = Vec::new();
        for (series, entry) in &self.index {
            if self.slots[entry.oldest].exemplar.t > end
                || self.slots[entry.newest].exemplar.t < start
            {
                continue;
            }
            let matches = matcher_sets.iter().any(|set| {
                set.iter()
                    .all(|m| m.matches(series.get(&m.name).unwrap_or("")))
            });
            if !matches {
                continue;
            }
            let mut exemplars = Vec::new();
            let mut at = Some(entry.oldest);
            while let Some(i) = at {
                let slot = &self.slots[i];
                if slot.exemplar.t > end {
                    break;
                }
                if slot.exemplar.t >= start {
                    exemplars.push(slot.exemplar.clone());
                }
                at = slot.next;
            }
            if !exemplars.is_empty() {
                out.push(SeriesExemplars {
                    series: Labels::clone(series),
                    exemplars,
                });
            }
        }
        out.sort_by(|a, b| a.series.cmp(&b.series));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MatchOp;

    fn series(name: &str) -> Labels {
        Labels::from_pairs([("__name__", name), ("job", "api")])
    }

    fn ex(trace: &str, value: f64, t: i64) -> Exemplar {
        Exemplar {
            labels: Labels::from_pairs([("trace_id", trace)]),
            value,
            t,
        }
    }

    fn all() -> Vec<Vec<Matcher>> {
        vec![vec![
            Matcher::new(MatchOp::RegexMatch, "__name__", ".+").expect("matcher"),
        ]]
    }

    fn times(storage: &ExemplarStorage, name: &str) -> Vec<i64> {
        storage
            .select(i64::MIN, i64::MAX, &all())
            .into_iter()
            .filter(|s| s.series.metric_name() == Some(name))
            .flat_map(|s| s.exemplars.into_iter().map(|e| e.t))
            .collect()
    }

    #[test]
    fn stores_in_order_and_refuses_out_of_order_per_series() {
        let mut s = ExemplarStorage::default();
        let a = series("a");
        let b = series("b");
        assert_eq!(s.add(&a, ex("1", 1.0, 10), 10, 0), Ok(Added::Stored));
        assert_eq!(s.add(&a, ex("2", 2.0, 20), 10, 0), Ok(Added::Stored));
        // Another series has its own order.
        assert_eq!(s.add(&b, ex("3", 3.0, 5), 10, 0), Ok(Added::Stored));
        assert_eq!(
            s.add(&a, ex("4", 4.0, 15), 10, 0),
            Err(ExemplarError::OutOfOrder { t: 15, newest: 20 })
        );
        // Same timestamp: ordered by value, then labels.
        assert!(s.add(&a, ex("5", 1.5, 20), 10, 0).is_err());
        assert_eq!(s.add(&a, ex("5", 2.5, 20), 10, 0), Ok(Added::Stored));
        assert_eq!(s.out_of_order_total(), 2);
        assert_eq!(times(&s, "a"), vec![10, 20, 20]);
        assert_eq!(times(&s, "b"), vec![5]);
    }

    #[test]
    fn inside_the_window_older_exemplars_take_their_place_in_time() {
        let mut s = ExemplarStorage::default();
        let a = series("a");
        s.add(&a, ex("1", 1.0, 100), 10, 50).expect("stored");
        s.add(&a, ex("2", 1.0, 200), 10, 50).expect("stored");
        assert_eq!(s.add(&a, ex("3", 1.0, 170), 10, 50), Ok(Added::Stored));
        assert_eq!(s.add(&a, ex("4", 1.0, 170), 10, 50), Ok(Added::Duplicate));
        assert!(matches!(
            s.add(&a, ex("5", 1.0, 150), 10, 50),
            Err(ExemplarError::OutOfOrder { .. })
        ));
        assert_eq!(times(&s, "a"), vec![100, 170, 200]);
        // Eviction goes by arrival: 100 first, then 200, not the oldest in time.
        for (i, t) in [210, 220, 230, 240, 250, 260, 270, 280]
            .into_iter()
            .enumerate()
        {
            s.add(&a, ex(&i.to_string(), 1.0, t), 10, 50)
                .expect("stored");
        }
        s.add(&a, ex("x", 1.0, 290), 10, 50).expect("stored");
        assert_eq!(times(&s, "a")[..3], [170, 210, 220]);
    }

    #[test]
    fn a_duplicate_of_the_newest_changes_nothing() {
        let mut s = ExemplarStorage::default();
        let a = series("a");
        assert_eq!(s.add(&a, ex("1", f64::NAN, 10), 10, 0), Ok(Added::Stored));
        assert_eq!(
            s.add(&a, ex("1", f64::NAN, 10), 10, 0),
            Ok(Added::Duplicate)
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s.out_of_order_total(), 0);
    }

    #[test]
    fn the_buffer_keeps_the_newest_across_series_and_drops_emptied_series() {
        let mut s = ExemplarStorage::default();
        let (a, b) = (series("a"), series("b"));
        for t in 0..3 {
            s.add(&a, ex("a", 1.0, t), 4, 0).expect("stored");
        }
        for t in 0..3 {
            s.add(&b, ex("b", 1.0, 100 + t), 4, 0).expect("stored");
        }
        // Six adds into four slots: a's two oldest are gone.
        assert_eq!(s.len(), 4);
        assert_eq!(times(&s, "a"), vec![2]);
        assert_eq!(times(&s, "b"), vec![100, 101, 102]);
        s.add(&b, ex("b", 1.0, 103), 4, 0).expect("stored");
        assert_eq!(times(&s, "a"), Vec::<i64>::new());
        assert_eq!(s.series(), 1);
        // a starts afresh: an old timestamp is in order for an empty series.
        assert_eq!(s.add(&a, ex("a", 1.0, 0), 4, 0), Ok(Added::Stored));
    }

    #[test]
    fn resizing_keeps_the_newest_and_zero_disables() {
        let mut s = ExemplarStorage::default();
        let a = series("a");
        for t in 0..10 {
            s.add(&a, ex("a", 1.0, t), 6, 0).expect("stored");
        }
        assert_eq!(times(&s, "a"), vec![4, 5, 6, 7, 8, 9]);
        s.add(&a, ex("a", 1.0, 10), 3, 0).expect("stored");
        assert_eq!(times(&s, "a"), vec![8, 9, 10]);
        s.add(&a, ex("a", 1.0, 11), 5, 0).expect("stored");
        s.add(&a, ex("a", 1.0, 12), 5, 0).expect("stored");
        assert_eq!(times(&s, "a"), vec![8, 9, 10, 11, 12]);
        assert_eq!(
            s.add(&a, ex("a", 1.0, 13), 0, 0),
            Err(ExemplarError::Disabled)
        );
        assert!(s.is_empty());
    }

    #[test]
    fn select_filters_by_time_and_matchers() {
        let mut s = ExemplarStorage::default();
        let (a, b) = (series("a"), series("b"));
        for t in [10, 20, 30] {
            s.add(&a, ex("a", 1.0, t), 100, 0).expect("stored");
            s.add(&b, ex("b", 1.0, t), 100, 0).expect("stored");
        }
        let only_b = vec![vec![Matcher::equal("__name__", "b")]];
        let got = s.select(15, 30, &only_b);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].series, b);
        assert_eq!(
            got[0].exemplars.iter().map(|e| e.t).collect::<Vec<_>>(),
            vec![20, 30]
        );
        let either = vec![
            vec![Matcher::equal("__name__", "b")],
            vec![Matcher::equal("__name__", "a")],
        ];
        let got = s.select(0, 100, &either);
        assert_eq!(
            got.iter().map(|g| g.series.clone()).collect::<Vec<_>>(),
            vec![a, b]
        );
        assert!(s.select(31, 100, &all()).is_empty());
    }

    #[test]
    fn label_sets_are_validated() {
        let long = "x".repeat(121);
        assert!(validate_labels([("trace_id", long.as_str())]).is_err());
        assert_eq!(
            validate_labels([("trace_id", "𝄞".repeat(100).as_str())]),
            Ok(())
        );
        assert_eq!(
            validate_labels([("a", "1"), ("a", "2")]),
            Err(ExemplarError::DuplicateLabelName("a".into()))
        );
        assert_eq!(validate_labels([]), Ok(()));
    }

    proptest::proptest! {
        /// Against a model: the accepted exemplars in arrival order, the
        /// last `capacity` of them kept; each checked against its series'
        /// kept ones (newest by order; with a window, any at its
        /// timestamp); a series' exemplars answered in order.
        #[test]
        fn the_buffer_matches_a_simple_model(
            capacity in 1usize..8,
            window in proptest::prop_oneof![proptest::strategy::Just(0i64), 1i64..8],
            adds in proptest::collection::vec((0usize..3, 0i64..12, 0u8..3), 0..60),
        ) {
            let mut storage = ExemplarStorage::default();
            let mut model: std::collections::VecDeque<(usize, Exemplar)> = Default::default();
            let names = ["a", "b", "c"];
            for (s, t, v) in adds {
                let e = ex("x", f64::from(v), t);
                let newest = model
                    .iter()
                    .filter(|(m, _)| *m == s)
                    .map(|(_, e)| e.clone())
                    .max_by(|a, b| a.order(b));
                let same_t = model.iter().any(|(m, k)| *m == s && k.t == t);
                let want = match newest {
                    Some(n) if n.same(&e) => Ok(Added::Duplicate),
                    Some(n) if e.order(&n) == Ordering::Less
                        && !(window > 0 && e.t < n.t && e.t > n.t - window) =>
                    {
                        Err(ExemplarError::OutOfOrder { t: e.t, newest: n.t })
                    }
                    Some(n) if e.order(&n) == Ordering::Less && same_t => Ok(Added::Duplicate),
                    _ => {
                        model.push_back((s, e.clone()));
                        if model.len() > capacity {
                            model.pop_front();
                        }
                        Ok(Added::Stored)
                    }
                };
                proptest::prop_assert_eq!(
                    storage.add(&series(names[s]), e, capacity, window),
                    want
                );
            }
            for (s, name) in names.iter().enumerate() {
                let mut want: Vec<Exemplar> = model
                    .iter()
                    .filter(|(m, _)| *m == s)
                    .map(|(_, e)| e.clone())
                    .collect();
                want.sort_by(|a, b| a.order(b));
                let want: Vec<(i64, f64)> = want.iter().map(|e| (e.t, e.value)).collect();
                let got: Vec<(i64, f64)> = storage
                    .select(i64::MIN, i64::MAX, &all())
                    .into_iter()
                    .filter(|x| x.series.metric_name() == Some(name))
                    .flat_map(|x| x.exemplars.into_iter().map(|e| (e.t, e.value)))
                    .collect();
                proptest::prop_assert_eq!(got, want);
            }
            proptest::prop_assert_eq!(storage.len(), model.len());
        }
    }

    #[test]
    fn the_same_adds_give_the_same_contents() {
        let adds: Vec<(Labels, Exemplar)> = (0..50)
            .map(|i| {
                let name = if i % 3 == 0 { "a" } else { "b" };
                let t = if i % 7 == 0 { i - 5 } else { i };
                (series(name), ex(&i.to_string(), i as f64, t))
            })
            .collect();
        let run = || {
            let mut s = ExemplarStorage::default();
            let results: Vec<bool> = adds
                .iter()
                .map(|(l, e)| s.add(l, e.clone(), 16, 0).is_ok())
                .collect();
            (results, s.select(i64::MIN, i64::MAX, &all()))
        };
        assert_eq!(run(), run());
    }
}
