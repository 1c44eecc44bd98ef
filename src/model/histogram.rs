//! Native histograms: the integer histograms remote write sends and the
//! float histograms PromQL computes with, their bucket layouts (schema,
//! zero bucket, spans, custom bounds) and their validation. Shared by the
//! distributor (validation), the ingester and chunks (storage) and the
//! PromQL engine (arithmetic).

use std::fmt;

use super::STALE_NAN_BITS;

/// The schema of histograms with custom bucket bounds (NHCB).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;
/// The lowest exponential schema: bucket bounds grow by 2^16.
pub const MIN_EXPONENTIAL_SCHEMA: i32 = -4;
/// The highest exponential schema: bucket bounds grow by 2^(2^-8).
pub const MAX_EXPONENTIAL_SCHEMA: i32 = 8;

/// A run of consecutive buckets. The first span's offset is the index of
/// its first bucket; a later span's is the gap after the previous span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub offset: i32,
    pub length: u32,
}

/// What is known about a counter reset at a histogram, as in Prometheus's
/// `histogram.CounterResetHint` and remote write's `ResetHint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CounterResetHint {
    /// Nothing: a reader compares with the previous histogram.
    #[default]
    Unknown,
    /// The counters were reset since the previous histogram.
    CounterReset,
    /// The counters were not reset since the previous histogram.
    NotCounterReset,
    /// A gauge histogram: counts go up and down, resets do not apply.
    Gauge,
}

/// A native histogram with float counts.
///
/// Buckets hold absolute counts. Bucket `i` of an exponential schema `s`
/// counts observations in `(2^((i-1)/2^s), 2^(i/2^s)]` (negative buckets
/// the mirror image); with [`CUSTOM_BUCKETS_SCHEMA`] bucket `i` counts
/// `(custom_values[i-1], custom_values[i]]`, and the last, index
/// `custom_values.len()`, up to +Inf.
///
/// `PartialEq` compares floats as floats (NaN is unequal to itself); use
/// [`FloatHistogram::bitwise_eq`] for "the same bits".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatHistogram {
    pub counter_reset_hint: CounterResetHint,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    pub positive_spans: Vec<Span>,
    pub negative_spans: Vec<Span>,
    /// Absolute counts, one per bucket the positive spans cover.
    pub positive_buckets: Vec<f64>,
    pub negative_buckets: Vec<f64>,
    /// Upper bounds of the custom buckets (schema -53 only), strictly
    /// increasing, +Inf implied.
    pub custom_values: Vec<f64>,
}

/// A native histogram with integer counts, as remote write sends it: the
/// buckets are deltas, the first bucket of each side absolute and each
/// later one relative to the bucket before it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub counter_reset_hint: CounterResetHint,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub count: u64,
    pub sum: f64,
    pub positive_spans: Vec<Span>,
    pub negative_spans: Vec<Span>,
    /// Count deltas between neighbouring buckets, the first one absolute.
    pub positive_buckets: Vec<i64>,
    pub negative_buckets: Vec<i64>,
    /// Upper bounds of the custom buckets (schema -53 only).
    pub custom_values: Vec<f64>,
}

/// The positive or negative buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketSide {
    Positive,
    Negative,
}

impl fmt::Display for BucketSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BucketSide::Positive => "positive",
            BucketSide::Negative => "negative",
        })
    }
}

