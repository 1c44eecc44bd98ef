//! Tests of the histogram chunks: validation, format details (header,
//! sizes), layout changes, counter resets and hints, staleness markers,
//! reopening, corrupt input, and property tests for round trips and garbage.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::lanes::sealed::Sealed as _;
use super::*;

const T0: i64 = 1_700_000_000_000;
const STEP: i64 = 15_000;

fn stale_sum() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

fn span(offset: i32, length: u32) -> Span {
    Span { offset, length }
}

/// Schema 3 with positive buckets 0..4 and 10..12, negative bucket -1,
/// counts given absolute.
fn int_histogram(positive: [u64; 6], negative: u64, zero: u64) -> Histogram {
    let deltas = |abs: &[u64]| -> Vec<i64> {
        let mut prev = 0i64;
        abs.iter()
            .map(|&c| {
                let d = c as i64 - prev;
                prev = c as i64;
                d
            })
            .collect()
    };
    Histogram {
        schema: 3,
        zero_threshold: 2f64.powi(-128),
        zero_count: zero,
        count: positive.iter().sum::<u64>() + negative + zero,
        sum: 1234.5,
        positive_spans: vec![span(0, 4), span(6, 2)],
        negative_spans: vec![span(-1, 1)],
        positive_buckets: deltas(&positive),
        negative_buckets: deltas(&[negative]),
        ..Histogram::default()
    }
}

fn float_histogram(positive: [f64; 6], zero: f64) -> FloatHistogram {
    FloatHistogram {
        schema: 0,
        zero_threshold: 0.001,
        zero_count: zero,
        count: zero + positive.iter().sum::<f64>(),
        sum: 99.25,
        positive_spans: vec![span(-2, 3), span(1, 3)],
        positive_buckets: positive.to_vec(),
        ..FloatHistogram::default()
    }
}

fn custom_histogram(counts: [u64; 4]) -> Histogram {
    Histogram {
        schema: CUSTOM_BUCKETS_SCHEMA,
        count: counts.iter().sum(),
        sum: 3.5,
        positive_spans: vec![span(0, 2), span(1, 2)],
        positive_buckets: vec![
            counts[0] as i64,
            counts[1] as i64 - counts[0] as i64,
            counts[2] as i64 - counts[1] as i64,
            counts[3] as i64 - counts[2] as i64,
        ],
        custom_values: vec![0.1, 0.5, 1.0, 2.5],
        ..Histogram::default()
    }
}

fn encode<H: HistogramSample>(samples: &[(i64, H)]) -> NativeChunk<H> {
    let mut chunk = NativeChunk::new();
    let mut app = chunk.appender();
    for (t, h) in samples {
        app.append(*t, h).unwrap();
    }
    chunk
}

fn decode<H: HistogramSample>(bytes: &[u8]) -> Vec<(i64, H)> {
    let mut it = NativeIterator::<H>::new(bytes);
    let mut out = Vec::new();
    while let Some((t, h)) = it.next() {
        out.push((t, h.clone()));
    }
    assert_eq!(it.err(), None);
    out
}

/// What a reader returns for sample `i` of a chunk of `samples`: the hint
/// as the chunk keeps it, a staleness marker emptied.
fn expected<H: HistogramSample>(samples: &[(i64, H)]) -> Vec<(i64, H)> {
    let gauge = samples
        .first()
        .is_some_and(|(_, h)| h.hint() == CounterResetHint::Gauge);
    samples
        .iter()
        .enumerate()
        .map(|(i, (t, h))| {
            let hint = match i {
                _ if gauge => CounterResetHint::Gauge,
                0 => h.hint(),
                _ => CounterResetHint::NotCounterReset,
            };
            let mut h = if h.sum().to_bits() == STALE_NAN_BITS {
                let mut stale = H::default();
                stale.set_sum(stale_sum());
                stale
            } else {
                h.clone()
            };
            h.set_hint(hint);
            (*t, h)
        })
        .collect()
}

fn assert_int_round_trip(samples: &[(i64, Histogram)]) -> HistogramChunk {
    let chunk = encode(samples);
    assert_eq!(chunk.num_samples(), samples.len());
    let got = decode::<Histogram>(chunk.bytes());
    let want = expected(samples);
    assert_eq!(got.len(), want.len());
    for ((tg, g), (tw, w)) in got.iter().zip(&want) {
        assert_eq!(tg, tw);
        assert!(g.bitwise_eq(w), "got {g:?}\nwant {w:?}");
    }
    chunk
}

fn assert_float_round_trip(samples: &[(i64, FloatHistogram)]) -> FloatHistogramChunk {
    let chunk = encode(samples);
    assert_eq!(chunk.num_samples(), samples.len());
    let got = decode::<FloatHistogram>(chunk.bytes());
    let want = expected(samples);
    assert_eq!(got.len(), want.len());
    for ((tg, g), (tw, w)) in got.iter().zip(&want) {
        assert_eq!(tg, tw);
        assert!(g.bitwise_eq(w), "got {g:?}\nwant {w:?}");
    }
    chunk
}

// ---- validation ----

#[test]
fn validate_accepts_well_formed_histograms() {
    int_histogram([1, 2, 3, 4, 5, 6], 7, 8).validate().unwrap();
    float_histogram([0.5, 0.0, -0.0, 3.0, 1e300, 2.0], 0.0)
        .validate()
        .unwrap();
    custom_histogram([1, 2, 3, 4]).validate().unwrap();
    Histogram::default().validate().unwrap();
    FloatHistogram::default().validate().unwrap();
    // The +Inf bucket (index = number of bounds) is allowed.
    let mut h = custom_histogram([1, 2, 3, 4]);
    h.positive_spans = vec![span(0, 2), span(1, 1), span(0, 1)];
    h.validate().unwrap();
}

