//! `histogram_quantile` over classic `le` buckets, following Prometheus
//! `promql/functions.go` `funcHistogramQuantile` and `quantile.go`
//! `BucketQuantile` (coalescing, monotonicity fix, linear interpolation).

use std::collections::HashMap;

use crate::model::{Labels, METRIC_NAME};
use crate::promql::stats::almost_equal;
use crate::promql::value::Series;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket {
    pub upper: f64,
    pub count: f64,
}

/// Prometheus `BucketQuantile`; also returns whether monotonicity had to be
/// forced.
pub(crate) fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    buckets.sort_by(|a, b| {
        a.upper
            .partial_cmp(&b.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    match buckets.last() {
        Some(b) if b.upper == f64::INFINITY => {}
        _ => return (f64::NAN, false),
    }
    // Coalesce buckets with the same upper bound.
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.upper == b.upper => last.count += b.count,
            _ => merged.push(*b),
        }
    }
    *buckets = merged;
    let mut forced = false;
    let mut prev = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.count;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, 1e-12) {
            b.count = prev;
            continue;
        }
        if curr < prev {
            b.count = prev;
            forced = true;
            continue;
        }
        prev = curr;
    }
    if buckets.len() < 2 {
        return (f64::NAN, forced);
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * observations;
    let b = buckets[..buckets.len() - 1].partition_point(|b| b.count < rank);
    if b == buckets.len() - 1 {
        return (buckets[buckets.len() - 2].upper, forced);
    }
    if b == 0 && buckets[0].upper <= 0.0 {
        return (buckets[0].upper, forced);
    }
    let mut start = 0.0;
    let end = buckets[b].upper;
    let mut count = buckets[b].count;
    if b > 0 {
        start = buckets[b - 1].upper;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    (start + (end - start) * (rank / count), forced)
}

/// Classic bucket series grouped by their labels without `le`, with each
/// member's upper bound; series without a valid `le` are warned about and
/// left out (Prometheus's annotation).
fn group_buckets(input: &[Series], warnings: &mut Vec<String>) -> Vec<(Labels, Vec<(f64, usize)>)> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    for (i, s) in input.iter().enumerate() {
        let le = s
            .labels
            .get("le")
            .and_then(|v| v.trim().parse::<f64>().ok());
        let Some(le) = le else {
            warnings.push(format!(
                "PromQL warning: bucket label \"le\" is missing or has a malformed value of \"{}\" for metric name \"{}\"",
                s.labels.get("le").unwrap_or(""),
                s.labels.get(METRIC_NAME).unwrap_or("")
            ));
            continue;
        };
        let key = s.labels.without("le");
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push((le, i));
    }
    groups
}