/// Why a histogram is not valid.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum HistogramError {
    #[error(
        "schema {schema} is out of range: exponential schemas are -4..=8, custom buckets are -53"
    )]
    SchemaOutOfRange { schema: i32 },
    #[error("zero threshold {threshold} must be a number >= 0")]
    InvalidZeroThreshold { threshold: f64 },
    #[error("{side} span {span} has offset {offset}; only the first span's offset may be negative")]
    NegativeSpanOffset {
        side: BucketSide,
        span: usize,
        offset: i32,
    },
    #[error("{side} spans cover {in_spans} buckets but the histogram has {buckets} {side} buckets")]
    SpanBucketMismatch {
        side: BucketSide,
        in_spans: u64,
        buckets: usize,
    },
    #[error("{field} is negative: {value}")]
    NegativeCount { field: &'static str, value: f64 },
    #[error("{side} bucket {index} has a negative count: {count}")]
    NegativeBucketCount {
        side: BucketSide,
        index: usize,
        count: f64,
    },
    #[error("{side} bucket {index}: the running sum of bucket deltas overflows i64")]
    BucketCountOverflow { side: BucketSide, index: usize },
    #[error(
        "custom bucket bounds given with exponential schema {schema}; only schema -53 has them"
    )]
    UnexpectedCustomValues { schema: i32 },
    #[error(
        "custom bucket bound {index} is {value}: bounds must strictly increase and not be NaN or +Inf"
    )]
    CustomValuesNotIncreasing { index: usize, value: f64 },
    #[error("custom bucket index {index} is out of range: {bounds} bounds allow 0..={bounds}")]
    CustomBucketOutOfRange { index: i64, bounds: usize },
    #[error("histograms with custom buckets have no negative buckets")]
    CustomBucketsNegativeBuckets,
    #[error(
        "histograms with custom buckets have no zero bucket, but the zero threshold is {threshold}"
    )]
    CustomBucketsZeroThreshold { threshold: f64 },
    #[error("histograms with custom buckets have no zero bucket, but the zero count is {count}")]
    CustomBucketsZeroCount { count: f64 },
}

/// Buckets the spans cover.
pub fn span_buckets(spans: &[Span]) -> u64 {
    spans.iter().map(|s| u64::from(s.length)).sum()
}

/// Checks everything about a layout that does not depend on counts: a known
/// schema, a zero threshold that is a number >= 0, only the first span's
/// offset negative, and for custom buckets strictly increasing bounds that
/// cover every bucket, no zero bucket and no negative buckets.
pub fn validate_layout(
    schema: i32,
    zero_threshold: f64,
    positive_spans: &[Span],
    negative_spans: &[Span],
    custom_values: &[f64],
) -> Result<(), HistogramError> {
    let custom = schema == CUSTOM_BUCKETS_SCHEMA;
    if !custom && !(MIN_EXPONENTIAL_SCHEMA..=MAX_EXPONENTIAL_SCHEMA).contains(&schema) {
        return Err(HistogramError::SchemaOutOfRange { schema });
    }
    if zero_threshold.is_nan() || zero_threshold < 0.0 {
        return Err(HistogramError::InvalidZeroThreshold {
            threshold: zero_threshold,
        });
    }
    check_span_offsets(BucketSide::Positive, positive_spans)?;
    check_span_offsets(BucketSide::Negative, negative_spans)?;
    if !custom {
        if !custom_values.is_empty() {
            return Err(HistogramError::UnexpectedCustomValues { schema });
        }
        return Ok(());
    }
    if zero_threshold != 0.0 {
        return Err(HistogramError::CustomBucketsZeroThreshold {
            threshold: zero_threshold,
        });
    }
    if !negative_spans.is_empty() {
        return Err(HistogramError::CustomBucketsNegativeBuckets);
    }
    let mut prev = f64::NEG_INFINITY;
    for (index, &value) in custom_values.iter().enumerate() {
        let increasing = if index == 0 {
            !value.is_nan()
        } else {
            value > prev
        };
        if !increasing || value == f64::INFINITY {
            return Err(HistogramError::CustomValuesNotIncreasing { index, value });
        }
        prev = value;
    }
    // Bucket i counts (custom_values[i-1], custom_values[i]]; index
    // custom_values.len() is the +Inf bucket.
    let bounds = custom_values.len();
    let mut next = 0i64;
    for s in positive_spans {
        let first = next + i64::from(s.offset);
        next = first + i64::from(s.length);
        if s.length == 0 {
            continue;
        }
        let last = next - 1;
        for index in [first, last] {
            if index < 0 || index > bounds as i64 {
                return Err(HistogramError::CustomBucketOutOfRange { index, bounds });
            }
        }
    }
    Ok(())
}

fn check_span_offsets(side: BucketSide, spans: &[Span]) -> Result<(), HistogramError> {
    match spans.iter().enumerate().skip(1).find(|(_, s)| s.offset < 0) {
        Some((span, s)) => Err(HistogramError::NegativeSpanOffset {
            side,
            span,
            offset: s.offset,
        }),
        None => Ok(()),
    }
}

