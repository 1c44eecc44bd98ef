//! Float histogram arithmetic, following Prometheus
//! `model/histogram/float_histogram.go` (`Add`, `Sub`, `Mul`, `Div`,
//! `Compact`, `DetectReset`, `CopyToSchema`, `zeroCountForLargerThreshold`)
//! and `promql/quantile.go` (`HistogramQuantile`, `HistogramFraction`),
//! plus the bucket statistics of `histogram_stddev`/`histogram_stdvar`.
//!
//! Arithmetic works on (bucket index, count) pairs per side: both operands
//! are brought to the lower schema and the wider zero bucket, then merged
//! index by index; the result's spans are rebuilt from the pairs.

use super::histogram::{CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, Span};
use super::histogram_kahan::kahan_sum_inc;

/// Why two histograms cannot be combined.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum HistogramArithError {
    #[error("cannot combine histograms with exponential and custom buckets")]
    MixedExponentialCustom,
}

/// One bucket with its bounds: `(lower, upper]` (the zero bucket is
/// `[-threshold, threshold]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloatBucket {
    pub lower: f64,
    pub upper: f64,
    pub count: f64,
}

/// Whether two histograms' custom bounds differ and were reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reconciled(pub bool);

/// `(index, count)` pairs of the buckets `spans` cover.
fn pairs(spans: &[Span], buckets: &[f64]) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(buckets.len());
    let mut idx = 0i32;
    let mut b = 0usize;
    for s in spans {
        idx += s.offset;
        for _ in 0..s.length {
            if let Some(&c) = buckets.get(b) {
                out.push((idx, c));
            }
            b += 1;
            idx += 1;
        }
    }
    out
}

/// Spans and counts of sorted `(index, count)` pairs; runs of up to
/// `max_empty` empty buckets between populated ones stay inside a span,
/// longer runs and empty buckets at the edges are dropped.
fn build(pairs: &[(i32, f64)], max_empty: usize) -> (Vec<Span>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut buckets = Vec::new();
    let mut last: Option<i32> = None;
    for &(idx, c) in pairs {
        if c == 0.0 {
            continue;
        }
        match last {
            Some(prev) if (idx - prev - 1) as usize <= max_empty => {
                let gap = (idx - prev - 1) as usize;
                buckets.extend(std::iter::repeat_n(0.0, gap));
                if let Some(s) = spans.last_mut() {
                    s.length += gap as u32 + 1;
                }
            }
            Some(prev) => spans.push(Span {
                offset: idx - prev - 1,
                length: 1,
            }),
            None => spans.push(Span {
                offset: idx,
                length: 1,
            }),
        }
        buckets.push(c);
        last = Some(idx);
    }
    (spans, buckets)
}

/// The bucket index at `target` schema holding bucket `idx` of `schema`.
fn target_index(idx: i32, schema: i32, target: i32) -> i32 {
    ((idx - 1) >> (schema - target)) + 1
}

pub use super::exponential_bounds::exponential_upper;

fn reduce(p: &[(i32, f64)], schema: i32, target: i32) -> Vec<(i32, f64)> {
    let mut out: Vec<(i32, f64)> = Vec::with_capacity(p.len());
    for &(idx, c) in p {
        let t = target_index(idx, schema, target);
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 += c,
            _ => out.push((t, c)),
        }
    }
    out
}

/// Merges sorted pairs: `a + sign * b`.
fn merge(a: &[(i32, f64)], b: &[(i32, f64)], sign: f64) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                out.push((x.0, x.1 + sign * y.1));
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                out.push(*x);
                i += 1;
            }
            (Some(_), Some(y)) | (None, Some(y)) => {
                out.push((y.0, sign * y.1));
                j += 1;
            }
            (Some(x), None) => {
                out.push(*x);
                i += 1;
            }
            (None, None) => break,
        }
    }
    out
}

