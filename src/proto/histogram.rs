//! Native histograms between remote write's `prometheus.Histogram` (1.0;
//! 2.0 histograms are mapped to it by the decoder) and the model's
//! [`Histogram`] / [`FloatHistogram`].
//!
//! A histogram is a float histogram when its count is `count_float`, else
//! an integer one (an absent count is the integer 0), as Prometheus's
//! `prompb.Histogram.IsFloatHistogram` decides. Unlike Prometheus, which
//! silently ignores the fields of the other kind, a histogram carrying
//! fields of both kinds is refused: a sender that does so is broken, and
//! storing half of what it meant would hide that.

use super::prometheus::{self as pb, histogram};
use crate::model::histogram::{CounterResetHint, FloatHistogram, Histogram, NativeHistogram, Span};

/// Why a remote-write histogram does not convert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error(
        "an integer histogram (count_int) must carry positive_deltas/negative_deltas and zero_count_int, \
         not float counts or a float zero count"
    )]
    MixedInt,
    #[error(
        "a float histogram (count_float) must carry positive_counts/negative_counts and zero_count_float, \
         not integer deltas or an integer zero count"
    )]
    MixedFloat,
}

/// Remote write's reset hint; unknown values are taken as "unknown".
pub fn hint_from_proto(hint: i32) -> CounterResetHint {
    match histogram::ResetHint::try_from(hint) {
        Ok(histogram::ResetHint::Yes) => CounterResetHint::CounterReset,
        Ok(histogram::ResetHint::No) => CounterResetHint::NotCounterReset,
        Ok(histogram::ResetHint::Gauge) => CounterResetHint::Gauge,
        Ok(histogram::ResetHint::Unknown) | Err(_) => CounterResetHint::Unknown,
    }
}

pub fn hint_to_proto(hint: CounterResetHint) -> i32 {
    (match hint {
        CounterResetHint::Unknown => histogram::ResetHint::Unknown,
        CounterResetHint::CounterReset => histogram::ResetHint::Yes,
        CounterResetHint::NotCounterReset => histogram::ResetHint::No,
        CounterResetHint::Gauge => histogram::ResetHint::Gauge,
    }) as i32
}

fn spans(from: &[pb::BucketSpan]) -> Vec<Span> {
    from.iter()
        .map(|s| Span {
            offset: s.offset,
            length: s.length,
        })
        .collect()
}

fn spans_to_proto(from: &[Span]) -> Vec<pb::BucketSpan> {
    from.iter()
        .map(|s| pb::BucketSpan {
            offset: s.offset,
            length: s.length,
        })
        .collect()
}

/// The model's histogram of a remote-write histogram (not validated: see
/// [`NativeHistogram::validate`]).
pub fn from_proto(h: &pb::Histogram) -> Result<NativeHistogram, ConversionError> {
    match h.count {
        Some(histogram::Count::CountFloat(count)) => {
            let zero_count = match h.zero_count {
                Some(histogram::ZeroCount::ZeroCountFloat(z)) => z,
                None => 0.0,
                Some(histogram::ZeroCount::ZeroCountInt(_)) => {
                    return Err(ConversionError::MixedFloat);
                }
            };
            if !h.positive_deltas.is_empty() || !h.negative_deltas.is_empty() {
                return Err(ConversionError::MixedFloat);
            }
            Ok(NativeHistogram::Float(FloatHistogram {
                counter_reset_hint: hint_from_proto(h.reset_hint),
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                zero_count,
                count,
                sum: h.sum,
                positive_spans: spans(&h.positive_spans),
                negative_spans: spans(&h.negative_spans),
                positive_buckets: h.positive_counts.clone(),
                negative_buckets: h.negative_counts.clone(),
                custom_values: h.custom_values.clone(),
            }))
        }
        Some(histogram::Count::CountInt(_)) | None => {
            let count = match h.count {
                Some(histogram::Count::CountInt(c)) => c,
                _ => 0,
            };
            let zero_count = match h.zero_count {
                Some(histogram::ZeroCount::ZeroCountInt(z)) => z,
                None => 0,
                Some(histogram::ZeroCount::ZeroCountFloat(_)) => {
                    return Err(ConversionError::MixedInt);
                }
            };
            if !h.positive_counts.is_empty() || !h.negative_counts.is_empty() {
                return Err(ConversionError::MixedInt);
            }
            Ok(NativeHistogram::Int(Histogram {
                counter_reset_hint: hint_from_proto(h.reset_hint),
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                zero_count,
                count,
                sum: h.sum,
                positive_spans: spans(&h.positive_spans),
                negative_spans: spans(&h.negative_spans),
                positive_buckets: h.positive_deltas.clone(),
                negative_buckets: h.negative_deltas.clone(),
                custom_values: h.custom_values.clone(),
            }))
        }
    }
}

