//! Tests of the XOR chunk: format details (bucket and window sizes, bytes
//! Prometheus wrote), appender recovery, seek, corrupt input, and property
//! tests for round trips and garbage.

use proptest::prelude::*;

use super::*;

/// Prometheus's staleness marker (`value.StaleNaN`).
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

fn encode(samples: &[(i64, u64)]) -> XorChunk {
    let mut chunk = XorChunk::new();
    let mut app = chunk.appender();
    for &(t, v) in samples {
        app.append(t, f64::from_bits(v)).unwrap();
    }
    chunk
}

fn decode(bytes: &[u8]) -> Vec<(i64, u64)> {
    let mut it = XorIterator::new(bytes);
    let out = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
    assert_eq!(it.err(), None);
    out
}

fn round_trip(samples: &[(i64, u64)]) -> XorChunk {
    let chunk = encode(samples);
    assert_eq!(chunk.num_samples(), samples.len());
    assert_eq!(decode(chunk.bytes()), samples);
    chunk
}

/// Bits the stream grew by for each appended sample.
fn bits_per_sample(samples: &[(i64, u64)]) -> Vec<usize> {
    let mut chunk = XorChunk::new();
    let mut sizes = Vec::new();
    for &(t, v) in samples {
        let before = chunk.stream.bit_len();
        chunk.appender().append(t, f64::from_bits(v)).unwrap();
        sizes.push(chunk.stream.bit_len() - before);
    }
    assert_eq!(decode(chunk.bytes()), samples);
    sizes
}

#[test]
fn empty_chunk() {
    let chunk = XorChunk::new();
    assert_eq!(chunk.bytes(), &[0, 0]);
    assert_eq!(chunk.num_samples(), 0);
    assert_eq!(chunk.first_timestamp(), None);
    assert_eq!(chunk.last_timestamp(), None);
    let mut it = chunk.iter();
    assert_eq!(it.next(), None);
    assert_eq!(it.err(), None);
    assert_eq!(it.seek(i64::MIN), None);

    let reopened = XorChunk::from_bytes(vec![0, 0]).unwrap();
    assert_eq!(reopened.iter().count(), 0);
    assert_eq!(reopened.last_timestamp(), None);
}

/// The bytes Prometheus's Go XOR chunk writes for (7200000, 12000.0)
/// (test vector from SINTEF/rusty-chunkenc, written by Prometheus's
/// `chunkenc`).
#[test]
fn one_sample_matches_prometheus_bytes() {
    let chunk = round_trip(&[(7_200_000, 12000.0f64.to_bits())]);
    let expected = [
        0x00, 0x01, 0x80, 0xf4, 0xee, 0x06, 0x40, 0xc7, 0x70, 0, 0, 0, 0, 0,
    ];
    assert_eq!(chunk.bytes(), expected);
    assert_eq!(chunk.first_timestamp(), Some(7_200_000));
    assert_eq!(chunk.last_timestamp(), Some(7_200_000));
}

/// Ten samples encoded by Prometheus's Go XOR chunk (t = 1234123324 + i,
/// v = 123535.123 + i; SINTEF/rusty-chunkenc's `golang-tests/test.json`,
/// generated with Prometheus's `chunkenc`): we write the same bytes and
/// read them back.
#[test]
fn ten_samples_match_prometheus_bytes() {
    let expected: [u8; 27] = [
        0x00, 0x0a, 0xf8, 0xe8, 0xf9, 0x98, 0x09, 0x40, 0xfe, 0x28, 0xf1, 0xf7, 0xce, 0xd9, 0x17,
        0x01, 0xee, 0x2f, 0xd0, 0x50, 0xd0, 0x51, 0xd0, 0x50, 0xd0, 0x53, 0xc0,
    ];
    let samples: Vec<(i64, u64)> = (0..10)
        .map(|i| (1_234_123_324 + i, (123_535.123 + i as f64).to_bits()))
        .collect();
    assert_eq!(round_trip(&samples).bytes(), expected);
    assert_eq!(decode(&expected), samples);
}