#[test]
fn validate_refuses_each_kind_of_malformed_histogram() {
    let base = int_histogram([1, 2, 3, 4, 5, 6], 7, 8);
    let cases: Vec<(Histogram, HistogramError)> = vec![
        (
            Histogram {
                schema: 9,
                ..base.clone()
            },
            HistogramError::SchemaOutOfRange { schema: 9 },
        ),
        (
            Histogram {
                schema: -5,
                ..base.clone()
            },
            HistogramError::SchemaOutOfRange { schema: -5 },
        ),
        (
            Histogram {
                zero_threshold: -1.0,
                ..base.clone()
            },
            HistogramError::InvalidZeroThreshold { threshold: -1.0 },
        ),
        (
            Histogram {
                positive_spans: vec![span(0, 4), span(6, 3)],
                ..base.clone()
            },
            HistogramError::SpanBucketMismatch {
                side: BucketSide::Positive,
                in_spans: 7,
                buckets: 6,
            },
        ),
        (
            Histogram {
                negative_buckets: vec![],
                ..base.clone()
            },
            HistogramError::SpanBucketMismatch {
                side: BucketSide::Negative,
                in_spans: 1,
                buckets: 0,
            },
        ),
        (
            Histogram {
                positive_spans: vec![span(0, 4), span(-6, 2)],
                ..base.clone()
            },
            HistogramError::NegativeSpanOffset {
                side: BucketSide::Positive,
                span: 1,
                offset: -6,
            },
        ),
        (
            Histogram {
                positive_buckets: vec![1, 1, -3, 0, 0, 0],
                ..base.clone()
            },
            HistogramError::NegativeBucketCount {
                side: BucketSide::Positive,
                index: 2,
                count: -1.0,
            },
        ),
        (
            Histogram {
                positive_buckets: vec![i64::MAX, 1, 0, 0, 0, 0],
                ..base.clone()
            },
            HistogramError::BucketCountOverflow {
                side: BucketSide::Positive,
                index: 1,
            },
        ),
        (
            Histogram {
                custom_values: vec![1.0],
                ..base.clone()
            },
            HistogramError::UnexpectedCustomValues { schema: 3 },
        ),
    ];
    for (h, want) in cases {
        assert_eq!(h.validate(), Err(want.clone()), "{want}");
        if !matches!(want, HistogramError::BucketCountOverflow { .. }) {
            assert_eq!(h.to_float().validate(), Err(want.clone()), "{want} (float)");
        }
    }
    let nan_threshold = Histogram {
        zero_threshold: f64::NAN,
        ..base
    };
    assert!(matches!(
        nan_threshold.validate(),
        Err(HistogramError::InvalidZeroThreshold { .. })
    ));

    let custom = custom_histogram([1, 2, 3, 4]);
    let custom_cases: Vec<(Histogram, HistogramError)> = vec![
        (
            Histogram {
                custom_values: vec![0.1, 0.5, 0.5, 2.5],
                ..custom.clone()
            },
            HistogramError::CustomValuesNotIncreasing {
                index: 2,
                value: 0.5,
            },
        ),
        (
            Histogram {
                custom_values: vec![0.1, 0.5, 1.0, f64::INFINITY],
                ..custom.clone()
            },
            HistogramError::CustomValuesNotIncreasing {
                index: 3,
                value: f64::INFINITY,
            },
        ),
        (
            Histogram {
                custom_values: vec![0.1, 0.5, 1.0],
                ..custom.clone()
            },
            HistogramError::CustomBucketOutOfRange {
                index: 4,
                bounds: 3,
            },
        ),
        (
            Histogram {
                positive_spans: vec![span(-1, 2), span(2, 2)],
                ..custom.clone()
            },
            HistogramError::CustomBucketOutOfRange {
                index: -1,
                bounds: 4,
            },
        ),
        (
            Histogram {
                zero_threshold: 0.5,
                ..custom.clone()
            },
            HistogramError::CustomBucketsZeroThreshold { threshold: 0.5 },
        ),
        (
            Histogram {
                negative_spans: vec![span(0, 1)],
                negative_buckets: vec![1],
                ..custom.clone()
            },
            HistogramError::CustomBucketsNegativeBuckets,
        ),
        (
            Histogram {
                zero_count: 1,
                ..custom.clone()
            },
            HistogramError::CustomBucketsZeroCount { count: 1.0 },
        ),
    ];
    for (h, want) in custom_cases {
        assert_eq!(h.validate(), Err(want.clone()), "{want}");
    }
    let nan_bound = Histogram {
        custom_values: vec![0.1, f64::NAN, 1.0, 2.5],
        ..custom
    };
    assert!(matches!(
        nan_bound.validate(),
        Err(HistogramError::CustomValuesNotIncreasing { index: 1, .. })
    ));

    let float = float_histogram([1.0; 6], 0.0);
    for (h, want) in [
        (
            FloatHistogram {
                count: -1.0,
                ..float.clone()
            },
            HistogramError::NegativeCount {
                field: "count",
                value: -1.0,
            },
        ),
        (
            FloatHistogram {
                zero_count: -2.0,
                ..float.clone()
            },
            HistogramError::NegativeCount {
                field: "zero count",
                value: -2.0,
            },
        ),
        (
            FloatHistogram {
                positive_buckets: vec![1.0, 1.0, 1.0, 1.0, -0.5, 1.0],
                ..float.clone()
            },
            HistogramError::NegativeBucketCount {
                side: BucketSide::Positive,
                index: 4,
                count: -0.5,
            },
        ),
    ] {
        assert_eq!(h.validate(), Err(want.clone()), "{want}");
    }
}

#[test]
fn integer_histograms_convert_to_absolute_float_counts() {
    let h = int_histogram([3, 0, 5, 5, 1, 9], 2, 4);
    let f = h.to_float();
    assert_eq!(f.positive_buckets, [3.0, 0.0, 5.0, 5.0, 1.0, 9.0]);
    assert_eq!(f.negative_buckets, [2.0]);
    assert_eq!((f.count, f.zero_count, f.sum), (29.0, 4.0, 1234.5));
    assert_eq!(f.positive_spans, h.positive_spans);
    assert_eq!(FloatHistogram::from(&h), f);
    f.validate().unwrap();
}

