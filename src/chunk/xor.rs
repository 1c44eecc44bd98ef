//! The XOR chunk: Gorilla-style delta-of-delta timestamps and XOR'd float
//! values, laid out as described in the [module docs](super).
//!
//! [`XorChunk`] owns the bytes; [`XorAppender`] adds samples at its end and
//! [`XorIterator`] reads them back. Neither allocates per sample. The iterator
//! never panics on corrupt bytes: it stops and records a [`ChunkError`].

use std::iter::FusedIterator;

use super::ChunkError;
use super::bstream::{BitReader, BitWriter};

/// Hard cap on samples per chunk: the header's count is a `u16`.
pub const MAX_SAMPLES: usize = u16::MAX as usize;

/// Bytes of the sample-count header.
pub const HEADER_LEN: usize = 2;

/// Initial capacity of a new chunk, as Prometheus's: about 100 samples of a
/// slow, on-time series before the first reallocation.
const INITIAL_CAPACITY: usize = 128;

/// `leading` before any XOR window exists. Larger than any real leading-zero
/// count (0..=31), so the window-reuse test `lz >= leading` fails on its own.
const NO_WINDOW: u32 = 0xff;

/// Leading zeros are stored in 5 bits.
const MAX_LEADING: u32 = 31;

/// Delta-of-delta buckets after the `dod == 0` one: (prefix, prefix bits,
/// value bits). A value of `n` bits holds `-(2^(n-1) - 1) ..= 2^(n-1)`, the
/// same ranges Prometheus uses, so the bytes match its XOR chunks.
const DOD_BUCKETS: [(u64, u32, u32); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

/// Prefix of the 64-bit delta-of-delta bucket.
const DOD_PREFIX_64: u64 = 0b1111;

/// Whether `dod` fits the `nbits` bucket.
#[inline]
fn dod_fits(dod: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= dod && dod <= half
}

/// Inverse of writing `dod` as its `nbits` low-order bits.
#[inline]
fn dod_from_bits(bits: u64, nbits: u32) -> i64 {
    if bits > 1 << (nbits - 1) {
        bits as i64 - (1i64 << nbits)
    } else {
        bits as i64
    }
}

fn write_uvarint(w: &mut BitWriter, mut x: u64) {
    while x >= 0x80 {
        w.write_bits((x as u8 | 0x80).into(), 8);
        x >>= 7;
    }
    w.write_bits(x, 8);
}

fn zigzag(t: i64) -> u64 {
    ((t << 1) ^ (t >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    (u >> 1) as i64 ^ -((u & 1) as i64)
}

/// Why a sample failed to decode; the iterator adds the offset.
enum Fail {
    Truncated,
    Corrupt(&'static str),
}

impl Fail {
    fn at(self, offset: usize) -> ChunkError {
        match self {
            Fail::Truncated => ChunkError::Truncated { offset },
            Fail::Corrupt(reason) => ChunkError::Corrupt { offset, reason },
        }
    }
}

/// Reads an unsigned varint; past the end of the data it reads zeros, which
/// end it (the caller checks [`BitReader::overrun`]).
fn read_uvarint(r: &mut BitReader<'_>) -> Result<u64, Fail> {
    let mut x = 0u64;
    for i in 0..10 {
        let b = r.read_byte();
        if i == 9 && b > 1 {
            break;
        }
        x |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(x);
        }
    }
    Err(Fail::Corrupt("varint overflows 64 bits"))
}

#[inline]
fn read_dod(r: &mut BitReader<'_>) -> i64 {
    // Constant widths per arm let the shifts and masks fold.
    match r.read_unary(4) {
        0 => 0,
        1 => dod_from_bits(r.read_bits(DOD_BUCKETS[0].2), DOD_BUCKETS[0].2),
        2 => dod_from_bits(r.read_bits(DOD_BUCKETS[1].2), DOD_BUCKETS[1].2),
        3 => dod_from_bits(r.read_bits(DOD_BUCKETS[2].2), DOD_BUCKETS[2].2),
        _ => r.read_bits(64) as i64,
    }
}

/// What the appender needs to know about the last sample written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tail {
    num: u16,
    t: i64,
    /// Last timestamp delta (wrapping, so any pair of `i64`s round-trips).
    delta: i64,
    /// Last value's bits.
    v: u64,
    leading: u32,
    trailing: u32,
}

impl Tail {
    const EMPTY: Tail = Tail {
        num: 0,
        t: 0,
        delta: 0,
        v: 0,
        leading: NO_WINDOW,
        trailing: 0,
    };
}

/// A chunk of float samples in XOR encoding, owning its bytes.
///
/// The bytes are always a well-formed header; the samples after it are
/// checked as they are read (see [`XorIterator::err`]).
#[derive(Debug, Clone)]
pub struct XorChunk {
    stream: BitWriter,
    /// Appender state after the last sample. `None` for a chunk from
    /// [`XorChunk::from_bytes`] until [`XorChunk::appender`] recovers it.
    tail: Option<Tail>,
}

impl Default for XorChunk {
    fn default() -> XorChunk {
        XorChunk::new()
    }
}

impl XorChunk {
    /// An empty chunk.
    pub fn new() -> XorChunk {
        let mut bytes = Vec::with_capacity(INITIAL_CAPACITY);
        bytes.extend_from_slice(&[0; HEADER_LEN]);
        XorChunk {
            stream: BitWriter::from_vec(bytes),
            tail: Some(Tail::EMPTY),
        }
    }

    /// Wraps encoded bytes (from storage or the network). Only the header is
    /// checked here; corrupt sample data surfaces when iterating, or as the
    /// error of the first [`XorAppender::append`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<XorChunk, ChunkError> {
        if bytes.len() < HEADER_LEN {
            return Err(ChunkError::HeaderTooShort { len: bytes.len() });
        }
        Ok(XorChunk {
            stream: BitWriter::from_vec(bytes),
            tail: None,
        })
    }

    /// The encoded chunk: header and samples, zero-padded to a whole byte.
    pub fn bytes(&self) -> &[u8] {
        self.stream.bytes()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.stream.into_bytes()
    }

    /// Bytes allocated for the encoded chunk (at least `bytes().len()`): a
    /// new chunk reserves 128 and the buffer grows as a `Vec` does.
    pub fn capacity(&self) -> usize {
        self.stream.capacity()
    }

    /// The sample count from the header.
    pub fn num_samples(&self) -> usize {
        let b = self.stream.bytes();
        usize::from(u16::from_be_bytes([b[0], b[1]]))
    }

    /// An appender that continues after the existing samples.
    ///
    /// For a chunk built with [`XorChunk::new`] this is O(1). For one from
    /// [`XorChunk::from_bytes`], the first call decodes every sample to
    /// recover the encoder's state (as Prometheus does), drops any bytes after
    /// the last sample, and caches the state for later calls. If the samples
    /// do not decode, every `append` returns the decoding error and the chunk
    /// is left untouched.
    pub fn appender(&mut self) -> XorAppender<'_> {
        let XorChunk { stream, tail } = self;
        let tail = match tail {
            Some(tail) => tail,
            slot @ None => match recover_tail(stream) {
                Ok(recovered) => slot.insert(recovered),
                Err(e) => return XorAppender { state: Err(e) },
            },
        };
        XorAppender {
            state: Ok((stream, tail)),
        }
    }

    pub fn iter(&self) -> XorIterator<'_> {
        XorIterator::new(self.stream.bytes())
    }

    /// Timestamp of the first sample; `None` if the chunk is empty or the
    /// first sample does not decode.
    pub fn first_timestamp(&self) -> Option<i64> {
        self.iter().next().map(|(t, _)| t)
    }

    /// Timestamp of the last sample; `None` if the chunk is empty or any
    /// sample does not decode. O(1) once the appender state is known,
    /// otherwise it decodes the chunk.
    pub fn last_timestamp(&self) -> Option<i64> {
        if let Some(tail) = &self.tail {
            return (tail.num > 0).then_some(tail.t);
        }
        let mut it = self.iter();
        let mut last = None;
        while let Some((t, _)) = it.next() {
            last = Some(t);
        }
        if it.err().is_some() { None } else { last }
    }
}

