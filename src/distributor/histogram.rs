//! Validation of native histogram samples, after Prometheus's
//! `Histogram.Validate` / `FloatHistogram.Validate`
//! (`model/histogram/*.go`) and Mimir's per-tenant bucket limit
//! (`max_native_histogram_buckets`, `reduce_native_histogram_over_max_buckets`).
//!
//! A bad histogram refuses only itself. Every refusal names the series, the
//! timestamp, what is wrong, and has a [`DiscardReason`] of its own kind, so
//! `strata_discarded_samples_total` says what senders get wrong. Histograms
//! over the bucket limit have their resolution reduced when the tenant
//! allows it: neighbouring buckets merged, the schema lowered one step at a
//! time, as Prometheus's scrape-side `native_histogram_bucket_limit` does.

use super::validate::{Refusal, describe};
use crate::limits::{DiscardReason, Limits};
use crate::model::histogram::{
    FloatHistogram, Histogram, HistogramError, MIN_EXPONENTIAL_SCHEMA, NativeHistogram, Span,
    absolute,
};
use crate::proto::histogram::{from_proto, to_proto};
use crate::proto::prometheus::TimeSeries;

/// The discard reason of a histogram that fails validation.
pub fn reason(err: &HistogramError) -> DiscardReason {
    match err {
        HistogramError::SchemaOutOfRange { .. } => DiscardReason::NativeHistogramInvalidSchema,
        HistogramError::InvalidZeroThreshold { .. }
        | HistogramError::CustomBucketsZeroThreshold { .. }
        | HistogramError::CustomBucketsZeroCount { .. } => {
            DiscardReason::NativeHistogramInvalidZeroBucket
        }
        HistogramError::NegativeSpanOffset { .. } => DiscardReason::NativeHistogramBadSpans,
        HistogramError::SpanBucketMismatch { .. } => {
            DiscardReason::NativeHistogramBucketCountMismatch
        }
        HistogramError::NegativeCount { .. }
        | HistogramError::NegativeBucketCount { .. }
        | HistogramError::BucketCountOverflow { .. } => DiscardReason::NativeHistogramNegativeCount,
        HistogramError::UnexpectedCustomValues { .. }
        | HistogramError::CustomValuesNotIncreasing { .. }
        | HistogramError::CustomBucketOutOfRange { .. }
        | HistogramError::CustomBucketsNegativeBuckets => {
            DiscardReason::NativeHistogramInvalidCustomBuckets
        }
    }
}

/// An integer histogram's count must be the sum of its zero and bucket
/// counts; with a NaN sum (a staleness marker, or observations of NaN) it
/// may be larger, as NaN observations land in no bucket. Float histograms
/// are not checked: rounding makes the sum inexact (as in Prometheus).
/// Call after [`Histogram::validate`], which rules out negative counts.
fn check_count(h: &Histogram) -> Result<(), String> {
    let buckets = absolute(&h.positive_buckets)
        .chain(absolute(&h.negative_buckets))
        .fold(h.zero_count, |sum, c| sum.wrapping_add(c as u64));
    if h.sum.is_nan() {
        if h.count < buckets {
            return Err(format!(
                "count {} is smaller than the zero and bucket counts' sum {buckets}",
                h.count
            ));
        }
    } else if h.count != buckets {
        return Err(format!(
            "count {} is not the zero and bucket counts' sum {buckets}",
            h.count
        ));
    }
    Ok(())
}

/// Bucket index `idx` at a schema `delta` steps lower: Prometheus's
/// `targetIdx`, where bucket `i` covers `(base^(i-1), base^i]`.
fn target_index(idx: i32, delta: u32) -> i32 {
    ((idx - 1) >> delta) + 1
}