// ---- format ----

#[test]
fn empty_chunks() {
    let chunk = HistogramChunk::new();
    assert_eq!(chunk.bytes(), [0, 0, 0]);
    assert_eq!(chunk.num_samples(), 0);
    assert_eq!(chunk.first_timestamp(), None);
    assert_eq!(chunk.last_timestamp(), None);
    let mut it = chunk.iter();
    assert!(it.next().is_none());
    assert!(it.seek(i64::MIN).is_none());
    assert_eq!(it.err(), None);

    let chunk = FloatHistogramChunk::new();
    assert_eq!(chunk.bytes(), [0, 0, 0b0010_0000]);
    let reopened = FloatHistogramChunk::from_bytes(chunk.into_bytes()).unwrap();
    assert_eq!(reopened.iter().next().map(|(t, _)| t), None);
    assert_eq!(reopened.last_timestamp(), None);
}

#[test]
fn header_holds_count_hint_and_kind() {
    let mut h = int_histogram([1, 2, 3, 4, 5, 6], 7, 8);
    h.counter_reset_hint = CounterResetHint::CounterReset;
    let mut next = h.clone();
    next.counter_reset_hint = CounterResetHint::NotCounterReset;
    let chunk = encode(&[(T0, h.clone()), (T0 + STEP, next)]);
    assert_eq!(&chunk.bytes()[..3], [0, 2, 0b1000_0000]);
    assert_eq!(chunk.counter_reset_hint(), CounterResetHint::CounterReset);

    let mut f = h.to_float();
    f.counter_reset_hint = CounterResetHint::Gauge;
    let chunk = encode(&[(T0, f)]);
    assert_eq!(&chunk.bytes()[..3], [0, 1, 0b1110_0000]);
    // Layout: zero threshold 2^-128 is code 116, as in Prometheus's chunks.
    assert_eq!(chunk.bytes()[3], 116);
}

#[test]
fn a_steady_series_costs_a_bit_per_field() {
    // Constant increments and interval, same sum: after the third sample
    // every field is a zero delta of deltas: timestamp, sum, count
    // residual, zero count and 7 buckets, 11 bits a sample.
    let samples: Vec<(i64, Histogram)> = (0..803u64)
        .map(|i| {
            let c = 10 + 3 * i;
            let mut h = int_histogram([c, c, 2 * c, c, c, c], c, c);
            h.sum = 1.0;
            (T0 + i as i64 * STEP, h)
        })
        .collect();
    let three = encode(&samples[..3]).bytes().len();
    let all = assert_int_round_trip(&samples).bytes().len();
    assert_eq!(all - three, 800 * 11 / 8);
}

#[test]
fn float_counts_that_are_the_bucket_sum_cost_one_bit() {
    // The count residual is 0 when the count is the sum of the buckets.
    let mk = |i: u32, extra: f64| {
        let c = f64::from(i) * 1.5;
        let mut h = float_histogram([c, c, c, c, c, c], c);
        h.count += extra;
        (T0 + i64::from(i) * STEP, h)
    };
    let exact: Vec<_> = (0..100).map(|i| mk(i, 0.0)).collect();
    let off: Vec<_> = (0..100).map(|i| mk(i, f64::from(i) * 0.25)).collect();
    let exact = assert_float_round_trip(&exact).bytes().len();
    let off = assert_float_round_trip(&off).bytes().len();
    assert!(exact + 100 < off, "{exact} vs {off} bytes");
}

#[test]
fn custom_bucket_histograms_round_trip() {
    let samples: Vec<(i64, Histogram)> = (0..50u64)
        .map(|i| {
            (
                T0 + i as i64 * STEP,
                custom_histogram([i, 2 * i, 2 * i, 5 * i]),
            )
        })
        .collect();
    let chunk = assert_int_round_trip(&samples);
    let floats: Vec<(i64, FloatHistogram)> =
        samples.iter().map(|(t, h)| (*t, h.to_float())).collect();
    assert_float_round_trip(&floats);
    assert!(chunk.bytes().len() < 250, "{} bytes", chunk.bytes().len());
}

#[test]
fn odd_floats_round_trip_bit_for_bit() {
    let mut a = float_histogram([0.0, -0.0, 1e-300, f64::MAX, 3.25, f64::NAN], -0.0);
    a.sum = f64::from_bits(0x7ff8_dead_beef_0001);
    a.zero_threshold = 2f64.powi(-128);
    a.count = f64::INFINITY;
    let mut b = a.clone();
    b.positive_buckets[5] = f64::from_bits(0x7ff0_0000_0000_0001);
    b.sum = -0.0;
    assert_float_round_trip(&[(i64::MIN, a), (i64::MAX, b)]);
}

#[test]
fn integer_counts_round_trip_at_their_limits() {
    let mut a = int_histogram([0, i64::MAX as u64, 0, 0, 1, 1], u64::MAX / 4, 0);
    a.count = u64::MAX;
    let mut b = a.clone();
    b.positive_buckets[4] = i64::MAX - 1;
    assert_int_round_trip(&[(-5, a), (i64::MAX, b)]);
}

// ---- appending: cuts, resets, hints, staleness ----

