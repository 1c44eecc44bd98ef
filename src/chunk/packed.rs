//! The store's float chunk encoding: decimal values and bit-packed deltas.
//!
//! A chunk in the store is written once and read many times, never appended
//! to, so its encoding may look at all of its samples before writing the
//! first bit. Gorilla's XOR ([`super::xor`]) cannot: it pays for a value's
//! changed mantissa bits, which for a decimal such as `21.37` are nearly all
//! 52 of them. This encoding instead writes
//!
//! - each value as an integer `m` with `v == m / 10^e` exactly, for one
//!   decimal exponent `e` per chunk (0 for integer-valued series such as
//!   counters and byte gauges), so `21.37` is `2137` with `e = 2`;
//! - timestamps and integers as deltas from their predecessor, divided by
//!   the deltas' greatest common divisor (4096 for page-sized memory gauges,
//!   the scrape interval for timestamps);
//! - the deltas in blocks of 64, each as a frame of reference (the block's
//!   minimum) plus just as many bits per delta as the block's range needs;
//!   a block of equal deltas (a steady scrape interval, a constant value)
//!   costs about 16 bits, and a block of mostly zero deltas (a gauge that
//!   changes now and then) stores a bitmap and only its non-zero deltas.
//!
//! Values that are no such decimal — NaN (Prometheus's staleness marker
//! among them, with its payload), infinities, `-0.0`, or a float with more
//! than 15 decimals — are exceptions, stored with their 64 bits; the
//! integer sequence repeats the previous value at their place. Every value
//! round-trips bit for bit. The flusher keeps a chunk's XOR encoding when
//! that is smaller (a series of arbitrary floats).
//!
//! # Format
//!
//! One bit stream, most significant bit first, zero-padded to a byte.
//! `varbits(x)` is a 7-bit length `L` (0..=64) followed by the `L` low bits
//! of the unsigned `x`; signed integers are zigzag-encoded first.
//!
//! ```text
//! chunk:    varbits(n) · varbits(zigzag t_0) · deltas(t, n-1)
//!           · e <4 bits> · varbits(zigzag m_0) · deltas(m, n-1)
//!           · varbits(exception count) · count × (varbits(position gap) · value <64 bits>)
//! deltas:   varbits(g)                g = gcd of the deltas' magnitudes; 0: every delta is 0, nothing follows
//!           · '1' · varbits(zigzag d/g) every delta is d (a steady scrape interval)
//!           | '0' · blocks
//! block:    up to 64 deltas d/g, each block:
//!           '00' · varbits(zigzag min)                      every delta equals min
//!           '01' · varbits(zigzag min) · w <7 bits> · count × (d/g - min <w bits>)
//!           '10' · varbits(zigzag min) · w <7 bits> · count × (bit: d ≠ 0) · per non-zero d: (d/g - min <w bits>)
//! ```
//!
//! Differences are wrapping 64-bit two's complement, so any timestamps and
//! any 64-bit `m` round-trip. Readers never panic: corrupt or truncated
//! bytes give a [`ChunkError`].

use super::bstream::{BitReader, BitWriter};
use super::{ChunkError, MAX_SAMPLES, XorIterator};
use crate::model::Sample;

/// Deltas per block.
const BLOCK: usize = 64;
/// The largest decimal exponent tried: `10^15 < 2^53`.
const MAX_DECIMALS: u32 = 15;
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

const MODE_CONSTANT: u64 = 0;
const MODE_DENSE: u64 = 1;
const MODE_SPARSE: u64 = 2;

/// Encodes sorted samples (strictly increasing timestamps, at most
/// [`MAX_SAMPLES`]).
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    let mut w = BitWriter::from_vec(Vec::with_capacity(samples.len() + 32));
    write_varbits(&mut w, samples.len() as u64);
    let Some(first) = samples.first() else {
        return w.into_bytes();
    };
    write_varbits(&mut w, zigzag(first.t));
    let deltas: Vec<i64> = samples
        .windows(2)
        .map(|p| p[1].t.wrapping_sub(p[0].t))
        .collect();
    write_deltas(&mut w, &deltas);

    let e = decimal_exponent(samples);
    let mut ints = Vec::with_capacity(samples.len());
    let mut exceptions = Vec::new();
    let mut last = 0i64;
    for (i, s) in samples.iter().enumerate() {
        match to_decimal(s.v, e) {
            Some(m) => last = m,
            None => exceptions.push((i, s.v.to_bits())),
        }
        ints.push(last);
    }
    w.write_bits(u64::from(e), 4);
    write_varbits(&mut w, zigzag(ints[0]));
    let deltas: Vec<i64> = ints.windows(2).map(|p| p[1].wrapping_sub(p[0])).collect();
    write_deltas(&mut w, &deltas);
    write_varbits(&mut w, exceptions.len() as u64);
    let mut previous = 0;
    for (i, bits) in exceptions {
        write_varbits(&mut w, (i - previous) as u64);
        w.write_bits(bits, 64);
        previous = i;
    }
    w.into_bytes()
}