impl FloatHistogram {
    pub fn uses_custom_buckets(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    pub(crate) fn positive_pairs(&self) -> Vec<(i32, f64)> {
        pairs(&self.positive_spans, &self.positive_buckets)
    }

    pub(crate) fn negative_pairs(&self) -> Vec<(i32, f64)> {
        pairs(&self.negative_spans, &self.negative_buckets)
    }

    pub(crate) fn set_pairs(&mut self, pos: &[(i32, f64)], neg: &[(i32, f64)]) {
        (self.positive_spans, self.positive_buckets) = build_keep(pos);
        (self.negative_spans, self.negative_buckets) = build_keep(neg);
    }

    /// Bounds `(lower, upper]` of positive bucket `idx`.
    pub(crate) fn positive_bounds(&self, idx: i32) -> (f64, f64) {
        if self.uses_custom_buckets() {
            let cv = &self.custom_values;
            let i = idx.max(0) as usize;
            let lower = if i == 0 {
                f64::NEG_INFINITY
            } else {
                cv.get(i - 1).copied().unwrap_or(f64::INFINITY)
            };
            let upper = cv.get(i).copied().unwrap_or(f64::INFINITY);
            return (lower, upper);
        }
        (
            exponential_upper(idx - 1, self.schema),
            exponential_upper(idx, self.schema),
        )
    }

    /// The custom buckets' counts moved to `shared`, a subset of their
    /// bounds: each bucket to the first shared bucket whose upper bound is
    /// not below its own.
    fn remap_to_bounds(&self, shared: &[f64]) -> Vec<(i32, f64)> {
        let mut out: Vec<(i32, f64)> = Vec::new();
        for (idx, c) in self.positive_pairs() {
            let upper = self.positive_bounds(idx).1;
            let t = shared.partition_point(|&b| b < upper) as i32;
            match out.last_mut() {
                Some(last) if last.0 == t => last.1 += c,
                _ => out.push((t, c)),
            }
        }
        out
    }

    /// Equal but for the counter reset hint (Prometheus `Equals`).
    pub fn equals(&self, other: &FloatHistogram) -> bool {
        let mut a = self.clone();
        a.counter_reset_hint = other.counter_reset_hint;
        a == *other
    }

    /// The same histogram at a lower (or equal) exponential schema.
    pub fn copy_to_schema(&self, target: i32) -> FloatHistogram {
        if target >= self.schema || self.uses_custom_buckets() {
            return self.clone();
        }
        let mut h = self.clone();
        let pos = reduce(&self.positive_pairs(), self.schema, target);
        let neg = reduce(&self.negative_pairs(), self.schema, target);
        h.schema = target;
        h.set_pairs(&pos, &neg);
        h
    }

    /// Prometheus `zeroCountForLargerThreshold`: the zero count with the
    /// zero threshold raised to `larger`, itself raised to the upper bound
    /// of a populated bucket it falls inside.
    pub fn zero_count_for_larger_threshold(&self, larger: f64) -> (f64, f64) {
        let mut larger = larger;
        if larger <= self.zero_threshold {
            return (self.zero_count, self.zero_threshold.max(larger));
        }
        let pos = self.positive_pairs();
        let neg = self.negative_pairs();
        'outer: loop {
            let mut count = self.zero_count;
            for &(idx, c) in &pos {
                let (lower, upper) = self.positive_bounds(idx);
                if lower >= larger {
                    break;
                }
                count += c;
                if upper > larger {
                    if c != 0.0 {
                        larger = upper;
                    }
                    break;
                }
            }
            for &(idx, c) in &neg {
                let (lower, upper) = self.positive_bounds(idx);
                if lower >= larger {
                    break;
                }
                count += c;
                if upper > larger {
                    if c != 0.0 {
                        larger = upper;
                        continue 'outer;
                    }
                    break;
                }
            }
            return (count, larger);
        }
    }