#[test]
fn layout_changes_are_refused_and_leave_the_chunk_unchanged() {
    let h = int_histogram([1, 2, 3, 4, 5, 6], 7, 8);
    let grown = int_histogram([2, 2, 3, 4, 5, 6], 7, 8);
    let mut chunk = encode(&[(T0, h.clone())]);
    let before = chunk.bytes().to_vec();

    let mut schema = grown.clone();
    schema.schema = 2;
    let mut threshold = grown.clone();
    threshold.zero_threshold = 2f64.powi(-127);
    let mut new_bucket = grown.clone();
    new_bucket.positive_spans = vec![span(0, 5), span(5, 2)];
    new_bucket.positive_buckets.insert(4, 0);
    let mut negative = grown.clone();
    negative.negative_spans = vec![span(-2, 1)];
    for (sample, want) in [
        (
            &schema,
            LayoutChange::Schema {
                chunk: 3,
                sample: 2,
            },
        ),
        (
            &threshold,
            LayoutChange::ZeroThreshold {
                chunk: 2f64.powi(-128),
                sample: 2f64.powi(-127),
            },
        ),
        (&new_bucket, LayoutChange::PositiveSpans),
        (&negative, LayoutChange::NegativeSpans),
    ] {
        let err = chunk.appender().append(T0 + STEP, sample).unwrap_err();
        assert_eq!(err, HistogramChunkError::LayoutChanged(want));
        assert!(err.starts_new_chunk());
    }
    assert_eq!(chunk.bytes(), before);

    let mut custom = encode(&[(T0, custom_histogram([1, 2, 3, 4]))]);
    let mut bounds = custom_histogram([1, 2, 3, 4]);
    bounds.custom_values[1] = 0.6;
    assert_eq!(
        custom.appender().append(T0 + STEP, &bounds),
        Err(HistogramChunkError::LayoutChanged(
            LayoutChange::CustomValues
        ))
    );
    // The same layout still appends.
    chunk.appender().append(T0 + STEP, &grown).unwrap();
    assert_eq!(chunk.num_samples(), 2);
}

#[test]
fn counter_resets_are_refused_in_counter_chunks_only() {
    let h = int_histogram([5, 5, 5, 5, 5, 5], 5, 5);
    let mut chunk = encode(&[(T0, h.clone())]);
    let mut app = chunk.appender();
    let mut hinted = h.clone();
    hinted.counter_reset_hint = CounterResetHint::CounterReset;
    let mut zero = h.clone();
    zero.zero_count = 4;
    zero.count += 1; // the count alone did not go down
    let mut bucket = int_histogram([5, 5, 5, 9, 5, 4], 5, 5);
    bucket.count = 100;
    let mut negative = int_histogram([5, 5, 5, 5, 5, 5], 4, 5);
    negative.count = 100;
    let lower = int_histogram([5, 5, 5, 5, 5, 5], 5, 4);
    for (sample, cause) in [
        (&hinted, ResetCause::Hint),
        (&lower, ResetCause::Count),
        (&zero, ResetCause::ZeroCount),
        (
            &bucket,
            ResetCause::Bucket {
                side: BucketSide::Positive,
                index: 5,
            },
        ),
        (
            &negative,
            ResetCause::Bucket {
                side: BucketSide::Negative,
                index: 0,
            },
        ),
    ] {
        let err = app.append(T0 + STEP, sample).unwrap_err();
        assert_eq!(err, HistogramChunkError::CounterReset(cause), "{err}");
        assert!(err.starts_new_chunk());
    }
    // Float chunks compare float counts.
    let mut floats = encode(&[(T0, h.to_float())]);
    let mut down = h.to_float();
    down.positive_buckets[0] = 4.5;
    down.count += 1.0;
    assert_eq!(
        floats.appender().append(T0 + STEP, &down),
        Err(HistogramChunkError::CounterReset(ResetCause::Bucket {
            side: BucketSide::Positive,
            index: 0
        }))
    );

    // Gauges go up and down.
    let gauge = |positive, zero| {
        let mut h = int_histogram(positive, 1, zero);
        h.counter_reset_hint = CounterResetHint::Gauge;
        h
    };
    let samples = [
        (T0, gauge([5, 5, 5, 5, 5, 5], 9)),
        (T0 + 1, gauge([0, 9, 1, 5, 0, 5], 2)),
        (T0 + 2, gauge([5, 5, 5, 5, 5, 5], 0)),
    ];
    assert_int_round_trip(&samples);
}

#[test]
fn gauges_and_counters_do_not_share_a_chunk() {
    let counter = int_histogram([1, 2, 3, 4, 5, 6], 7, 8);
    let mut gauge = counter.clone();
    gauge.counter_reset_hint = CounterResetHint::Gauge;
    let mut chunk = encode(&[(T0, counter.clone())]);
    assert_eq!(
        chunk.appender().append(T0 + 1, &gauge),
        Err(HistogramChunkError::GaugeMismatch {
            chunk_is_gauge: false
        })
    );
    let mut chunk = encode(&[(T0, gauge)]);
    assert_eq!(
        chunk.appender().append(T0 + 1, &counter),
        Err(HistogramChunkError::GaugeMismatch {
            chunk_is_gauge: true
        })
    );
}

#[test]
fn the_first_samples_hint_is_kept() {
    for hint in [
        CounterResetHint::Unknown,
        CounterResetHint::CounterReset,
        CounterResetHint::NotCounterReset,
        CounterResetHint::Gauge,
    ] {
        let mut samples: Vec<(i64, Histogram)> = (0..4u64)
            .map(|i| (T0 + i as i64, int_histogram([i; 6], i, i)))
            .collect();
        samples[0].1.counter_reset_hint = hint;
        if hint == CounterResetHint::Gauge {
            for (_, h) in &mut samples {
                h.counter_reset_hint = hint;
            }
        }
        let chunk = assert_int_round_trip(&samples);
        assert_eq!(chunk.counter_reset_hint(), hint);
        let got = decode::<Histogram>(chunk.bytes());
        assert_eq!(got[0].1.counter_reset_hint, hint);
        let later = if hint == CounterResetHint::Gauge {
            hint
        } else {
            CounterResetHint::NotCounterReset
        };
        assert!(got[1..].iter().all(|(_, h)| h.counter_reset_hint == later));
        // Reopened from bytes, the chunk keeps it too.
        let mut reopened = HistogramChunk::from_bytes(chunk.bytes().to_vec()).unwrap();
        let mut next = int_histogram([9; 6], 9, 9);
        next.counter_reset_hint = later;
        reopened.appender().append(T0 + 10, &next).unwrap();
        assert_eq!(reopened.counter_reset_hint(), hint);
    }
}