impl<'a> IntoIterator for &'a XorChunk {
    type Item = (i64, f64);
    type IntoIter = XorIterator<'a>;

    fn into_iter(self) -> XorIterator<'a> {
        self.iter()
    }
}

/// Decodes every sample of `stream` and returns the encoder state after the
/// last one, truncating `stream` to end right after it.
fn recover_tail(stream: &mut BitWriter) -> Result<Tail, ChunkError> {
    let mut it = XorIterator::new(stream.bytes());
    while it.next().is_some() {}
    if let Some(e) = it.err {
        return Err(e);
    }
    let tail = Tail {
        num: it.total,
        t: it.t,
        delta: it.delta,
        v: it.v,
        leading: it.leading,
        trailing: it.trailing,
    };
    let end = it.reader.bit_pos();
    stream.truncate_bits(end);
    Ok(tail)
}

/// Appends samples to a [`XorChunk`]; see [`XorChunk::appender`].
pub struct XorAppender<'a> {
    state: Result<(&'a mut BitWriter, &'a mut Tail), ChunkError>,
}

impl XorAppender<'_> {
    /// Appends a sample. Timestamps must strictly increase: an older or equal
    /// one is refused with [`ChunkError::OutOfOrder`] (the head decides what
    /// to do with those before it gets here). Values are stored bit for bit,
    /// NaN payloads included. Past [`MAX_SAMPLES`] samples it returns
    /// [`ChunkError::Full`]. A refused sample leaves the chunk unchanged.
    pub fn append(&mut self, t: i64, v: f64) -> Result<(), ChunkError> {
        let (stream, tail) = match &mut self.state {
            Ok((stream, tail)) => (&mut **stream, &mut **tail),
            Err(e) => return Err(e.clone()),
        };
        let v = v.to_bits();
        if tail.num == 0 {
            write_uvarint(stream, zigzag(t));
            stream.write_bits(v, 64);
        } else {
            if usize::from(tail.num) >= MAX_SAMPLES {
                return Err(ChunkError::Full);
            }
            if t <= tail.t {
                return Err(ChunkError::OutOfOrder {
                    timestamp: t,
                    last: tail.t,
                });
            }
            let delta = t.wrapping_sub(tail.t);
            if tail.num == 1 {
                write_uvarint(stream, delta as u64);
            } else {
                write_dod(stream, delta.wrapping_sub(tail.delta));
            }
            write_xor(stream, tail, v);
            tail.delta = delta;
        }
        tail.t = t;
        tail.v = v;
        tail.num += 1;
        stream.bytes_mut()[..HEADER_LEN].copy_from_slice(&tail.num.to_be_bytes());
        Ok(())
    }
}

