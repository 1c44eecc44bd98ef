//! Bit streams: an append-only writer over an owned byte buffer and a reader
//! over a borrowed slice. Bits are packed most significant first, so the
//! first bit written is the top bit of the first byte.
//!
//! The writer keeps the unused low-order bits of its last byte at zero, so
//! later writes can OR into it. The reader never panics: reading past the end
//! of its slice yields zero bits and sets a sticky flag.

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

    /// Bytes allocated for the buffer.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
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
    #[inline(always)]
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
    #[inline]
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
        // left-align them and append the bytes they touch. With room for a
        // whole word, append all 8 bytes and cut back (one store, where a
        // variable-length copy calls memmove); otherwise append just those
        // bytes, so the buffer grows exactly as it would a byte at a time.
        let word = (value << (64 - n)).to_be_bytes();
        let nbytes = n.div_ceil(8) as usize;
        let len = self.bytes.len();
        if self.bytes.capacity() - len >= word.len() {
            self.bytes.extend_from_slice(&word);
            self.bytes.truncate(len + nbytes);
        } else {
            self.grow_with(&word[..nbytes]);
        }
        self.free = (nbytes * 8) as u32 - n;
    }

    #[cold]
    #[inline(never)]
    fn grow_with(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }
}

/// Reads bits from a borrowed slice, refilling a 64-bit buffer a word at a
/// time.
///
/// Reads past the end of the data yield zero bits and set a sticky
/// [`overrun`](BitReader::overrun) flag instead of failing one by one, so a
/// decoder reads a whole record branch-free and checks the flag once.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// First byte of `data` not yet counted in `valid`.
    pos: usize,
    /// Upcoming bits, left-aligned: the next bit is the top one. Bits below
    /// the top `valid` may already hold the stream's next bits, loaded
    /// ahead; a refill ORs the same bits in again, which is harmless.
    buf: u64,
    valid: u32,
    overrun: bool,
}

impl<'a> BitReader<'a> {
    /// A reader positioned at byte `start` of `data` (clamped to its length).
    pub fn new(data: &'a [u8], start: usize) -> BitReader<'a> {
        BitReader {
            data,
            pos: start.min(data.len()),
            buf: 0,
            valid: 0,
            overrun: false,
        }
    }

    /// Bits consumed since the start of `data` (not of the `start` byte).
    pub fn bit_pos(&self) -> usize {
        self.pos * 8 - self.valid as usize
    }

    /// Whether any read so far went past the end of the data.
    pub fn overrun(&self) -> bool {
        self.overrun
    }

    /// Tops the buffer up to at least 56 valid bits, or to the end of the
    /// data. Needs `valid < 64`.
    #[inline]
    fn refill(&mut self) {
        match self.data[self.pos..].first_chunk::<8>() {
            Some(word) => {
                self.buf |= u64::from_be_bytes(*word) >> self.valid;
                let nbytes = (63 - self.valid) / 8;
                self.pos += nbytes as usize;
                self.valid += nbytes * 8;
            }
            None => self.refill_near_end(),
        }
    }

    #[cold]
    fn refill_near_end(&mut self) {
        while self.valid <= 56 && self.pos < self.data.len() {
            self.buf |= u64::from(self.data[self.pos]) << (56 - self.valid);
            self.pos += 1;
            self.valid += 8;
        }
    }

    #[cold]
    fn overran(&mut self) -> u64 {
        self.overrun = true;
        self.pos = self.data.len();
        self.buf = 0;
        self.valid = 0;
        0
    }

    /// Reads 0..=56 bits.
    #[inline]
    fn read_short(&mut self, nbits: u32) -> u64 {
        debug_assert!(nbits <= 56);
        if self.valid < nbits {
            self.refill();
            if self.valid < nbits {
                return self.overran();
            }
        }
        // Two shifts so that nbits = 0 yields 0 rather than overflowing.
        let bits = (self.buf >> 1) >> (63 - nbits);
        self.buf <<= nbits;
        self.valid -= nbits;
        bits
    }

    #[inline]
    pub fn read_bit(&mut self) -> bool {
        self.read_short(1) == 1
    }

    /// Reads `nbits` (0..=64) bits as the low-order bits of the result.
    #[inline]
    pub fn read_bits(&mut self, nbits: u32) -> u64 {
        debug_assert!(nbits <= 64, "read_bits: {nbits} > 64 bits");
        if nbits <= 56 {
            return self.read_short(nbits);
        }
        let high = self.read_short(nbits - 32);
        (high << 32) | self.read_short(32)
    }

    #[inline]
    pub fn read_byte(&mut self) -> u8 {
        self.read_short(8) as u8
    }

    /// Reads a unary prefix: up to `max` (1..=8) one bits, plus the zero bit
    /// that ends it when there are fewer. Returns the number of ones.
    #[inline]
    pub fn read_unary(&mut self, max: u32) -> u32 {
        debug_assert!((1..=8).contains(&max), "read_unary: max {max}");
        if self.valid < max {
            self.refill();
        }
        if self.valid >= max {
            // Count the ones at once; bits past `max` do not matter.
            let ones = (!self.buf).leading_zeros().min(max);
            let used = (ones + 1).min(max);
            self.buf <<= used;
            self.valid -= used;
            return ones;
        }
        let mut ones = 0;
        while ones < max && self.read_bit() {
            ones += 1;
        }
        ones
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
            assert_eq!(r.read_bits(n), v & low_mask(n), "field of {n} bits");
        }
        assert_eq!(r.bit_pos(), total as usize);
        assert!(!r.overrun());
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
        assert_eq!(r.read_bits(4), 0);
        assert_eq!(r.read_bits(12), 0xfff);
        assert!(!r.overrun());
        assert_eq!(r.read_bits(0), 0);
        assert!(!r.overrun(), "reading nothing at the end is fine");
        assert!(!r.read_bit());
        assert!(r.overrun());
        assert_eq!(r.read_bits(64), 0, "stays overrun");
        assert!(r.overrun());

        let mut r = BitReader::new(&data, 0);
        assert_eq!(r.read_bits(25), 0);
        assert!(r.overrun());
        let mut r = BitReader::new(&data, 9);
        assert_eq!(r.read_unary(8), 0);
        assert!(r.overrun());
        let mut r = BitReader::new(&[], 0);
        assert_eq!(r.read_bits(0), 0);
        assert!(!r.overrun());
    }

