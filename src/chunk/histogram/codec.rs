//! Bit-level fields shared by both histogram chunks: varbit integers,
//! varints, delta-of-delta timestamps and XOR'd floats. Writers append to a
//! [`BitWriter`]; readers never panic and leave truncation to the caller's
//! [`BitReader::overrun`] check.

use crate::chunk::bstream::{BitReader, BitWriter};
pub(crate) use crate::chunk::fields::{
    XorField, read_dod, read_uvarint, unzigzag, write_dod, write_uvarint, zigzag,
};
use crate::chunk::fields::{fits_signed, signed_from_bits};

/// Why a field failed to decode; the iterator adds the byte offset.
#[derive(Debug, Clone, PartialEq)]
pub enum Fail {
    Truncated,
    Corrupt(&'static str),
    /// The layout decoded but fails validation.
    InvalidLayout(super::HistogramError),
}

impl From<&'static str> for Fail {
    fn from(reason: &'static str) -> Fail {
        Fail::Corrupt(reason)
    }
}

/// The `n` low-order bits set, `n` in 1..=63.
#[inline]
fn mask(n: u32) -> u64 {
    (1u64 << n) - 1
}

/// Value widths of the varbit buckets after the 1-bit zero; bucket `k`
/// (1..=7) has a prefix of `k` ones and a zero, bucket 8 eight ones and a
/// full 64-bit word.
const VARBIT_WIDTHS: [u32; 7] = [3, 6, 9, 12, 18, 25, 56];

/// Writes the `k`-th bucket's prefix and `n` value bits in one go (at most
/// 8 + 56 = 64 bits).
#[inline]
fn write_bucket(w: &mut BitWriter, k: u32, n: u32, value: u64) {
    let prefix = mask(k) << 1; // k ones, then a zero
    w.write_bits((prefix << n) | (value & mask(n)), k + 1 + n);
}

/// A signed integer in the varbit code (see the module docs).
#[inline]
pub fn write_varbit_int(w: &mut BitWriter, v: i64) {
    if v == 0 {
        w.write_bit(false);
        return;
    }
    for (k, n) in (1..).zip(VARBIT_WIDTHS) {
        if fits_signed(v, n) {
            write_bucket(w, k, n, v as u64);
            return;
        }
    }
    w.write_bits(0xff, 8);
    w.write_bits(v as u64, 64);
}

#[inline]
pub fn read_varbit_int(r: &mut BitReader<'_>) -> i64 {
    // Constant widths per arm let the shifts and masks fold.
    match r.read_unary(8) {
        0 => 0,
        1 => signed_from_bits(r.read_bits(3), 3),
        2 => signed_from_bits(r.read_bits(6), 6),
        3 => signed_from_bits(r.read_bits(9), 9),
        4 => signed_from_bits(r.read_bits(12), 12),
        5 => signed_from_bits(r.read_bits(18), 18),
        6 => signed_from_bits(r.read_bits(25), 25),
        7 => signed_from_bits(r.read_bits(56), 56),
        _ => r.read_bits(64) as i64,
    }
}

/// An unsigned integer in the varbit code: the same prefixes, the value in
/// `0 .. 2^n`.
pub fn write_varbit_uint(w: &mut BitWriter, v: u64) {
    if v == 0 {
        w.write_bit(false);
        return;
    }
    for (k, n) in (1..).zip(VARBIT_WIDTHS) {
        if v < 1 << n {
            write_bucket(w, k, n, v);
            return;
        }
    }
    w.write_bits(0xff, 8);
    w.write_bits(v, 64);
}

pub fn read_varbit_uint(r: &mut BitReader<'_>) -> u64 {
    match r.read_unary(8) {
        0 => 0,
        k @ 1..=7 => r.read_bits(VARBIT_WIDTHS[k as usize - 1]),
        _ => r.read_bits(64),
    }
}

/// The histogram chunks' float fields: the shared [`XorField`], except that
/// the first value's window is dropped after it. The first value XOR
/// `+0.0` is the whole number, whose window (from the sign or exponent down)
/// is far wider than later changes need, and a window, once set, is reused
/// as long as changes fit it.
impl XorField {
    #[inline]
    pub fn write(&mut self, w: &mut BitWriter, v: u64, first: bool) {
        self.write_xor(w, v);
        if first {
            self.forget_window();
        }
    }

    #[inline]
    pub fn read(&mut self, r: &mut BitReader<'_>, first: bool) -> Result<u64, Fail> {
        let v = self.read_xor(r)?;
        if first {
            self.forget_window();
        }
        Ok(v)
    }
}

