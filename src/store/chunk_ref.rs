//! What names a chunk in the store: its series' fingerprint, its first and
//! last timestamps, the checksum of its bytes and their encoding. Two
//! replicas that cut the same chunk name it the same, which is how a flush
//! recognises a chunk another replica already stored.

/// How a chunk's bytes are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ChunkEncoding {
    /// Float samples, Prometheus's XOR chunk (`chunk::xor`).
    Xor = 1,
    /// Integer native histograms (`chunk::histogram::HistogramChunk`).
    Histogram = 2,
    /// Float native histograms (`chunk::histogram::FloatHistogramChunk`).
    FloatHistogram = 3,
    /// Float samples as decimal integers and bit-packed deltas
    /// (`chunk::packed`), what the flusher writes when it is the smaller.
    Packed = 4,
}

impl ChunkEncoding {
    pub fn from_u8(v: u8) -> Option<ChunkEncoding> {
        match v {
            1 => Some(ChunkEncoding::Xor),
            2 => Some(ChunkEncoding::Histogram),
            3 => Some(ChunkEncoding::FloatHistogram),
            4 => Some(ChunkEncoding::Packed),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    pub fingerprint: u64,
    pub from: i64,
    pub through: i64,
    pub checksum: u32,
    pub encoding: ChunkEncoding,
}

/// Length of [`ChunkRef::range_key`].
pub const RANGE_KEY_LEN: usize = 1 + 8 + 8 + 8 + 4 + 1;

/// Flips the sign bit so that big-endian bytes sort as the signed numbers.
fn ordered(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn unordered(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

impl ChunkRef {
    /// The index range key: `'c'`, through, from, fingerprint, checksum,
    /// encoding. Sorted by `through` first, so a query for chunks ending at
    /// or after `mint` starts its range scan there.
    pub fn range_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(RANGE_KEY_LEN);
        k.push(b'c');
        k.extend_from_slice(&ordered(self.through));
        k.extend_from_slice(&ordered(self.from));
        k.extend_from_slice(&self.fingerprint.to_be_bytes());
        k.extend_from_slice(&self.checksum.to_be_bytes());
        k.push(self.encoding as u8);
        k
    }

    /// The range key prefix of chunks ending at `through` or later, for
    /// `range_start` of an index query.
    pub fn range_start(through: i64) -> Vec<u8> {
        let mut k = Vec::with_capacity(9);
        k.push(b'c');
        k.extend_from_slice(&ordered(through));
        k
    }

    pub fn from_range_key(k: &[u8]) -> Option<ChunkRef> {
        if k.len() != RANGE_KEY_LEN || k[0] != b'c' {
            return None;
        }
        let a8 = |i: usize| -> [u8; 8] {
            let mut a = [0u8; 8];
            a.copy_from_slice(&k[i..i + 8]);
            a
        };
        Some(ChunkRef {
            through: unordered(a8(1)),
            from: unordered(a8(9)),
            fingerprint: u64::from_be_bytes(a8(17)),
            checksum: u32::from_be_bytes([k[25], k[26], k[27], k[28]]),
            encoding: ChunkEncoding::from_u8(k[29])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_keys_round_trip_and_sort_by_through() {
        let a = ChunkRef {
            fingerprint: 7,
            from: -5,
            through: -1,
            checksum: 0xdead_beef,
            encoding: ChunkEncoding::Histogram,
        };
        let b = ChunkRef {
            through: 1_700_000_000_000,
            from: 1_699_999_000_000,
            ..a.clone()
        };
        assert_eq!(ChunkRef::from_range_key(&a.range_key()), Some(a.clone()));
        assert_eq!(ChunkRef::from_range_key(&b.range_key()), Some(b.clone()));
        assert!(a.range_key() < b.range_key());
        assert!(ChunkRef::range_start(0) > a.range_key());
        assert!(ChunkRef::range_start(0) < b.range_key());
        assert_eq!(ChunkRef::from_range_key(b"c123"), None);
    }
}
