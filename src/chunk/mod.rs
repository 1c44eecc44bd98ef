//! Chunk encodings: compressed runs of one series' samples, the unit the
//! ingester builds in its head and the store keeps.
//!
//! The one encoding so far is [`XorChunk`]: Gorilla-style compression of
//! float samples (Pelkonen et al., VLDB 2015) as Prometheus adapted it for
//! millisecond timestamps in `tsdb/chunkenc/xor.go`. [`bstream`] holds the
//! bit writer and reader it is built on.
//!
//! # XOR chunk format
//!
//! A chunk is a 2-byte header followed by a bit stream, packed most
//! significant bit first and zero-padded to a whole byte:
//!
//! ```text
//! ┌──────────────────────┬──────────────┬──────────────┬─────────────────────┬───────────┬────────────────────┐
//! │ num_samples <2 byte> │ t_0 <varint> │ v_0 <8 byte> │ t_1 - t_0 <uvarint> │ v_1 <xor> │ samples 2.. <bits> │
//! └──────────────────────┴──────────────┴──────────────┴─────────────────────┴───────────┴────────────────────┘
//! ```
//!
//! * `num_samples`: big-endian `u16`, so at most 65 535 samples a chunk
//!   ([`xor::MAX_SAMPLES`]); appending past that fails with
//!   [`ChunkError::Full`] rather than wrapping.
//! * `t_0`: the first timestamp (milliseconds) as a zigzag signed varint,
//!   1 to 10 bytes; `v_0`: the first value's IEEE 754 bits, big-endian.
//! * `t_1 - t_0`: the second timestamp as an unsigned varint delta; then
//!   `v_1` as an XOR field (below). Both varints start on a byte boundary
//!   because everything before them is whole bytes.
//! * Each later sample `i` is a delta-of-delta timestamp field followed by
//!   an XOR value field, with no alignment:
//!   `dod_i = (t_i - t_{i-1}) - (t_{i-1} - t_{i-2})`.
//!
//! Timestamp arithmetic is wrapping 64-bit two's complement, so any `i64`
//! timestamps round-trip, however far apart.
//!
//! ## Delta-of-delta timestamps
//!
//! ```text
//!  dod in                      bits
//!  0                           '0'
//!  [-8191, 8192]               '10'   + 14-bit value
//!  [-65535, 65536]             '110'  + 17-bit value
//!  [-524287, 524288]           '1110' + 20-bit value
//!  anything else               '1111' + 64-bit value
//! ```
//!
//! An `n`-bit value is the low `n` bits of `dod` in two's complement. A
//! reader takes a value above `2^(n-1)` as negative (`value - 2^n`), so
//! `+2^(n-1)` fits a bucket and `-2^(n-1)` goes to the next one. A 15 s
//! scrape with millisecond jitter lands in the '10' bucket; a steady one in
//! '0'.
//!
//! ## XOR values
//!
//! With `x = bits(v_i) ^ bits(v_{i-1})`, and the current window being the
//! `L` leading and `T` trailing zero bits of the last '11' field:
//!
//! ```text
//!  '0'                                      x == 0: the same value, bit for bit
//!  '10' + (64-L-T bits)                     x fits the window: leading_zeros(x) >= L and
//!                                           trailing_zeros(x) >= T; the bits are x >> T
//!  '11' + L' <5 bits> + S <6 bits> + (S bits)
//!                                           a new window: L' = min(leading_zeros(x), 31),
//!                                           T' = trailing_zeros(x), S = 64 - L' - T'
//!                                           (64 stored as 0); the bits are x >> T', and
//!                                           (L', T') becomes the window
//! ```
//!
//! Until the first '11' there is no window and writers never emit '10'; a
//! reader that meets one anyway takes the window as `(0, 0)`, a whole word,
//! as Prometheus does. Values are compared as bits, never as floats, so every
//! NaN payload survives, Prometheus's staleness marker
//! (`0x7ff0000000000002`) included, and `-0.0` stays distinct from `0.0`.
//!
//! ## Example
//!
//! The one sample `(7200000, 12000.0)`:
//!
//! ```text
//!  00 01 | 80 f4 ee 06 | 40 c7 70 00 00 00 00 00
//!  count | zigzag t_0  | bits of 12000.0
//! ```
//!
//! ## Invariants and compatibility
//!
//! * Timestamps strictly increase within a chunk; the appender refuses
//!   anything else ([`ChunkError::OutOfOrder`]).
//! * The header's count, not the byte length, says where samples end.
//!   Readers ignore bytes after the last sample; an appender continuing a
//!   chunk read back from bytes drops them and writes right after the last
//!   sample's final bit.
//! * The layout is that of Prometheus's XOR chunk data (`EncXOR`); the tests
//!   check our bytes against chunks Prometheus's Go code wrote. A chunk's
//!   bytes can therefore go into, or come out of, a Prometheus block as they
//!   are (the block adds the length, encoding byte and CRC around them).
//! * Readers never panic: truncated or corrupt bytes end iteration with a
//!   [`ChunkError`] carrying the byte offset of the sample that failed.

pub mod bstream;
mod fields;
pub mod histogram;
pub mod merge;
pub mod packed;
pub mod prometheus_float_histogram;
pub mod xor;

pub use xor::{MAX_SAMPLES, XorAppender, XorChunk, XorIterator};

/// Why a chunk could not be appended to or read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ChunkError {
    #[error("chunk is full: it holds the maximum of {MAX_SAMPLES} samples; start a new chunk")]
    Full,
    #[error("sample timestamp {timestamp} is not after the chunk's last timestamp {last}")]
    OutOfOrder { timestamp: i64, last: i64 },
    #[error("chunk is {len} bytes, shorter than its 2-byte sample-count header")]
    HeaderTooShort { len: usize },
    #[error("chunk truncated: the sample starting at byte {offset} runs past the end of the data")]
    Truncated { offset: usize },
    #[error("chunk corrupt: the sample starting at byte {offset}: {reason}")]
    Corrupt { offset: usize, reason: &'static str },
}