/// One integer field coded as a delta of deltas: the first value as is, the
/// second as its delta, later ones as the change of the delta. Arithmetic
/// wraps, so every `u64` round-trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DodField {
    /// The previous value.
    pub prev: u64,
    delta: u64,
}

impl DodField {
    pub const NEW: DodField = DodField { prev: 0, delta: 0 };

    #[inline]
    pub fn write(&mut self, w: &mut BitWriter, v: u64, first: bool) {
        let delta = if first { 0 } else { v.wrapping_sub(self.prev) };
        let code = if first {
            v
        } else {
            delta.wrapping_sub(self.delta)
        };
        write_varbit_int(w, code as i64);
        self.prev = v;
        self.delta = delta;
    }

    #[inline]
    pub fn read(&mut self, r: &mut BitReader<'_>, first: bool) -> u64 {
        let code = read_varbit_int(r) as u64;
        if first {
            self.prev = code;
            self.delta = 0;
        } else {
            self.delta = self.delta.wrapping_add(code);
            self.prev = self.prev.wrapping_add(self.delta);
        }
        self.prev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varbit_bucket_edges_round_trip_with_expected_sizes() {
        // (value, bits): each bucket's extremes and the first value past them.
        let cases: [(i64, usize); 18] = [
            (0, 1),
            (1, 5),
            (-3, 5),
            (4, 5),
            (-4, 9),
            (5, 9),
            (32, 9),
            (33, 13),
            (-255, 13),
            (2048, 17),
            (2049, 24),
            (131_072, 24),
            (131_073, 32),
            (16_777_216, 32),
            (16_777_217, 64),
            ((1 << 55) - 1, 64),
            (1 << 56, 72),
            (i64::MIN, 72),
        ];
        for (v, bits) in cases {
            let mut w = BitWriter::default();
            write_varbit_int(&mut w, v);
            assert_eq!(w.bit_len(), bits, "varbit int {v}");
            let mut r = BitReader::new(w.bytes(), 0);
            assert_eq!(read_varbit_int(&mut r), v);
            assert!(!r.overrun());
        }
        for (v, bits) in [(0u64, 1), (7, 5), (8, 9), (63, 9), (64, 13), (u64::MAX, 72)] {
            let mut w = BitWriter::default();
            write_varbit_uint(&mut w, v);
            assert_eq!(w.bit_len(), bits, "varbit uint {v}");
            let mut r = BitReader::new(w.bytes(), 0);
            assert_eq!(read_varbit_uint(&mut r), v);
        }
    }

    #[test]
    fn an_xor_field_forgets_its_first_window() {
        let (first, second) = (1000.5f64.to_bits(), 1001.0f64.to_bits());
        let mut w = BitWriter::default();
        let mut f = XorField::NEW;
        f.write(&mut w, first, true);
        let after_first = w.bit_len();
        // 1000.5 ^ +0.0 spans bits 62..=42: '11', 5 + 6 header bits, 21 bits.
        assert_eq!(after_first, 2 + 11 + 21);
        f.write(&mut w, second, false);
        // 1000.5 ^ 1001.0 is bits 43 and 42, inside that window: a new 2-bit
        // window, where reusing the first one would take 2 + 21 bits.
        assert_eq!(w.bit_len() - after_first, 2 + 11 + 2);
        let mut r = BitReader::new(w.bytes(), 0);
        let mut f = XorField::NEW;
        assert_eq!(f.read(&mut r, true), Ok(first));
        assert_eq!(f.read(&mut r, false), Ok(second));
    }

    #[test]
    fn dod_and_xor_fields_round_trip() {
        let values = [0u64, 5, 5, 3, u64::MAX, 1 << 63, 17, 17, 0];
        let mut w = BitWriter::default();
        let mut enc = DodField::NEW;
        let mut xor = XorField::NEW;
        for (i, &v) in values.iter().enumerate() {
            enc.write(&mut w, v, i == 0);
            xor.write(&mut w, v, i == 0);
            write_dod(&mut w, v as i64);
        }
        let mut r = BitReader::new(w.bytes(), 0);
        let mut dec = DodField::NEW;
        let mut xor = XorField::NEW;
        for (i, &v) in values.iter().enumerate() {
            assert_eq!(dec.read(&mut r, i == 0), v);
            assert_eq!(xor.read(&mut r, i == 0), Ok(v));
            assert_eq!(read_dod(&mut r), v as i64);
        }
        assert!(!r.overrun());
    }
}