/// Merges buckets `delta` schema steps down; `counts` are absolute.
fn reduce_side<T: Copy + std::ops::AddAssign>(
    spans: &[Span],
    counts: &[T],
    delta: u32,
) -> (Vec<Span>, Vec<T>) {
    let mut out_spans: Vec<Span> = Vec::new();
    let mut out_counts: Vec<T> = Vec::new();
    let mut last: Option<i32> = None;
    let mut counts = counts.iter();
    let mut idx = 0i32;
    for span in spans {
        idx += span.offset;
        for _ in 0..span.length {
            let Some(&count) = counts.next() else {
                return (out_spans, out_counts);
            };
            let target = target_index(idx, delta);
            match last {
                Some(l) if l == target => {
                    if let Some(c) = out_counts.last_mut() {
                        *c += count;
                    }
                }
                Some(l) if target == l + 1 => {
                    if let Some(s) = out_spans.last_mut() {
                        s.length += 1;
                    }
                    out_counts.push(count);
                }
                _ => {
                    out_spans.push(Span {
                        offset: last.map_or(target, |l| target - l - 1),
                        length: 1,
                    });
                    out_counts.push(count);
                }
            }
            last = Some(target);
            idx += 1;
        }
    }
    (out_spans, out_counts)
}

fn deltas(counts: &[i64]) -> Vec<i64> {
    let mut prev = 0i64;
    counts
        .iter()
        .map(|&c| {
            let d = c.wrapping_sub(prev);
            prev = c;
            d
        })
        .collect()
}

/// The histogram one schema step coarser.
fn reduce_once(h: &NativeHistogram) -> NativeHistogram {
    match h {
        NativeHistogram::Int(h) => {
            let positive: Vec<i64> = absolute(&h.positive_buckets).collect();
            let negative: Vec<i64> = absolute(&h.negative_buckets).collect();
            let (positive_spans, positive) = reduce_side(&h.positive_spans, &positive, 1);
            let (negative_spans, negative) = reduce_side(&h.negative_spans, &negative, 1);
            NativeHistogram::Int(Histogram {
                schema: h.schema - 1,
                positive_spans,
                negative_spans,
                positive_buckets: deltas(&positive),
                negative_buckets: deltas(&negative),
                ..h.clone()
            })
        }
        NativeHistogram::Float(h) => {
            let (positive_spans, positive_buckets) =
                reduce_side(&h.positive_spans, &h.positive_buckets, 1);
            let (negative_spans, negative_buckets) =
                reduce_side(&h.negative_spans, &h.negative_buckets, 1);
            NativeHistogram::Float(FloatHistogram {
                schema: h.schema - 1,
                positive_spans,
                negative_spans,
                positive_buckets,
                negative_buckets,
                ..h.clone()
            })
        }
    }
}

fn schema(h: &NativeHistogram) -> i32 {
    match h {
        NativeHistogram::Int(h) => h.schema,
        NativeHistogram::Float(h) => h.schema,
    }
}

/// The histogram with at most `limit` buckets, its resolution lowered as
/// far as needed; `None` when even the lowest exponential schema has more
/// (or it has custom buckets, which have no coarser schema).
pub fn reduce_resolution(h: &NativeHistogram, limit: usize) -> Option<NativeHistogram> {
    let mut h = h.clone();
    while h.bucket_count() > limit {
        let s = schema(&h);
        if s <= MIN_EXPONENTIAL_SCHEMA || s > crate::model::histogram::MAX_EXPONENTIAL_SCHEMA {
            return None;
        }
        h = reduce_once(&h);
    }
    Some(h)
}

