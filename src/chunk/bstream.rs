//! Bit streams: an append-only writer over an owned byte buffer and a reader
//! over a borrowed slice. Bits are packed most significant first, so the
//! first bit written is the top bit of the first byte.
//!
//! The writer keeps the unused low-order bits of its last byte at zero, so
//! later writes can OR into it. The reader never panics: reading past the end
//! of its slice returns `None` and leaves the reader in an unspecified (but
//! safe) position.

/// The `n` low-order bits set; `n` may be 0..=64.
#[inline]
fn low_mask(n: u32) -> u64 {
    u64::MAX.checked_shr(64 - n).unwrap_or(0)
}

/// An append-only bit stream that owns its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Unused low-order bits of the last byte, 0..=7.
    free: u32,
}

impl BitWriter {
    /// Continues after `bytes`, whose last byte counts as full.
    pub fn from_vec(bytes: Vec<u8>) -> BitWriter {
        BitWriter { bytes, free: 0 }
    }

    /// The bytes written so far; a partly written last byte is zero-padded.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// In-place access for fixed-size headers; the length cannot change.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Number of bits written (the padding of the last byte excluded).
    pub fn bit_len(&self) -> usize {
        self.bytes.len() * 8 - self.free as usize
    }

    /// Drops everything after the first `bit_len` bits and zeroes the padding
    /// of the new last byte, so writing continues right after bit `bit_len`.
    /// A `bit_len` beyond the current length leaves the stream unchanged.
    pub fn truncate_bits(&mut self, bit_len: usize) {
        if bit_len >= self.bit_len() {
            return;
        }
        self.bytes.truncate(bit_len.div_ceil(8));
        self.free = ((8 - bit_len % 8) % 8) as u32;
        if let Some(last) = self.bytes.last_mut() {
            *last &= !(low_mask(self.free) as u8);
        }
    }

    #[inline]
    pub fn write_bit(&mut self, bit: bool) {
        self.write_bits(bit as u64, 1);
    }

    /// Appends the `nbits` (0..=64) low-order bits of `value`, most
    /// significant first; higher bits of `value` are ignored.
    #[inline]
    pub fn write_bits(&mut self, value: u64, nbits: u32) {
        debug_assert!(nbits <= 64, "write_bits: {nbits} > 64 bits");
        if nbits <= self.free {
            // The common case for 1- and 2-bit fields: fits the last byte.
            self.free -= nbits;
            if let Some(last) = self.bytes.last_mut() {
                *last |= ((value & low_mask(nbits)) << self.free) as u8;
            }
            return;
        }
        self.write_bits_spilling(value, nbits);
    }

    /// `write_bits` when the field needs at least one more byte.
    fn write_bits_spilling(&mut self, value: u64, nbits: u32) {
        let mut n = nbits;
        if self.free > 0 {
            let free = self.free;
            n -= free;
            if let Some(last) = self.bytes.last_mut() {
                *last |= ((value >> n) & low_mask(free)) as u8;
            }
        }
        // Byte-aligned now, with 1..=64 bits of `value` left to write:
        // left-align them, append a whole word (one store, where a
        // variable-length copy would call memmove) and cut it to the bytes
        // the field touches.
        let aligned = value << (64 - n);
        let nbytes = n.div_ceil(8);
        let len = self.bytes.len();
        self.bytes.extend_from_slice(&aligned.to_be_bytes());
        self.bytes.truncate(len + nbytes as usize);
        self.free = nbytes * 8 - n;
    }
}

/// Reads bits from a borrowed slice, 64 at a time under the hood.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte of `data` to load into `buf`.
    pos: usize,
    /// The low `valid` bits are the next bits of the stream, oldest on top.
    buf: u64,
    valid: u32,
}