#[test]
fn staleness_markers() {
    let h = int_histogram([1, 2, 3, 4, 5, 6], 7, 8);
    // A marker's own layout does not matter.
    let marker = Histogram {
        schema: 7,
        sum: stale_sum(),
        positive_spans: vec![span(3, 1)],
        positive_buckets: vec![-5],
        ..Histogram::default()
    };
    let samples = [
        (T0, h.clone()),
        (T0 + STEP, marker.clone()),
        (T0 + 2 * STEP, marker.clone()),
    ];
    let mut chunk = assert_int_round_trip(&samples);
    let got = decode::<Histogram>(chunk.bytes());
    assert!(got[1].1.is_stale_marker());
    assert!(got[1].1.positive_spans.is_empty());
    assert_eq!(
        chunk.appender().append(T0 + 3 * STEP, &h),
        Err(HistogramChunkError::AfterStaleMarker)
    );

    // A chunk may start with one; its layout is then the empty one.
    let float_marker = FloatHistogram {
        sum: stale_sum(),
        schema: 1,
        ..FloatHistogram::default()
    };
    let mut chunk = assert_float_round_trip(&[(T0, float_marker)]);
    assert!(
        chunk
            .appender()
            .append(T0 + 1, &h.to_float())
            .unwrap_err()
            .starts_new_chunk()
    );
}

#[test]
fn out_of_order_invalid_and_full() {
    let h = int_histogram([1, 2, 3, 4, 5, 6], 7, 8);
    let mut chunk = encode(&[(T0, h.clone())]);
    let mut app = chunk.appender();
    assert_eq!(
        app.append(T0, &h),
        Err(HistogramChunkError::OutOfOrder {
            timestamp: T0,
            last: T0
        })
    );
    let mut bad = h.clone();
    bad.positive_buckets.pop();
    let err = app.append(T0 + 1, &bad).unwrap_err();
    assert!(matches!(
        err,
        HistogramChunkError::Invalid(HistogramError::SpanBucketMismatch { .. })
    ));
    assert!(!err.starts_new_chunk());

    let tiny = Histogram::default();
    let mut chunk = HistogramChunk::new();
    let mut app = chunk.appender();
    for t in 0..MAX_SAMPLES as i64 {
        app.append(t, &tiny).unwrap();
    }
    assert_eq!(app.append(1 << 40, &tiny), Err(HistogramChunkError::Full));
    assert_eq!(chunk.num_samples(), MAX_SAMPLES);
    assert_eq!(chunk.iter().seek(i64::MAX), None);
    assert_eq!(chunk.last_timestamp(), Some(MAX_SAMPLES as i64 - 1));
}

// ---- reading ----

#[test]
fn seek_finds_the_first_sample_at_or_after() {
    let samples: Vec<(i64, Histogram)> = (0..10u64)
        .map(|i| (T0 + i as i64 * STEP, int_histogram([i; 6], i, i)))
        .collect();
    let chunk = encode(&samples);
    let mut it = chunk.iter();
    assert_eq!(
        it.seek(T0 + 3 * STEP - 1).map(|(t, _)| t),
        Some(T0 + 3 * STEP)
    );
    let (_, h) = it.at().unwrap();
    assert_eq!(h.zero_count, 3);
    // Never backwards.
    assert_eq!(
        it.seek(T0).map(|(t, h)| (t, h.count)),
        Some((T0 + 3 * STEP, 3 * 8))
    );
    assert_eq!(it.next().map(|(t, _)| t), Some(T0 + 4 * STEP));
    assert_eq!(it.seek(T0 + 100 * STEP).map(|(t, _)| t), None);
    assert!(it.at().is_none());

    // Reset onto another chunk, reusing the iterator.
    let other = encode(&samples[..2]);
    it.reset(other.bytes());
    assert_eq!(it.num_samples(), 2);
    assert_eq!(it.next().map(|(t, h)| (t, h.zero_count)), Some((T0, 0)));
    assert_eq!(other.first_timestamp(), Some(T0));
    assert_eq!(other.last_timestamp(), Some(T0 + STEP));
}

#[test]
fn the_wrong_kind_of_chunk_is_refused() {
    let ints = encode(&[(T0, int_histogram([1; 6], 1, 1))]);
    let mut it = FloatHistogramIterator::new(ints.bytes());
    assert!(it.next().is_none());
    assert_eq!(
        it.err(),
        Some(&HistogramChunkError::WrongKind {
            chunk_is_float: false
        })
    );
    assert!(FloatHistogramChunk::from_bytes(ints.bytes().to_vec()).is_err());

    let mut reserved = ints.bytes().to_vec();
    reserved[2] |= 1;
    assert_eq!(
        HistogramChunk::from_bytes(reserved).unwrap_err(),
        HistogramChunkError::Corrupt {
            offset: 2,
            reason: "reserved header bits are set"
        }
    );
    assert_eq!(
        HistogramChunk::from_bytes(vec![0, 1]).unwrap_err(),
        HistogramChunkError::HeaderTooShort { len: 2 }
    );
}

