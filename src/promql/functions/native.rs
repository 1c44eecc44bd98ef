//! Functions over native histogram samples, following Prometheus
//! `promql/functions.go`: `histogramRate` and the histogram branches of
//! `extrapolatedRate`, `instantValue`, `funcResets`, `funcChanges` and the
//! `*_over_time` functions, and the instant functions `histogram_count`,
//! `histogram_sum`, `histogram_avg`, `histogram_stddev`,
//! `histogram_stdvar`, `histogram_quantile` and `histogram_fraction`.

use super::Window;
use crate::model::HPoint;
use crate::model::histogram::{CounterResetHint, FloatHistogram};
use crate::model::histogram_kahan::sum_histograms;
use crate::promql::stats::format_float;

/// A range function's result at one step.
pub(crate) enum Out {
    F(f64),
    H(FloatHistogram),
}

/// Annotations a function adds, with the metric name they name.
pub(crate) struct Notes<'a> {
    pub metric: &'a str,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

impl Notes<'_> {
    pub fn mixed_floats(&mut self) {
        self.warnings.push(format!(
            "PromQL warning: encountered a mix of histograms and floats for metric name {:?}",
            self.metric
        ));
    }

    pub fn mixed_custom(&mut self) {
        self.warnings.push(format!(
            "PromQL warning: vector contains a mix of histograms with exponential and custom buckets schemas for metric name {:?}",
            self.metric
        ));
    }

    fn not_counter(&mut self) {
        self.warnings.push(format!(
            "PromQL warning: this native histogram metric is not a counter: {:?}",
            self.metric
        ));
    }

    fn not_gauge(&mut self) {
        self.warnings.push(format!(
            "PromQL warning: this native histogram metric is not a gauge: {:?}",
            self.metric
        ));
    }

    pub fn reconciled(&mut self, during: &str) {
        self.infos.push(format!(
            "PromQL info: mismatched custom buckets were reconciled during {during}"
        ));
    }

    fn ignored_histograms(&mut self) {
        self.infos.push(format!(
            "PromQL info: ignored histograms in a range containing both floats and histograms for metric name {:?}",
            self.metric
        ));
    }
}

fn is_gauge(h: &FloatHistogram) -> bool {
    h.counter_reset_hint == CounterResetHint::Gauge
}

/// `h -= other` with its annotations; `None` when the bucket kinds differ.
fn subtract(h: &mut FloatHistogram, other: &FloatHistogram, notes: &mut Notes<'_>) -> Option<()> {
    match h.sub(other) {
        Ok(r) => {
            if r.0 {
                notes.reconciled("subtraction");
            }
            Some(())
        }
        Err(_) => {
            notes.mixed_custom();
            None
        }
    }
}

/// Prometheus `histogramRate`: the last histogram minus the first, at the
/// lowest schema of the window, with the counts lost at counter resets
/// added back for counters.
fn histogram_rate(
    points: &[HPoint],
    is_counter: bool,
    notes: &mut Notes<'_>,
) -> Option<FloatHistogram> {
    let first = &points[0].h;
    let last = &points[points.len() - 1].h;
    let custom = last.uses_custom_buckets();
    // A counter whose first histogram has the other kind of buckets was
    // reset right after it: the increase is all in the later histograms,
    // and the first one only lends its count to the extrapolation.
    let first_fits = first.uses_custom_buckets() == custom;
    if !first_fits && !is_counter {
        notes.mixed_custom();
        return None;
    }
    let mut min_schema = last.schema;
    for p in &points[usize::from(!first_fits)..] {
        if p.h.uses_custom_buckets() != custom {
            notes.mixed_custom();
            return None;
        }
        min_schema = min_schema.min(p.h.schema);
    }
    if is_counter && points.iter().any(|p| is_gauge(&p.h)) {
        notes.not_counter();
    }
    let mut h = last.copy_to_schema(min_schema);
    if first_fits {
        subtract(&mut h, first, notes)?;
    }
    if is_counter {
        let mut prev = first;
        for (i, p) in points.iter().enumerate().skip(1) {
            let fits = i > 1 || first_fits;
            if fits && p.h.detect_reset(prev) && h.add(prev).is_err() {
                notes.mixed_custom();
                return None;
            }
            prev = &p.h;
        }
    } else if !is_gauge(first) || !is_gauge(last) {
        notes.not_gauge();
    }
    h.counter_reset_hint = CounterResetHint::Gauge;
    Some(h.compact(0))
}

