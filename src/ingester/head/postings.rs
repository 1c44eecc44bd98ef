//! The head's index: the symbol table that interns label strings, and the
//! inverted index (postings) from label name and value to the sorted refs
//! of the series that carry them, with selection by matchers.
//!
//! Each distinct label string is one `Arc<str>`, shared by the symbol table
//! and the postings keys that use it. A symbol leaves the table with the
//! last postings key that holds it.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::mem::size_of;
use std::sync::Arc;

use super::SeriesRef;
use super::packed::PackedLabels;
use crate::model::{MatchOp, Matcher};

/// Estimated bytes of one symbol besides its text: the `Arc` header and
/// the table's slot (a fat pointer plus control byte, at 7/8 load).
const SYMBOL_OVERHEAD: usize = 16 + (size_of::<Arc<str>>() + 1) * 8 / 7;

/// Estimated bytes of one postings list besides its refs: the map slot
/// (key `Arc`, `Vec`, control byte, at 7/8 load).
const POSTINGS_LIST_OVERHEAD: usize =
    (size_of::<Arc<str>>() + size_of::<Vec<SeriesRef>>() + 1) * 8 / 7;

type Values = HashMap<Arc<str>, Vec<SeriesRef>>;

#[derive(Default)]
pub(super) struct Index {
    symbols: HashSet<Arc<str>>,
    postings: HashMap<Arc<str>, Values>,
    /// Every series, sorted: the base that negative matchers subtract from.
    all: Vec<SeriesRef>,
    /// Bytes of the symbols' text plus [`SYMBOL_OVERHEAD`] each.
    symbol_bytes: usize,
    postings_lists: usize,
    /// Sum of the label counts of all series (each is one postings entry).
    label_pairs: usize,
    /// Sum of the series' packed label bytes.
    packed_label_bytes: usize,
}

/// Inserts `r` into the sorted `list`; refs mostly arrive in increasing
/// order, so this is usually a push.
fn insert_sorted(list: &mut Vec<SeriesRef>, r: SeriesRef) {
    match list.last() {
        Some(&last) if last >= r => {
            if let Err(pos) = list.binary_search(&r) {
                list.insert(pos, r);
            }
        }
        _ => list.push(r),
    }
}