#[inline]
fn write_dod(w: &mut BitWriter, dod: i64) {
    if dod == 0 {
        w.write_bit(false);
        return;
    }
    for (prefix, prefix_bits, nbits) in DOD_BUCKETS {
        if dod_fits(dod, nbits) {
            // Prefix and value in one write (at most 24 bits).
            let value = (dod as u64) & ((1 << nbits) - 1);
            w.write_bits((prefix << nbits) | value, prefix_bits + nbits);
            return;
        }
    }
    w.write_bits(DOD_PREFIX_64, 4);
    w.write_bits(dod as u64, 64);
}

#[inline]
fn write_xor(w: &mut BitWriter, tail: &mut Tail, v: u64) {
    let xor = v ^ tail.v;
    if xor == 0 {
        w.write_bit(false);
        return;
    }
    let leading = xor.leading_zeros().min(MAX_LEADING);
    let trailing = xor.trailing_zeros();
    if leading >= tail.leading && trailing >= tail.trailing {
        // '10': the meaningful bits fit the previous window.
        w.write_bits(0b10, 2);
        w.write_bits(xor >> tail.trailing, 64 - tail.leading - tail.trailing);
    } else {
        // '11' + 5 bits leading zeros + 6 bits significant bits (64 as 0).
        let significant = 64 - leading - trailing;
        let header = (0b11 << 11) | (u64::from(leading) << 6) | u64::from(significant & 63);
        w.write_bits(header, 13);
        w.write_bits(xor >> trailing, significant);
        tail.leading = leading;
        tail.trailing = trailing;
    }
}

/// Reads the samples of an encoded XOR chunk, in order.
///
/// Reusable across chunks with [`XorIterator::reset`]. Corrupt or truncated
/// bytes end the iteration early and are reported by [`XorIterator::err`].
#[derive(Debug, Clone)]
pub struct XorIterator<'a> {
    reader: BitReader<'a>,
    total: u16,
    read: u16,
    t: i64,
    delta: i64,
    v: u64,
    leading: u32,
    trailing: u32,
    /// Whether `(t, v)` is a sample the iterator is positioned on.
    current: bool,
    err: Option<ChunkError>,
}

