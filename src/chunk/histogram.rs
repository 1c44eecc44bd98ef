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
pub use crate::model::histogram::{
    BucketSide, CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, Histogram, HistogramError,
    MAX_EXPONENTIAL_SCHEMA, MIN_EXPONENTIAL_SCHEMA, Span, span_buckets, validate_layout,
};

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

/// The top two bits of the chunk's flags byte hold the first sample's hint.
pub(crate) const HINT_MASK: u8 = 0b1100_0000;

pub(crate) const fn hint_header_bits(hint: CounterResetHint) -> u8 {
    match hint {
        CounterResetHint::Unknown => 0b0000_0000,
        CounterResetHint::CounterReset => 0b1000_0000,
        CounterResetHint::NotCounterReset => 0b0100_0000,
        CounterResetHint::Gauge => 0b1100_0000,
    }
}

pub(crate) const fn hint_from_header_bits(flags: u8) -> CounterResetHint {
    match flags & HINT_MASK {
        0b1000_0000 => CounterResetHint::CounterReset,
        0b0100_0000 => CounterResetHint::NotCounterReset,
        0b1100_0000 => CounterResetHint::Gauge,
        _ => CounterResetHint::Unknown,
    }
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