fn check_bucket_count(
    side: BucketSide,
    spans: &[Span],
    buckets: usize,
) -> Result<(), HistogramError> {
    let in_spans = span_buckets(spans);
    if in_spans != buckets as u64 {
        return Err(HistogramError::SpanBucketMismatch {
            side,
            in_spans,
            buckets,
        });
    }
    Ok(())
}

fn is_stale(sum: f64) -> bool {
    sum.to_bits() == STALE_NAN_BITS
}

fn same_floats(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

impl FloatHistogram {
    /// Checks the histogram is well formed: a known schema, a zero
    /// threshold that is a number >= 0, as many buckets as the spans cover,
    /// no negative counts, and for custom buckets strictly increasing finite
    /// bounds covering every bucket, no negative or zero buckets.
    pub fn validate(&self) -> Result<(), HistogramError> {
        validate_layout(
            self.schema,
            self.zero_threshold,
            &self.positive_spans,
            &self.negative_spans,
            &self.custom_values,
        )?;
        check_bucket_count(
            BucketSide::Positive,
            &self.positive_spans,
            self.positive_buckets.len(),
        )?;
        check_bucket_count(
            BucketSide::Negative,
            &self.negative_spans,
            self.negative_buckets.len(),
        )?;
        for (field, value) in [("count", self.count), ("zero count", self.zero_count)] {
            if value < 0.0 {
                return Err(HistogramError::NegativeCount { field, value });
            }
        }
        for (side, buckets) in [
            (BucketSide::Positive, &self.positive_buckets),
            (BucketSide::Negative, &self.negative_buckets),
        ] {
            if let Some((index, &count)) = buckets.iter().enumerate().find(|(_, c)| **c < 0.0) {
                return Err(HistogramError::NegativeBucketCount { side, index, count });
            }
        }
        if self.schema == CUSTOM_BUCKETS_SCHEMA && self.zero_count != 0.0 {
            return Err(HistogramError::CustomBucketsZeroCount {
                count: self.zero_count,
            });
        }
        Ok(())
    }

    /// Whether this is a staleness marker: its sum has the bits of
    /// [`STALE_NAN_BITS`]; nothing else about it matters.
    pub fn is_stale_marker(&self) -> bool {
        is_stale(self.sum)
    }

    /// Equality with floats compared bit for bit (NaN payloads and the sign
    /// of zero count).
    pub fn bitwise_eq(&self, other: &FloatHistogram) -> bool {
        self.counter_reset_hint == other.counter_reset_hint
            && self.schema == other.schema
            && self.zero_threshold.to_bits() == other.zero_threshold.to_bits()
            && self.zero_count.to_bits() == other.zero_count.to_bits()
            && self.count.to_bits() == other.count.to_bits()
            && self.sum.to_bits() == other.sum.to_bits()
            && self.positive_spans == other.positive_spans
            && self.negative_spans == other.negative_spans
            && same_floats(&self.positive_buckets, &other.positive_buckets)
            && same_floats(&self.negative_buckets, &other.negative_buckets)
            && same_floats(&self.custom_values, &other.custom_values)
    }
}

/// Absolute counts from remote write's bucket deltas, wrapping.
pub fn absolute(deltas: &[i64]) -> impl Iterator<Item = i64> + '_ {
    deltas.iter().scan(0i64, |abs, &d| {
        *abs = abs.wrapping_add(d);
        Some(*abs)
    })
}

impl Histogram {
    /// Checks the histogram is well formed, as [`FloatHistogram::validate`]
    /// does; bucket counts are the running sums of the deltas, which must
    /// not go negative or overflow.
    pub fn validate(&self) -> Result<(), HistogramError> {
        validate_layout(
            self.schema,
            self.zero_threshold,
            &self.positive_spans,
            &self.negative_spans,
            &self.custom_values,
        )?;
        check_bucket_count(
            BucketSide::Positive,
            &self.positive_spans,
            self.positive_buckets.len(),
        )?;
        check_bucket_count(
            BucketSide::Negative,
            &self.negative_spans,
            self.negative_buckets.len(),
        )?;
        for (side, deltas) in [
            (BucketSide::Positive, &self.positive_buckets),
            (BucketSide::Negative, &self.negative_buckets),
        ] {
            let mut count = 0i64;
            for (index, &d) in deltas.iter().enumerate() {
                count = count
                    .checked_add(d)
                    .ok_or(HistogramError::BucketCountOverflow { side, index })?;
                if count < 0 {
                    return Err(HistogramError::NegativeBucketCount {
                        side,
                        index,
                        count: count as f64,
                    });
                }
            }
        }
        if self.schema == CUSTOM_BUCKETS_SCHEMA && self.zero_count != 0 {
            return Err(HistogramError::CustomBucketsZeroCount {
                count: self.zero_count as f64,
            });
        }
        Ok(())
    }