/// Re-encodes an XOR chunk's samples.
pub fn from_xor(xor: &[u8]) -> Result<Vec<u8>, ChunkError> {
    Ok(encode(&xor_samples(xor)?))
}

/// Every sample of an XOR chunk.
pub fn xor_samples(xor: &[u8]) -> Result<Vec<Sample>, ChunkError> {
    let mut it = XorIterator::new(xor);
    let mut samples = Vec::with_capacity(it.num_samples());
    while let Some((t, v)) = it.next() {
        samples.push(Sample { t, v });
    }
    match it.err() {
        Some(e) => Err(e.clone()),
        None => Ok(samples),
    }
}

/// The number of samples, from the header alone.
pub fn num_samples(data: &[u8]) -> usize {
    let mut r = BitReader::new(data, 0);
    let n = read_varbits(&mut r);
    if r.overrun() { 0 } else { n as usize }
}

/// Decodes every sample.
pub fn decode(data: &[u8]) -> Result<Vec<Sample>, ChunkError> {
    decode_range(data, i64::MIN, i64::MAX)
}

/// The samples inside `[mint, maxt]`. Every timestamp is decoded (they
/// say where the wanted samples are), values only up to the last wanted
/// one: the blocks after it are skipped by their headers. A query of an
/// hour of a day-long chunk stops there.
pub fn decode_range(data: &[u8], mint: i64, maxt: i64) -> Result<Vec<Sample>, ChunkError> {
    let mut r = BitReader::new(data, 0);
    let n = read_varbits(&mut r);
    if r.overrun() {
        return Err(ChunkError::HeaderTooShort { len: data.len() });
    }
    if n > MAX_SAMPLES as u64 {
        return Err(corrupt(&r, "sample count above the chunk maximum"));
    }
    let n = n as usize;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut samples = vec![Sample { t: 0, v: 0.0 }; n];
    let mut scratch = vec![0i64; n - 1];
    let mut t = unzigzag(read_varbits(&mut r));
    read_deltas(&mut r, &mut scratch, n - 1)?;
    samples[0].t = t;
    for (s, d) in samples[1..].iter_mut().zip(&scratch) {
        t = t.wrapping_add(*d);
        s.t = t;
    }
    if samples.windows(2).any(|p| p[1].t <= p[0].t) {
        return Err(corrupt(&r, "timestamps do not increase"));
    }
    let lo = samples.partition_point(|s| s.t < mint);
    let hi = samples.partition_point(|s| s.t <= maxt);

    let e = r.read_bits(4) as u32;
    if e > MAX_DECIMALS {
        return Err(corrupt(&r, "decimal exponent above 15"));
    }
    let scale = POW10[e as usize];
    let mut m = unzigzag(read_varbits(&mut r));
    // Value deltas up to the last wanted sample.
    read_deltas(&mut r, &mut scratch, hi.saturating_sub(1))?;
    if hi > 0 {
        samples[0].v = m as f64 / scale;
        for (s, d) in samples[1..hi].iter_mut().zip(&scratch) {
            m = m.wrapping_add(*d);
            s.v = m as f64 / scale;
        }
    }

    let count = read_varbits(&mut r);
    if count > n as u64 {
        return Err(corrupt(&r, "more exceptions than samples"));
    }
    let mut position = 0u64;
    for _ in 0..count {
        position = position.saturating_add(read_varbits(&mut r));
        let bits = r.read_bits(64);
        if position >= n as u64 {
            return Err(corrupt(&r, "exception past the last sample"));
        }
        if position < hi as u64 {
            samples[position as usize].v = f64::from_bits(bits);
        }
    }
    if r.overrun() {
        return Err(ChunkError::Truncated { offset: data.len() });
    }
    samples.truncate(hi);
    samples.drain(..lo);
    Ok(samples)
}

fn corrupt(r: &BitReader<'_>, reason: &'static str) -> ChunkError {
    ChunkError::Corrupt {
        offset: r.bit_pos() / 8,
        reason,
    }
}