/// The histogram branch of Prometheus `extrapolatedRate`.
pub(crate) fn extrapolated_rate(
    w: &Window<'_>,
    is_counter: bool,
    is_rate: bool,
    notes: &mut Notes<'_>,
) -> Option<Out> {
    if !w.samples.is_empty() {
        notes.mixed_floats();
        return None;
    }
    let s = w.hists;
    if s.len() < 2 {
        return None;
    }
    let mut h = histogram_rate(s, is_counter, notes)?;
    let (first_t, last_t) = (s[0].t, s[s.len() - 1].t);
    let range_start = w.range_end - w.range;
    let mut duration_to_start = (first_t - range_start) as f64 / 1000.0;
    let mut duration_to_end = (w.range_end - last_t) as f64 / 1000.0;
    let sampled_interval = (last_t - first_t) as f64 / 1000.0;
    let average_between = sampled_interval / (s.len() - 1) as f64;
    let threshold = average_between * 1.1;
    if duration_to_start >= threshold {
        duration_to_start = average_between / 2.0;
    }
    if is_counter && h.count > 0.0 && s[0].h.count >= 0.0 {
        let duration_to_zero = sampled_interval * (s[0].h.count / h.count);
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
    h.mul(factor);
    Some(Out::H(h))
}

/// The histogram branch of Prometheus `instantValue` (irate, idelta):
/// from the last two samples, which must be of one kind.
pub(crate) fn instant_value(w: &Window<'_>, is_rate: bool, notes: &mut Notes<'_>) -> Option<Out> {
    let all = merged(w);
    let n = all.len();
    if n < 2 {
        return None;
    }
    let ((pt, prev), (lt, last)) = (&all[n - 2], &all[n - 1]);
    let (prev, last) = match (prev, last) {
        (Either::F(_), Either::F(_)) => return super::rate::instant_value(w, is_rate).map(Out::F),
        (Either::H(p), Either::H(l)) => (*p, *l),
        _ => {
            notes.mixed_floats();
            return None;
        }
    };
    if is_rate && (is_gauge(last) || is_gauge(prev)) {
        notes.not_counter();
    }
    if !is_rate && (!is_gauge(last) || !is_gauge(prev)) {
        notes.not_gauge();
    }
    let mut h = last.clone();
    if !is_rate || !last.detect_reset(prev) {
        subtract(&mut h, prev, notes)?;
    }
    h.counter_reset_hint = CounterResetHint::Gauge;
    let mut h = h.compact(0);
    if is_rate {
        let interval = lt - pt;
        if interval == 0 {
            return None;
        }
        h.div(interval as f64 / 1000.0);
    }
    Some(Out::H(h))
}

/// Floats and histograms of a window in time order.
enum Either<'a> {
    F(f64),
    H(&'a FloatHistogram),
}

fn merged<'a>(w: &Window<'a>) -> Vec<(i64, Either<'a>)> {
    let mut out = Vec::with_capacity(w.samples.len() + w.hists.len());
    let (mut i, mut j) = (0, 0);
    while i < w.samples.len() || j < w.hists.len() {
        let take_float = match (w.samples.get(i), w.hists.get(j)) {
            (Some(f), Some(h)) => f.t < h.t,
            (Some(_), None) => true,
            _ => false,
        };
        if take_float {
            out.push((w.samples[i].t, Either::F(w.samples[i].v)));
            i += 1;
        } else {
            out.push((w.hists[j].t, Either::H(&w.hists[j].h)));
            j += 1;
        }
    }
    out
}

/// Prometheus `funcResets` over floats and histograms.
pub(crate) fn resets(w: &Window<'_>) -> Option<Out> {
    let all = merged(w);
    let n = all
        .windows(2)
        .filter(|p| match (&p[0].1, &p[1].1) {
            (Either::F(a), Either::F(b)) => b < a,
            (Either::H(a), Either::H(b)) => b.detect_reset(a),
            // A switch between floats and histograms restarts the counter.
            _ => true,
        })
        .count();
    Some(Out::F(n as f64))
}

/// Prometheus `funcChanges` over floats and histograms.
pub(crate) fn changes(w: &Window<'_>) -> Option<Out> {
    let all = merged(w);
    let n = all
        .windows(2)
        .filter(|p| match (&p[0].1, &p[1].1) {
            (Either::F(a), Either::F(b)) => a != b && !(a.is_nan() && b.is_nan()),
            (Either::H(a), Either::H(b)) => !same_histogram(a, b),
            _ => true,
        })
        .count();
    Some(Out::F(n as f64))
}

