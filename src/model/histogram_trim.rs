//! The native-histogram trim operators `h </ x` (keep the observations at
//! or below `x`) and `h >/ x` (keep those at or above `x`), following
//! Prometheus 3.x (`promql/engine.go` trim, spec "Trim operators").
//!
//! Buckets wholly on the kept side stay, buckets wholly on the other side
//! go, and a bucket the cutoff falls inside keeps the interpolated share of
//! its count: exponential interpolation within exponential buckets, linear
//! within custom buckets and the zero bucket (whose lower or upper half is
//! ignored when only the other side has populated buckets, as for
//! `histogram_quantile`). A custom bucket reaching to -Inf with a positive
//! upper bound counts as starting at 0 (but `>/` with a negative cutoff
//! drops it); otherwise the observations of an infinite bucket count as
//! lying at its infinite end, so a cutoff inside it keeps all or nothing.
//!
//! When nothing was removed the histogram stays as it was; otherwise count
//! and sum are re-estimated from the kept buckets, each kept count at the
//! midpoint of its kept range (geometric for exponential buckets,
//! arithmetic otherwise, the cutoff for the kept part of an infinite
//! bucket), as Prometheus's `FloatHistogram.TrimBuckets` does.

use super::histogram::FloatHistogram;

/// How a bucket's observations are spread between its bounds.
#[derive(Clone, Copy, PartialEq)]
enum Spread {
    /// Uniformly in log space (exponential buckets of one sign).
    Exponential,
    /// Uniformly (custom buckets, the zero bucket).
    Linear,
}

/// The share of a bucket `[lower, upper]` holding `count` that a trim at
/// `cutoff` keeps, and the estimated value of the kept observations.
fn trim_bucket(
    lower: f64,
    upper: f64,
    count: f64,
    spread: Spread,
    cutoff: f64,
    keep_below: bool,
) -> (f64, f64) {
    if lower.is_infinite() || upper.is_infinite() {
        return trim_infinite_bucket(lower, upper, count, cutoff, keep_below);
    }
    let midpoint = |a: f64, b: f64| match spread {
        Spread::Linear => (a + b) / 2.0,
        Spread::Exponential if a < 0.0 => -(a * b).sqrt(),
        Spread::Exponential => (a * b).sqrt(),
    };
    // The share of observations at or below the cutoff.
    let below = if cutoff <= lower {
        0.0
    } else if cutoff >= upper {
        1.0
    } else {
        match spread {
            Spread::Linear => (cutoff - lower) / (upper - lower),
            Spread::Exponential => {
                let (ll, lu, lc) = (lower.abs().log2(), upper.abs().log2(), cutoff.abs().log2());
                if lower > 0.0 {
                    (lc - ll) / (lu - ll)
                } else {
                    1.0 - (lc - lu) / (ll - lu)
                }
            }
        }
    };
    if keep_below {
        (count * below, midpoint(lower, cutoff.min(upper)))
    } else {
        (count * (1.0 - below), midpoint(cutoff.max(lower), upper))
    }
}

/// [`trim_bucket`] for a custom bucket with an infinite bound (a first
/// bucket with a positive upper bound has already been made `[0, upper]`).
fn trim_infinite_bucket(
    lower: f64,
    upper: f64,
    count: f64,
    cutoff: f64,
    keep_below: bool,
) -> (f64, f64) {
    let all_or_nothing = |keep: bool, value: f64| if keep { (count, value) } else { (0.0, 0.0) };
    match (lower.is_infinite(), upper.is_infinite()) {
        // (-Inf, +Inf]: only an infinite cutoff on the far side keeps it.
        (true, true) => all_or_nothing(
            if keep_below {
                cutoff == f64::INFINITY
            } else {
                cutoff == f64::NEG_INFINITY
            },
            0.0,
        ),
        // (-Inf, upper]: its observations count as -Inf.
        (true, false) => {
            if keep_below {
                all_or_nothing(cutoff > f64::NEG_INFINITY, upper.min(cutoff))
            } else {
                all_or_nothing(cutoff == f64::NEG_INFINITY, upper)
            }
        }
        // (lower, +Inf]: its observations count as +Inf.
        _ => {
            if keep_below {
                all_or_nothing(cutoff == f64::INFINITY, lower)
            } else {
                all_or_nothing(cutoff < f64::INFINITY, lower.max(cutoff))
            }
        }
    }
}