    /// The same histogram with float counts and absolute buckets. Counts
    /// above 2^53 round to the nearest float.
    pub fn to_float(&self) -> FloatHistogram {
        FloatHistogram {
            counter_reset_hint: self.counter_reset_hint,
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count as f64,
            count: self.count as f64,
            sum: self.sum,
            positive_spans: self.positive_spans.clone(),
            negative_spans: self.negative_spans.clone(),
            positive_buckets: absolute(&self.positive_buckets).map(|c| c as f64).collect(),
            negative_buckets: absolute(&self.negative_buckets).map(|c| c as f64).collect(),
            custom_values: self.custom_values.clone(),
        }
    }

    /// Whether this is a staleness marker (see
    /// [`FloatHistogram::is_stale_marker`]).
    pub fn is_stale_marker(&self) -> bool {
        is_stale(self.sum)
    }

    /// Equality with floats (sum, zero threshold, custom bounds) compared
    /// bit for bit.
    pub fn bitwise_eq(&self, other: &Histogram) -> bool {
        self.counter_reset_hint == other.counter_reset_hint
            && self.schema == other.schema
            && self.zero_threshold.to_bits() == other.zero_threshold.to_bits()
            && self.zero_count == other.zero_count
            && self.count == other.count
            && self.sum.to_bits() == other.sum.to_bits()
            && self.positive_spans == other.positive_spans
            && self.negative_spans == other.negative_spans
            && self.positive_buckets == other.positive_buckets
            && self.negative_buckets == other.negative_buckets
            && same_floats(&self.custom_values, &other.custom_values)
    }
}

impl From<&Histogram> for FloatHistogram {
    fn from(h: &Histogram) -> FloatHistogram {
        h.to_float()
    }
}

/// A native histogram sample of either kind, as remote write sends them
/// (a series may carry both kinds over time).
#[derive(Debug, Clone, PartialEq)]
pub enum NativeHistogram {
    Int(Histogram),
    Float(FloatHistogram),
}

impl NativeHistogram {
    pub fn validate(&self) -> Result<(), HistogramError> {
        match self {
            NativeHistogram::Int(h) => h.validate(),
            NativeHistogram::Float(h) => h.validate(),
        }
    }

    pub fn is_stale_marker(&self) -> bool {
        match self {
            NativeHistogram::Int(h) => h.is_stale_marker(),
            NativeHistogram::Float(h) => h.is_stale_marker(),
        }
    }

    /// Buckets, positive and negative (the zero bucket not counted), as
    /// Prometheus's `native_histogram_bucket_limit` counts them.
    pub fn bucket_count(&self) -> usize {
        match self {
            NativeHistogram::Int(h) => h.positive_buckets.len() + h.negative_buckets.len(),
            NativeHistogram::Float(h) => h.positive_buckets.len() + h.negative_buckets.len(),
        }
    }

    pub fn to_float(&self) -> FloatHistogram {
        match self {
            NativeHistogram::Int(h) => h.to_float(),
            NativeHistogram::Float(h) => h.clone(),
        }
    }

    /// Equality with floats compared bit for bit; an integer histogram is
    /// never equal to a float one.
    pub fn bitwise_eq(&self, other: &NativeHistogram) -> bool {
        match (self, other) {
            (NativeHistogram::Int(a), NativeHistogram::Int(b)) => a.bitwise_eq(b),
            (NativeHistogram::Float(a), NativeHistogram::Float(b)) => a.bitwise_eq(b),
            _ => false,
        }
    }
}