#[test]
fn two_samples() {
    let samples = [(1_000, 1.5f64.to_bits()), (16_000, (-2.25f64).to_bits())];
    let chunk = round_trip(&samples);
    assert_eq!(chunk.first_timestamp(), Some(1_000));
    assert_eq!(chunk.last_timestamp(), Some(16_000));
    let reopened = XorChunk::from_bytes(chunk.bytes().to_vec()).unwrap();
    assert_eq!(reopened.last_timestamp(), Some(16_000));
}

#[test]
fn nans_and_signed_zeros_are_kept_bit_for_bit() {
    let values = [
        STALE_NAN,
        f64::NAN.to_bits(),
        STALE_NAN,
        STALE_NAN,
        0x7ff8_0000_0000_0001,
        0xfff8_0000_0000_0000, // negative quiet NaN
        0.0f64.to_bits(),
        (-0.0f64).to_bits(),
        f64::INFINITY.to_bits(),
        f64::NEG_INFINITY.to_bits(),
        STALE_NAN,
    ];
    let samples: Vec<(i64, u64)> = (0..).step_by(15_000).zip(values).collect();
    round_trip(&samples);
}

#[test]
fn staleness_marker_survives_reopening() {
    let mut chunk = encode(&[(0, 1.0f64.to_bits()), (15_000, STALE_NAN)]);
    let mut reopened = XorChunk::from_bytes(chunk.bytes().to_vec()).unwrap();
    reopened
        .appender()
        .append(30_000, f64::from_bits(STALE_NAN))
        .unwrap();
    chunk
        .appender()
        .append(30_000, f64::from_bits(STALE_NAN))
        .unwrap();
    assert_eq!(reopened.bytes(), chunk.bytes());
    let last = reopened.iter().last().unwrap();
    assert_eq!(last.1.to_bits(), STALE_NAN);
}

#[test]
fn every_timestamp_bucket_and_its_boundaries() {
    // (dod, bits for the timestamp); the value repeats so costs 1 bit.
    let cases: [(i64, usize); 17] = [
        (0, 1),
        (1, 16),
        (-1, 16),
        (8192, 16),
        (-8191, 16),
        (8193, 20),
        (-8192, 20),
        (65_536, 20),
        (-65_535, 20),
        (65_537, 24),
        (-65_536, 24),
        (524_288, 24),
        (-524_287, 24),
        (524_289, 68),
        (-524_288, 68),
        (1 << 40, 68),
        (-(1 << 40), 68),
    ];
    for (dod, bits) in cases {
        // Two samples set the delta; the third carries the dod.
        let delta = 1i64 << 41;
        let samples = [(-7, 0), (-7 + delta, 0), (-7 + 2 * delta + dod, 0)];
        let sizes = bits_per_sample(&samples);
        assert_eq!(sizes[2], bits + 1, "dod {dod}");
    }
}

#[test]
fn negative_and_huge_timestamps() {
    let v = 42.0f64.to_bits();
    let series: [&[i64]; 6] = [
        &[
            -1_700_000_000_000,
            -1_699_999_985_000,
            -1_699_999_970_001,
            -5,
        ],
        &[i64::MIN, i64::MAX],
        &[i64::MIN, i64::MIN + 1, 0, i64::MAX],
        &[i64::MIN, -1, 0, 1, i64::MAX - 1, i64::MAX],
        &[i64::MAX - 2, i64::MAX - 1, i64::MAX],
        &[0, i64::MAX / 2, i64::MAX / 2 + 1, i64::MAX],
    ];
    for ts in series {
        let samples: Vec<(i64, u64)> = ts.iter().map(|&t| (t, v)).collect();
        let chunk = round_trip(&samples);
        assert_eq!(chunk.first_timestamp(), ts.first().copied());
        assert_eq!(chunk.last_timestamp(), ts.last().copied());
    }
}

