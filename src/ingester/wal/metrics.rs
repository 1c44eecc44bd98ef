//! The WAL's counters, for the ingester to register with its registry.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters of the WAL, for the ingester to register.
#[derive(Clone, Debug, Default)]
pub struct WalMetrics {
    /// Bytes written to segment files (headers and padding included).
    pub bytes_written: Counter,
    /// Records written.
    pub records_written: Counter,
    /// Calls to `append` answered, successfully or not.
    pub appends: Counter,
    /// Groups of appends committed (written, and fsynced if the policy says).
    pub commits: Counter,
    /// Fsyncs of segment files.
    pub fsyncs: Counter,
    /// Total time spent in those fsyncs.
    pub fsync_duration_seconds: Counter<f64, AtomicU64>,
    /// Groups whose write or fsync failed.
    pub write_failures: Counter,
    /// The segment being written.
    pub segment_current: Gauge,
}

impl WalMetrics {
    /// Registers the counters as `strata_ingester_wal_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "strata_ingester_wal_written_bytes",
            "Bytes written to WAL segment files.",
            self.bytes_written.clone(),
        );
        registry.register(
            "strata_ingester_wal_records_written",
            "Records written to the WAL.",
            self.records_written.clone(),
        );
        registry.register(
            "strata_ingester_wal_appends",
            "Batches appended to the WAL, successfully or not.",
            self.appends.clone(),
        );
        registry.register(
            "strata_ingester_wal_commits",
            "Groups of appends the WAL committed together.",
            self.commits.clone(),
        );
        registry.register(
            "strata_ingester_wal_fsyncs",
            "Fsyncs of WAL segment files.",
            self.fsyncs.clone(),
        );
        registry.register(
            "strata_ingester_wal_fsync_duration_seconds",
            "Time spent fsyncing WAL segment files.",
            self.fsync_duration_seconds.clone(),
        );
        registry.register(
            "strata_ingester_wal_write_failures",
            "Groups of WAL appends whose write or fsync failed.",
            self.write_failures.clone(),
        );
        registry.register(
            "strata_ingester_wal_segment_current",
            "The WAL segment being written.",
            self.segment_current.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_under_the_strata_prefix() {
        let metrics = WalMetrics::default();
        metrics.fsyncs.inc();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        assert!(out.contains("strata_ingester_wal_fsyncs_total 1"), "{out}");
        assert!(out.contains("strata_ingester_wal_fsync_duration_seconds_total"));
    }
}