    #[test]
    fn unary_prefixes_inside_and_across_buffer_loads() {
        // Prefixes '0', '10', '110', '1110', '1111' (max 4), then '11' (max 2),
        // repeated so some straddle the 64-bit loads.
        let mut w = BitWriter::default();
        let mut want = Vec::new();
        for i in 0..40u32 {
            let ones = i % 5;
            let prefix = if ones < 4 {
                ((1 << ones) - 1) << 1
            } else {
                0b1111
            };
            w.write_bits(prefix, (ones + 1).min(4));
            w.write_bits(0b11, 2);
            w.write_bits(u64::from(i), i % 7);
            want.push(ones);
        }
        let mut r = BitReader::new(w.bytes(), 0);
        for (i, &ones) in want.iter().enumerate() {
            assert_eq!(r.read_unary(4), ones, "prefix {i}");
            assert_eq!(r.read_unary(2), 2);
            assert_eq!(r.read_bits(i as u32 % 7), i as u64 & low_mask(i as u32 % 7));
        }
        assert_eq!(r.bit_pos(), w.bit_len());
        assert!(!r.overrun());
        assert_eq!(BitReader::new(&[0xff], 0).read_unary(8), 8);
        assert_eq!(BitReader::new(&[0xfe], 0).read_unary(8), 7);
        let mut r = BitReader::new(&[0xfe], 0);
        r.read_bits(7);
        assert_eq!(r.read_unary(2), 0, "'0' as the very last bit");
        assert!(!r.overrun());
        let mut r = BitReader::new(&[0xff], 0);
        r.read_bits(7);
        assert_eq!(r.read_unary(2), 1, "a '1' then the end");
        assert!(r.overrun());
    }

    #[test]
    fn truncate_bits_continues_mid_byte() {
        let mut w = BitWriter::from_vec(vec![0xff, 0xff, 0xff]);
        w.truncate_bits(11);
        assert_eq!(w.bytes(), &[0xff, 0b1110_0000]);
        assert_eq!(w.bit_len(), 11);
        w.write_bits(0b01011, 5);
        assert_eq!(w.bytes(), &[0xff, 0b1110_1011]);
        w.write_bit(true);
        assert_eq!(w.bytes(), &[0xff, 0b1110_1011, 0b1000_0000]);
        w.truncate_bits(16);
        assert_eq!(w.bytes(), &[0xff, 0b1110_1011]);
        assert_eq!(w.bit_len(), 16);
    }
}