    /// Drops buckets wholly inside the zero bucket (their counts already
    /// belong to the zero count).
    pub(crate) fn trim_in_zero_bucket(&self, p: Vec<(i32, f64)>) -> Vec<(i32, f64)> {
        if self.zero_threshold == 0.0 {
            return p;
        }
        p.into_iter()
            .filter(|&(idx, _)| self.positive_bounds(idx).1 > self.zero_threshold)
            .collect()
    }

    /// `self += other` (`sign` 1) or `self -= other` (`sign` -1): the lower
    /// schema, the wider zero bucket; custom buckets only with custom
    /// buckets, mismatched bounds reconciled to the bounds both share.
    fn combine(
        &mut self,
        other: &FloatHistogram,
        sign: f64,
    ) -> Result<Reconciled, HistogramArithError> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramArithError::MixedExponentialCustom);
        }
        self.count += sign * other.count;
        self.sum += sign * other.sum;
        if self.uses_custom_buckets() {
            if self.custom_values == other.custom_values {
                let pos = merge(&self.positive_pairs(), &other.positive_pairs(), sign);
                self.set_pairs(&pos, &[]);
                return Ok(Reconciled(false));
            }
            // Keep the bounds both have; every bucket goes to the bucket of
            // the shared bounds that contains it.
            let shared = shared_bounds(&self.custom_values, &other.custom_values);
            let pos = merge(
                &self.remap_to_bounds(&shared),
                &other.remap_to_bounds(&shared),
                sign,
            );
            self.custom_values = shared;
            self.set_pairs(&pos, &[]);
            return Ok(Reconciled(true));
        }
        let target = self.schema.min(other.schema);
        let mut a = self.copy_to_schema(target);
        let mut b = other.copy_to_schema(target);
        // Widen both zero buckets to the same threshold.
        while a.zero_threshold != b.zero_threshold {
            if a.zero_threshold > b.zero_threshold {
                let (c, t) = b.zero_count_for_larger_threshold(a.zero_threshold);
                b.zero_count = c;
                b.zero_threshold = t;
            }
            if b.zero_threshold > a.zero_threshold {
                let (c, t) = a.zero_count_for_larger_threshold(b.zero_threshold);
                a.zero_count = c;
                a.zero_threshold = t;
            }
        }
        let pos = merge(
            &a.trim_in_zero_bucket(a.positive_pairs()),
            &b.trim_in_zero_bucket(b.positive_pairs()),
            sign,
        );
        let neg = merge(
            &a.trim_in_zero_bucket(a.negative_pairs()),
            &b.trim_in_zero_bucket(b.negative_pairs()),
            sign,
        );
        self.schema = target;
        self.zero_threshold = a.zero_threshold;
        self.zero_count = a.zero_count + sign * b.zero_count;
        self.set_pairs(&pos, &neg);
        Ok(Reconciled(false))
    }

    /// `self += other` (Prometheus `FloatHistogram.Add`).
    pub fn add(&mut self, other: &FloatHistogram) -> Result<Reconciled, HistogramArithError> {
        self.combine(other, 1.0)
    }

    /// `self -= other` (Prometheus `FloatHistogram.Sub`).
    pub fn sub(&mut self, other: &FloatHistogram) -> Result<Reconciled, HistogramArithError> {
        self.combine(other, -1.0)
    }

    /// Multiplies every count and the sum by `f`.
    pub fn mul(&mut self, f: f64) {
        self.count *= f;
        self.sum *= f;
        self.zero_count *= f;
        self.positive_buckets.iter_mut().for_each(|c| *c *= f);
        self.negative_buckets.iter_mut().for_each(|c| *c *= f);
    }

    /// Divides every count and the sum by `f`; dividing by zero removes
    /// every bucket but the zero bucket (Prometheus `Div`).
    pub fn div(&mut self, f: f64) {
        self.count /= f;
        self.sum /= f;
        self.zero_count /= f;
        if f == 0.0 {
            self.positive_spans.clear();
            self.positive_buckets.clear();
            self.negative_spans.clear();
            self.negative_buckets.clear();
            return;
        }
        self.positive_buckets.iter_mut().for_each(|c| *c /= f);
        self.negative_buckets.iter_mut().for_each(|c| *c /= f);
    }

    /// Removes empty buckets at the edges and runs of more than `max_empty`
    /// empty buckets inside (Prometheus `Compact`).
    pub fn compact(mut self, max_empty: usize) -> FloatHistogram {
        (self.positive_spans, self.positive_buckets) = build(&self.positive_pairs(), max_empty);
        (self.negative_spans, self.negative_buckets) = build(&self.negative_pairs(), max_empty);
        self
    }

    /// Whether the counters were reset between `previous` and `self`
    /// (Prometheus `DetectReset`): a hint says so, or the layout changed in a
    /// way only a reset explains, or any count went down.
    pub fn detect_reset(&self, previous: &FloatHistogram) -> bool {
        match self.counter_reset_hint {
            CounterResetHint::CounterReset => return true,
            CounterResetHint::NotCounterReset => return false,
            _ => {}
        }
        if self.uses_custom_buckets() != previous.uses_custom_buckets() {
            return true;
        }
        if self.count < previous.count {
            return true;
        }
        if self.uses_custom_buckets() && self.custom_values != previous.custom_values {
            // Compare the counts both have at the bounds both have.
            let shared = shared_bounds(&self.custom_values, &previous.custom_values);
            let diff = merge(
                &self.remap_to_bounds(&shared),
                &previous.remap_to_bounds(&shared),
                -1.0,
            );
            return diff.iter().any(|&(_, d)| d < 0.0);
        }
        if self.schema > previous.schema || self.zero_threshold < previous.zero_threshold {
            return true;
        }
        let (prev_zero, threshold) = previous.zero_count_for_larger_threshold(self.zero_threshold);
        if threshold != self.zero_threshold || self.zero_count < prev_zero {
            return true;
        }
        let prev = previous.copy_to_schema(self.schema);
        let mut prev = prev;
        prev.zero_threshold = self.zero_threshold;
        for (cur, old) in [
            (
                self.positive_pairs(),
                prev.trim_in_zero_bucket(prev.positive_pairs()),
            ),
            (
                self.negative_pairs(),
                prev.trim_in_zero_bucket(prev.negative_pairs()),
            ),
        ] {
            let diff = merge(&cur, &old, -1.0);
            if diff.iter().any(|&(_, d)| d < 0.0) {
                return true;
            }
        }
        false
    }

    /// Every bucket from the lowest to the highest: negative buckets, the
    /// zero bucket (when it counts anything), positive buckets.
    pub fn all_buckets(&self) -> Vec<FloatBucket> {
        // A bucket reaching into the zero bucket starts (negative: ends)
        // at the zero threshold, as Prometheus's `AllBucketIterator` has
        // it: quantiles, fractions, variances and the API all see that.
        let zero = self.zero_threshold;
        let mut out =
            Vec::with_capacity(self.positive_buckets.len() + self.negative_buckets.len() + 1);
        for (idx, c) in self.negative_pairs().into_iter().rev() {
            let (lower, upper) = self.positive_bounds(idx);
            out.push(FloatBucket {
                lower: -upper,
                upper: if lower > 0.0 && lower < zero {
                    -zero
                } else {
                    -lower
                },
                count: c,
            });
        }
        // Only a positive zero count, as Prometheus (a delta can be negative).
        if self.zero_count > 0.0 && !self.uses_custom_buckets() {
            out.push(FloatBucket {
                lower: -self.zero_threshold,
                upper: self.zero_threshold,
                count: self.zero_count,
            });
        }
        for (idx, c) in self.positive_pairs() {
            let (lower, upper) = self.positive_bounds(idx);
            out.push(FloatBucket {
                lower: if lower > 0.0 && lower < zero {
                    zero
                } else {
                    lower
                },
                upper,
                count: c,
            });
        }
        out
    }

    /// Prometheus `HistogramQuantile`: the `q` quantile estimated from the
    /// buckets, interpolated exponentially within exponential buckets and
    /// linearly within custom buckets and the zero bucket.
    pub fn quantile(&self, q: f64) -> f64 {
        if q < 0.0 {
            return f64::NEG_INFINITY;
        }
        if q > 1.0 {
            return f64::INFINITY;
        }
        if self.count == 0.0 || q.is_nan() {
            return f64::NAN;
        }
        let forward = self.sum.is_nan() || q < 0.5;
        let mut buckets = self.all_buckets();
        if !forward {
            buckets.reverse();
        }
        let mut rank = if forward {
            q * self.count
        } else {
            (1.0 - q) * self.count
        };
        let mut count = 0.0;
        let mut bucket = FloatBucket {
            lower: 0.0,
            upper: 0.0,
            count: 0.0,
        };
        for b in &buckets {
            bucket = *b;
            if b.count == 0.0 {
                continue;
            }
            count += b.count;
            if count >= rank {
                break;
            }
        }
        if !self.uses_custom_buckets() && bucket.lower < 0.0 && bucket.upper > 0.0 {
            if self.negative_buckets.is_empty() && !self.positive_buckets.is_empty() {
                bucket.lower = 0.0;
            } else if self.positive_buckets.is_empty() && !self.negative_buckets.is_empty() {
                bucket.upper = 0.0;
            }
        } else if self.uses_custom_buckets() {
            if bucket.lower == f64::NEG_INFINITY {
                if bucket.upper <= 0.0 {
                    return bucket.upper;
                }
                bucket.lower = 0.0;
            } else if bucket.upper == f64::INFINITY {
                return bucket.lower;
            }
        }
        if count > self.count {
            count = self.count;
        }
        if count < rank {
            // The rank lies among the NaN observations, above every bucket.
            return if self.sum.is_nan() {
                f64::NAN
            } else {
                bucket.upper
            };
        }
        if forward {
            rank -= count - bucket.count;
        } else {
            rank = count - rank;
        }
        let fraction = rank / bucket.count;
        if self.uses_custom_buckets() || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
            return bucket.lower + (bucket.upper - bucket.lower) * fraction;
        }
        let log_lower = bucket.lower.abs().log2();
        let log_upper = bucket.upper.abs().log2();
        if bucket.lower > 0.0 {
            return (log_lower + (log_upper - log_lower) * fraction).exp2();
        }
        -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2()
    }

    /// The counts of all buckets, the zero bucket included.
    pub fn bucket_total(&self) -> f64 {
        self.zero_count
            + self.positive_buckets.iter().sum::<f64>()
            + self.negative_buckets.iter().sum::<f64>()
    }

    /// Prometheus `HistogramFraction`: the estimated share of observations
    /// in `[lower, upper]`.
    pub fn fraction(&self, lower: f64, upper: f64) -> f64 {
        if self.count == 0.0 || lower.is_nan() || upper.is_nan() {
            return f64::NAN;
        }
        if lower >= upper {
            return 0.0;
        }
        let custom = self.uses_custom_buckets();
        let (mut rank, mut lower_rank, mut upper_rank) = (0.0, None, None);
        for mut b in self.all_buckets() {
            let mut zero_bucket = false;
            if !custom && b.lower <= 0.0 && b.upper >= 0.0 {
                zero_bucket = true;
                if self.negative_buckets.is_empty() && !self.positive_buckets.is_empty() {
                    b.lower = 0.0;
                } else if self.positive_buckets.is_empty() && !self.negative_buckets.is_empty() {
                    b.upper = 0.0;
                }
            }
            if custom && b.lower == f64::NEG_INFINITY && b.upper > 0.0 {
                b.lower = 0.0;
            }
            let infinite = b.lower.is_infinite() || b.upper.is_infinite();
            let interpolate = |v: f64| -> f64 {
                if custom || zero_bucket {
                    rank + b.count * (v - b.lower) / (b.upper - b.lower)
                } else {
                    let (ll, lu, lv) = (b.lower.abs().log2(), b.upper.abs().log2(), v.abs().log2());
                    let f = if v > 0.0 {
                        (lv - ll) / (lu - ll)
                    } else {
                        1.0 - (lv - lu) / (ll - lu)
                    };
                    rank + b.count * f
                }
            };
            if lower_rank.is_none() && b.lower >= lower {
                lower_rank = Some(rank);
            }
            if upper_rank.is_none() && b.lower >= upper {
                upper_rank = Some(rank);
            }
            if lower_rank.is_some() && upper_rank.is_some() {
                break;
            }
            // An infinitely wide bucket's observations count as lying at its
            // infinite end (both ends infinite: outside any cut).
            if lower_rank.is_none() && b.lower < lower && b.upper > lower {
                lower_rank = Some(if !infinite {
                    interpolate(lower)
                } else if b.lower.is_finite() {
                    rank
                } else {
                    rank + b.count
                });
            }
            if upper_rank.is_none() && b.lower < upper && b.upper > upper {
                upper_rank = Some(if !infinite {
                    interpolate(upper)
                } else if b.upper.is_finite() {
                    rank + b.count
                } else {
                    rank
                });
            }
            if lower_rank.is_some() && upper_rank.is_some() {
                break;
            }
            rank += b.count;
        }
        // Ranks past every bucket stop at the count, or with NaN
        // observations possible, at the buckets' total: NaN observations
        // are in no range.
        let total = if self.sum.is_nan() {
            self.bucket_total()
        } else {
            self.count
        };
        let lower_rank = lower_rank.unwrap_or(total).min(total);
        let upper_rank = upper_rank.unwrap_or(total).min(total);
        ((upper_rank - lower_rank) / self.count).max(0.0)
    }

    /// The estimated variance of the observations: each bucket's count at
    /// its midpoint (geometric for exponential buckets, arithmetic for
    /// custom buckets, zero for the zero bucket), around `sum / count`.
    pub fn stdvar(&self) -> f64 {
        let mean = self.sum / self.count;
        let (mut variance, mut c) = (0.0f64, 0.0f64);
        for b in self.all_buckets() {
            if b.count == 0.0 {
                continue;
            }
            let val = if self.uses_custom_buckets() {
                (b.upper + b.lower) / 2.0
            } else if b.lower <= 0.0 && b.upper >= 0.0 {
                0.0
            } else {
                let v = (b.upper * b.lower).sqrt();
                if b.upper < 0.0 { -v } else { v }
            };
            let delta = val - mean;
            (variance, c) = kahan_sum_inc(b.count * delta * delta, variance, c);
        }
        (variance + c) / self.count
    }
}

