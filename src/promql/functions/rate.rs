//! Counter and gauge rate functions, following Prometheus
//! `promql/functions.go`: `extrapolatedRate` (rate, increase, delta),
//! `instantValue` (irate, idelta), `funcResets`, `funcChanges`,
//! `funcDeriv`, `funcPredictLinear` (`linearRegression`).

use super::Window;
use crate::model::Sample;
use crate::promql::stats::kahan_sum_inc;

/// Prometheus `extrapolatedRate`: the change over the window, extrapolated
/// towards the window's edges when samples stop short of them.
pub(crate) fn extrapolated_rate(w: &Window<'_>, is_counter: bool, is_rate: bool) -> Option<f64> {
    let s = w.samples;
    if s.len() < 2 {
        return None;
    }
    let first = s[0];
    let last = s[s.len() - 1];
    let mut result = last.v - first.v;
    if is_counter {
        let mut last_value = 0.0;
        for p in s {
            if p.v < last_value {
                result += last_value;
            }
            last_value = p.v;
        }
    }
    let range_start = w.range_end - w.range;
    let mut duration_to_start = (first.t - range_start) as f64 / 1000.0;
    let mut duration_to_end = (w.range_end - last.t) as f64 / 1000.0;
    let sampled_interval = (last.t - first.t) as f64 / 1000.0;
    let average_between = sampled_interval / (s.len() - 1) as f64;
    let threshold = average_between * 1.1;
    if duration_to_start >= threshold {
        duration_to_start = average_between / 2.0;
    }
    if is_counter {
        let mut duration_to_zero = duration_to_start;
        if result > 0.0 && first.v >= 0.0 {
            duration_to_zero = sampled_interval * (first.v / result);
        }
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    if duration_to_end >= threshold {
        duration_to_end = average_between / 2.0;
    }
    let mut factor = (sampled_interval + duration_to_start + duration_to_end) / sampled_interval;
    if is_rate {
        factor /= w.range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// Prometheus `instantValue`: irate / idelta from the last two samples.
pub(crate) fn instant_value(w: &Window<'_>, is_rate: bool) -> Option<f64> {
    let s = w.samples;
    if s.len() < 2 {
        return None;
    }
    let last = s[s.len() - 1];
    let prev = s[s.len() - 2];
    let mut result = last.v - prev.v;
    if is_rate && last.v < prev.v {
        result = last.v;
    }
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

pub(crate) fn resets(w: &Window<'_>) -> Option<f64> {
    let n = w.samples.windows(2).filter(|p| p[1].v < p[0].v).count();
    Some(n as f64)
}

pub(crate) fn changes(w: &Window<'_>) -> Option<f64> {
    let n = w
        .samples
        .windows(2)
        .filter(|p| p[1].v != p[0].v && !(p[1].v.is_nan() && p[0].v.is_nan()))
        .count();
    Some(n as f64)
}

/// Prometheus `linearRegression`: least squares with Kahan summation, x in
/// seconds relative to `intercept_time`.
pub(crate) fn linear_regression(samples: &[Sample], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut cx, mut sum_y, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut cxy, mut sum_x2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = samples[0].v;
    let mut const_y = true;
    for (i, p) in samples.iter().enumerate() {
        if const_y && i > 0 && p.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (p.t - intercept_time) as f64 / 1e3;
        (sum_x, cx) = kahan_sum_inc(x, sum_x, cx);
        (sum_y, cy) = kahan_sum_inc(p.v, sum_y, cy);
        (sum_xy, cxy) = kahan_sum_inc(x * p.v, sum_xy, cxy);
        (sum_x2, cx2) = kahan_sum_inc(x * x, sum_x2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += cx;
    sum_y += cy;
    sum_xy += cxy;
    sum_x2 += cx2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

pub(crate) fn deriv(w: &Window<'_>) -> Option<f64> {
    if w.samples.len() < 2 {
        return None;
    }
    Some(linear_regression(w.samples, w.samples[0].t).0)
}

pub(crate) fn predict_linear(w: &Window<'_>, duration: f64) -> Option<f64> {
    if w.samples.len() < 2 {
        return None;
    }
    let (slope, intercept) = linear_regression(w.samples, w.ts);
    Some(slope * duration + intercept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(samples: &[Sample], end: i64, range: i64) -> Window<'_> {
        Window {
            samples,
            hists: &[],
            range_end: end,
            range,
            ts: end,
        }
    }

    #[test]
    fn rate_extrapolates_to_window_edges() {
        // A counter going up 1 per 15s, samples at 15s..300s, window (0, 300].
        let samples: Vec<Sample> = (1..=20)
            .map(|i| Sample {
                t: i * 15_000,
                v: i as f64,
            })
            .collect();
        let w = window(&samples, 300_000, 300_000);
        let inc = extrapolated_rate(&w, true, false).expect("enough samples");
        // 19 observed over 285s, extrapolated to the start (15s <= 1.1*15s)
        // but limited by the zero point: duration to zero = 285 * 1/19 = 15s.
        assert!((inc - 20.0).abs() < 1e-9, "{inc}");
        let rate = extrapolated_rate(&w, true, true).expect("enough samples");
        assert!((rate - 20.0 / 300.0).abs() < 1e-12);
    }

    #[test]
    fn rate_handles_counter_resets_and_short_series() {
        let samples = [
            Sample { t: 0, v: 10.0 },
            Sample { t: 60_000, v: 20.0 },
            Sample { t: 120_000, v: 5.0 },
        ];
        let w = window(&samples, 120_000, 120_001);
        // 10 before the reset + 5 after, no extrapolation beyond half a step.
        let inc = extrapolated_rate(&w, true, false).expect("enough samples");
        assert!((inc - 15.0 * (120.0 + 0.001) / 120.0).abs() < 1e-9, "{inc}");
        assert_eq!(
            extrapolated_rate(&window(&samples[..1], 0, 60_000), true, true),
            None
        );
        assert_eq!(resets(&w), Some(1.0));
        assert_eq!(changes(&w), Some(2.0));
        assert_eq!(instant_value(&w, true), Some(5.0 / 60.0));
    }

    #[test]
    fn deriv_of_a_line() {
        let samples: Vec<Sample> = (0..10)
            .map(|i| Sample {
                t: i * 1000,
                v: 2.0 * i as f64,
            })
            .collect();
        let w = window(&samples, 9000, 10_000);
        assert!((deriv(&w).expect("enough") - 2.0).abs() < 1e-12);
        assert!((predict_linear(&w, 1.0).expect("enough") - 20.0).abs() < 1e-9);
    }
}