#[test]
fn truncation_and_bad_layouts_are_typed_errors() {
    let samples: Vec<(i64, Histogram)> = (0..5u64)
        .map(|i| (T0 + i as i64 * STEP, int_histogram([i; 6], i, i)))
        .collect();
    let bytes = encode(&samples).into_bytes();
    let mut it = HistogramIterator::new(&bytes[..bytes.len() - 3]);
    let mut n = 0;
    while it.next().is_some() {
        n += 1;
    }
    assert!(n < 5);
    assert!(matches!(
        it.err(),
        Some(HistogramChunkError::Truncated { .. })
    ));

    // A layout with schema 9, then a sample.
    let mut w = crate::chunk::bstream::BitWriter::from_vec(vec![0, 1, 0]);
    let no_spans: &[Span] = &[];
    layout::write_layout(
        &mut w,
        &layout::LayoutRef {
            schema: 9,
            zero_threshold: 0.0,
            positive_spans: no_spans,
            negative_spans: no_spans,
            custom_values: &[],
        },
    );
    w.write_bits(0, 64);
    let bad = w.into_bytes();
    let mut it = HistogramIterator::new(&bad);
    assert!(it.next().is_none());
    assert_eq!(
        it.err(),
        Some(&HistogramChunkError::InvalidLayout {
            offset: 3,
            source: HistogramError::SchemaOutOfRange { schema: 9 }
        })
    );
    let mut chunk = HistogramChunk::from_bytes(bad).unwrap();
    assert!(matches!(
        chunk.appender().append(i64::MAX, &samples[0].1),
        Err(HistogramChunkError::InvalidLayout { .. })
    ));
}

#[test]
fn reopening_drops_trailing_bytes_and_continues() {
    let samples: Vec<(i64, Histogram)> = (0..20u64)
        .map(|i| (T0 + i as i64 * STEP, int_histogram([i; 6], i, 2 * i)))
        .collect();
    let whole = encode(&samples);
    let mut bytes = encode(&samples[..7]).into_bytes();
    bytes.extend_from_slice(&[0xff; 9]);
    let mut reopened = HistogramChunk::from_bytes(bytes).unwrap();
    assert_eq!(reopened.last_timestamp(), Some(T0 + 6 * STEP));
    let mut app = reopened.appender();
    for (t, h) in &samples[7..] {
        app.append(*t, h).unwrap();
    }
    assert_eq!(reopened.bytes(), whole.bytes());
    // The recovered state also catches counter resets.
    let mut reopened = HistogramChunk::from_bytes(whole.bytes().to_vec()).unwrap();
    assert!(matches!(
        reopened
            .appender()
            .append(i64::MAX, &int_histogram([0; 6], 0, 0)),
        Err(HistogramChunkError::CounterReset(ResetCause::Count))
    ));
}

// ---- property tests ----

/// A layout: schema, zero threshold, spans and custom bounds.
#[derive(Debug, Clone)]
struct Shape {
    schema: i32,
    zero_threshold: f64,
    positive_spans: Vec<Span>,
    negative_spans: Vec<Span>,
    custom_values: Vec<f64>,
}

fn spans(first: std::ops::RangeInclusive<i32>) -> impl Strategy<Value = Vec<Span>> {
    (first, prop::collection::vec((0i32..4, 0u32..6), 0..5)).prop_map(|(first, rest)| {
        rest.into_iter()
            .enumerate()
            .map(|(i, (offset, length))| Span {
                offset: if i == 0 { first } else { offset },
                length,
            })
            .collect()
    })
}

fn exponential_shape() -> impl Strategy<Value = Shape> {
    let zero_threshold = prop_oneof![Just(0.0), Just(2f64.powi(-128)), Just(0.001), 0.0..1.0f64,];
    (
        MIN_EXPONENTIAL_SCHEMA..=MAX_EXPONENTIAL_SCHEMA,
        zero_threshold,
        spans(-40..=40),
        spans(-40..=40),
    )
        .prop_map(
            |(schema, zero_threshold, positive_spans, negative_spans)| Shape {
                schema,
                zero_threshold,
                positive_spans,
                negative_spans,
                custom_values: Vec::new(),
            },
        )
}

fn custom_shape() -> impl Strategy<Value = Shape> {
    let step = prop_oneof![
        (1u32..5000).prop_map(|k| f64::from(k) / 1000.0),
        1e-9..100.0f64,
    ];
    (
        spans(0..=3),
        0usize..3,
        -10_000i32..10_000,
        prop::collection::vec(step, 40),
    )
        .prop_map(|(positive_spans, extra, start, steps)| {
            let mut next = 0i64;
            let mut last = -1i64;
            for s in &positive_spans {
                next += i64::from(s.offset);
                if s.length > 0 {
                    last = next + i64::from(s.length) - 1;
                }
                next += i64::from(s.length);
            }
            let n = last.max(0) as usize + extra;
            let mut bound = f64::from(start) / 1000.0;
            let custom_values = steps[..n]
                .iter()
                .map(|s| {
                    bound += s;
                    bound
                })
                .collect();
            Shape {
                schema: CUSTOM_BUCKETS_SCHEMA,
                zero_threshold: 0.0,
                positive_spans,
                negative_spans: Vec::new(),
                custom_values,
            }
        })
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![3 => exponential_shape(), 1 => custom_shape()]
}

fn hint() -> impl Strategy<Value = CounterResetHint> {
    prop_oneof![
        Just(CounterResetHint::Unknown),
        Just(CounterResetHint::CounterReset),
        Just(CounterResetHint::NotCounterReset),
        Just(CounterResetHint::Gauge),
    ]
}

/// Timestamps: mostly 15 s scrapes with jitter, sometimes gaps or huge
/// jumps.
fn next_t(rng: &mut StdRng, t: i64) -> Option<i64> {
    let step = match rng.random_range(0..10) {
        0..=3 => STEP,
        4..=7 => rng.random_range(STEP - 50..=STEP + 50),
        8 => rng.random_range(1..=2_000_000),
        _ => rng.random_range(1..=i64::MAX),
    };
    t.checked_add(step)
}

/// A bucket count increment, as floats: integral, fractional, zero, huge.
fn increment(rng: &mut StdRng, float: bool) -> f64 {
    match rng.random_range(0..10) {
        0..=2 => 0.0,
        3..=6 => f64::from(rng.random_range(1..=50u32)),
        7 if float => rng.random_range(0.0..10.0),
        7 => f64::from(rng.random_range(1..=100_000u32)),
        8 => 2f64.powi(rng.random_range(20..40)),
        _ => f64::from(rng.random_range(0..=3u32)),
    }
}