/// The custom bounds `a` and `b` share.
fn shared_bounds(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().copied().filter(|v| b.contains(v)).collect()
}

/// Spans of pairs, keeping empty buckets that are present.
fn build_keep(pairs: &[(i32, f64)]) -> (Vec<Span>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut buckets = Vec::with_capacity(pairs.len());
    let mut last: Option<i32> = None;
    for &(idx, c) in pairs {
        match last {
            Some(prev) if idx == prev + 1 => {
                if let Some(s) = spans.last_mut() {
                    s.length += 1;
                }
            }
            Some(prev) => spans.push(Span {
                offset: idx - prev - 1,
                length: 1,
            }),
            None => spans.push(Span {
                offset: idx,
                length: 1,
            }),
        }
        buckets.push(c);
        last = Some(idx);
    }
    (spans, buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(schema: i32, zero: f64, spans: &[(i32, u32)], buckets: &[f64]) -> FloatHistogram {
        let count = zero + buckets.iter().sum::<f64>();
        FloatHistogram {
            schema,
            zero_threshold: 0.001,
            zero_count: zero,
            count,
            sum: count,
            positive_spans: spans
                .iter()
                .map(|&(offset, length)| Span { offset, length })
                .collect(),
            positive_buckets: buckets.to_vec(),
            ..FloatHistogram::default()
        }
    }

    #[test]
    fn add_reduces_to_the_lower_schema() {
        // Schema 1 buckets 1..=4 become schema 0 buckets 1, 2.
        let mut a = h(0, 1.0, &[(1, 2)], &[1.0, 2.0]);
        let b = h(1, 0.0, &[(1, 4)], &[1.0, 1.0, 1.0, 1.0]);
        a.add(&b).expect("both exponential");
        assert_eq!(a.schema, 0);
        assert_eq!(
            a.positive_spans,
            vec![Span {
                offset: 1,
                length: 2
            }]
        );
        assert_eq!(a.positive_buckets, vec![3.0, 4.0]);
        assert_eq!(a.count, 8.0);
        a.sub(&b).expect("both exponential");
        assert_eq!(a.positive_buckets, vec![1.0, 2.0]);
    }

    #[test]
    fn wider_zero_bucket_absorbs_buckets() {
        let mut a = h(0, 1.0, &[(0, 3)], &[1.0, 2.0, 3.0]);
        let mut b = h(0, 2.0, &[(0, 1)], &[5.0]);
        b.zero_threshold = 1.0;
        a.add(&b).expect("both exponential");
        // Bucket 0 of `a` is (0.5, 1], inside b's zero bucket [-1, 1].
        assert_eq!(a.zero_threshold, 1.0);
        assert_eq!(a.zero_count, 1.0 + 1.0 + 2.0);
        assert_eq!(a.positive_buckets, vec![2.0, 3.0]);
    }

    #[test]
    fn custom_bucket_bounds_are_reconciled() {
        let mut a = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count: 3.0,
            positive_spans: vec![Span {
                offset: 0,
                length: 3,
            }],
            positive_buckets: vec![1.0, 1.0, 1.0],
            custom_values: vec![1.0, 2.0],
            ..FloatHistogram::default()
        };
        let b = FloatHistogram {
            custom_values: vec![2.0, 3.0],
            ..a.clone()
        };
        let mut e = a.clone();
        e.schema = 0;
        assert_eq!(e.add(&a), Err(HistogramArithError::MixedExponentialCustom));
        assert_eq!(a.add(&b), Ok(Reconciled(true)));
        assert_eq!(a.custom_values, vec![2.0]);
        assert_eq!(a.positive_buckets, vec![3.0, 3.0]);
    }

    #[test]
    fn resets_and_compaction() {
        let a = h(0, 0.0, &[(0, 3)], &[1.0, 0.0, 3.0]);
        let mut b = h(0, 0.0, &[(0, 3)], &[1.0, 1.0, 3.0]);
        assert!(!b.detect_reset(&a));
        assert!(a.detect_reset(&b));
        b.counter_reset_hint = CounterResetHint::CounterReset;
        assert!(b.detect_reset(&a));
        let c = a.clone().compact(0);
        assert_eq!(
            c.positive_spans,
            vec![
                Span {
                    offset: 0,
                    length: 1
                },
                Span {
                    offset: 1,
                    length: 1
                }
            ]
        );
        assert_eq!(a.compact(1).positive_buckets, vec![1.0, 0.0, 3.0]);
    }

    #[test]
    fn quantile_and_fraction() {
        // Buckets (1,2] and (2,4], 10 observations each.
        let x = h(0, 0.0, &[(1, 2)], &[10.0, 10.0]);
        assert_eq!(x.quantile(0.5), 2.0);
        assert!((x.quantile(0.75) - 8f64.sqrt()).abs() < 1e-12);
        assert_eq!(x.quantile(1.5), f64::INFINITY);
        assert!((x.fraction(0.0, 2.0) - 0.5).abs() < 1e-12);
        assert_eq!(x.fraction(3.0, 1.0), 0.0);
        let mut m = x.clone();
        m.mul(2.0);
        assert_eq!(m.count, 40.0);
        m.div(4.0);
        assert_eq!(m.positive_buckets, vec![5.0, 5.0]);
        assert!(x.stdvar() > 0.0);
    }
}
