//! Label sets: sorted by name, names unique; the series identity.
//!
//! A series is identified within its tenant by its [`Labels`]; its
//! [`fingerprint`] hashes tenant and labels (xxh3, 64 bits) and is used as a
//! map key and, folded to 32 bits ([`shard_token`]), as its place on the ring.

use std::fmt;

use xxhash_rust::xxh3::Xxh3;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Whether `name` is one of the labels that describe the metric rather than
/// the series: its name, type and unit (`__name__`, `__type__`,
/// `__unit__`; Prometheus `schema.IsMetadataLabel`). Dropping a metric's
/// name drops all three.
pub fn is_metadata_label(name: &str) -> bool {
    matches!(name, METRIC_NAME | "__type__" | "__unit__")
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub name: String,
    pub value: String,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A label set sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// Sorts by name; when a name repeats, the last value wins.
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Labels {
        let mut labels: Vec<Label> = pairs.into_iter().map(|(n, v)| Label::new(n, v)).collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        let mut deduped: Vec<Label> = Vec::with_capacity(labels.len());
        for label in labels {
            match deduped.last_mut() {
                Some(last) if last.name == label.name => *last = label,
                _ => deduped.push(label),
            }
        }
        Labels(deduped)
    }

    /// Wraps labels the caller has checked to be sorted and unique.
    pub fn from_sorted(labels: Vec<Label>) -> Labels {
        debug_assert!(labels.windows(2).all(|w| w[0].name < w[1].name));
        Labels(labels)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }

    /// The same set without `name`.
    /// Prometheus's `labels.Labels.Hash` (its default string labels):
    /// xxHash64 over every name and value, each preceded by its length (one
    /// byte below 255, else 255 and three bytes little-endian).
    pub fn prometheus_hash(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh64::Xxh64::new(0);
        let mut put = |s: &str| {
            let n = s.len();
            if n < 255 {
                hasher.update(&[n as u8]);
            } else {
                hasher.update(&[255, n as u8, (n >> 8) as u8, (n >> 16) as u8]);
            }
            hasher.update(s.as_bytes());
        };
        for l in self.iter() {
            put(&l.name);
            put(&l.value);
        }
        hasher.digest()
    }

    /// Without the metric's name, type and unit ([`is_metadata_label`]).
    pub fn without_metadata(&self) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|l| !is_metadata_label(&l.name))
                .cloned()
                .collect(),
        )
    }

    pub fn without(&self, name: &str) -> Labels {
        Labels(self.0.iter().filter(|l| l.name != name).cloned().collect())
    }

    /// The same set with `name` set to `value` (replacing an existing one).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut labels = self.0.clone();
        match labels.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) => labels[i].value = value.to_string(),
            Err(i) => labels.insert(i, Label::new(name, value)),
        }
        Labels(labels)
    }
}

impl fmt::Display for Labels {
    /// `metric{a="1", b="2"}`, as Prometheus prints series.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name().unwrap_or_default();
        f.write_str(name)?;
        f.write_str("{")?;
        let mut first = true;
        for label in self.0.iter().filter(|l| l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", label.name, label.value)?;
        }
        f.write_str("}")
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// `metric{a="b", ...}`, as Prometheus prints a series, from `(name, value)` pairs.
pub fn describe_pairs<'a>(labels: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> String {
    let name = labels
        .clone()
        .find(|(n, _)| *n == METRIC_NAME)
        .map(|(_, v)| v)
        .unwrap_or("");
    let rest: Vec<String> = labels
        .filter(|(n, _)| *n != METRIC_NAME)
        .map(|(n, v)| format!("{n}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(", "))
}

/// The series fingerprint of `labels` in `tenant`. Separator bytes that can
/// never occur in UTF-8 keep `{a="bc"}` and `{ab="c"}` apart.
pub fn fingerprint(tenant: &str, labels: &[Label]) -> u64 {
    fingerprint_pairs(
        tenant,
        labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
    )
}

/// [`fingerprint`] over `(name, value)` pairs in label order, for label
/// sets in other shapes (e.g. protobuf labels).
pub fn fingerprint_pairs<'a>(
    tenant: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(tenant.as_bytes());
    hasher.update(&[0xff]);
    for (name, value) in labels {
        hasher.update(name.as_bytes());
        hasher.update(&[0xfe]);
        hasher.update(value.as_bytes());
        hasher.update(&[0xff]);
    }
    hasher.digest()
}

/// The ring token of a series: its fingerprint folded to 32 bits.
pub fn shard_token(fingerprint: u64) -> u32 {
    (fingerprint ^ (fingerprint >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_as_prometheus_computes_it() {
        // Values printed by Prometheus 3.16's labels.FromStrings(...).Hash().
        let l = Labels::from_pairs([("__name__", "http_requests"), ("job", "api-server")]);
        assert_eq!(l.prometheus_hash(), 14733869333819967011);
        let long = "\0".repeat(300);
        assert_eq!(
            Labels::from_pairs([("a", long.as_str())]).prometheus_hash(),
            15460099879258727816
        );
    }

    #[test]
    fn sorted_and_deduplicated() {
        let labels = Labels::from_pairs([("b", "2"), ("__name__", "up"), ("a", "1"), ("b", "3")]);
        let names: Vec<_> = labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, vec!["__name__", "a", "b"]);
        assert_eq!(labels.get("b"), Some("3"));
        assert_eq!(labels.metric_name(), Some("up"));
        assert_eq!(labels.to_string(), "up{a=\"1\", b=\"3\"}");
        assert_eq!(labels.with("c", "x").get("c"), Some("x"));
        assert_eq!(labels.without("a").len(), 2);
    }

    #[test]
    fn fingerprint_separates_tenants_and_boundaries() {
        let ab = Labels::from_pairs([("a", "bc")]);
        let abc = Labels::from_pairs([("ab", "c")]);
        assert_ne!(
            fingerprint("t", ab.as_slice()),
            fingerprint("t", abc.as_slice())
        );
        assert_ne!(
            fingerprint("t1", ab.as_slice()),
            fingerprint("t2", ab.as_slice())
        );
        assert_eq!(
            fingerprint("t", ab.as_slice()),
            fingerprint("t", Labels::from_pairs([("a", "bc")]).as_slice())
        );
    }
}
