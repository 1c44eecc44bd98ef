//! Native histogram chunks: compressed runs of one series' native
//! histograms, in an encoding of our own in the spirit of Prometheus's
//! histogram and float histogram chunks (`tsdb/chunkenc/histogram.go`,
//! `float_histogram.go`).
//!
//! [`HistogramChunk`] holds integer histograms ([`Histogram`], counts as
//! remote write sends them), [`FloatHistogramChunk`] float ones
//! ([`FloatHistogram`], as recording rules produce). A chunk stores the
//! layout (schema, zero threshold, spans, custom bucket bounds) once, before
//! the first sample, and per sample only what moves: timestamp, sum, counts.
//! A sample the chunk cannot take as it is — another layout, a counter
//! reset, a gauge among counters, anything after a staleness marker — is
//! refused with an error saying so ([`HistogramChunkError::starts_new_chunk`]),
//! and the caller cuts a new chunk for it. A bucket appearing is a layout
//! change: we do not rewrite chunks to insert empty buckets as Prometheus
//! does.
//!
//! # Format
//!
//! A 3-byte header, the layout, then the samples, all one bit stream packed
//! most significant bit first and zero-padded to a whole byte:
//!
//! ```text
//! ┌──────────────────────┬────────────────┬───────────────┬─────────────────┬────────────────────┐
//! │ num_samples <2 byte> │ flags <1 byte> │ layout <bits> │ sample_0 <bits> │ samples 1.. <bits> │
//! └──────────────────────┴────────────────┴───────────────┴─────────────────┴────────────────────┘
//! ```
//!
//! * `num_samples`: big-endian `u16`, at most [`MAX_SAMPLES`]; appending
//!   past it fails with [`HistogramChunkError::Full`].
//! * `flags`:
//!
//!   ```text
//!    bit  7 6    5       4 3 2 1 0
//!        ┌─────┬───────┬───────────┐
//!        │hint │ float │ reserved  │   hint: 00 unknown, 10 counter reset,
//!        └─────┴───────┴───────────┘         01 not a counter reset, 11 gauge
//!   ```
//!
//!   The hint is the first sample's [`CounterResetHint`], in the bits
//!   Prometheus's chunk header uses. `float` is set in float histogram
//!   chunks, so neither chunk type decodes the other's bytes. Reserved bits
//!   are zero; a reader refuses a chunk with any set.
//!
//! ## Layout
//!
//! Written with the first sample, starting on a byte boundary:
//!
//! ```text
//! ┌────────────────────────┬─────────────────┬────────────────┬────────────────┬────────────────────────────┐
//! │ zero_threshold <1|9 B> │ schema <varbit> │ positive spans │ negative spans │ custom bounds (schema -53) │
//! └────────────────────────┴─────────────────┴────────────────┴────────────────┴────────────────────────────┘
//!  spans:          n <varbit_uint>, then n × (length <varbit_uint>, offset <varbit>)
//!  custom bounds:  n <varbit_uint>, then n × k <varbit_uint>:
//!                  k ≥ 1 is the bound (k - 1) / 1000, k = 0 is followed by the bound's 64 bits
//! ```
//!
//! The zero threshold is one byte `c`: 0 is `+0.0`, 1..=254 is
//! `2^(c - 244)` (so Prometheus's default 2^-128 is 116, as in its chunks),
//! 255 is followed by the threshold's 64 bits. A thousandths bound is only
//! written as `k` when `(k - 1) / 1000` gives back the very same bits.
//!
//! ## Samples
//!
//! ```text
//! ┌───────────┬───────────┬────────────────┬────────────┬──────────────────────┬──────────────────────┐
//! │ timestamp │ sum <xor> │ count residual │ zero count │ positive buckets × P │ negative buckets × N │
//! └───────────┴───────────┴────────────────┴────────────┴──────────────────────┴──────────────────────┘
//!                         └───────────── absent when the sum is the staleness marker ─────────────────┘
//! ```
//!
//! `P` and `N` are the bucket counts the layout's spans cover. Timestamps
//! are coded exactly as in the XOR chunk (see [the chunk module](super)):
//! `t_0` as a zigzag varint, `t_1 - t_0` as an unsigned varint, later ones as
//! a delta of deltas in the '0' / '10' / '110' / '1110' / '1111' buckets,
//! all wrapping. The sum is an *XOR field*: coded as XOR chunk values are,
//! against the previous sample's sum, with its own window. An XOR field
//! starts from `+0.0` with no window, and forgets the window its first value
//! opened (so the next value opens a new one with '11'): XOR'd with `+0.0`,
//! the first value is its whole bit pattern, a window far wider than later
//! changes need, which the '10' rule would otherwise keep reusing.
//!
//! The other fields are *lanes*, each coded against the same lane of the
//! previous sample:
//!
//! * the zero count, and each bucket's **absolute** count (not the
//!   remote-write deltas between neighbouring buckets: the counts of
//!   neighbours move independently, so their difference moves more);
//! * the count as a residual: `count - (zero_count + Σ buckets)`, wrapping,
//!   in integer chunks; in float chunks `bits(count) ^ bits(s)` where `s` is
//!   `0.0 + zero_count`, then plus each positive and each negative bucket,
//!   in order (IEEE 754 doubles). The count is nearly always that sum, so
//!   the residual stays 0 and costs one bit a sample where the count itself
//!   would cost 10 to 30.
//!
//! In a [`HistogramChunk`] a lane is a delta of deltas: the first sample
//! writes the value, the second its delta, later ones the change of the
//! delta, each as a varbit integer (wrapping `u64` arithmetic, so every
//! count round-trips). In a [`FloatHistogramChunk`] a lane is an XOR field,
//! so the first sample's integral counts take far fewer than 64 bits.
//!
//! ## Varbit integers
//!
//! Prometheus's varbit buckets (`tsdb/chunkenc/varbit.go`); an `n`-bit
//! signed value holds `-(2^(n-1) - 1) ..= 2^(n-1)` in two's complement, an
//! unsigned one `0 .. 2^n`:
//!
//! ```text
//!  prefix       value bits   signed range
//!  '0'          0            0
//!  '10'         3            [-3, 4]
//!  '110'        6            [-31, 32]
//!  '1110'       9            [-255, 256]
//!  '11110'      12           [-2047, 2048]
//!  '111110'     18           [-131071, 131072]
//!  '1111110'    25           [-16777215, 16777216]
//!  '11111110'   56           [-(2^55 - 1), 2^55]
//!  '11111111'   64           anything
//! ```
//!
//! ## Staleness markers
//!
//! A histogram whose sum has the bits of Prometheus's staleness marker
//! ([`STALE_NAN_BITS`]) writes only its timestamp and sum, whatever its
//! layout; a chunk that starts with one has the empty layout (schema 0, no
//! buckets). After a marker a chunk takes only further markers, as in
//! Prometheus. Readers return a marker as an empty histogram with that sum.
//!
//! ## Counter reset hints
//!
//! The first sample's hint goes in the header and reads back as it was
//! written. In a gauge chunk every sample reads back as
//! [`CounterResetHint::Gauge`]; in a counter chunk the later samples read
//! back as [`CounterResetHint::NotCounterReset`], which the appender makes
//! true: it refuses a sample hinted [`CounterResetHint::CounterReset`] or
//! whose count, zero count or any bucket went down
//! ([`HistogramChunkError::CounterReset`]).
//!
//! ## Invariants
//!
//! * Timestamps strictly increase within a chunk.
//! * Every non-stale sample passes [`Histogram::validate`] /
//!   [`FloatHistogram::validate`] and has the chunk's layout, bit for bit;
//!   readers validate the layout they decode, so what they return is valid.
//! * The header's count, not the byte length, says where samples end; an
//!   appender continuing a chunk read back from bytes drops what follows.
//! * Readers never panic and allocate at most a few words per bit of input:
//!   corrupt or truncated bytes end iteration with a typed error carrying
//!   the byte offset of the sample that failed.

