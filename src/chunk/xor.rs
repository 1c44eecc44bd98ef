//! The XOR chunk: Gorilla-style delta-of-delta timestamps and XOR'd float
//! values, laid out as described in the [module docs](super).
//!
//! [`XorChunk`] owns the bytes; [`XorAppender`] adds samples at its end and
//! [`XorIterator`] reads them back. Neither allocates per sample. The iterator
//! never panics on corrupt bytes: it stops and records a [`ChunkError`].

use std::iter::FusedIterator;

use super::ChunkError;
use super::bstream::{BitReader, BitWriter};
use super::fields::{XorField, read_dod, read_uvarint, unzigzag, write_dod, write_uvarint, zigzag};

/// Hard cap on samples per chunk: the header's count is a `u16`.
pub const MAX_SAMPLES: usize = u16::MAX as usize;

/// Bytes of the sample-count header.
pub const HEADER_LEN: usize = 2;

/// Initial capacity of a new chunk, as Prometheus's: about 100 samples of a
/// slow, on-time series before the first reallocation.
const INITIAL_CAPACITY: usize = 128;

/// Why a sample failed to decode; the iterator adds the offset.
enum Fail {
    Truncated,
    Corrupt(&'static str),
}

impl From<&'static str> for Fail {
    fn from(reason: &'static str) -> Fail {
        Fail::Corrupt(reason)
    }
}

impl Fail {
    fn at(self, offset: usize) -> ChunkError {
        match self {
            Fail::Truncated => ChunkError::Truncated { offset },
            Fail::Corrupt(reason) => ChunkError::Corrupt { offset, reason },
        }
    }
}

/// What the appender needs to know about the last sample written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tail {
    num: u16,
    t: i64,
    /// Last timestamp delta (wrapping, so any pair of `i64`s round-trips).
    delta: i64,
    /// Last value, and its XOR window.
    value: XorField,
}

impl Tail {
    const EMPTY: Tail = Tail {
        num: 0,
        t: 0,
        delta: 0,
        value: XorField::NEW,
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
        value: it.value,
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
            tail.value.write_xor(stream, v);
            tail.delta = delta;
        }
        tail.t = t;
        tail.value.prev = v;
        tail.num += 1;
        stream.bytes_mut()[..HEADER_LEN].copy_from_slice(&tail.num.to_be_bytes());
        Ok(())
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
    /// Current value, and its XOR window.
    value: XorField,
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
            value: XorField::NEW,
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
                Some((self.t, f64::from_bits(self.value.prev)))
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
        self.current
            .then(|| (self.t, f64::from_bits(self.value.prev)))
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
                self.value = XorField::starting_at(self.reader.read_bits(64));
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
        self.value.read_xor(&mut self.reader)?;
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