/// Equality of values (Prometheus `FloatHistogram.Equals`), ignoring the
/// counter reset hint.
fn same_histogram(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    let (a, b) = (a.clone().compact(0), b.clone().compact(0));
    a.schema == b.schema
        && a.count == b.count
        && (a.sum == b.sum || a.sum.is_nan() && b.sum.is_nan())
        && a.zero_threshold == b.zero_threshold
        && a.zero_count == b.zero_count
        && a.positive_spans == b.positive_spans
        && a.negative_spans == b.negative_spans
        && a.positive_buckets == b.positive_buckets
        && a.negative_buckets == b.negative_buckets
        && a.custom_values == b.custom_values
}

/// `sum_over_time` (`avg == false`) or `avg_over_time` of histograms.
pub(crate) fn sum_or_avg(w: &Window<'_>, avg: bool, notes: &mut Notes<'_>) -> Option<Out> {
    if !w.samples.is_empty() {
        notes.mixed_floats();
        return None;
    }
    let hint = |k: CounterResetHint| w.hists.iter().any(|p| p.h.counter_reset_hint == k);
    if hint(CounterResetHint::CounterReset) && hint(CounterResetHint::NotCounterReset) {
        notes.warnings.push(
            "PromQL warning: conflicting counter resets during histogram aggregation".to_string(),
        );
    }
    let mut sum = match sum_histograms(w.hists.iter().map(|p| &p.h), avg)? {
        Ok((sum, reconciled)) => {
            if reconciled {
                notes.reconciled("aggregation");
            }
            sum
        }
        Err(_) => {
            notes.mixed_custom();
            return None;
        }
    };
    sum.counter_reset_hint = CounterResetHint::Gauge;
    Some(Out::H(sum.compact(0)))
}

/// The value of the latest (`last`) or earliest sample of the window.
pub(crate) fn edge(w: &Window<'_>, last: bool) -> Option<Out> {
    let f = if last {
        w.samples.last()
    } else {
        w.samples.first()
    };
    let h = if last {
        w.hists.last()
    } else {
        w.hists.first()
    };
    match (f, h) {
        (Some(f), Some(h)) if (f.t > h.t) == last => Some(Out::F(f.v)),
        (_, Some(h)) => Some(Out::H(h.h.clone())),
        (Some(f), None) => Some(Out::F(f.v)),
        (None, None) => None,
    }
}

/// The timestamp (seconds) of the latest or earliest sample.
pub(crate) fn edge_ts(w: &Window<'_>, last: bool) -> Option<Out> {
    let ts = w
        .samples
        .iter()
        .map(|p| p.t)
        .chain(w.hists.iter().map(|p| p.t));
    let t = if last { ts.max() } else { ts.min() }?;
    Some(Out::F(t as f64 / 1000.0))
}

/// Functions that only take floats: histograms are ignored, with an info
/// when the window holds both.
pub(crate) fn floats_only(w: &Window<'_>, notes: &mut Notes<'_>) -> bool {
    if w.samples.is_empty() {
        return false;
    }
    if !w.hists.is_empty() {
        notes.ignored_histograms();
    }
    true
}

/// `histogram_quantile(q, h)` with Prometheus's NaN-observation infos.
pub(crate) fn quantile(q: f64, h: &FloatHistogram, notes: &mut Notes<'_>) -> f64 {
    let v = h.quantile(q);
    if h.sum.is_nan() && (0.0..=1.0).contains(&q) && h.count > 0.0 {
        let what = if v.is_nan() {
            "result is NaN"
        } else if h.bucket_total() < h.count {
            "result is skewed higher"
        } else {
            // Sum NaN from observing both infinities, no NaN observations.
            return v;
        };
        notes.infos.push(format!(
            "PromQL info: input to histogram_quantile has NaN observations, {what} for metric name {:?}",
            notes.metric
        ));
    }
    v
}

/// `histogram_fraction(lower, upper, h)` with Prometheus's info on NaN
/// observations.
pub(crate) fn fraction(lower: f64, upper: f64, h: &FloatHistogram, notes: &mut Notes<'_>) -> f64 {
    if h.sum.is_nan() && h.bucket_total() < h.count {
        notes.infos.push(format!(
            "PromQL info: input to histogram_fraction has NaN observations, which are excluded from all fractions for metric name {:?}",
            notes.metric
        ));
    }
    h.fraction(lower, upper)
}

/// Prometheus's annotation for a quantile outside [0, 1].
pub(crate) fn bad_quantile(q: f64) -> String {
    format!(
        "PromQL warning: quantile value should be between 0 and 1, got {}",
        format_float(q)
    )
}