/// Checks a valid (labels checked) series' histograms: refuses the bad ones
/// and those over the bucket limit, lowers the resolution of those over it
/// when allowed. Returns at most one refusal per reason (counting all).
pub fn validate_histograms(series: &mut TimeSeries, limits: &Limits) -> Vec<Refusal> {
    if series.histograms.is_empty() {
        return Vec::new();
    }
    // Per reason: (count, first timestamp, first message).
    let mut refused: Vec<(DiscardReason, usize, i64, String)> = Vec::new();
    let mut refuse = |reason: DiscardReason, t: i64, message: String| match refused
        .iter_mut()
        .find(|r| r.0 == reason)
    {
        Some(entry) => entry.1 += 1,
        None => refused.push((reason, 1, t, message)),
    };
    let limit = limits.max_native_histogram_buckets;
    let mut kept = Vec::with_capacity(series.histograms.len());
    for proto in series.histograms.drain(..) {
        let t = proto.timestamp;
        let h = match from_proto(&proto) {
            Ok(h) => h,
            Err(err) => {
                refuse(
                    DiscardReason::NativeHistogramMixedCounts,
                    t,
                    err.to_string(),
                );
                continue;
            }
        };
        if let Err(err) = h.validate() {
            refuse(reason(&err), t, err.to_string());
            continue;
        }
        if let NativeHistogram::Int(int) = &h
            && let Err(message) = check_count(int)
        {
            refuse(DiscardReason::NativeHistogramCountMismatch, t, message);
            continue;
        }
        if limit > 0 && h.bucket_count() > limit {
            let reduced = limits
                .reduce_native_histogram_over_max_buckets
                .then(|| reduce_resolution(&h, limit))
                .flatten();
            match reduced {
                Some(reduced) => kept.push(to_proto(t, &reduced)),
                None => refuse(
                    DiscardReason::MaxNativeHistogramBuckets,
                    t,
                    format!(
                        "it has {} buckets, the limit is {limit} ({}{})",
                        h.bucket_count(),
                        Limits::config_key("max_native_histogram_buckets"),
                        if limits.reduce_native_histogram_over_max_buckets {
                            "; its resolution cannot be reduced far enough"
                        } else {
                            "; or set limits.reduce_native_histogram_over_max_buckets"
                        }
                    ),
                ),
            }
            continue;
        }
        kept.push(proto);
    }
    series.histograms = kept;
    refused
        .into_iter()
        .map(|(reason, samples, t, message)| Refusal {
            reason,
            samples,
            message: format!(
                "series {}: {samples} native histogram sample(s) refused, the first at timestamp {t} ms: {message}",
                describe(&series.labels)
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::histogram::{CUSTOM_BUCKETS_SCHEMA, CounterResetHint};
    use crate::proto::histogram::int_to_proto;
    use crate::proto::prometheus::{Histogram as ProtoHistogram, Label};

    /// Schema 1, buckets 1..=4 and 7 with counts 1, 2, 3, 4, 5.
    fn int() -> Histogram {
        Histogram {
            counter_reset_hint: CounterResetHint::Unknown,
            schema: 1,
            zero_threshold: 0.001,
            zero_count: 1,
            count: 16,
            sum: 20.0,
            positive_spans: vec![
                Span {
                    offset: 1,
                    length: 4,
                },
                Span {
                    offset: 2,
                    length: 1,
                },
            ],
            negative_spans: vec![],
            positive_buckets: vec![1, 1, 1, 1, 1],
            negative_buckets: vec![],
            custom_values: vec![],
        }
    }

    fn series(histograms: Vec<ProtoHistogram>) -> TimeSeries {
        TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "h".into(),
            }],
            histograms,
            ..Default::default()
        }
    }

    fn reasons(histograms: Vec<ProtoHistogram>, limits: &Limits) -> Vec<(DiscardReason, usize)> {
        let mut s = series(histograms);
        validate_histograms(&mut s, limits)
            .into_iter()
            .map(|r| (r.reason, r.samples))
            .collect()
    }

    #[test]
    fn each_defect_has_its_reason() {
        let limits = Limits::default();
        let ok = int();
        assert_eq!(reasons(vec![int_to_proto(1, &ok)], &limits), vec![]);
        let cases: Vec<(Histogram, DiscardReason)> = vec![
            (
                Histogram {
                    schema: 9,
                    ..ok.clone()
                },
                DiscardReason::NativeHistogramInvalidSchema,
            ),
            (
                Histogram {
                    positive_buckets: vec![1, 1, 1, 1],
                    ..ok.clone()
                },
                DiscardReason::NativeHistogramBucketCountMismatch,
            ),
            (
                Histogram {
                    positive_buckets: vec![1, 1, -3, 1, 1],
                    ..ok.clone()
                },
                DiscardReason::NativeHistogramNegativeCount,
            ),
            (
                Histogram {
                    positive_spans: vec![
                        Span {
                            offset: 1,
                            length: 4,
                        },
                        Span {
                            offset: -2,
                            length: 1,
                        },
                    ],
                    ..ok.clone()
                },
                DiscardReason::NativeHistogramBadSpans,
            ),
            (
                Histogram {
                    count: 17,
                    ..ok.clone()
                },
                DiscardReason::NativeHistogramCountMismatch,
            ),
            (
                Histogram {
                    zero_threshold: -1.0,
                    ..ok.clone()
                },
                DiscardReason::NativeHistogramInvalidZeroBucket,
            ),
            (
                Histogram {
                    schema: CUSTOM_BUCKETS_SCHEMA,
                    zero_threshold: 0.0,
                    zero_count: 0,
                    count: 15,
                    custom_values: vec![1.0, 0.5],
                    ..ok.clone()
                },
                DiscardReason::NativeHistogramInvalidCustomBuckets,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(
                reasons(vec![int_to_proto(1, &h), int_to_proto(2, &h)], &limits),
                vec![(want, 2)],
                "{h:?}"
            );
        }
        let mut mixed = int_to_proto(1, &ok);
        mixed.positive_counts = vec![1.0];
        assert_eq!(
            reasons(vec![mixed], &limits),
            vec![(DiscardReason::NativeHistogramMixedCounts, 1)]
        );
    }

    #[test]
    fn a_nan_sum_allows_a_larger_count_and_stale_markers_pass() {
        let limits = Limits::default();
        let nan = Histogram {
            sum: f64::NAN,
            count: 20,
            ..int()
        };
        assert_eq!(reasons(vec![int_to_proto(1, &nan)], &limits), vec![]);
        let stale = Histogram {
            sum: f64::from_bits(crate::model::STALE_NAN_BITS),
            ..Histogram::default()
        };
        assert_eq!(reasons(vec![int_to_proto(1, &stale)], &limits), vec![]);
    }

    #[test]
    fn over_the_bucket_limit_reduces_or_refuses() {
        // Buckets 1, 2, 3, 4, 7 (counts 1..=5) at schema 1 are buckets 1,
        // 2, 4 (3, 7, 5) at schema 0, then buckets 1, 2 (10, 5) at -1.
        let h = NativeHistogram::Int(int());
        let reduced = reduce_resolution(&h, 2).expect("reducible");
        let NativeHistogram::Int(r) = &reduced else {
            panic!("kind kept")
        };
        assert_eq!(r.schema, -1);
        assert_eq!(
            r.positive_spans,
            vec![Span {
                offset: 1,
                length: 2
            }]
        );
        assert_eq!(
            absolute(&r.positive_buckets).collect::<Vec<_>>(),
            vec![10, 5]
        );
        r.validate().expect("still valid");
        check_count(r).expect("same count");
        let float =
            reduce_resolution(&NativeHistogram::Float(int().to_float()), 2).expect("reducible");
        assert_eq!(float.to_float(), reduced.to_float());

        let limits = Limits {
            max_native_histogram_buckets: 2,
            ..Limits::default()
        };
        let mut s = series(vec![int_to_proto(1, &int())]);
        assert!(validate_histograms(&mut s, &limits).is_empty());
        assert_eq!(from_proto(&s.histograms[0]), Ok(reduced));

        let strict = Limits {
            reduce_native_histogram_over_max_buckets: false,
            ..limits.clone()
        };
        let mut s = series(vec![int_to_proto(1, &int())]);
        let refusals = validate_histograms(&mut s, &strict);
        assert_eq!(refusals[0].reason, DiscardReason::MaxNativeHistogramBuckets);
        assert!(
            refusals[0]
                .message
                .contains("limits.max_native_histogram_buckets"),
            "{}",
            refusals[0].message
        );
        assert!(s.histograms.is_empty());
        assert_eq!(
            reduce_resolution(&h, 0),
            None,
            "schema -4 still has buckets"
        );
    }
}
