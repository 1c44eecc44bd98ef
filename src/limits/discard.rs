//! Why samples are discarded, and `strata_discarded_samples_total`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::Metrics;

/// The reason label of `strata_discarded_samples_total` (Cortex's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiscardReason {
    RateLimited,
    MissingMetricName,
    InvalidMetricName,
    InvalidLabel,
    EmptyLabelValue,
    DuplicateLabelNames,
    MaxLabelNamesPerSeries,
    LabelNameTooLong,
    LabelValueTooLong,
    TooOld,
    TooFarInFuture,
    OutOfOrder,
    OutOfBounds,
    DuplicateSample,
    PerTenantSeriesLimit,
    PerMetricSeriesLimit,
    InvalidSample,
    NativeHistogramInvalidSchema,
    NativeHistogramBadSpans,
    NativeHistogramBucketCountMismatch,
    NativeHistogramNegativeCount,
    NativeHistogramCountMismatch,
    NativeHistogramInvalidZeroBucket,
    NativeHistogramInvalidCustomBuckets,
    NativeHistogramMixedCounts,
    MaxNativeHistogramBuckets,
    HaReplicaDropped,
    MetadataLimit,
    InvalidMetadata,
    /// Exemplars, not samples: they refuse no sample of their series.
    ExemplarOutOfOrder,
    InvalidExemplar,
    ExemplarWithoutSamples,
}

impl DiscardReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::RateLimited => "rate_limited",
            DiscardReason::MissingMetricName => "missing_metric_name",
            DiscardReason::InvalidMetricName => "metric_name_invalid",
            DiscardReason::InvalidLabel => "label_invalid",
            DiscardReason::EmptyLabelValue => "label_value_empty",
            DiscardReason::DuplicateLabelNames => "duplicate_label_names",
            DiscardReason::MaxLabelNamesPerSeries => "max_label_names_per_series",
            DiscardReason::LabelNameTooLong => "label_name_too_long",
            DiscardReason::LabelValueTooLong => "label_value_too_long",
            DiscardReason::TooOld => "greater_than_max_sample_age",
            DiscardReason::TooFarInFuture => "too_far_in_future",
            DiscardReason::OutOfOrder => "sample_out_of_order",
            DiscardReason::OutOfBounds => "sample_out_of_bounds",
            DiscardReason::DuplicateSample => "new_value_for_timestamp",
            DiscardReason::PerTenantSeriesLimit => "per_tenant_series_limit",
            DiscardReason::PerMetricSeriesLimit => "per_metric_series_limit",
            DiscardReason::InvalidSample => "sample_invalid",
            DiscardReason::NativeHistogramInvalidSchema => "invalid_native_histogram_schema",
            DiscardReason::NativeHistogramBadSpans => "native_histogram_bad_spans",
            DiscardReason::NativeHistogramBucketCountMismatch => {
                "native_histogram_spans_buckets_mismatch"
            }
            DiscardReason::NativeHistogramNegativeCount => "native_histogram_negative_count",
            DiscardReason::NativeHistogramCountMismatch => "native_histogram_count_mismatch",
            DiscardReason::NativeHistogramInvalidZeroBucket => {
                "native_histogram_invalid_zero_bucket"
            }
            DiscardReason::NativeHistogramInvalidCustomBuckets => {
                "native_histogram_invalid_custom_buckets"
            }
            DiscardReason::NativeHistogramMixedCounts => "native_histogram_mixed_counts",
            DiscardReason::MaxNativeHistogramBuckets => "max_native_histogram_buckets",
            DiscardReason::HaReplicaDropped => "ha_replica_dropped",
            DiscardReason::MetadataLimit => "per_metric_metadata_limit",
            DiscardReason::InvalidMetadata => "metadata_invalid",
            DiscardReason::ExemplarOutOfOrder => "exemplar_out_of_order",
            DiscardReason::InvalidExemplar => "exemplar_invalid",
            DiscardReason::ExemplarWithoutSamples => "exemplar_without_samples",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiscardLabels {
    reason: &'static str,
    tenant: String,
}

/// `strata_discarded_samples_total{reason, tenant}`.
#[derive(Clone)]
pub struct DiscardedSamples {
    family: Family<DiscardLabels, Counter>,
}

impl DiscardedSamples {
    pub fn new(metrics: &Metrics) -> DiscardedSamples {
        let family = Family::<DiscardLabels, Counter>::default();
        metrics.with_registry(|registry| {
            registry.register(
                "strata_discarded_samples",
                "Samples refused, by reason and tenant.",
                family.clone(),
            )
        });
        DiscardedSamples { family }
    }

    pub fn add(&self, tenant: &str, reason: DiscardReason, count: u64) {
        if count == 0 {
            return;
        }
        self.family
            .get_or_create(&DiscardLabels {
                reason: reason.as_str(),
                tenant: tenant.to_string(),
            })
            .inc_by(count);
    }

    pub fn get(&self, tenant: &str, reason: DiscardReason) -> u64 {
        self.family
            .get_or_create(&DiscardLabels {
                reason: reason.as_str(),
                tenant: tenant.to_string(),
            })
            .get()
    }
}
