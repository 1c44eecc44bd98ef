//! Tests of native histograms in the head: one timeline with floats,
//! chunk cutting, out-of-order histograms, staleness, reads and memory.

use std::time::Duration;

use super::*;
use crate::chunk::merge::merge_histogram_chunks;
use crate::model::histogram::{CounterResetHint, FloatHistogram, Histogram, NativeHistogram, Span};
use crate::model::{HPoint, Matcher, STALE_NAN_BITS, is_stale_nan};

fn limits(ooo_ms: u64) -> Limits {
    Limits {
        max_series_per_tenant: 0,
        max_series_per_metric: 0,
        out_of_order_time_window: Duration::from_millis(ooo_ms),
        ..Limits::default()
    }
}

/// Two buckets of `n` observations each, schema 0.
fn int(n: u64) -> NativeHistogram {
    NativeHistogram::Int(Histogram {
        schema: 0,
        count: 2 * n,
        sum: n as f64,
        positive_spans: vec![Span {
            offset: 0,
            length: 2,
        }],
        positive_buckets: vec![n as i64, 0],
        ..Histogram::default()
    })
}

fn float(n: f64) -> NativeHistogram {
    NativeHistogram::Float(FloatHistogram {
        schema: -53,
        count: n,
        sum: n,
        positive_spans: vec![Span {
            offset: 0,
            length: 1,
        }],
        positive_buckets: vec![n],
        custom_values: vec![1.0],
        ..FloatHistogram::default()
    })
}

fn series(head: &Head, name: &str) -> SeriesRef {
    head.get_or_create_series(&Labels::from_pairs([("__name__", name)]), &limits(0))
        .expect("within limits")
        .0
}

/// (floats, histograms) of the one series named `name`.
fn read(head: &Head, name: &str) -> (Vec<(i64, f64)>, Vec<HPoint>) {
    let mut all = head.query(&[Matcher::equal("__name__", name)], i64::MIN, i64::MAX);
    assert_eq!(all.len(), 1, "one series");
    let s = all.remove(0);
    let floats = merge_chunks(&s.chunks, i64::MIN, i64::MAX)
        .expect("valid chunks")
        .into_iter()
        .map(|s| (s.t, s.v))
        .collect();
    let histograms =
        merge_histogram_chunks(&s.histogram_chunks, i64::MIN, i64::MAX).expect("valid chunks");
    (floats, histograms)
}

fn hint(h: &FloatHistogram) -> CounterResetHint {
    h.counter_reset_hint
}

#[test]
fn histograms_read_back_with_resets_kind_switches_and_cut_chunks() {
    let head = Head::new("t", &HeadConfig::default());
    let r = series(&head, "h");
    let l = limits(0);
    let before = head.memory_estimate().sample_bytes;
    for (t, n) in [(1, 1), (2, 2), (3, 5)] {
        head.append_histogram(r, t, &int(n), &l).expect("in order");
    }
    // A counter reset, then a switch to float histograms.
    head.append_histogram(r, 4, &int(1), &l).expect("reset");
    head.append_histogram(r, 5, &float(2.0), &l).expect("float");
    // 200 more: the chunk is cut at the head's sample limit.
    for t in 6..206 {
        head.append_histogram(r, t, &float(t as f64), &l)
            .expect("in order");
    }
    let (floats, hs) = read(&head, "h");
    assert!(floats.is_empty());
    assert_eq!(hs.len(), 205);
    assert_eq!(
        hs[2].h,
        int(5)
            .to_float()
            .with_hint_for_test(CounterResetHint::NotCounterReset)
    );
    assert_eq!(
        hint(&hs[3].h),
        CounterResetHint::CounterReset,
        "the reset is marked"
    );
    assert_eq!(hs[3].h.count, 2.0);
    assert_eq!(hs[4].h.schema, -53);
    assert_eq!(hs[204].t, 205);
    let chunks = &head.query(&[Matcher::equal("__name__", "h")], 0, 1000)[0].histogram_chunks;
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    assert!(head.chunk_bytes() > 0);
    assert!(head.memory_estimate().sample_bytes > before);
    assert_eq!(head.samples_appended_total(), 205);
}

trait WithHint {
    fn with_hint_for_test(self, hint: CounterResetHint) -> FloatHistogram;
}

impl WithHint for FloatHistogram {
    fn with_hint_for_test(self, hint: CounterResetHint) -> FloatHistogram {
        FloatHistogram {
            counter_reset_hint: hint,
            ..self
        }
    }
}