impl<'a> XorIterator<'a> {
    /// An iterator over the encoded chunk `bytes` (as from
    /// [`XorChunk::bytes`]).
    pub fn new(bytes: &'a [u8]) -> XorIterator<'a> {
        let (total, err) = match bytes.first_chunk::<HEADER_LEN>() {
            Some(header) => (u16::from_be_bytes(*header), None),
            None => (0, Some(ChunkError::HeaderTooShort { len: bytes.len() })),
        };
        XorIterator {
            reader: BitReader::new(bytes, HEADER_LEN),
            total,
            read: 0,
            t: 0,
            delta: 0,
            v: 0,
            leading: NO_WINDOW,
            trailing: 0,
            current: false,
            err,
        }
    }

    /// Starts over on another chunk, reusing this iterator.
    pub fn reset(&mut self, bytes: &'a [u8]) {
        *self = XorIterator::new(bytes);
    }

    /// The sample count from the header.
    pub fn num_samples(&self) -> usize {
        usize::from(self.total)
    }

    /// The next sample, or `None` at the end of the chunk or on corrupt
    /// bytes (then [`XorIterator::err`] says which).
    #[allow(
        clippy::should_implement_trait,
        reason = "Iterator is implemented too; the inherent method works without importing it"
    )]
    #[inline]
    pub fn next(&mut self) -> Option<(i64, f64)> {
        if self.read >= self.total || self.err.is_some() {
            self.current = false;
            return None;
        }
        let start = self.reader.bit_pos();
        match self.decode_sample() {
            Ok(()) => {
                self.read += 1;
                self.current = true;
                Some((self.t, f64::from_bits(self.v)))
            }
            Err(fail) => {
                self.err = Some(fail.at(start / 8));
                self.current = false;
                None
            }
        }
    }

    /// Advances to the first sample with a timestamp at or after `t` and
    /// returns it. If the current sample (the last one returned by `next` or
    /// `seek`) already qualifies, it stays put and returns it again, so
    /// seeking never moves backwards.
    pub fn seek(&mut self, t: i64) -> Option<(i64, f64)> {
        if self.current && self.t >= t {
            return self.at();
        }
        while let Some(sample) = self.next() {
            if sample.0 >= t {
                return Some(sample);
            }
        }
        None
    }

    /// The sample the iterator is positioned on, if any.
    pub fn at(&self) -> Option<(i64, f64)> {
        self.current.then(|| (self.t, f64::from_bits(self.v)))
    }

    /// Why iteration stopped before the header's sample count, if it did.
    pub fn err(&self) -> Option<&ChunkError> {
        self.err.as_ref()
    }

    #[inline]
    fn decode_sample(&mut self) -> Result<(), Fail> {
        let decoded = self.decode_fields();
        // Zeros read past the end can look like anything: truncation wins.
        if self.reader.overrun() {
            return Err(Fail::Truncated);
        }
        decoded
    }

    #[inline]
    fn decode_fields(&mut self) -> Result<(), Fail> {
        match self.read {
            0 => {
                self.t = unzigzag(read_uvarint(&mut self.reader)?);
                self.v = self.reader.read_bits(64);
                return Ok(());
            }
            1 => self.delta = read_uvarint(&mut self.reader)? as i64,
            _ => self.delta = self.delta.wrapping_add(read_dod(&mut self.reader)),
        }
        self.t = self.t.wrapping_add(self.delta);
        self.decode_value()
    }

    #[inline]
    fn decode_value(&mut self) -> Result<(), Fail> {
        let r = &mut self.reader;
        match r.read_unary(2) {
            0 => return Ok(()), // '0': same value
            1 => {
                // '10': the current window.
                if self.leading == NO_WINDOW {
                    // None yet: the whole word, as Prometheus reads it.
                    self.leading = 0;
                }
            }
            _ => {
                // '11': a new window.
                let header = r.read_bits(11);
                let leading = (header >> 6) as u32;
                let significant = match (header & 63) as u32 {
                    0 => 64,
                    n => n,
                };
                if leading + significant > 64 {
                    return Err(Fail::Corrupt("XOR window wider than 64 bits"));
                }
                self.leading = leading;
                self.trailing = 64 - leading - significant;
            }
        }
        let bits = r.read_bits(64 - self.leading - self.trailing);
        self.v ^= bits << self.trailing;
        Ok(())
    }
}

impl Iterator for XorIterator<'_> {
    type Item = (i64, f64);

    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        XorIterator::next(self)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.err.is_some() {
            return (0, Some(0));
        }
        (0, Some(usize::from(self.total - self.read)))
    }
}

impl FusedIterator for XorIterator<'_> {}

#[cfg(test)]
mod tests;