fn sum(rng: &mut StdRng, prev: f64) -> f64 {
    match rng.random_range(0..6) {
        0 => prev,
        1 => match rng.random::<u64>() {
            STALE_NAN_BITS => 0.0,
            bits => f64::from_bits(bits), // NaN payloads too
        },
        2 => prev + rng.random_range(0.0..100.0),
        3 => -0.0,
        _ => prev + f64::from(rng.random_range(0..1000u32)) / 1000.0,
    }
}

/// A series of float histograms of one shape that one chunk takes:
/// counters never go down, gauges do anything; a few staleness markers may
/// end it.
fn float_series(
    shape: &Shape,
    first_hint: CounterResetHint,
    n: usize,
    seed: u64,
) -> Vec<(i64, FloatHistogram)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let gauge = first_hint == CounterResetHint::Gauge;
    let custom = shape.schema == CUSTOM_BUCKETS_SCHEMA;
    let n_pos = super::span_buckets(&shape.positive_spans) as usize;
    let n_neg = super::span_buckets(&shape.negative_spans) as usize;
    let mut buckets: Vec<f64> = (0..n_pos + n_neg)
        .map(|_| {
            if rng.random_bool(0.1) {
                -0.0
            } else {
                increment(&mut rng, true)
            }
        })
        .collect();
    let mut zero = if custom {
        0.0
    } else {
        increment(&mut rng, true)
    };
    let mut extra = 0.0;
    let mut s = 0.0;
    let mut t = rng.random_range(i64::MIN / 2..i64::MAX / 2);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            let Some(next) = next_t(&mut rng, t) else {
                break;
            };
            t = next;
            for b in &mut buckets {
                *b = if gauge {
                    increment(&mut rng, true)
                } else {
                    *b + increment(&mut rng, true)
                };
            }
            if !custom {
                zero = if gauge {
                    increment(&mut rng, true)
                } else {
                    zero + increment(&mut rng, true)
                };
            }
        }
        if rng.random_bool(0.2) {
            extra += f64::from(rng.random_range(0..3u32)) * 0.5;
        }
        let mut predicted = 0.0 + zero;
        for &b in &buckets {
            predicted += b;
        }
        s = sum(&mut rng, s);
        let counter_reset_hint = match i {
            _ if gauge => CounterResetHint::Gauge,
            0 => first_hint,
            _ if rng.random_bool(0.5) => CounterResetHint::Unknown,
            _ => CounterResetHint::NotCounterReset,
        };
        out.push((
            t,
            FloatHistogram {
                counter_reset_hint,
                schema: shape.schema,
                zero_threshold: shape.zero_threshold,
                zero_count: zero,
                count: predicted + extra,
                sum: s,
                positive_spans: shape.positive_spans.clone(),
                negative_spans: shape.negative_spans.clone(),
                positive_buckets: buckets[..n_pos].to_vec(),
                negative_buckets: buckets[n_pos..].to_vec(),
                custom_values: shape.custom_values.clone(),
            },
        ));
    }
    if rng.random_bool(0.2) {
        for _ in 0..rng.random_range(1..3) {
            let Some(next) = next_t(&mut rng, t) else {
                break;
            };
            t = next;
            let mut marker = FloatHistogram {
                counter_reset_hint: if gauge {
                    CounterResetHint::Gauge
                } else {
                    CounterResetHint::Unknown
                },
                sum: stale_sum(),
                ..FloatHistogram::default()
            };
            if rng.random_bool(0.5) {
                marker.schema = 5; // a marker's layout does not matter
                marker.positive_spans.push(span(1, 3));
            }
            out.push((t, marker));
        }
    }
    out
}

/// The same series with integer counts.
fn int_series(
    shape: &Shape,
    first_hint: CounterResetHint,
    n: usize,
    seed: u64,
) -> Vec<(i64, Histogram)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let gauge = first_hint == CounterResetHint::Gauge;
    let custom = shape.schema == CUSTOM_BUCKETS_SCHEMA;
    let n_pos = super::span_buckets(&shape.positive_spans) as usize;
    let inc = |rng: &mut StdRng| increment(rng, false) as u64;
    let mut buckets: Vec<u64> = (0..n_pos + super::span_buckets(&shape.negative_spans) as usize)
        .map(|_| inc(&mut rng))
        .collect();
    let mut zero = if custom { 0 } else { inc(&mut rng) };
    let mut extra = 0u64;
    let mut s = 0.0;
    let mut t = rng.random_range(i64::MIN / 2..i64::MAX / 2);
    let deltas = |abs: &[u64]| -> Vec<i64> {
        let mut prev = 0i64;
        abs.iter()
            .map(|&c| {
                let d = c as i64 - prev;
                prev = c as i64;
                d
            })
            .collect()
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            let Some(next) = next_t(&mut rng, t) else {
                break;
            };
            t = next;
            for b in &mut buckets {
                *b = if gauge {
                    inc(&mut rng)
                } else {
                    *b + inc(&mut rng)
                };
            }
            if !custom {
                zero = if gauge {
                    inc(&mut rng)
                } else {
                    zero + inc(&mut rng)
                };
            }
        }
        if rng.random_bool(0.2) {
            extra += rng.random_range(0..3u64);
        }
        s = sum(&mut rng, s);
        let counter_reset_hint = match i {
            _ if gauge => CounterResetHint::Gauge,
            0 => first_hint,
            _ if rng.random_bool(0.5) => CounterResetHint::Unknown,
            _ => CounterResetHint::NotCounterReset,
        };
        out.push((
            t,
            Histogram {
                counter_reset_hint,
                schema: shape.schema,
                zero_threshold: shape.zero_threshold,
                zero_count: zero,
                count: zero + buckets.iter().sum::<u64>() + extra,
                sum: s,
                positive_spans: shape.positive_spans.clone(),
                negative_spans: shape.negative_spans.clone(),
                positive_buckets: deltas(&buckets[..n_pos]),
                negative_buckets: deltas(&buckets[n_pos..]),
                custom_values: shape.custom_values.clone(),
            },
        ));
    }
    if rng.random_bool(0.2)
        && let Some(next) = next_t(&mut rng, t)
    {
        let marker = Histogram {
            counter_reset_hint: if gauge {
                CounterResetHint::Gauge
            } else {
                CounterResetHint::Unknown
            },
            sum: stale_sum(),
            ..Histogram::default()
        };
        out.push((next, marker));
    }
    out
}