impl Index {
    /// The shared copy of `s`, added to the table if new.
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(sym) = self.symbols.get(s) {
            return Arc::clone(sym);
        }
        let sym: Arc<str> = Arc::from(s);
        self.symbols.insert(Arc::clone(&sym));
        self.symbol_bytes += s.len() + SYMBOL_OVERHEAD;
        sym
    }

    /// Drops a postings key, and its symbol if no other key holds it.
    fn release(&mut self, key: Arc<str>) {
        // One count for the table, one for `key`.
        if Arc::strong_count(&key) == 2 && self.symbols.remove(&*key) {
            self.symbol_bytes -= key.len() + SYMBOL_OVERHEAD;
        }
    }

    pub fn add(&mut self, r: SeriesRef, labels: &PackedLabels) {
        for (name, value) in labels.iter() {
            let values = match self.postings.get_mut(name) {
                Some(values) => values,
                None => {
                    let name = self.intern(name);
                    self.postings.entry(name).or_default()
                }
            };
            let list = match values.get_mut(value) {
                Some(list) => list,
                None => {
                    // Re-borrow around `intern`, which needs `self`.
                    let value = self.intern(value);
                    self.postings_lists += 1;
                    let values = self.postings.get_mut(name).expect("inserted above");
                    values.entry(value).or_default()
                }
            };
            insert_sorted(list, r);
            self.label_pairs += 1;
        }
        self.packed_label_bytes += labels.heap_bytes();
        insert_sorted(&mut self.all, r);
    }

    /// Removes the series `removed` from every postings list, one pass per
    /// affected list, and the symbols no list uses any more.
    pub fn remove(&mut self, removed: &[(SeriesRef, &PackedLabels)]) {
        let mut per_list: HashMap<(&str, &str), Vec<SeriesRef>> = HashMap::new();
        for &(r, labels) in removed {
            for pair in labels.iter() {
                per_list.entry(pair).or_default().push(r);
                self.label_pairs -= 1;
            }
            self.packed_label_bytes -= labels.heap_bytes();
        }
        let mut released: Vec<Arc<str>> = Vec::new();
        for ((name, value), mut refs) in per_list {
            refs.sort_unstable();
            let Some(values) = self.postings.get_mut(name) else {
                continue;
            };
            if let Some(list) = values.get_mut(value) {
                list.retain(|r| refs.binary_search(r).is_err());
                if list.is_empty() {
                    if let Some((key, _)) = values.remove_entry(value) {
                        released.push(key);
                    }
                    self.postings_lists -= 1;
                } else if list.capacity() > 2 * list.len() {
                    list.shrink_to_fit();
                }
            }
            if values.is_empty()
                && let Some((key, _)) = self.postings.remove_entry(name)
            {
                released.push(key);
            }
        }
        for key in released {
            self.release(key);
        }
        let mut refs: Vec<SeriesRef> = removed.iter().map(|&(r, _)| r).collect();
        refs.sort_unstable();
        self.all.retain(|r| refs.binary_search(r).is_err());
        if self.all.capacity() > 2 * self.all.len() {
            self.all.shrink_to_fit();
        }
    }

    /// Sum of the series' packed label bytes.
    pub fn packed_label_bytes(&self) -> usize {
        self.packed_label_bytes
    }

    pub fn num_series(&self) -> usize {
        self.all.len()
    }

    /// Series carrying `name="value"`.
    pub fn postings_len(&self, name: &str, value: &str) -> usize {
        self.postings
            .get(name)
            .and_then(|values| values.get(value))
            .map_or(0, Vec::len)
    }

    /// All label names, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.postings.keys().map(|n| n.to_string()).collect();
        names.sort_unstable();
        names
    }

    /// All values of label `name`, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .postings
            .get(name)
            .map(|values| values.keys().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        values.sort_unstable();
        values
    }

    /// Estimated heap bytes of the index: symbols, postings lists and the
    /// refs in them.
    pub fn heap_bytes(&self) -> usize {
        self.symbol_bytes
            + self.postings_lists * POSTINGS_LIST_OVERHEAD
            + (self.label_pairs + self.all.capacity()) * size_of::<SeriesRef>()
    }

    /// The series matching every matcher, sorted by ref, with Prometheus's
    /// semantics (`PostingsForMatchers`): a series lacking a label matches
    /// as if the label's value were empty. Equality matchers intersect
    /// postings lists; other matchers that refuse the empty value take the
    /// union of the lists of the values they match; matchers that accept
    /// the empty value subtract the lists of the values they refuse. With
    /// no matcher at all, nothing is selected.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<SeriesRef> {
        if matchers.is_empty() {
            return Vec::new();
        }
        let mut positive: Vec<Cow<'_, [SeriesRef]>> = Vec::new();
        let mut negative: Vec<SeriesRef> = Vec::new();
        for m in matchers {
            let values = self.postings.get(m.name.as_str());
            if m.matches_empty() {
                for (value, list) in values.into_iter().flatten() {
                    if !m.matches(value) {
                        negative.extend_from_slice(list);
                    }
                }
                continue;
            }
            let Some(values) = values else {
                return Vec::new();
            };
            let list: Cow<'_, [SeriesRef]> = if m.op == MatchOp::Equal {
                match values.get(m.value.as_str()) {
                    Some(list) => Cow::Borrowed(list),
                    None => return Vec::new(),
                }
            } else {
                let mut union: Vec<SeriesRef> = Vec::new();
                let mut lists = 0;
                for (value, list) in values {
                    if m.matches(value) {
                        union.extend_from_slice(list);
                        lists += 1;
                    }
                }
                if lists > 1 {
                    union.sort_unstable();
                    union.dedup();
                }
                Cow::Owned(union)
            };
            if list.is_empty() {
                return Vec::new();
            }
            positive.push(list);
        }
        positive.sort_by_key(|l| l.len());
        let mut lists = positive.into_iter();
        let mut result: Vec<SeriesRef> = match lists.next() {
            Some(first) => first.into_owned(),
            None => self.all.clone(),
        };
        for list in lists {
            if result.is_empty() {
                break;
            }
            result = intersect(&result, &list);
        }
        if !negative.is_empty() && !result.is_empty() {
            negative.sort_unstable();
            negative.dedup();
            result = subtract(&result, &negative);
        }
        result
    }
}