#[test]
fn every_kind_of_xor_window() {
    // (what, XOR against the previous value, bits for the value). The
    // window (leading, trailing zeros) each case leaves is in comments.
    let cases: [(&str, u64, usize); 10] = [
        ("same value", 0, 1),
        ("first window", 0x0000_0f00_0000_0000, 2 + 11 + 4), // (20, 40)
        ("reuse window", 0x0000_0600_0000_0000, 2 + 4),
        ("fewer leading zeros", 0x0f00_0000_0000_0000, 2 + 11 + 4), // (4, 56)
        ("sign bit only", 1 << 63, 2 + 11 + 1),                     // (0, 63)
        // Over 31 leading zeros are stored as 31.
        ("low bit only", 1, 2 + 11 + 33), // (31, 0)
        ("reuse clamped window", 2, 2 + 33),
        ("64 significant bits", u64::MAX, 2 + 11 + 64), // (0, 0)
        ("reuse full window", 0x8000_0000_0000_0001, 2 + 64),
        ("same again", 0, 1),
    ];
    let mut samples = vec![(0, 1.0f64.to_bits())];
    for (i, &(_, xor, _)) in cases.iter().enumerate() {
        let prev = samples[i].1;
        samples.push((15_000 * (i as i64 + 1), prev ^ xor));
    }
    let sizes = bits_per_sample(&samples);
    assert_eq!(sizes[0], 8 + 64, "1-byte varint timestamp, raw value");
    for (i, &(what, _, bits)) in cases.iter().enumerate() {
        // Sample 1's timestamp is a 2-byte varint delta; later ones '0'.
        let ts_bits = if i == 0 { 16 } else { 1 };
        assert_eq!(sizes[i + 1] - ts_bits, bits, "{what}");
    }
}

#[test]
fn full_at_max_samples() {
    let mut chunk = XorChunk::new();
    let mut app = chunk.appender();
    for i in 0..MAX_SAMPLES as i64 {
        app.append(i * 1000, 1.0).unwrap();
    }
    assert_eq!(app.append(i64::MAX, 1.0), Err(ChunkError::Full));
    let len = chunk.bytes().len();
    assert!(chunk.capacity() >= len);
    assert_eq!(chunk.num_samples(), MAX_SAMPLES);
    assert_eq!(chunk.iter().count(), MAX_SAMPLES);
    assert_eq!(
        chunk.last_timestamp(),
        Some((MAX_SAMPLES as i64 - 1) * 1000)
    );

    let mut reopened = XorChunk::from_bytes(chunk.into_bytes()).unwrap();
    assert_eq!(
        reopened.appender().append(i64::MAX, 1.0),
        Err(ChunkError::Full)
    );
    assert_eq!(reopened.bytes().len(), len);
}

#[test]
fn out_of_order_and_duplicate_timestamps_are_refused() {
    let mut chunk = encode(&[(10, 0), (20, 0)]);
    let before = chunk.bytes().to_vec();
    let mut app = chunk.appender();
    assert_eq!(
        app.append(20, 1.0),
        Err(ChunkError::OutOfOrder {
            timestamp: 20,
            last: 20
        })
    );
    assert!(matches!(
        app.append(5, 1.0),
        Err(ChunkError::OutOfOrder { .. })
    ));
    assert_eq!(chunk.bytes(), before);
    chunk.appender().append(30, 1.0).unwrap();
    assert_eq!(decode(chunk.bytes()).len(), 3);
}

fn gauge_samples(n: usize) -> Vec<(i64, u64)> {
    (0..n)
        .map(|i| {
            let t = 1_700_000_000_000 + 15_000 * i as i64 + (i as i64 * 37) % 50;
            let v = ((i * 7919) % 1000) as f64 / 100.0;
            (t, v.to_bits())
        })
        .collect()
}

#[test]
fn appender_continues_after_from_bytes() {
    let samples = gauge_samples(100);
    let whole = encode(&samples);
    for k in [0, 1, 2, 3, 50, 99] {
        let first = encode(&samples[..k]);
        let mut chunk = XorChunk::from_bytes(first.bytes().to_vec()).unwrap();
        let mut app = chunk.appender();
        for &(t, v) in &samples[k..] {
            app.append(t, f64::from_bits(v)).unwrap();
        }
        assert_eq!(decode(chunk.bytes()), samples, "split at {k}");
        assert_eq!(chunk.bytes(), whole.bytes(), "split at {k}");
    }
}

#[test]
fn appender_drops_bytes_after_the_last_sample() {
    let samples = gauge_samples(100);
    let mut bytes = encode(&samples[..50]).into_bytes();
    bytes.extend_from_slice(&[0xff; 9]);
    let mut chunk = XorChunk::from_bytes(bytes).unwrap();
    assert_eq!(chunk.iter().count(), 50);
    for &(t, v) in &samples[50..] {
        // A fresh appender each time: the recovered state is cached.
        chunk.appender().append(t, f64::from_bits(v)).unwrap();
    }
    assert_eq!(decode(chunk.bytes()), samples);
    assert_eq!(chunk.bytes(), encode(&samples).bytes());
}