mod chunk;
mod codec;
mod lanes;
mod layout;

#[cfg(test)]
mod tests;

use std::fmt;

pub use chunk::{NativeAppender, NativeChunk, NativeIterator};
pub use lanes::HistogramSample;

pub use super::MAX_SAMPLES;
pub use crate::model::STALE_NAN_BITS;

/// A chunk of integer native histograms.
pub type HistogramChunk = NativeChunk<Histogram>;
/// Appends to a [`HistogramChunk`].
pub type HistogramAppender<'a> = NativeAppender<'a, Histogram>;
/// Reads a [`HistogramChunk`].
pub type HistogramIterator<'a> = NativeIterator<'a, Histogram>;
/// A chunk of float native histograms.
pub type FloatHistogramChunk = NativeChunk<FloatHistogram>;
/// Appends to a [`FloatHistogramChunk`].
pub type FloatHistogramAppender<'a> = NativeAppender<'a, FloatHistogram>;
/// Reads a [`FloatHistogramChunk`].
pub type FloatHistogramIterator<'a> = NativeIterator<'a, FloatHistogram>;

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

impl CounterResetHint {
    /// The top two bits of the chunk's flags byte.
    pub(crate) const MASK: u8 = 0b1100_0000;

    pub(crate) const fn header_bits(self) -> u8 {
        match self {
            CounterResetHint::Unknown => 0b0000_0000,
            CounterResetHint::CounterReset => 0b1000_0000,
            CounterResetHint::NotCounterReset => 0b0100_0000,
            CounterResetHint::Gauge => 0b1100_0000,
        }
    }

    pub(crate) const fn from_header_bits(flags: u8) -> CounterResetHint {
        match flags & Self::MASK {
            0b1000_0000 => CounterResetHint::CounterReset,
            0b0100_0000 => CounterResetHint::NotCounterReset,
            0b1100_0000 => CounterResetHint::Gauge,
            _ => CounterResetHint::Unknown,
        }
    }
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

/// How a sample's layout differs from its chunk's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayoutChange {
    Schema { chunk: i32, sample: i32 },
    ZeroThreshold { chunk: f64, sample: f64 },
    PositiveSpans,
    NegativeSpans,
    CustomValues,
}