/// Reopens the first `k` samples' bytes and appends the rest.
fn reopen_and_finish<H: HistogramSample>(samples: &[(i64, H)], k: usize) -> Vec<u8> {
    let mut reopened = NativeChunk::<H>::from_bytes(encode(&samples[..k]).into_bytes()).unwrap();
    let mut app = reopened.appender();
    for (t, h) in &samples[k..] {
        app.append(*t, h).unwrap();
    }
    reopened.into_bytes()
}

/// Reads `bytes` every way a reader can, checking only that nothing
/// panics and the error contract holds.
fn read_anyhow<H: HistogramSample>(bytes: &[u8]) {
    let mut it = NativeIterator::<H>::new(bytes);
    let mut n = 0;
    while it.next().is_some() {
        n += 1;
    }
    assert!(n <= it.num_samples());
    // Stopping early always says why.
    assert!(it.err().is_some() || n == it.num_samples());
    let _ = NativeIterator::<H>::new(bytes).seek(0);
    if let Ok(mut chunk) = NativeChunk::<H>::from_bytes(bytes.to_vec()) {
        let _ = chunk.last_timestamp();
        let _ = chunk.appender().append(i64::MAX, &H::default());
        let _ = chunk.iter().next();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn float_series_round_trip_bit_for_bit(
        shape in shape(),
        first_hint in hint(),
        n in 1usize..60,
        seed in any::<u64>(),
        split in any::<prop::sample::Index>(),
    ) {
        let samples = float_series(&shape, first_hint, n, seed);
        let chunk = assert_float_round_trip(&samples);
        for (_, h) in decode::<FloatHistogram>(chunk.bytes()) {
            prop_assert!(h.is_stale_marker() || h.validate().is_ok());
        }
        let k = split.index(samples.len() + 1);
        prop_assert_eq!(reopen_and_finish(&samples, k), chunk.bytes());
    }

    #[test]
    fn int_series_round_trip_exactly(
        shape in shape(),
        first_hint in hint(),
        n in 1usize..60,
        seed in any::<u64>(),
        split in any::<prop::sample::Index>(),
    ) {
        let samples = int_series(&shape, first_hint, n, seed);
        let chunk = assert_int_round_trip(&samples);
        for (_, h) in decode::<Histogram>(chunk.bytes()) {
            prop_assert!(h.is_stale_marker() || h.validate().is_ok());
        }
        let k = split.index(samples.len() + 1);
        prop_assert_eq!(reopen_and_finish(&samples, k), chunk.bytes());
    }

    #[test]
    fn any_layout_change_is_detected(a in shape(), b in shape(), seed in any::<u64>()) {
        let first = float_series(&a, CounterResetHint::Unknown, 1, seed).remove(0).1;
        let mut second = float_series(&b, CounterResetHint::Unknown, 1, seed).remove(0).1;
        second.count = f64::INFINITY; // no counter reset in the count
        let mut chunk = encode(&[(0, first.clone())]);
        let before = chunk.bytes().to_vec();
        let result = chunk.appender().append(1, &second);
        let mut chunk_layout = layout::Layout::default();
        chunk_layout.set(&first.layout_ref());
        let same = chunk_layout.compare(&second.layout_ref()).is_ok();
        if same {
            // Bucket counts are random, so this may be a reset.
            prop_assert!(!matches!(result, Err(HistogramChunkError::LayoutChanged(_))));
        } else {
            prop_assert!(matches!(result, Err(HistogramChunkError::LayoutChanged(_))), "{:?}", result);
            prop_assert_eq!(chunk.bytes(), &before[..]);
        }
    }

    #[test]
    fn garbage_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        flags in prop_oneof![Just(0u8), Just(0x20), Just(0x40), Just(0xe0), any::<u8>()],
    ) {
        let mut bytes = bytes;
        if bytes.len() >= 3 {
            bytes[2] = flags;
        }
        read_anyhow::<Histogram>(&bytes);
        read_anyhow::<FloatHistogram>(&bytes);
    }

    #[test]
    fn damaged_chunks_never_panic(
        shape in shape(),
        n in 1usize..40,
        seed in any::<u64>(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let samples = int_series(&shape, CounterResetHint::Unknown, n, seed);
        let mut ints = encode(&samples).into_bytes();
        let floats: Vec<_> = samples.iter().map(|(t, h)| (*t, h.to_float())).collect();
        let mut floats = encode(&floats).into_bytes();
        for bytes in [&mut ints, &mut floats] {
            bytes.truncate(cut.index(bytes.len() + 1));
            for (at, mask) in &flips {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] ^= mask;
                }
            }
        }
        read_anyhow::<Histogram>(&ints);
        read_anyhow::<FloatHistogram>(&floats);
        if flips.is_empty() {
            // Plain truncation: whatever decodes is a prefix.
            let want = expected(&samples);
            let mut it = HistogramIterator::new(&ints);
            let mut i = 0;
            while let Some((t, h)) = it.next() {
                prop_assert_eq!(t, want[i].0);
                prop_assert!(h.bitwise_eq(&want[i].1));
                i += 1;
            }
        }
    }
}