#[test]
fn capacity_grows_only_when_the_bytes_need_it() {
    let mut chunk = XorChunk::new();
    assert_eq!(chunk.capacity(), INITIAL_CAPACITY);
    for (t, v) in gauge_samples(60) {
        chunk.appender().append(t, f64::from_bits(v)).unwrap();
        let len = chunk.bytes().len();
        if len <= INITIAL_CAPACITY {
            assert_eq!(chunk.capacity(), INITIAL_CAPACITY, "at {len} bytes");
        }
    }
    assert!(chunk.bytes().len() > INITIAL_CAPACITY);
}

#[test]
fn seek() {
    let samples: Vec<(i64, u64)> = (1..=10).map(|i| (i * 10, i as u64)).collect();
    let chunk = encode(&samples);
    let mut it = chunk.iter();
    assert_eq!(it.at(), None);
    assert_eq!(it.seek(i64::MIN).map(|s| s.0), Some(10));
    assert_eq!(it.seek(10).map(|s| s.0), Some(10), "stays on a match");
    assert_eq!(it.seek(35).map(|s| s.0), Some(40));
    assert_eq!(it.seek(0).map(|s| s.0), Some(40), "never moves back");
    assert_eq!(it.next().map(|s| s.0), Some(50));
    assert_eq!(it.seek(100), Some((100, f64::from_bits(10))));
    assert_eq!(it.seek(101), None);
    assert_eq!(it.seek(0), None, "exhausted");
    assert_eq!(it.at(), None);

    it.reset(chunk.bytes());
    assert_eq!(it.seek(60).map(|s| s.0), Some(60));
    assert_eq!(it.count(), 4);
}

#[test]
fn iterator_reset_reuses_it_across_chunks() {
    let a = encode(&gauge_samples(30));
    let b = encode(&[(5, 1), (6, 2)]);
    let mut it = XorIterator::new(a.bytes());
    assert_eq!(it.num_samples(), 30);
    assert_eq!(it.by_ref().count(), 30);
    it.reset(b.bytes());
    assert_eq!(it.next(), Some((5, f64::from_bits(1))));
    it.reset(&[0]);
    assert_eq!(it.next(), None);
    assert_eq!(it.err(), Some(&ChunkError::HeaderTooShort { len: 1 }));
    it.reset(a.bytes());
    assert_eq!(it.count(), 30);
}

#[test]
fn short_header_is_refused() {
    assert_eq!(
        XorChunk::from_bytes(vec![]).unwrap_err(),
        ChunkError::HeaderTooShort { len: 0 }
    );
    assert_eq!(
        XorChunk::from_bytes(vec![7]).unwrap_err(),
        ChunkError::HeaderTooShort { len: 1 }
    );
}

#[test]
fn truncated_chunk_yields_its_prefix_then_an_error() {
    let samples = gauge_samples(20);
    let bytes = encode(&samples).into_bytes();
    let cut = bytes.len() - 6;
    let mut chunk = XorChunk::from_bytes(bytes[..cut].to_vec()).unwrap();
    let mut it = chunk.iter();
    let prefix: Vec<(i64, u64)> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
    assert!(prefix.len() < samples.len());
    assert_eq!(prefix, samples[..prefix.len()]);
    let Some(&ChunkError::Truncated { offset }) = it.err() else {
        panic!("want Truncated, got {:?}", it.err());
    };
    assert!(offset > HEADER_LEN && offset < cut, "offset {offset}");
    assert_eq!(it.next(), None, "stays stopped");
    assert_eq!(chunk.last_timestamp(), None);

    // An appender on a corrupt chunk reports the error and writes nothing.
    let err = chunk.appender().append(i64::MAX, 0.0).unwrap_err();
    assert_eq!(err, ChunkError::Truncated { offset });
    assert_eq!(chunk.bytes(), &bytes[..cut]);

    // Header promises a sample, none follows.
    let mut it = XorIterator::new(&[0, 1]);
    assert_eq!(it.next(), None);
    assert_eq!(it.err(), Some(&ChunkError::Truncated { offset: 2 }));
}