impl<'a> BitReader<'a> {
    /// A reader positioned at byte `start` of `data` (clamped to its length).
    pub fn new(data: &'a [u8], start: usize) -> BitReader<'a> {
        BitReader {
            data,
            pos: start.min(data.len()),
            buf: 0,
            valid: 0,
        }
    }

    /// Bits consumed since the start of `data` (not of the `start` byte).
    pub fn bit_pos(&self) -> usize {
        self.pos * 8 - self.valid as usize
    }

    /// Loads the next up-to-8 bytes; false at the end of the data. Only
    /// called when the buffer is empty.
    #[inline]
    fn refill(&mut self) -> bool {
        debug_assert_eq!(self.valid, 0);
        let rest = &self.data[self.pos..];
        if let Some(chunk) = rest.first_chunk::<8>() {
            self.buf = u64::from_be_bytes(*chunk);
            self.valid = 64;
            self.pos += 8;
            return true;
        }
        if rest.is_empty() {
            return false;
        }
        self.buf = rest.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b));
        self.valid = 8 * rest.len() as u32;
        self.pos = self.data.len();
        true
    }

    #[inline]
    pub fn read_bit(&mut self) -> Option<bool> {
        if self.valid == 0 && !self.refill() {
            return None;
        }
        self.valid -= 1;
        Some((self.buf >> self.valid) & 1 == 1)
    }

    /// Reads `nbits` (0..=64) bits as the low-order bits of the result.
    #[inline]
    pub fn read_bits(&mut self, nbits: u32) -> Option<u64> {
        debug_assert!(nbits <= 64, "read_bits: {nbits} > 64 bits");
        if nbits <= self.valid {
            self.valid -= nbits;
            // wrapping_shr: nbits = 0 with a full buffer shifts by 64, and the
            // mask is then 0 anyway.
            return Some(self.buf.wrapping_shr(self.valid) & low_mask(nbits));
        }
        // Take what is buffered, then the rest from a fresh load.
        let high_bits = self.valid;
        let high = self.buf & low_mask(high_bits);
        self.valid = 0;
        if !self.refill() {
            return None;
        }
        let low_bits = nbits - high_bits;
        if low_bits > self.valid {
            return None;
        }
        self.valid -= low_bits;
        let low = self.buf.wrapping_shr(self.valid) & low_mask(low_bits);
        // high_bits = 0 when low_bits = 64, so the wrapped shift is harmless.
        Some(high.wrapping_shl(low_bits) | low)
    }

    #[inline]
    pub fn read_byte(&mut self) -> Option<u8> {
        self.read_bits(8).map(|b| b as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_across_byte_and_word_boundaries() {
        let fields: Vec<(u64, u32)> = (0..=64u32)
            .map(|n| (0xdead_beef_cafe_f00d_u64.rotate_left(n), n))
            .chain([(1, 1), (0, 3), (u64::MAX, 64), (5, 3)])
            .collect();
        let mut w = BitWriter::default();
        for &(v, n) in &fields {
            w.write_bits(v, n);
        }
        let total: u32 = fields.iter().map(|&(_, n)| n).sum();
        assert_eq!(w.bit_len(), total as usize);
        assert_eq!(w.bytes().len(), total.div_ceil(8) as usize);

        let mut r = BitReader::new(w.bytes(), 0);
        for &(v, n) in &fields {
            assert_eq!(r.read_bits(n), Some(v & low_mask(n)), "field of {n} bits");
        }
        assert_eq!(r.bit_pos(), total as usize);
    }

    #[test]
    fn msb_first_layout() {
        let mut w = BitWriter::default();
        w.write_bit(true);
        w.write_bits(0b01, 2);
        w.write_bits(0xff, 8);
        assert_eq!(w.bytes(), &[0b1011_1111, 0b1110_0000]);
    }

    #[test]
    fn reads_past_the_end_fail_without_panicking() {
        let data = [0xa5u8, 0x0f, 0xff];
        let mut r = BitReader::new(&data, 1);
        assert_eq!(r.read_bits(4), Some(0));
        assert_eq!(r.read_bits(12), Some(0xfff));
        assert_eq!(r.read_bit(), None);
        assert_eq!(BitReader::new(&data, 0).read_bits(25), None);
        assert_eq!(BitReader::new(&data, 9).read_bit(), None);
        assert_eq!(BitReader::new(&[], 0).read_bits(0), Some(0));
    }

    #[test]
    fn truncate_bits_continues_mid_byte() {
        let mut w = BitWriter::from_vec(vec![0xff, 0xff, 0xff]);
        w.truncate_bits(11);
        assert_eq!(w.bytes(), &[0xff, 0b1110_0000]);
        assert_eq!(w.bit_len(), 11);
        w.write_bits(0b0101_1, 5);
        assert_eq!(w.bytes(), &[0xff, 0b1110_1011]);
        w.write_bit(true);
        assert_eq!(w.bytes(), &[0xff, 0b1110_1011, 0b1000_0000]);
        w.truncate_bits(16);
        assert_eq!(w.bytes(), &[0xff, 0b1110_1011]);
        assert_eq!(w.bit_len(), 16);
    }
}
