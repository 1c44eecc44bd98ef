//! Metric metadata (type, help, unit) per tenant and metric name, as
//! remote write sends it; at most `limits.max_metadata_per_metric` distinct
//! entries per metric, the newest kept.

use std::collections::{BTreeMap, HashMap};

use parking_lot::RwLock;

use crate::proto::prometheus::MetricMetadata;

#[derive(Default)]
pub struct MetadataStore {
    tenants: RwLock<HashMap<String, BTreeMap<String, Vec<MetricMetadata>>>>,
}

impl MetadataStore {
    /// Adds entries; returns how many were refused by the per-metric limit.
    pub fn add(&self, tenant: &str, entries: &[MetricMetadata], max_per_metric: usize) -> usize {
        let mut refused = 0;
        let mut tenants = self.tenants.write();
        let metrics = tenants.entry(tenant.to_string()).or_default();
        for entry in entries {
            let list = metrics.entry(entry.metric_family_name.clone()).or_default();
            if let Some(position) = list.iter().position(|m| m == entry) {
                // Seen again: it becomes the newest.
                let existing = list.remove(position);
                list.push(existing);
                continue;
            }
            if max_per_metric > 0 && list.len() >= max_per_metric {
                refused += 1;
                continue;
            }
            list.push(entry.clone());
        }
        refused
    }

    /// Entries of `metric` (all when empty), at most `limit` metrics (0: all).
    pub fn get(&self, tenant: &str, metric: &str, limit: usize) -> Vec<MetricMetadata> {
        let tenants = self.tenants.read();
        let Some(metrics) = tenants.get(tenant) else {
            return Vec::new();
        };
        let selected: Box<dyn Iterator<Item = (&String, &Vec<MetricMetadata>)>> =
            if metric.is_empty() {
                Box::new(metrics.iter())
            } else {
                Box::new(metrics.get_key_value(metric).into_iter())
            };
        let take = if limit == 0 { usize::MAX } else { limit };
        selected
            .take(take)
            .flat_map(|(_, list)| list.iter().rev().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, help: &str) -> MetricMetadata {
        MetricMetadata {
            r#type: 1,
            metric_family_name: name.into(),
            help: help.into(),
            unit: String::new(),
        }
    }

    #[test]
    fn per_tenant_and_limited() {
        let store = MetadataStore::default();
        assert_eq!(store.add("a", &[meta("up", "x"), meta("up", "y")], 1), 1);
        assert_eq!(store.get("a", "up", 0), vec![meta("up", "x")]);
        assert!(
            store.get("b", "", 0).is_empty(),
            "tenants never see each other's metadata"
        );
        store.add("a", &[meta("go", "z")], 1);
        assert_eq!(store.get("a", "", 1).len(), 1);
        assert_eq!(store.get("a", "", 0).len(), 2);
    }
}