#[test]
fn corrupt_fields_are_typed_errors() {
    // Ten continuation bytes: a varint longer than 64 bits.
    let mut it = XorIterator::new(&[
        0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
    ]);
    assert_eq!(it.next(), None);
    assert!(
        matches!(it.err(), Some(ChunkError::Corrupt { offset: 2, .. })),
        "{:?}",
        it.err()
    );

    // Second sample: t delta 1, then '11', 31 leading zeros, 63
    // significant bits: 94 > 64.
    let mut bytes = vec![0, 2, 0];
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&[0x01, 0xff, 0xff, 0xff]);
    let mut it = XorIterator::new(&bytes);
    assert_eq!(it.next(), Some((0, 0.0)));
    assert_eq!(it.next(), None);
    assert_eq!(
        it.err(),
        Some(&ChunkError::Corrupt {
            offset: 11,
            reason: "XOR window wider than 64 bits"
        })
    );
}

/// Strictly increasing timestamps from a start and positive steps, cut
/// where they would overflow.
fn timestamps(start: i64, steps: &[i64]) -> impl Iterator<Item = i64> + '_ {
    std::iter::once(start).chain(steps.iter().scan(start, |t, &step| {
        *t = t.checked_add(step)?;
        Some(*t)
    }))
}

fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => Just(15_000i64),
        4 => 14_950i64..=15_050,
        2 => 1i64..=2_000_000,
        1 => 1i64..=i64::MAX,
    ]
}

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0u32..4).prop_map(|k| f64::from(k).to_bits()),
        (-1e6..1e6f64).prop_map(|f| ((f * 100.0).round() / 100.0).to_bits()),
        Just(STALE_NAN),
    ]
}

proptest! {
    #[test]
    fn samples_round_trip_bit_for_bit(
        start in any::<i64>(),
        steps in prop::collection::vec(step(), 0..300),
        values in prop::collection::vec(value(), 300),
        split in any::<prop::sample::Index>(),
    ) {
        let samples: Vec<(i64, u64)> = timestamps(start, &steps).zip(values).collect();
        let chunk = encode(&samples);
        prop_assert_eq!(chunk.num_samples(), samples.len());
        prop_assert_eq!(decode(chunk.bytes()), samples.clone());

        // Reopening at any point and appending the rest gives the same bytes.
        let k = split.index(samples.len() + 1);
        let mut reopened = XorChunk::from_bytes(encode(&samples[..k]).into_bytes()).unwrap();
        let mut app = reopened.appender();
        for &(t, v) in &samples[k..] {
            app.append(t, f64::from_bits(v)).unwrap();
        }
        prop_assert_eq!(reopened.bytes(), chunk.bytes());
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut it = XorIterator::new(&bytes);
        let n = it.by_ref().count();
        prop_assert!(n <= it.num_samples());
        if bytes.len() >= HEADER_LEN {
            prop_assert_eq!(it.err().is_none(), n == it.num_samples());
        }
        let _ = XorIterator::new(&bytes).seek(0);
        if let Ok(mut chunk) = XorChunk::from_bytes(bytes) {
            let _ = chunk.last_timestamp();
            let _ = chunk.appender().append(i64::MAX, 1.0);
            let _ = chunk.iter().count();
        }
    }

    #[test]
    fn damaged_chunks_never_panic(
        steps in prop::collection::vec(step(), 1..200),
        values in prop::collection::vec(value(), 200),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let samples: Vec<(i64, u64)> = timestamps(0, &steps).zip(values).collect();
        let mut bytes = encode(&samples).into_bytes();
        bytes.truncate(cut.index(bytes.len() + 1));
        for (at, mask) in &flips {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] ^= mask;
            }
        }
        let _ = XorIterator::new(&bytes).count();
        if flips.is_empty() {
            // Plain truncation: whatever decodes is a prefix.
            let mut it = XorIterator::new(&bytes);
            let got: Vec<(i64, u64)> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
            prop_assert_eq!(&samples[..got.len()], &got[..]);
        }
        if let Ok(mut chunk) = XorChunk::from_bytes(bytes) {
            let _ = chunk.appender().append(i64::MAX, 2.0);
            let _ = chunk.iter().count();
        }
    }
}