/// The smallest exponent at which every value that is a decimal of at most
/// [`MAX_DECIMALS`] places is one (values that fit no exponent become
/// exceptions and do not count).
fn decimal_exponent(samples: &[Sample]) -> u32 {
    let mut e = 0;
    for s in samples {
        if to_decimal(s.v, e).is_some() {
            continue;
        }
        if let Some(fit) = (e + 1..=MAX_DECIMALS).find(|&x| to_decimal(s.v, x).is_some()) {
            e = fit;
        }
    }
    e
}

/// `m` with `m / 10^e` equal to `v` bit for bit, as [`decode`] computes it.
#[inline]
fn to_decimal(v: f64, e: u32) -> Option<i64> {
    let scale = POW10[e as usize];
    let m = (v * scale).round();
    // A finite value inside i64 (2^63); NaN fails the comparison.
    if m.is_nan() || m.abs() >= 9.2e18 {
        return None;
    }
    let m = m as i64;
    ((m as f64 / scale).to_bits() == v.to_bits()).then_some(m)
}

fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

fn unzigzag(x: u64) -> i64 {
    ((x >> 1) as i64) ^ -((x & 1) as i64)
}

fn bit_width(x: u64) -> u32 {
    64 - x.leading_zeros()
}

fn write_varbits(w: &mut BitWriter, x: u64) {
    let len = bit_width(x);
    w.write_bits(u64::from(len), 7);
    w.write_bits(x, len);
}