/// Sorted intersection of two sorted lists; binary-searches the longer one
/// when the lengths differ a lot.
fn intersect(a: &[SeriesRef], b: &[SeriesRef]) -> Vec<SeriesRef> {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(short.len());
    if short.len() * 16 < long.len() {
        let mut rest = long;
        for &r in short {
            match rest.binary_search(&r) {
                Ok(i) => {
                    out.push(r);
                    rest = &rest[i + 1..];
                }
                Err(i) => rest = &rest[i..],
            }
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < short.len() && j < long.len() {
        match short[i].cmp(&long[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(short[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// `a` without the refs in `b`, both sorted.
fn subtract(a: &[SeriesRef], b: &[SeriesRef]) -> Vec<SeriesRef> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &r in a {
        while j < b.len() && b[j] < r {
            j += 1;
        }
        if j >= b.len() || b[j] != r {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &[u64]) -> Vec<SeriesRef> {
        v.iter().map(|&r| SeriesRef(r)).collect()
    }

    #[test]
    fn intersect_and_subtract() {
        let a = refs(&[1, 3, 5, 7, 9]);
        let b = refs(&[3, 4, 5, 9, 10]);
        assert_eq!(intersect(&a, &b), refs(&[3, 5, 9]));
        let long: Vec<SeriesRef> = (0..1000).map(SeriesRef).collect();
        assert_eq!(intersect(&refs(&[2, 500, 2000]), &long), refs(&[2, 500]));
        assert_eq!(subtract(&a, &b), refs(&[1, 7]));
        assert_eq!(subtract(&a, &[]), a);
    }

    #[test]
    fn symbols_are_shared_and_released() {
        use crate::model::Labels;
        let mut index = Index::default();
        let mut keys = super::super::packed::KeyBuilder::new("t");
        let a = PackedLabels::new(
            keys.key(Labels::from_pairs([("job", "api"), ("x", "job")]).as_slice())
                .packed,
        );
        let b = PackedLabels::new(
            keys.key(Labels::from_pairs([("job", "web")]).as_slice())
                .packed,
        );
        index.add(SeriesRef(1), &a);
        index.add(SeriesRef(2), &b);
        assert_eq!(index.symbols.len(), 4, "job, api, x, web");
        assert_eq!(
            index.select(&[Matcher::equal("x", "job")]),
            vec![SeriesRef(1)]
        );
        index.remove(&[(SeriesRef(1), &a)]);
        let mut symbols: Vec<&str> = index.symbols.iter().map(|s| &**s).collect();
        symbols.sort_unstable();
        assert_eq!(symbols, vec!["job", "web"]);
        index.remove(&[(SeriesRef(2), &b)]);
        assert!(index.symbols.is_empty());
        assert_eq!(index.heap_bytes(), 0);
        assert_eq!(index.packed_label_bytes(), 0);
    }

    #[test]
    fn out_of_order_refs_stay_sorted() {
        let mut list = refs(&[1, 5]);
        insert_sorted(&mut list, SeriesRef(3));
        insert_sorted(&mut list, SeriesRef(9));
        insert_sorted(&mut list, SeriesRef(5));
        assert_eq!(list, refs(&[1, 3, 5, 9]));
    }
}