impl fmt::Display for LayoutChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutChange::Schema { chunk, sample } => {
                write!(f, "schema {sample} where the chunk has {chunk}")
            }
            LayoutChange::ZeroThreshold { chunk, sample } => {
                write!(f, "zero threshold {sample} where the chunk has {chunk}")
            }
            LayoutChange::PositiveSpans => f.write_str("other positive spans than the chunk's"),
            LayoutChange::NegativeSpans => f.write_str("other negative spans than the chunk's"),
            LayoutChange::CustomValues => {
                f.write_str("other custom bucket bounds than the chunk's")
            }
        }
    }
}

/// What went down at a counter reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCause {
    /// The sample was hinted [`CounterResetHint::CounterReset`].
    Hint,
    Count,
    ZeroCount,
    Bucket {
        side: BucketSide,
        index: usize,
    },
}

impl fmt::Display for ResetCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetCause::Hint => f.write_str("the sample is hinted as a counter reset"),
            ResetCause::Count => f.write_str("the count went down"),
            ResetCause::ZeroCount => f.write_str("the zero count went down"),
            ResetCause::Bucket { side, index } => write!(f, "{side} bucket {index} went down"),
        }
    }
}

/// Why a histogram chunk could not be appended to or read.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum HistogramChunkError {
    #[error("chunk is full: it holds the maximum of {MAX_SAMPLES} samples; start a new chunk")]
    Full,
    #[error("sample timestamp {timestamp} is not after the chunk's last timestamp {last}")]
    OutOfOrder { timestamp: i64, last: i64 },
    #[error("invalid histogram: {0}")]
    Invalid(#[from] HistogramError),
    #[error("histogram has {0}; start a new chunk")]
    LayoutChanged(LayoutChange),
    #[error(
        "counter reset ({0}); start a new chunk, its first histogram hinted as a counter reset"
    )]
    CounterReset(ResetCause),
    #[error("{}; start a new chunk", if *chunk_is_gauge {
        "a counter histogram in a chunk of gauge histograms"
    } else {
        "a gauge histogram in a chunk of counter histograms"
    })]
    GaugeMismatch { chunk_is_gauge: bool },
    #[error(
        "the chunk ends with a staleness marker and takes only more of them; start a new chunk"
    )]
    AfterStaleMarker,
    #[error("chunk is {len} bytes, shorter than its 3-byte header")]
    HeaderTooShort { len: usize },
    #[error("chunk holds {} histograms, not {}", kind(*chunk_is_float), kind(!*chunk_is_float))]
    WrongKind { chunk_is_float: bool },
    #[error("chunk truncated: the sample starting at byte {offset} runs past the end of the data")]
    Truncated { offset: usize },
    #[error("chunk corrupt: the sample starting at byte {offset}: {reason}")]
    Corrupt { offset: usize, reason: &'static str },
    #[error("chunk corrupt: its layout at byte {offset} is invalid: {source}")]
    InvalidLayout {
        offset: usize,
        source: HistogramError,
    },
}

fn kind(float: bool) -> &'static str {
    if float { "float" } else { "integer" }
}

impl HistogramChunkError {
    /// Whether the sample is fine but this chunk cannot take it: the caller
    /// should cut a new chunk and append it there. For
    /// [`HistogramChunkError::CounterReset`] the new chunk's first sample
    /// should be hinted [`CounterResetHint::CounterReset`].
    pub fn starts_new_chunk(&self) -> bool {
        matches!(
            self,
            HistogramChunkError::Full
                | HistogramChunkError::LayoutChanged(_)
                | HistogramChunkError::CounterReset(_)
                | HistogramChunkError::GaugeMismatch { .. }
                | HistogramChunkError::AfterStaleMarker
        )
    }
}

fn check_bucket_count(
    side: BucketSide,
    spans: &[Span],
    buckets: usize,
) -> Result<(), HistogramError> {
    let in_spans = layout::span_buckets(spans);
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
        self.layout().validate()?;
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

    fn layout(&self) -> layout::LayoutRef<'_> {
        layout::LayoutRef {
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            positive_spans: &self.positive_spans,
            negative_spans: &self.negative_spans,
            custom_values: &self.custom_values,
        }
    }
}

/// Absolute counts from remote write's bucket deltas, wrapping.
fn absolute(deltas: &[i64]) -> impl Iterator<Item = i64> + '_ {
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
        self.layout().validate()?;
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

    fn layout(&self) -> layout::LayoutRef<'_> {
        layout::LayoutRef {
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            positive_spans: &self.positive_spans,
            negative_spans: &self.negative_spans,
            custom_values: &self.custom_values,
        }
    }
}

impl From<&Histogram> for FloatHistogram {
    fn from(h: &Histogram) -> FloatHistogram {
        h.to_float()
    }
}
