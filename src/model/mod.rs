//! The data model shared by every component: label sets, matchers,
//! samples and series fingerprints.

pub mod exponential_bounds;
pub mod float_histogram;
pub mod histogram;
pub mod histogram_format;
pub mod histogram_kahan;
mod histogram_trim;
pub mod labels;
pub mod matchers;

pub use labels::{
    Label, Labels, METRIC_NAME, describe_pairs, fingerprint, fingerprint_pairs, is_metadata_label,
    shard_token,
};
pub use matchers::{MatchOp, Matcher, MatcherError};

/// One float sample: milliseconds since the Unix epoch and a value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub t: i64,
    pub v: f64,
}

/// One native histogram sample: milliseconds since the Unix epoch and a
/// float histogram (integer histograms are converted on read).
#[derive(Clone, Debug, PartialEq)]
pub struct HPoint {
    pub t: i64,
    pub h: histogram::FloatHistogram,
}

/// Prometheus's staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is the staleness marker (compared bitwise).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
