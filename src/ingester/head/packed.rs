//! A series' labels packed into one allocation, and the lookup key (series
//! fingerprint and packed labels) built in one pass over a reused buffer.
//!
//! Packed layout, label after label in label order, with the separator
//! bytes of [`crate::model::fingerprint`] (which never occur in UTF-8):
//!
//! ```text
//! ┌──────┬──────┬───────┬──────┬──────┬──────┬───────┬──────┬─────
//! │ name │ 0xfe │ value │ 0xff │ name │ 0xfe │ value │ 0xff │ ...
//! └──────┴──────┴───────┴──────┴──────┴──────┴───────┴──────┴─────
//! ```
//!
//! The fingerprint hashes `tenant 0xff` followed by exactly these bytes, so
//! one buffer gives both: the hash in one shot (rather than streaming many
//! small updates), and the bytes a stored series is compared with in one
//! `memcmp` (rather than a pointer and a compare per string). A series
//! costs its label bytes plus 2 bytes a label; the index interns the same
//! strings once per head for the postings.

use xxhash_rust::xxh3::xxh3_64;

use crate::model::{Label, Labels};

const NAME_END: u8 = 0xfe;
const LABEL_END: u8 = 0xff;

/// Labels in the packed layout, owned by a series.
pub(super) struct PackedLabels(Box<[u8]>);

/// How a series is looked up: its fingerprint and packed labels.
#[derive(Clone, Copy, Debug)]
pub(super) struct SeriesKey<'a> {
    pub fingerprint: u64,
    pub packed: &'a [u8],
}

/// Builds [`SeriesKey`]s for one tenant, reusing its buffer.
pub(super) struct KeyBuilder {
    buf: Vec<u8>,
    prefix: usize,
}

impl KeyBuilder {
    pub fn new(tenant: &str) -> KeyBuilder {
        let mut buf = Vec::with_capacity(tenant.len() + 256);
        buf.extend_from_slice(tenant.as_bytes());
        buf.push(LABEL_END);
        KeyBuilder {
            prefix: buf.len(),
            buf,
        }
    }

    /// The key of `labels`, leaving out empty-valued labels (Prometheus
    /// treats them as absent). The fingerprint equals
    /// [`crate::model::fingerprint`] of the labels that remain.
    pub fn key(&mut self, labels: &[Label]) -> SeriesKey<'_> {
        self.buf.truncate(self.prefix);
        for l in labels.iter().filter(|l| !l.value.is_empty()) {
            self.buf.extend_from_slice(l.name.as_bytes());
            self.buf.push(NAME_END);
            self.buf.extend_from_slice(l.value.as_bytes());
            self.buf.push(LABEL_END);
        }
        SeriesKey {
            fingerprint: xxh3_64(&self.buf),
            packed: &self.buf[self.prefix..],
        }
    }
}

impl PackedLabels {
    /// Copies a key's packed labels.
    pub fn new(packed: &[u8]) -> PackedLabels {
        PackedLabels(packed.into())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Heap bytes of the packed labels.
    pub fn heap_bytes(&self) -> usize {
        self.0.len()
    }

    /// The labels as `(name, value)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        pairs(&self.0)
    }

    pub fn to_labels(&self) -> Labels {
        Labels::from_sorted(self.iter().map(|(n, v)| Label::new(n, v)).collect())
    }
}

/// The `(name, value)` pairs of packed labels, in order.
pub(super) fn pairs(packed: &[u8]) -> impl Iterator<Item = (&str, &str)> + '_ {
    packed
        .split(|&b| b == LABEL_END)
        // The piece after the last label's end is empty.
        .filter(|label| !label.is_empty())
        .map(|label| {
            let at = label
                .iter()
                .position(|&b| b == NAME_END)
                .expect("every packed label has a name end");
            (utf8(&label[..at]), utf8(&label[at + 1..]))
        })
}

fn utf8(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes)
        .expect("packed from UTF-8 strings, split at separators UTF-8 never holds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fingerprint;

    #[test]
    fn round_trips_and_compares() {
        let long = "v".repeat(300);
        let labels = Labels::from_pairs([
            ("__name__", "up"),
            ("job", "api"),
            ("long", &long),
            ("ü", "é"),
        ]);
        let mut keys = KeyBuilder::new("t");
        let packed = PackedLabels::new(keys.key(labels.as_slice()).packed);
        assert_eq!(packed.to_labels(), labels);
        assert_eq!(keys.key(labels.as_slice()).packed, packed.bytes());
        assert_ne!(keys.key(&labels.as_slice()[..3]).packed, packed.bytes());
        assert_ne!(
            keys.key(labels.with("job", "apj").as_slice()).packed,
            packed.bytes()
        );
        let empty = PackedLabels::new(keys.key(&[]).packed);
        assert_eq!(empty.iter().count(), 0);
        assert_eq!(empty.heap_bytes(), 0);
    }

    #[test]
    fn empty_values_are_left_out() {
        let mut keys = KeyBuilder::new("t");
        let with_empty = Labels::from_pairs([("a", "1"), ("b", ""), ("c", "3")]);
        let without = Labels::from_pairs([("a", "1"), ("c", "3")]);
        let a = keys.key(with_empty.as_slice());
        let (fp, packed) = (a.fingerprint, a.packed.to_vec());
        let b = keys.key(without.as_slice());
        assert_eq!((fp, &packed[..]), (b.fingerprint, b.packed));
    }

    #[test]
    fn fingerprint_matches_the_model() {
        let long = "x".repeat(500);
        for labels in [
            Labels::default(),
            Labels::from_pairs([("a", "bc")]),
            Labels::from_pairs([
                ("__name__", "up"),
                ("job", "api"),
                ("instance", "10.0.0.1:9100"),
            ]),
            Labels::from_pairs([("__name__", "long"), ("v", &long)]),
        ] {
            for tenant in ["", "team-a"] {
                assert_eq!(
                    KeyBuilder::new(tenant).key(labels.as_slice()).fingerprint,
                    fingerprint(tenant, labels.as_slice())
                );
            }
        }
    }
}