/// The fraction of observations in `[lower, upper]` of classic buckets, as
/// Prometheus's `histogram_fraction` computes it for a histogram with
/// custom buckets converted from `le` buckets: buckets are
/// `(previous le, le]`, the first one starting at 0 when its `le` is
/// positive (else at -Inf); within a finite bucket observations are
/// interpolated linearly, in an infinitely wide one they lie at its
/// infinite end.
pub(crate) fn bucket_fraction(lower: f64, upper: f64, buckets: &mut [Bucket]) -> f64 {
    if lower.is_nan() || upper.is_nan() || buckets.is_empty() {
        return f64::NAN;
    }
    buckets.sort_by(|a, b| {
        a.upper
            .partial_cmp(&b.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if buckets.last().is_none_or(|b| b.upper != f64::INFINITY) {
        return f64::NAN;
    }
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.upper == b.upper => last.count += b.count,
            _ => merged.push(*b),
        }
    }
    let mut max = merged[0].count;
    for b in merged.iter_mut().skip(1) {
        if b.count < max {
            b.count = max;
        } else {
            max = b.count;
        }
    }
    let total = merged[merged.len() - 1].count;
    if total == 0.0 {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, None, None);
    let mut previous_upper = f64::NAN;
    for (i, b) in merged.iter().enumerate() {
        let lo = match i {
            0 if b.upper > 0.0 => 0.0,
            0 => f64::NEG_INFINITY,
            _ => previous_upper,
        };
        let hi = b.upper;
        let count = b.count - rank;
        let infinite = lo.is_infinite() || hi.is_infinite();
        if lower_rank.is_none() && lo >= lower {
            lower_rank = Some(rank);
        }
        if upper_rank.is_none() && lo >= upper {
            upper_rank = Some(rank);
        }
        // An infinitely wide bucket's observations count as lying at its
        // infinite end (both ends infinite: outside any cut).
        if lower_rank.is_none() && lo < lower && lower < hi {
            lower_rank = Some(if !infinite {
                rank + count * (lower - lo) / (hi - lo)
            } else if lo.is_finite() {
                rank
            } else {
                rank + count
            });
        }
        if upper_rank.is_none() && lo < upper && upper < hi {
            upper_rank = Some(if !infinite {
                rank + count * (upper - lo) / (hi - lo)
            } else if hi.is_finite() {
                rank + count
            } else {
                rank
            });
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        rank = b.count;
        previous_upper = hi;
    }
    let lower_rank = lower_rank.unwrap_or(total).min(total);
    let upper_rank = upper_rank.unwrap_or(total).min(total);
    // Both bounds inside one infinitely wide bucket: none of it counts.
    ((upper_rank - lower_rank) / total).max(0.0)
}

/// `histogram_fraction(lower, upper, buckets)` over classic `le` buckets.
pub(crate) fn histogram_fraction(
    lower: &[f64],
    upper: &[f64],
    input: Vec<Series>,
    warnings: &mut Vec<String>,
) -> Vec<Series> {
    let n = lower.len();
    let groups = group_buckets(&input, warnings);
    let mut out = Vec::with_capacity(groups.len());
    let mut buckets = Vec::new();
    for (labels, members) in groups {
        let mut vals = vec![None; n];
        for (step, val) in vals.iter_mut().enumerate() {
            buckets.clear();
            for &(le, i) in &members {
                if let Some(count) = input[i].vals[step] {
                    buckets.push(Bucket { upper: le, count });
                }
            }
            if buckets.is_empty() {
                continue;
            }
            *val = Some(bucket_fraction(lower[step], upper[step], &mut buckets));
        }
        out.push(Series {
            labels,
            drop_name: true,
            vals,
            hists: None,
        });
    }
    out
}

/// `histogram_quantile(q, buckets)` over every step; annotations about the
/// buckets are pushed to `warnings` / `infos` (the caller warns about the
/// quantile itself).
pub(crate) fn histogram_quantile(
    q: &[f64],
    input: Vec<Series>,
    warnings: &mut Vec<String>,
    infos: &mut Vec<String>,
) -> Vec<Series> {
    let n = q.len();
    let groups = group_buckets(&input, warnings);
    let mut out = Vec::with_capacity(groups.len());
    let mut buckets = Vec::new();
    for (labels, members) in groups {
        let mut vals = vec![None; n];
        for (step, val) in vals.iter_mut().enumerate() {
            buckets.clear();
            for &(le, i) in &members {
                if let Some(count) = input[i].vals[step] {
                    buckets.push(Bucket { upper: le, count });
                }
            }
            if buckets.is_empty() {
                continue;
            }
            let (v, forced) = bucket_quantile(q[step], &mut buckets);
            if forced {
                infos.push(format!(
                    "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name \"{}\"",
                    labels.get(METRIC_NAME).unwrap_or("")
                ));
            }
            *val = Some(v);
        }
        out.push(Series {
            labels,
            drop_name: true,
            vals,
            hists: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(upper: f64, count: f64) -> Bucket {
        Bucket { upper, count }
    }

    #[test]
    fn interpolates_within_bucket() {
        let mut buckets = vec![b(1.0, 10.0), b(f64::INFINITY, 20.0), b(0.5, 5.0)];
        let (v, forced) = bucket_quantile(0.5, &mut buckets);
        assert_eq!(v, 1.0);
        assert!(!forced);
        let mut buckets = vec![
            b(0.5, 5.0),
            b(1.0, 10.0),
            b(2.0, 20.0),
            b(f64::INFINITY, 20.0),
        ];
        assert_eq!(bucket_quantile(0.75, &mut buckets).0, 1.5);
        assert_eq!(bucket_quantile(1.0, &mut buckets).0, 2.0);
    }

    #[test]
    fn fixes_monotonicity_and_needs_inf() {
        let mut buckets = vec![b(1.0, 10.0), b(2.0, 8.0), b(f64::INFINITY, 10.0)];
        let (_, forced) = bucket_quantile(0.5, &mut buckets);
        assert!(forced);
        let mut no_inf = vec![b(1.0, 10.0)];
        assert!(bucket_quantile(0.5, &mut no_inf).0.is_nan());
    }

    fn cumulative(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(upper, count)| b(upper, count))
            .collect()
    }

    #[test]
    fn fraction_interpolates_finite_buckets_only() {
        let positive = [(1.0, 1.0), (2.0, 3.0), (3.0, 6.0), (f64::INFINITY, 100.0)];
        let negative = [
            (-3.0, 10.0),
            (-2.0, 12.0),
            (-1.0, 15.0),
            (f64::INFINITY, 100.0),
        ];
        let f = |lo: f64, hi: f64, pairs: &[(f64, f64)]| {
            bucket_fraction(lo, hi, &mut cumulative(pairs))
        };
        assert!((f(0.0, 1.5, &positive) - 0.02).abs() < 1e-12);
        assert!((f(-4.0, -2.0, &negative) - 0.02).abs() < 1e-12);
        assert!((f(f64::NEG_INFINITY, -1.5, &negative) - 0.135).abs() < 1e-12);
        assert_eq!(f(f64::NEG_INFINITY, f64::INFINITY, &negative), 1.0);
        assert_eq!(
            f(3.5, 4.0, &positive),
            0.0,
            "no interpolation in the +Inf bucket"
        );
        assert_eq!(f(2.0, 1.0, &positive), 0.0);
        assert!(f(f64::NAN, 1.0, &positive).is_nan());
        assert!(f(0.0, 1.0, &[(1.0, 1.0)]).is_nan(), "no +Inf bucket");
    }
}
