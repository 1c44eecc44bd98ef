//! The bit-level field codings every chunk encoding shares: unsigned
//! varints and zigzag, Prometheus's delta-of-delta timestamp buckets, and an
//! XOR'd float field with its leading/trailing-zero window. The XOR chunk
//! and the native-histogram chunks both code their fields with these, so
//! their timestamps and floats are coded identically.

use super::bstream::{BitReader, BitWriter};

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

/// Whether `v` fits a signed `n`-bit bucket: `-(2^(n-1) - 1) ..= 2^(n-1)`.
#[inline]
pub(crate) fn fits_signed(v: i64, n: u32) -> bool {
    let half = 1i64 << (n - 1);
    -(half - 1) <= v && v <= half
}

/// Inverse of keeping the `n` low-order bits of a signed value.
#[inline]
pub(crate) fn signed_from_bits(bits: u64, n: u32) -> i64 {
    if bits > 1 << (n - 1) {
        bits as i64 - (1i64 << n)
    } else {
        bits as i64
    }
}

pub(crate) fn write_uvarint(w: &mut BitWriter, mut x: u64) {
    while x >= 0x80 {
        w.write_bits((x as u8 | 0x80).into(), 8);
        x >>= 7;
    }
    w.write_bits(x, 8);
}

/// Reads an unsigned varint; past the end of the data it reads zeros, which
/// end it (the caller checks [`BitReader::overrun`]). The error says why
/// the bytes are corrupt.
pub(crate) fn read_uvarint(r: &mut BitReader<'_>) -> Result<u64, &'static str> {
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
    Err("varint overflows 64 bits")
}

pub(crate) fn zigzag(t: i64) -> u64 {
    ((t << 1) ^ (t >> 63)) as u64
}

pub(crate) fn unzigzag(u: u64) -> i64 {
    (u >> 1) as i64 ^ -((u & 1) as i64)
}

#[inline]
pub(crate) fn write_dod(w: &mut BitWriter, dod: i64) {
    if dod == 0 {
        w.write_bit(false);
        return;
    }
    for (prefix, prefix_bits, nbits) in DOD_BUCKETS {
        if fits_signed(dod, nbits) {
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
pub(crate) fn read_dod(r: &mut BitReader<'_>) -> i64 {
    // Constant widths per arm let the shifts and masks fold.
    match r.read_unary(4) {
        0 => 0,
        1 => signed_from_bits(r.read_bits(DOD_BUCKETS[0].2), DOD_BUCKETS[0].2),
        2 => signed_from_bits(r.read_bits(DOD_BUCKETS[1].2), DOD_BUCKETS[1].2),
        3 => signed_from_bits(r.read_bits(DOD_BUCKETS[2].2), DOD_BUCKETS[2].2),
        _ => r.read_bits(64) as i64,
    }
}

/// One float field XOR'd against its previous value (as bits), reusing the
/// previous leading/trailing-zero window while changes fit it: `0` same
/// value, `10` + bits in the current window, `11` + 5 bits leading zeros +
/// 6 bits significant-bit count (64 as 0) + bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XorField {
    /// The previous value's bits.
    pub prev: u64,
    leading: u32,
    trailing: u32,
}

impl XorField {
    /// Previous value `+0.0`, no window yet.
    pub const NEW: XorField = XorField {
        prev: 0,
        leading: NO_WINDOW,
        trailing: 0,
    };

    /// Starts from `prev` (written whole), no window yet.
    pub(crate) fn starting_at(prev: u64) -> XorField {
        XorField {
            prev,
            ..XorField::NEW
        }
    }

    /// Forgets the window, so the next change opens its own.
    pub(crate) fn forget_window(&mut self) {
        self.leading = NO_WINDOW;
        self.trailing = 0;
    }

    #[inline]
    pub(crate) fn write_xor(&mut self, w: &mut BitWriter, v: u64) {
        let xor = v ^ self.prev;
        self.prev = v;
        if xor == 0 {
            w.write_bit(false);
            return;
        }
        let leading = xor.leading_zeros().min(MAX_LEADING);
        let trailing = xor.trailing_zeros();
        if leading >= self.leading && trailing >= self.trailing {
            // '10': the meaningful bits fit the previous window.
            w.write_bits(0b10, 2);
            w.write_bits(xor >> self.trailing, 64 - self.leading - self.trailing);
        } else {
            // '11' + 5 bits leading zeros + 6 bits significant bits (64 as 0).
            let significant = 64 - leading - trailing;
            let header = (0b11 << 11) | (u64::from(leading) << 6) | u64::from(significant & 63);
            w.write_bits(header, 13);
            w.write_bits(xor >> trailing, significant);
            self.leading = leading;
            self.trailing = trailing;
        }
    }

    /// Reads the next value; the error says why the bytes are corrupt.
    #[inline]
    pub(crate) fn read_xor(&mut self, r: &mut BitReader<'_>) -> Result<u64, &'static str> {
        match r.read_unary(2) {
            0 => return Ok(self.prev), // '0': same value
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
                    return Err("XOR window wider than 64 bits");
                }
                self.leading = leading;
                self.trailing = 64 - leading - significant;
            }
        }
        let bits = r.read_bits(64 - self.leading - self.trailing);
        self.prev ^= bits << self.trailing;
        Ok(self.prev)
    }
}
