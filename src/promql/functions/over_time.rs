//! The `*_over_time` family and `double_exponential_smoothing`, following
//! Prometheus `promql/functions.go` (`funcAvgOverTime`, `funcSumOverTime`,
//! `funcStddevOverTime`, `funcQuantileOverTime`, `funcMadOverTime`,
//! `funcDoubleExponentialSmoothing`, ...).

use super::Window;
use crate::promql::stats::{kahan_sum_inc, quantile};

pub(crate) fn avg(w: &Window<'_>) -> Option<f64> {
    let (mut sum, mut mean, mut count, mut c) = (0.0, 0.0, 0.0, 0.0);
    let mut incremental = false;
    for p in w.samples {
        let f = p.v;
        count += 1.0;
        if !incremental {
            let (s, nc) = kahan_sum_inc(f, sum, c);
            if count == 1.0 || !s.is_infinite() {
                (sum, c) = (s, nc);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        if mean.is_infinite() {
            if f.is_infinite() && (mean > 0.0) == (f > 0.0) {
                continue;
            }
            if !f.is_infinite() && !f.is_nan() {
                continue;
            }
        }
        let corrected = mean + c;
        (mean, c) = kahan_sum_inc(f / count - corrected / count, mean, c);
    }
    Some(if incremental {
        mean + c
    } else {
        (sum + c) / count
    })
}

pub(crate) fn sum(w: &Window<'_>) -> Option<f64> {
    let (mut s, mut c) = (0.0, 0.0);
    for p in w.samples {
        (s, c) = kahan_sum_inc(p.v, s, c);
    }
    Some(if s.is_infinite() { s } else { s + c })
}

pub(crate) fn count(w: &Window<'_>) -> Option<f64> {
    Some(w.samples.len() as f64)
}

pub(crate) fn min(w: &Window<'_>) -> Option<f64> {
    let mut m = w.samples[0].v;
    for p in w.samples {
        if p.v < m || m.is_nan() {
            m = p.v;
        }
    }
    Some(m)
}

pub(crate) fn max(w: &Window<'_>) -> Option<f64> {
    let mut m = w.samples[0].v;
    for p in w.samples {
        if p.v > m || m.is_nan() {
            m = p.v;
        }
    }
    Some(m)
}

fn variance(w: &Window<'_>) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in w.samples {
        count += 1.0;
        let delta = p.v - (mean + c_mean);
        (mean, c_mean) = kahan_sum_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_sum_inc(delta * (p.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

pub(crate) fn stdvar(w: &Window<'_>) -> Option<f64> {
    Some(variance(w))
}

pub(crate) fn stddev(w: &Window<'_>) -> Option<f64> {
    Some(variance(w).sqrt())
}

pub(crate) fn last(w: &Window<'_>) -> Option<f64> {
    w.samples.last().map(|p| p.v)
}

pub(crate) fn first(w: &Window<'_>) -> Option<f64> {
    w.samples.first().map(|p| p.v)
}

pub(crate) fn present(_: &Window<'_>) -> Option<f64> {
    Some(1.0)
}

pub(crate) fn quantile_over_time(w: &Window<'_>, q: f64) -> Option<f64> {
    let mut values: Vec<f64> = w.samples.iter().map(|p| p.v).collect();
    Some(quantile(q, &mut values))
}

/// Median absolute deviation around the median.
pub(crate) fn mad(w: &Window<'_>) -> Option<f64> {
    if w.samples.iter().any(|p| p.v.is_nan()) {
        return Some(f64::NAN);
    }
    let mut values: Vec<f64> = w.samples.iter().map(|p| p.v).collect();
    let median = quantile(0.5, &mut values);
    let mut dev: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
    Some(quantile(0.5, &mut dev))
}

/// Timestamp (seconds) of the sample chosen by `better(candidate, current)`,
/// the latest one on ties.
fn ts_of(w: &Window<'_>, better: impl Fn(f64, f64) -> bool) -> Option<f64> {
    let mut best = w.samples[0];
    for p in &w.samples[1..] {
        if better(p.v, best.v) || p.v == best.v || best.v.is_nan() {
            best = *p;
        }
    }
    Some(best.t as f64 / 1000.0)
}

pub(crate) fn ts_of_max(w: &Window<'_>) -> Option<f64> {
    ts_of(w, |a, b| a > b)
}

pub(crate) fn ts_of_min(w: &Window<'_>) -> Option<f64> {
    ts_of(w, |a, b| a < b)
}

pub(crate) fn ts_of_last(w: &Window<'_>) -> Option<f64> {
    w.samples.last().map(|p| p.t as f64 / 1000.0)
}

pub(crate) fn ts_of_first(w: &Window<'_>) -> Option<f64> {
    w.samples.first().map(|p| p.t as f64 / 1000.0)
}

/// Prometheus `funcDoubleExponentialSmoothing` (Holt's linear method).
pub(crate) fn double_exponential_smoothing(w: &Window<'_>, sf: f64, tf: f64) -> Option<f64> {
    let s = w.samples;
    if s.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, s[0].v);
    let mut b = s[1].v - s[0].v;
    for (i, p) in s.iter().enumerate().skip(1) {
        let x = sf * p.v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sample;

    #[test]
    fn over_time_aggregates() {
        let samples: Vec<Sample> = [1.0, 4.0, 2.0, 3.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| Sample {
                t: i as i64 * 1000,
                v,
            })
            .collect();
        let w = Window {
            samples: &samples,
            hists: &[],
            range_end: 3000,
            range: 5000,
            ts: 3000,
        };
        assert_eq!(avg(&w), Some(2.5));
        assert_eq!(sum(&w), Some(10.0));
        assert_eq!(min(&w), Some(1.0));
        assert_eq!(max(&w), Some(4.0));
        assert_eq!(count(&w), Some(4.0));
        assert_eq!(stdvar(&w), Some(1.25));
        assert_eq!(quantile_over_time(&w, 0.5), Some(2.5));
        assert_eq!(last(&w), Some(3.0));
        assert_eq!(ts_of_max(&w), Some(1.0));
        assert_eq!(mad(&w), Some(1.0));
    }
}