/// An integer histogram at `timestamp` in remote write's shape.
pub fn int_to_proto(timestamp: i64, h: &Histogram) -> pb::Histogram {
    pb::Histogram {
        count: Some(histogram::Count::CountInt(h.count)),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: Some(histogram::ZeroCount::ZeroCountInt(h.zero_count)),
        negative_spans: spans_to_proto(&h.negative_spans),
        negative_deltas: h.negative_buckets.clone(),
        negative_counts: Vec::new(),
        positive_spans: spans_to_proto(&h.positive_spans),
        positive_deltas: h.positive_buckets.clone(),
        positive_counts: Vec::new(),
        reset_hint: hint_to_proto(h.counter_reset_hint),
        timestamp,
        custom_values: h.custom_values.clone(),
    }
}

/// A float histogram at `timestamp` in remote write's shape.
pub fn float_to_proto(timestamp: i64, h: &FloatHistogram) -> pb::Histogram {
    pb::Histogram {
        count: Some(histogram::Count::CountFloat(h.count)),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: Some(histogram::ZeroCount::ZeroCountFloat(h.zero_count)),
        negative_spans: spans_to_proto(&h.negative_spans),
        negative_deltas: Vec::new(),
        negative_counts: h.negative_buckets.clone(),
        positive_spans: spans_to_proto(&h.positive_spans),
        positive_deltas: Vec::new(),
        positive_counts: h.positive_buckets.clone(),
        reset_hint: hint_to_proto(h.counter_reset_hint),
        timestamp,
        custom_values: h.custom_values.clone(),
    }
}

/// Either kind at `timestamp` in remote write's shape.
pub fn to_proto(timestamp: i64, h: &NativeHistogram) -> pb::Histogram {
    match h {
        NativeHistogram::Int(h) => int_to_proto(timestamp, h),
        NativeHistogram::Float(h) => float_to_proto(timestamp, h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int() -> Histogram {
        Histogram {
            counter_reset_hint: CounterResetHint::CounterReset,
            schema: 3,
            zero_threshold: 1e-128,
            zero_count: 2,
            count: 9,
            sum: 12.5,
            positive_spans: vec![Span {
                offset: -2,
                length: 2,
            }],
            negative_spans: vec![Span {
                offset: 1,
                length: 1,
            }],
            positive_buckets: vec![3, -1],
            negative_buckets: vec![2],
            custom_values: vec![],
        }
    }

    #[test]
    fn both_kinds_round_trip() {
        let h = NativeHistogram::Int(int());
        assert_eq!(from_proto(&to_proto(5, &h)), Ok(h.clone()));
        let f = NativeHistogram::Float(FloatHistogram {
            counter_reset_hint: CounterResetHint::Gauge,
            schema: -53,
            zero_threshold: 0.0,
            zero_count: 0.0,
            count: 3.5,
            sum: 1.0,
            positive_spans: vec![Span {
                offset: 0,
                length: 2,
            }],
            negative_spans: vec![],
            positive_buckets: vec![1.5, 2.0],
            negative_buckets: vec![],
            custom_values: vec![0.5, 1.0],
        });
        let proto = to_proto(7, &f);
        assert_eq!(proto.timestamp, 7);
        assert_eq!(from_proto(&proto), Ok(f));
    }

    #[test]
    fn absent_count_is_an_integer_histogram_and_mixed_kinds_are_refused() {
        let empty = pb::Histogram::default();
        assert!(matches!(from_proto(&empty), Ok(NativeHistogram::Int(h)) if h.count == 0));
        let mut mixed = int_to_proto(1, &int());
        mixed.positive_counts = vec![1.0];
        assert_eq!(from_proto(&mixed), Err(ConversionError::MixedInt));
        let mut mixed = int_to_proto(1, &int());
        mixed.count = Some(histogram::Count::CountFloat(9.0));
        mixed.zero_count = None;
        assert_eq!(from_proto(&mixed), Err(ConversionError::MixedFloat));
        assert_eq!(hint_from_proto(42), CounterResetHint::Unknown);
    }
}