fn read_varbits(r: &mut BitReader<'_>) -> u64 {
    let len = r.read_bits(7) as u32;
    // A corrupt length reads as 64 bits; the caller's range checks and the
    // overrun flag catch what follows.
    r.read_bits(len.min(64))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn write_deltas(w: &mut BitWriter, deltas: &[i64]) {
    let mut g = deltas.iter().fold(0, |g, d| gcd(g, d.unsigned_abs()));
    if g > i64::MAX as u64 {
        // 2^63: every delta is 0 or i64::MIN, which no divisor helps.
        g = 1;
    }
    write_varbits(w, g);
    if g == 0 {
        return;
    }
    // Dividing by a magnitude keeps the sign; `i64::MIN / 1` is the one
    // quotient that could overflow, and `g == 1` skips the division.
    let scaled: Vec<i64> = if g == 1 {
        deltas.to_vec()
    } else {
        deltas.iter().map(|d| d / g as i64).collect()
    };
    if scaled.iter().all(|&d| d == scaled[0]) {
        w.write_bit(true);
        write_varbits(w, zigzag(scaled[0]));
        return;
    }
    w.write_bit(false);
    for block in scaled.chunks(BLOCK) {
        write_block(w, block);
    }
}

fn write_block(w: &mut BitWriter, block: &[i64]) {
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    let mut nonzero = 0u64;
    for &d in block {
        min = min.min(d);
        max = max.max(d);
        nonzero += u64::from(d != 0);
    }
    let width = bit_width(max.wrapping_sub(min) as u64);
    if width == 0 {
        w.write_bits(MODE_CONSTANT, 2);
        write_varbits(w, zigzag(min));
        return;
    }
    let n = block.len() as u64;
    let sparse = n + nonzero * u64::from(width) < n * u64::from(width);
    w.write_bits(if sparse { MODE_SPARSE } else { MODE_DENSE }, 2);
    write_varbits(w, zigzag(min));
    w.write_bits(u64::from(width), 7);
    if sparse {
        for &d in block {
            w.write_bit(d != 0);
        }
        for &d in block.iter().filter(|&&d| d != 0) {
            w.write_bits(d.wrapping_sub(min) as u64, width);
        }
    } else {
        for &d in block {
            w.write_bits(d.wrapping_sub(min) as u64, width);
        }
    }
}

/// Reads a delta section into `out`, decoding its first `wanted` deltas
/// (the blocks holding them) and skipping the rest.
fn read_deltas(r: &mut BitReader<'_>, out: &mut [i64], wanted: usize) -> Result<(), ChunkError> {
    let g = read_varbits(r);
    if g == 0 {
        out.fill(0);
        return Ok(());
    }
    if g > i64::MAX as u64 {
        return Err(corrupt(r, "delta divisor out of range"));
    }
    if r.read_bit() {
        out.fill(unzigzag(read_varbits(r)).wrapping_mul(g as i64));
        return Ok(());
    }
    for (i, block) in out.chunks_mut(BLOCK).enumerate() {
        if i * BLOCK >= wanted {
            skip_block(r, block.len())?;
        } else {
            read_block(r, block)?;
            if g != 1 {
                for d in block.iter_mut() {
                    *d = d.wrapping_mul(g as i64);
                }
            }
        }
        if r.overrun() {
            return Err(ChunkError::Truncated {
                offset: r.bit_pos() / 8,
            });
        }
    }
    Ok(())
}

/// Steps over a block of `len` deltas without unpacking them.
fn skip_block(r: &mut BitReader<'_>, len: usize) -> Result<(), ChunkError> {
    let mode = r.read_bits(2);
    read_varbits(r);
    let bits = match mode {
        MODE_CONSTANT => return Ok(()),
        MODE_DENSE | MODE_SPARSE => {
            let width = r.read_bits(7) as u32;
            if width > 64 {
                return Err(corrupt(r, "delta width above 64 bits"));
            }
            let count = if mode == MODE_DENSE {
                len as u32
            } else {
                (r.read_bits(len as u32) << (64 - len)).count_ones()
            };
            count as usize * width as usize
        }
        _ => return Err(corrupt(r, "unknown delta block mode")),
    };
    let mut left = bits;
    while left > 0 {
        let step = left.min(56);
        r.read_bits(step as u32);
        left -= step;
    }
    Ok(())
}

fn read_block(r: &mut BitReader<'_>, block: &mut [i64]) -> Result<(), ChunkError> {
    let mode = r.read_bits(2);
    let min = unzigzag(read_varbits(r));
    match mode {
        MODE_CONSTANT => block.fill(min),
        MODE_DENSE | MODE_SPARSE => {
            let width = r.read_bits(7) as u32;
            if width > 64 {
                return Err(corrupt(r, "delta width above 64 bits"));
            }
            if mode == MODE_DENSE {
                for d in block.iter_mut() {
                    *d = min.wrapping_add(r.read_bits(width) as i64);
                }
            } else {
                let len = block.len();
                // The first delta's bit is the bitmap's highest.
                let bitmap = r.read_bits(len as u32) << (64 - len);
                for (i, d) in block.iter_mut().enumerate() {
                    let set = (bitmap << i) >> 63 == 1;
                    *d = if set {
                        min.wrapping_add(r.read_bits(width) as i64)
                    } else {
                        0
                    };
                }
            }
        }
        _ => return Err(corrupt(r, "unknown delta block mode")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::XorChunk;
    use proptest::prelude::*;

    fn samples(values: &[f64]) -> Vec<Sample> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| Sample {
                t: 1_700_000_000_000 + i as i64 * 15_000,
                v,
            })
            .collect()
    }

    fn assert_round_trip(input: &[Sample]) -> Vec<u8> {
        let bytes = encode(input);
        let output = decode(&bytes).expect("decodes");
        assert_eq!(output.len(), input.len());
        for (a, b) in input.iter().zip(&output) {
            assert_eq!(a.t, b.t);
            assert_eq!(a.v.to_bits(), b.v.to_bits(), "{} vs {}", a.v, b.v);
        }
        assert_eq!(num_samples(&bytes), input.len());
        bytes
    }

    fn xor_len(input: &[Sample]) -> usize {
        let mut chunk = XorChunk::new();
        let mut app = chunk.appender();
        for s in input {
            app.append(s.t, s.v).expect("appends");
        }
        chunk.bytes().len()
    }

    #[test]
    fn empty_and_single() {
        assert!(decode(&encode(&[])).expect("decodes").is_empty());
        assert_round_trip(&samples(&[42.5]));
        assert_round_trip(&[Sample {
            t: i64::MIN,
            v: -0.0,
        }]);
    }

    #[test]
    fn decimals_cost_their_digits_not_their_mantissa() {
        // A temperature with two decimals moving by up to ±0.10 a scrape.
        let mut v = 4000i64;
        let values: Vec<f64> = (0..480)
            .map(|i| {
                v += (i * 7919 % 21) - 10;
                v as f64 / 100.0
            })
            .collect();
        let input = samples(&values);
        let packed = assert_round_trip(&input).len();
        let xor = xor_len(&input);
        // 5 bits a delta, against most of a mantissa.
        assert!(packed * 8 < input.len() * 6, "{packed} bytes");
        assert!(packed * 5 < xor, "{packed} vs {xor}");
    }

    #[test]
    fn steady_scrapes_and_constants_cost_almost_nothing() {
        let input = samples(&[1.0; 480]);
        let bytes = assert_round_trip(&input);
        assert!(bytes.len() < 24, "{} bytes", bytes.len());
    }

    #[test]
    fn sparse_changes_store_only_the_changes() {
        // A memory gauge: pages of 4096 bytes, changing every tenth scrape.
        let mut v = 8_000_000_000i64;
        let values: Vec<f64> = (0..480)
            .map(|i| {
                if i % 10 == 0 {
                    v += (i * 104_729 % 1000 - 500) * 4096;
                }
                v as f64
            })
            .collect();
        let input = samples(&values);
        let packed = assert_round_trip(&input).len();
        assert!(packed < 480 / 8 + 48 * 2 + 64, "{packed} bytes");
    }

    #[test]
    fn exceptions_keep_every_bit() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let input = samples(&[
            1.0,
            stale,
            2.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.1 + 0.2,
            f64::NAN,
            1e300,
            -5e-324,
            3.0,
            stale,
        ]);
        assert_round_trip(&input);
    }

    #[test]
    fn extreme_timestamps_and_integers() {
        let input = vec![
            Sample {
                t: i64::MIN,
                v: i64::MIN as f64,
            },
            Sample { t: -1, v: 9.2e18 },
            Sample { t: 0, v: -9.2e18 },
            Sample {
                t: i64::MAX,
                v: 2f64.powi(53) + 2.0,
            },
        ];
        assert_round_trip(&input);
    }

    #[test]
    fn deltas_of_minus_two_to_the_63() {
        // Wrapping differences of exactly i64::MIN, in time and in value.
        let input = vec![
            Sample {
                t: -(1 << 62),
                v: -4.611_686_018_427_388e18,
            },
            Sample {
                t: 1 << 62,
                v: 4.611_686_018_427_388e18,
            },
        ];
        assert_round_trip(&input);
    }

    #[test]
    fn corrupt_and_truncated_bytes_are_errors() {
        let mut v = 0.0;
        let input = samples(
            &(0..300)
                .map(|i| {
                    v += (i % 13) as f64 * 0.25;
                    v
                })
                .collect::<Vec<_>>(),
        );
        let bytes = encode(&input);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut broken = bytes.clone();
            broken[i] ^= 0x5a;
            // Must not panic; it may decode to other samples.
            let _ = decode(&broken);
        }
        let mut w = BitWriter::from_vec(Vec::new());
        write_varbits(&mut w, MAX_SAMPLES as u64 + 1);
        assert!(matches!(
            decode(&w.into_bytes()),
            Err(ChunkError::Corrupt {
                reason: "sample count above the chunk maximum",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn ranges_decode_as_the_whole_filtered(
            steps in prop::collection::vec((1i64..100_000, 0u64..1_000_000, 0u8..3), 1..600),
            a in 0usize..600,
            b in 0usize..600,
        ) {
            let mut t = 1_700_000_000_000;
            let mut input = Vec::new();
            for (step, x, kind) in steps {
                let v = match kind {
                    0 => x as f64,
                    1 => x as f64 / 100.0,
                    _ => f64::from_bits(0x7ff0_0000_0000_0002 + x),
                };
                input.push(Sample { t, v });
                t += step;
            }
            let bytes = encode(&input);
            let at = |i: usize| input.get(i).map_or(t, |s| s.t);
            let (mint, maxt) = (at(a.min(b)), at(a.max(b)) - (a % 2) as i64);
            let got = decode_range(&bytes, mint, maxt).expect("decodes");
            let want: Vec<&Sample> = input.iter().filter(|s| s.t >= mint && s.t <= maxt).collect();
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                prop_assert_eq!(g.t, w.t);
                prop_assert_eq!(g.v.to_bits(), w.v.to_bits());
            }
        }

        #[test]
        fn any_samples_round_trip(
            start in any::<i64>(),
            steps in prop::collection::vec((1i64..100_000, any::<u64>(), 0u8..4), 0..300),
        ) {
            let mut t = start;
            let mut input = Vec::new();
            for (step, bits, kind) in steps {
                let v = match kind {
                    0 => f64::from_bits(bits),
                    1 => (bits % 1000) as f64,
                    2 => (bits % 100_000) as f64 / 100.0,
                    _ => bits as f64,
                };
                input.push(Sample { t, v });
                match t.checked_add(step) {
                    Some(next) => t = next,
                    None => break,
                }
            }
            assert_round_trip(&input);
        }

        #[test]
        fn any_timestamps_and_integers_round_trip(
            mut times in prop::collection::vec(any::<i64>(), 0..200),
            values in prop::collection::vec(any::<i64>(), 200),
        ) {
            times.sort_unstable();
            times.dedup();
            let input: Vec<Sample> = times
                .iter()
                .zip(&values)
                .map(|(&t, &m)| Sample { t, v: m as f64 })
                .collect();
            assert_round_trip(&input);
        }
    }
}