impl FloatHistogram {
    /// Removes the observations above `cutoff` (`keep_below`, the `</`
    /// operator) or below it (`>/`), then compacts; a trim that removes
    /// nothing changes nothing.
    pub fn trim(&mut self, cutoff: f64, keep_below: bool) {
        let (mut kept_count, mut kept_sum, mut removed) = (0.0, 0.0, false);
        let mut apply = |lower: f64, upper: f64, count: &mut f64, spread: Spread| {
            if *count == 0.0 {
                return;
            }
            let (keep, value) = trim_bucket(lower, upper, *count, spread, cutoff, keep_below);
            removed |= keep != *count;
            *count = keep;
            kept_count += keep;
            if keep != 0.0 {
                kept_sum += keep * value;
            }
        };
        let positive: Vec<i32> = self.positive_pairs().iter().map(|p| p.0).collect();
        if self.uses_custom_buckets() {
            for (pos, &i) in positive.iter().enumerate() {
                let (mut lower, upper) = self.positive_bounds(i);
                // Below a negative cutoff, `>/` cannot tell which of the
                // observations of (-Inf, upper] to keep.
                if lower == f64::NEG_INFINITY
                    && upper > 0.0
                    && upper.is_finite()
                    && (keep_below || cutoff >= 0.0)
                {
                    lower = 0.0;
                }
                if let Some(c) = self.positive_buckets.get_mut(pos) {
                    apply(lower, upper, c, Spread::Linear);
                }
            }
        } else {
            let populated = |b: &[f64]| b.iter().any(|&c| c != 0.0);
            let (has_pos, has_neg) = (
                populated(&self.positive_buckets),
                populated(&self.negative_buckets),
            );
            for (pos, &i) in positive.iter().enumerate() {
                let (lower, upper) = self.positive_bounds(i);
                if let Some(c) = self.positive_buckets.get_mut(pos) {
                    apply(lower, upper, c, Spread::Exponential);
                }
            }
            let negative: Vec<i32> = self.negative_pairs().iter().map(|p| p.0).collect();
            for (pos, &i) in negative.iter().enumerate() {
                let (lower, upper) = self.positive_bounds(i);
                if let Some(c) = self.negative_buckets.get_mut(pos) {
                    apply(-upper, -lower, c, Spread::Exponential);
                }
            }
            let w = self.zero_threshold;
            let (lower, upper) = match (has_pos, has_neg) {
                (true, false) => (0.0, w),
                (false, true) => (-w, 0.0),
                _ => (-w, w),
            };
            apply(lower, upper, &mut self.zero_count, Spread::Linear);
        }
        if removed {
            self.count = kept_count;
            self.sum = kept_sum;
            *self = std::mem::take(self).compact(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::histogram::{CUSTOM_BUCKETS_SCHEMA, Span};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    /// `{{schema:0 sum:123.75 count:34 z_bucket:1 z_bucket_w:0.001
    /// buckets:[2 4 8 16] n_buckets:[1 2]}}`
    fn exponential() -> FloatHistogram {
        FloatHistogram {
            schema: 0,
            sum: 123.75,
            count: 34.0,
            zero_count: 1.0,
            zero_threshold: 0.001,
            positive_spans: vec![Span {
                offset: 0,
                length: 4,
            }],
            positive_buckets: vec![2.0, 4.0, 8.0, 16.0],
            negative_spans: vec![Span {
                offset: 0,
                length: 2,
            }],
            negative_buckets: vec![1.0, 2.0],
            ..FloatHistogram::default()
        }
    }

    #[test]
    fn trim_at_a_bucket_boundary_keeps_whole_buckets() {
        let mut h = exponential();
        h.trim(2.0, true);
        assert_eq!(h.count, 10.0);
        assert_eq!(h.positive_buckets, vec![2.0, 4.0]);
        assert!(close(h.sum, 3.5355339059327373), "{}", h.sum);
        let mut h = exponential();
        h.trim(2.0, false);
        assert_eq!(h.count, 24.0);
        assert_eq!(h.zero_count, 0.0);
        assert!(h.negative_buckets.is_empty());
        assert!(close(h.sum, 113.13708498984761), "{}", h.sum);
    }

    #[test]
    fn trim_inside_buckets_interpolates() {
        let mut h = exponential();
        h.trim(2f64.sqrt(), true);
        assert!(close(h.count, 8.0));
        assert!(close(h.sum, 0.2570938865989847), "{}", h.sum);
        let mut h = exponential();
        h.trim(0.0, false);
        assert!(close(h.count, 30.5));
        assert!(close(h.sum, 120.20840280171308), "{}", h.sum);
    }

    #[test]
    fn trim_that_removes_nothing_keeps_the_sum() {
        let mut h = exponential();
        h.trim(f64::INFINITY, true);
        assert_eq!((h.count, h.sum), (34.0, 123.75));
        let mut h = exponential();
        h.trim(f64::INFINITY, false);
        assert_eq!((h.count, h.sum), (0.0, 0.0));
    }

    #[test]
    fn custom_buckets_trim_linearly_and_infinite_buckets_whole() {
        // {{schema:-53 sum:172.5 count:15 custom_values:[5 10 15 20] buckets:[1 6 4 3 1]}}
        let cbh = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            sum: 172.5,
            count: 15.0,
            custom_values: vec![5.0, 10.0, 15.0, 20.0],
            positive_spans: vec![Span {
                offset: 0,
                length: 5,
            }],
            positive_buckets: vec![1.0, 6.0, 4.0, 3.0, 1.0],
            ..FloatHistogram::default()
        };
        let mut h = cbh.clone();
        h.trim(13.0, false);
        assert!(close(h.count, 5.6) && close(h.sum, 94.9), "{h:?}");
        let mut h = cbh.clone();
        h.trim(50.0, true);
        assert!(close(h.count, 14.0) && close(h.sum, 150.0), "{h:?}");
        let mut h = cbh;
        h.trim(0.0, false);
        assert_eq!((h.count, h.sum), (15.0, 172.5));
    }
}
