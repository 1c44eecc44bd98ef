//! Per-tenant limits: defaults from the config file, per-tenant overrides
//! from a runtime file that is re-read without restart, the reasons a sample
//! can be discarded, and the token bucket behind the ingestion rate limit.
//!
//! A tenant's limit is the number the operator wrote: the distributor and
//! the ingesters enforce it as written, and `/api/v1/user_limits` (served by
//! the distributor) shows the effective values and where they came from.

mod discard;
mod overrides;
mod rate;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use discard::{DiscardReason, DiscardedSamples};
pub use overrides::{Overrides, OverridesError, RuntimeConfig};
pub use rate::TokenBucket;

/// How label names (and metric names) are validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NameValidation {
    /// Any non-empty UTF-8 name (Prometheus 3's default).
    Utf8,
    /// `[a-zA-Z_][a-zA-Z0-9_]*` for labels, `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names.
    Legacy,
}

/// The limits of one tenant. Zero means "no limit" for counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Samples per second a tenant may push (across all distributors).
    pub ingestion_rate: f64,
    /// Samples a tenant may push in one burst above the rate.
    pub ingestion_burst_size: u64,
    /// Most labels one series may have.
    pub max_label_names_per_series: usize,
    /// Longest label name, in bytes.
    pub max_label_name_length: usize,
    /// Longest label value, in bytes.
    pub max_label_value_length: usize,
    /// How label and metric names are validated: utf8 or legacy.
    pub name_validation: NameValidation,
    /// Refuse samples older than `reject_old_samples_max_age`.
    pub reject_old_samples: bool,
    /// Oldest sample accepted when `reject_old_samples` is on.
    #[serde(with = "humantime_serde")]
    pub reject_old_samples_max_age: Duration,
    /// How far in the future a sample may be.
    #[serde(with = "humantime_serde")]
    pub creation_grace_period: Duration,
    /// Most in-memory series per tenant on one ingester's view of the ring
    /// (0: unlimited).
    pub max_series_per_tenant: usize,
    /// Most in-memory series per metric name (0: unlimited).
    pub max_series_per_metric: usize,
    /// Most metadata entries kept per metric name (0: unlimited).
    pub max_metadata_per_metric: usize,
    /// Size of the tenant's in-memory exemplar buffer in each ingester
    /// (Cortex's name): the newest this many exemplars are kept, older ones
    /// are overwritten (0: exemplars are not stored, as in Cortex).
    pub max_global_exemplars_per_user: usize,
    /// Samples older than the newest one of their series by at most this much
    /// are accepted out of order (0s: none); so are exemplars, as in
    /// Prometheus.
    #[serde(with = "humantime_serde")]
    pub out_of_order_time_window: Duration,
    /// Most buckets (positive + negative) one native histogram sample may
    /// have (0: no limit).
    pub max_native_histogram_buckets: usize,
    /// A native histogram over `max_native_histogram_buckets` has its
    /// resolution reduced (neighbouring buckets merged, schema lowered)
    /// until it fits, instead of being refused; histograms with custom
    /// buckets, or already at the lowest schema, are still refused.
    pub reduce_native_histogram_over_max_buckets: bool,
    /// De-duplicate Prometheus HA pairs (cluster + replica labels).
    pub accept_ha_samples: bool,
    /// Label naming a Prometheus HA pair.
    pub ha_cluster_label: String,
    /// Label naming the replica within an HA pair (dropped before storage).
    pub ha_replica_label: String,
    /// Longest time range a query may cover (0s: no limit).
    #[serde(with = "humantime_serde")]
    pub max_query_length: Duration,
    /// How far back queries may look; older parts of a range are cut off
    /// (0s: no limit).
    #[serde(with = "humantime_serde")]
    pub max_query_lookback: Duration,
    /// Most series one query may fetch (0: no limit).
    pub max_fetched_series_per_query: usize,
    /// How long the tenant's samples are kept: older ones are not
    /// returned, and the table manager deletes tables older than the
    /// longest retention (0s: forever).
    #[serde(with = "humantime_serde")]
    pub retention_period: Duration,
    /// Most samples one query may hold in memory (0: the engine's
    /// querier.engine.max_samples).
    pub max_samples_per_query: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ingestion_rate: 25_000.0,
            ingestion_burst_size: 50_000,
            max_label_names_per_series: 30,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            name_validation: NameValidation::Utf8,
            reject_old_samples: true,
            reject_old_samples_max_age: Duration::from_secs(14 * 24 * 3600),
            creation_grace_period: Duration::from_secs(10 * 60),
            max_series_per_tenant: 5_000_000,
            max_series_per_metric: 50_000,
            max_metadata_per_metric: 10,
            // Prometheus's --storage.tsdb.max-exemplars default; about
            // 100 bytes each plus labels: some 15 MB a tenant when full.
            max_global_exemplars_per_user: 100_000,
            out_of_order_time_window: Duration::ZERO,
            max_native_histogram_buckets: 0,
            reduce_native_histogram_over_max_buckets: true,
            accept_ha_samples: false,
            ha_cluster_label: "cluster".to_string(),
            ha_replica_label: "__replica__".to_string(),
            max_query_length: Duration::ZERO,
            max_query_lookback: Duration::ZERO,
            max_fetched_series_per_query: 0,
            retention_period: Duration::ZERO,
            max_samples_per_query: 0,
        }
    }
}

impl Limits {
    /// The config key an operator raises to lift a limit, for error messages.
    pub fn config_key(field: &str) -> String {
        format!("limits.{field}")
    }
}