#[test]
fn floats_and_histograms_share_one_timeline() {
    let head = Head::new("t", &HeadConfig::default());
    let r = series(&head, "mixed");
    let l = limits(0);
    head.append_sample(r, 10, 1.0, &l).expect("float");
    assert_eq!(
        head.append_histogram(r, 10, &int(1), &l),
        Err(HeadError::Append(
            AppendError::DuplicateTimestampDifferentValue { t: 10 }
        )),
        "a histogram at a float's timestamp is refused"
    );
    assert_eq!(
        head.append_histogram(r, 9, &int(1), &l),
        Err(HeadError::Append(AppendError::OutOfOrder {
            t: 9,
            max_t: 10
        }))
    );
    head.append_histogram(r, 20, &int(1), &l).expect("newer");
    assert_eq!(
        head.append_histogram(r, 20, &int(1), &l),
        Ok(Admission::Duplicate),
        "the same histogram again is a duplicate"
    );
    assert_eq!(
        head.append_histogram(r, 20, &int(2), &l),
        Err(HeadError::Append(
            AppendError::DuplicateTimestampDifferentValue { t: 20 }
        ))
    );
    assert_eq!(
        head.append_sample(r, 20, 1.0, &l),
        Err(HeadError::Append(
            AppendError::DuplicateTimestampDifferentValue { t: 20 }
        )),
        "a float at a histogram's timestamp is refused"
    );
    assert_eq!(
        head.append_sample(r, 15, 1.0, &l),
        Err(HeadError::Append(AppendError::OutOfOrder {
            t: 15,
            max_t: 20
        })),
        "a float older than the newest histogram is out of order"
    );
    head.append_sample(r, 30, 3.0, &l).expect("float again");
    let (floats, hs) = read(&head, "mixed");
    assert_eq!(floats, vec![(10, 1.0), (30, 3.0)]);
    assert_eq!(hs.iter().map(|p| p.t).collect::<Vec<_>>(), vec![20]);
    let invalid = NativeHistogram::Int(Histogram {
        schema: 42,
        ..Histogram::default()
    });
    assert_eq!(
        head.append_histogram(r, 40, &invalid, &l),
        Err(HeadError::Append(AppendError::InvalidHistogram { t: 40 }))
    );
}

#[test]
fn out_of_order_histograms_within_the_window() {
    let head = Head::new(
        "t",
        &HeadConfig {
            out_of_order_capacity: 4,
            ..HeadConfig::default()
        },
    );
    let r = series(&head, "ooo");
    let l = limits(1000);
    head.append_histogram(r, 1000, &int(100), &l)
        .expect("newest");
    head.append_sample(r, 995, 1.0, &l)
        .expect("an out-of-order float");
    for t in [990, 992, 991, 999, 993, 994] {
        assert_eq!(
            head.append_histogram(r, t, &int(t as u64), &l),
            Ok(Admission::OutOfOrder),
            "{t}"
        );
    }
    assert_eq!(
        head.append_histogram(r, 991, &int(991), &l),
        Ok(Admission::Duplicate),
        "found in a compacted chunk"
    );
    assert_eq!(
        head.append_histogram(r, 994, &int(1), &l),
        Err(HeadError::Append(
            AppendError::DuplicateTimestampDifferentValue { t: 994 }
        )),
        "found in the buffer"
    );
    assert_eq!(
        head.append_histogram(r, 995, &int(1), &l),
        Err(HeadError::Append(
            AppendError::DuplicateTimestampDifferentValue { t: 995 }
        )),
        "a float is there"
    );
    assert_eq!(
        head.append_sample(r, 993, 1.0, &l),
        Err(HeadError::Append(
            AppendError::DuplicateTimestampDifferentValue { t: 993 }
        )),
        "a histogram is there"
    );
    assert_eq!(
        head.append_histogram(r, -5, &int(1), &l),
        Err(HeadError::Append(AppendError::TooOldForOooWindow {
            t: -5,
            min_valid_t: 0
        }))
    );
    let (floats, hs) = read(&head, "ooo");
    assert_eq!(floats, vec![(995, 1.0)]);
    assert_eq!(
        hs.iter().map(|p| p.t).collect::<Vec<_>>(),
        vec![990, 991, 992, 993, 994, 999, 1000]
    );
    assert_eq!(hs[1].h.count, 2.0 * 991.0);
}

#[test]
fn a_float_staleness_marker_ends_a_histogram_series_as_a_histogram_marker() {
    let head = Head::new("t", &HeadConfig::default());
    let r = series(&head, "stale");
    let l = limits(0);
    head.append_histogram(r, 1, &float(1.0), &l).expect("first");
    head.append_sample(r, 2, f64::from_bits(STALE_NAN_BITS), &l)
        .expect("marker");
    head.append_histogram(r, 3, &float(1.0), &l)
        .expect("after the marker, in a new chunk");
    let (floats, hs) = read(&head, "stale");
    assert!(floats.is_empty(), "{floats:?}");
    assert_eq!(hs.len(), 3);
    assert!(hs[1].h.is_stale_marker() && is_stale_nan(hs[1].h.sum));
    assert!(!hs[2].h.is_stale_marker());
    // The histogram-only series is in the metadata answers.
    let matchers = [Matcher::equal("__name__", "stale")];
    assert_eq!(head.series(&matchers, 0, 10).len(), 1);
    assert_eq!(head.label_values("__name__", &[], 0, 10), vec!["stale"]);
}
