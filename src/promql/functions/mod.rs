//! The function table (Prometheus `promql/functions.go` `FunctionCalls`),
//! one family per file; each family cites the Prometheus function it
//! follows. Range-vector functions are applied per series over sliding
//! windows; instant-vector functions map each series' step values.

mod absent;
mod histogram;
mod labels;
mod math;
mod native;
mod over_time;
mod rate;
mod time;

use promql_parser::parser::{Call, Expr};

use super::engine::QueryError;
use super::eval::{Evaluator, unwrap_parens};
use super::stats::{format_float, go_max, go_min};
use super::value::{Series, Steps, Val, merge_same_labels};
use crate::model::histogram::FloatHistogram;
use crate::model::histogram_format::go_format_g;
use crate::model::{HPoint, Labels, Sample};
use native::{Notes, Out};

/// One window of a range-vector argument at one step: `samples` lie in
/// `(range_end - range, range_end]`; `ts` is the evaluation time.
pub(crate) struct Window<'a> {
    pub samples: &'a [Sample],
    /// Histogram samples of the window; empty for float-only series.
    pub hists: &'a [HPoint],
    pub range_end: i64,
    pub range: i64,
    pub ts: i64,
}

type RangeFn = fn(&Window<'_>, &[f64]) -> Result<Option<f64>, QueryError>;

/// The range-vector functions: which argument is the range vector, whether
/// the metric name is kept, and the function.
fn range_function(name: &str) -> Option<(usize, bool, RangeFn)> {
    Some(match name {
        "rate" => (0, false, |w, _| Ok(rate::extrapolated_rate(w, true, true))),
        "increase" => (0, false, |w, _| Ok(rate::extrapolated_rate(w, true, false))),
        "delta" => (0, false, |w, _| {
            Ok(rate::extrapolated_rate(w, false, false))
        }),
        "irate" => (0, false, |w, _| Ok(rate::instant_value(w, true))),
        "idelta" => (0, false, |w, _| Ok(rate::instant_value(w, false))),
        "resets" => (0, false, |w, _| Ok(rate::resets(w))),
        "changes" => (0, false, |w, _| Ok(rate::changes(w))),
        "deriv" => (0, false, |w, _| Ok(rate::deriv(w))),
        "predict_linear" => (0, false, |w, p| Ok(rate::predict_linear(w, p[0]))),
        "avg_over_time" => (0, false, |w, _| Ok(over_time::avg(w))),
        "sum_over_time" => (0, false, |w, _| Ok(over_time::sum(w))),
        "count_over_time" => (0, false, |w, _| Ok(over_time::count(w))),
        "min_over_time" => (0, false, |w, _| Ok(over_time::min(w))),
        "max_over_time" => (0, false, |w, _| Ok(over_time::max(w))),
        "stddev_over_time" => (0, false, |w, _| Ok(over_time::stddev(w))),
        "stdvar_over_time" => (0, false, |w, _| Ok(over_time::stdvar(w))),
        "last_over_time" => (0, true, |w, _| Ok(over_time::last(w))),
        "first_over_time" => (0, true, |w, _| Ok(over_time::first(w))),
        "present_over_time" => (0, false, |w, _| Ok(over_time::present(w))),
        "mad_over_time" => (0, false, |w, _| Ok(over_time::mad(w))),
        "ts_of_max_over_time" => (0, false, |w, _| Ok(over_time::ts_of_max(w))),
        "ts_of_min_over_time" => (0, false, |w, _| Ok(over_time::ts_of_min(w))),
        "ts_of_last_over_time" => (0, false, |w, _| Ok(over_time::ts_of_last(w))),
        "ts_of_first_over_time" => (0, false, |w, _| Ok(over_time::ts_of_first(w))),
        "quantile_over_time" => (1, false, |w, p| Ok(over_time::quantile_over_time(w, p[0]))),
        "double_exponential_smoothing" | "holt_winters" => (0, false, |w, p| {
            let (sf, tf) = (p[0], p[1]);
            if sf <= 0.0 || sf >= 1.0 {
                return Err(QueryError::Execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                )));
            }
            if tf <= 0.0 || tf >= 1.0 {
                return Err(QueryError::Execution(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                )));
            }
            Ok(over_time::double_exponential_smoothing(w, sf, tf))
        }),
        _ => return None,
    })
}

pub(crate) fn eval_call(
    ev: &mut Evaluator<'_>,
    call: &Call,
    steps: Steps,
) -> Result<Val, QueryError> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| unwrap_parens(a)).collect();
    // Where each argument starts: annotations end with the position of the
    // argument they are about.
    let pos: Vec<String> = call.args.args.iter().map(|a| ev.positions.of(a)).collect();
    let n = steps.len();
    if let Some((matrix_arg, keep_name, f)) = range_function(name) {
        return eval_range_function(ev, call, &args, matrix_arg, keep_name, f, steps);
    }
    if let Some(f) = math::simple(name) {
        let mut v = ev.eval_vector(args[0], steps)?;
        map_values(&mut v, |x| Some(f(x)));
        return Ok(Val::Vector(v));
    }
    if let Some(f) = time::date_fn(name) {
        let mut v = match args.first() {
            Some(a) => ev.eval_vector(a, steps)?,
            None => vec![Series::floats(
                Labels::default(),
                false,
                (0..n).map(|i| Some(steps.ts(i) as f64 / 1000.0)).collect(),
            )],
        };
        map_values(&mut v, |x| Some(f(x)));
        return Ok(Val::Vector(v));
    }
    match name {
        "time" => Ok(Val::Scalar(
            (0..n).map(|i| steps.ts(i) as f64 / 1000.0).collect(),
        )),
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; n])),
        "step" => Ok(Val::Scalar(vec![ev.ctx.query_step as f64 / 1000.0; n])),
        "range" => Ok(Val::Scalar(vec![
            (ev.ctx.query_end - ev.ctx.query_start)
                as f64
                / 1000.0;
            n
        ])),
        "start" => Ok(Val::Scalar(vec![ev.ctx.query_start as f64 / 1000.0; n])),
        "end" => Ok(Val::Scalar(vec![ev.ctx.query_end as f64 / 1000.0; n])),
        "min_of" | "max_of" => {
            let a = ev.eval_scalar(args[0], steps)?;
            let b = ev.eval_scalar(args[1], steps)?;
            let f = if name == "min_of" { go_min } else { go_max };
            Ok(Val::Scalar(
                a.iter().zip(&b).map(|(&a, &b)| f(a, b)).collect(),
            ))
        }
        "vector" => {
            let s = ev.eval_scalar(args[0], steps)?;
            Ok(Val::Vector(vec![Series::floats(
                Labels::default(),
                false,
                s.into_iter().map(Some).collect(),
            )]))
        }
        "scalar" => {
            let v = ev.eval_vector(args[0], steps)?;
            Ok(Val::Scalar(
                (0..n)
                    .map(|i| {
                        let mut present = v.iter().filter_map(|s| s.vals[i]);
                        match (present.next(), present.next()) {
                            (Some(x), None) => x,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "timestamp" => {
            let mut v = match args[0] {
                Expr::VectorSelector(vs) => ev.select_instant(vs, steps, true),
                other => {
                    let mut v = ev.eval_vector(other, steps)?;
                    for s in &mut v {
                        for i in 0..n {
                            if s.has(i) {
                                s.vals[i] = Some(steps.ts(i) as f64 / 1000.0);
                            }
                        }
                        s.hists = None;
                    }
                    v
                }
            };
            v.iter_mut().for_each(|s| s.drop_name = true);
            Ok(Val::Vector(v))
        }
        "clamp" | "clamp_min" | "clamp_max" | "round" => {
            let mut v = ev.eval_vector(args[0], steps)?;
            v.iter_mut().for_each(|s| {
                s.drop_histograms();
            });
            let p1 = match args.get(1) {
                Some(a) => ev.eval_scalar(a, steps)?,
                None => vec![1.0; n],
            };
            let p2 = match args.get(2) {
                Some(a) => ev.eval_scalar(a, steps)?,
                None => vec![0.0; n],
            };
            for s in &mut v {
                s.drop_name = true;
                for (i, x) in s.vals.iter_mut().enumerate() {
                    if let Some(val) = *x {
                        *x = match name {
                            "clamp" => math::clamp(val, p1[i], p2[i]),
                            "clamp_min" => Some(math::clamp_min(val, p1[i])),
                            "clamp_max" => Some(math::clamp_max(val, p1[i])),
                            _ => Some(math::round(val, p1[i])),
                        };
                    }
                }
            }
            v.retain(|s| s.vals.iter().any(Option::is_some));
            Ok(Val::Vector(v))
        }
        "label_replace" => {
            let v = ev.eval_vector(args[0], steps)?;
            let dst = ev.eval_string(args[1], steps)?;
            let repl = ev.eval_string(args[2], steps)?;
            let src = ev.eval_string(args[3], steps)?;
            let re = ev.eval_string(args[4], steps)?;
            Ok(Val::Vector(labels::label_replace(
                v, &dst, &repl, &src, &re, n,
            )?))
        }
        "label_join" => {
            let v = ev.eval_vector(args[0], steps)?;
            let dst = ev.eval_string(args[1], steps)?;
            let sep = ev.eval_string(args[2], steps)?;
            let mut srcs = Vec::new();
            for a in &args[3..] {
                srcs.push(ev.eval_string(a, steps)?);
            }
            Ok(Val::Vector(labels::label_join(v, &dst, &sep, &srcs, n)?))
        }
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => {
            let mut v = ev.eval_vector(args[0], steps)?;
            if matches!(name, "sort" | "sort_desc") {
                // Sorting by value takes floats only (Prometheus filterFloats).
                v.iter_mut().for_each(|s| {
                    s.drop_histograms();
                });
                v.retain(|s| !s.is_empty());
            }
            if n > 1 {
                let at = ev.positions.of_call(call);
                ev.warnings.push(format!(
                    "PromQL warning: sort is ineffective for range queries since results are always ordered by labels{at}"
                ));
                return Ok(Val::Vector(v));
            }
            match name {
                "sort" => labels::sort_by_value(&mut v, false),
                "sort_desc" => labels::sort_by_value(&mut v, true),
                _ => {
                    let mut names = Vec::new();
                    for a in &args[1..] {
                        names.push(ev.eval_string(a, steps)?);
                    }
                    labels::sort_by_label(&mut v, &names, name == "sort_by_label_desc");
                }
            }
            Ok(Val::Vector(v))
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            let mut v = ev.eval_vector(args[0], steps)?;
            for s in &mut v {
                s.drop_name = true;
                s.vals.iter_mut().for_each(|x| *x = None);
                let Some(hists) = s.hists.take() else {
                    continue;
                };
                for (i, h) in hists.into_iter().enumerate() {
                    let Some(h) = h else { continue };
                    s.vals[i] = Some(match name {
                        "histogram_count" => h.count,
                        "histogram_sum" => h.sum,
                        "histogram_avg" => h.sum / h.count,
                        "histogram_stddev" => h.stdvar().sqrt(),
                        _ => h.stdvar(),
                    });
                }
            }
            v.retain(|s| !s.is_empty());
            Ok(Val::Vector(v))
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar(args[0], steps)?;
            let v = ev.eval_vector(args[1], steps)?;
            Ok(Val::Vector(histogram_quantile(ev, &q, v, &pos[0], &pos[1])))
        }
        "histogram_quantiles" => {
            // histogram_quantiles(v, "label", q1, q2, ...): one
            // histogram_quantile per q, told apart by `label`.
            let v = ev.eval_vector(args[0], steps)?;
            let label = ev.eval_string(args[1], steps)?;
            let mut out = Vec::new();
            for (i, arg) in args.iter().enumerate().skip(2) {
                let q = ev.eval_scalar(arg, steps)?;
                let Some(&q0) = q.first() else { continue };
                let value = quantile_label_value(q0);
                let mut res = histogram_quantile(ev, &q, v.clone(), &pos[i], &pos[0]);
                for s in &mut res {
                    s.labels = s.labels.with(&label, &value);
                }
                out.extend(res);
            }
            Ok(Val::Vector(merge_same_labels(out, steps.len())?))
        }
        "histogram_fraction" => {
            let lower = ev.eval_scalar(args[0], steps)?;
            let upper = ev.eval_scalar(args[1], steps)?;
            let v = ev.eval_vector(args[2], steps)?;
            let (native, classic) = split_native(v);
            let (mut warnings, mut infos) = (Vec::new(), Vec::new());
            let out = histogram::histogram_fraction(&lower, &upper, classic, &mut warnings);
            let native = map_native(native, &mut warnings, &mut infos, |i, h, notes| {
                native::fraction(lower[i], upper[i], h, notes)
            });
            let out = join_native(native, out, &mut warnings);
            ev.warnings
                .extend(warnings.into_iter().map(|w| w + &pos[2]));
            ev.infos.extend(infos.into_iter().map(|w| w + &pos[2]));
            Ok(Val::Vector(out))
        }
        "absent" => absent::absent(ev, args[0], steps),
        "absent_over_time" => absent::absent_over_time(ev, args[0], steps),
        _ => Err(QueryError::Execution(format!(
            "function {name}() is not supported yet"
        ))),
    }
}

/// Maps every present value; `None` drops the sample. Drops the metric name.
fn map_values(v: &mut Vec<Series>, f: impl Fn(f64) -> Option<f64>) {
    for s in v.iter_mut() {
        s.drop_name = true;
        s.drop_histograms();
        for x in s.vals.iter_mut() {
            if let Some(val) = *x {
                *x = f(val);
            }
        }
    }
    v.retain(|s| !s.is_empty());
}

fn eval_range_function(
    ev: &mut Evaluator<'_>,
    call: &Call,
    args: &[&Expr],
    matrix_arg: usize,
    keep_name: bool,
    f: RangeFn,
    steps: Steps,
) -> Result<Val, QueryError> {
    let name = call.func.name;
    // Prometheus places these annotations at the first argument.
    let pos = &ev.positions.of(&call.args.args[0]);
    let n = steps.len();
    let mut params: Vec<Vec<f64>> = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i != matrix_arg {
            params.push(ev.eval_scalar(a, steps)?);
        }
    }
    if name == "quantile_over_time"
        && let Some(bad) = params[0].iter().find(|q| !(0.0..=1.0).contains(*q))
    {
        ev.warnings.push(format!(
            "PromQL warning: quantile value should be between 0 and 1, got {}{pos}",
            format_float(*bad)
        ));
    }
    let input = ev.range_input(args[matrix_arg], steps)?;
    let max_window = input
        .series
        .iter()
        .map(|s| s.samples.len())
        .max()
        .unwrap_or(0);
    ev.hold(max_window)?;
    ev.check_deadline()?;
    let mut vals: Vec<Vec<Option<f64>>> = vec![vec![None; n]; input.series.len()];
    let mut hvals: Vec<Option<Vec<Option<FloatHistogram>>>> = vec![None; input.series.len()];
    let mut had_floats = vec![false; input.series.len()];
    let (mut warnings, mut infos) = (Vec::new(), Vec::new());
    let mut err = None;
    let mut p = vec![0.0; params.len()];
    input.for_each_window(|si, i, samples, hists| {
        if err.is_some() {
            return;
        }
        for (k, param) in params.iter().enumerate() {
            p[k] = param[i];
        }
        let w = Window {
            samples,
            hists,
            range_end: input.refs[i],
            range: input.range,
            ts: steps.ts(i),
        };
        had_floats[si] |= !samples.is_empty();
        if hists.is_empty() {
            match f(&w, &p) {
                Ok(v) => vals[si][i] = v,
                Err(e) => err = Some(e),
            }
            return;
        }
        let mut notes = Notes {
            metric: input.series[si].labels.metric_name().unwrap_or(""),
            warnings: Vec::new(),
            infos: Vec::new(),
        };
        match histogram_window(name, &w, &p, f, &mut notes) {
            Ok(Some(Out::F(v))) => vals[si][i] = Some(v),
            Ok(Some(Out::H(h))) => {
                hvals[si].get_or_insert_with(|| vec![None; n])[i] = Some(h);
            }
            Ok(None) => {}
            Err(e) => err = Some(e),
        }
        warnings.append(&mut notes.warnings);
        infos.append(&mut notes.infos);
    });
    if let Some(e) = err {
        return Err(e);
    }
    ev.warnings.extend(warnings.into_iter().map(|w| w + pos));
    ev.infos.extend(infos.into_iter().map(|w| w + pos));
    let mut out = Vec::new();
    for (((s, vals), hists), had_floats) in input
        .series
        .into_iter()
        .zip(vals)
        .zip(hvals)
        .zip(had_floats)
    {
        let series = Series {
            labels: s.labels.into_owned(),
            drop_name: !keep_name,
            vals,
            hists,
        };
        if series.is_empty() {
            continue;
        }
        if matches!(name, "rate" | "increase")
            && had_floats
            && let Some(metric) = series.labels.metric_name()
            && !["_total", "_sum", "_count", "_bucket"]
                .iter()
                .any(|suffix| metric.ends_with(suffix))
        {
            ev.infos.push(format!(
                "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}{pos}"
            ));
        }
        out.push(series);
    }
    Ok(Val::Vector(out))
}

/// A range function over a window holding histogram samples.
fn histogram_window(
    name: &str,
    w: &Window<'_>,
    p: &[f64],
    f: RangeFn,
    notes: &mut Notes<'_>,
) -> Result<Option<Out>, QueryError> {
    Ok(match name {
        "rate" => native::extrapolated_rate(w, true, true, notes),
        "increase" => native::extrapolated_rate(w, true, false, notes),
        "delta" => native::extrapolated_rate(w, false, false, notes),
        "irate" => native::instant_value(w, true, notes),
        "idelta" => native::instant_value(w, false, notes),
        "resets" => native::resets(w),
        "changes" => native::changes(w),
        "sum_over_time" => native::sum_or_avg(w, false, notes),
        "avg_over_time" => native::sum_or_avg(w, true, notes),
        "count_over_time" => Some(Out::F((w.samples.len() + w.hists.len()) as f64)),
        "present_over_time" => Some(Out::F(1.0)),
        "last_over_time" => native::edge(w, true),
        "first_over_time" => native::edge(w, false),
        "ts_of_last_over_time" => native::edge_ts(w, true),
        "ts_of_first_over_time" => native::edge_ts(w, false),
        _ => {
            if native::floats_only(w, notes) {
                f(w, p)?.map(Out::F)
            } else {
                None
            }
        }
    })
}

/// `histogram_quantile(q, v)` over classic and native histograms alike;
/// `pos_q` and `pos_v` are the positions of the two arguments, for the
/// annotations.
fn histogram_quantile(
    ev: &mut Evaluator<'_>,
    q: &[f64],
    v: Vec<Series>,
    pos_q: &str,
    pos_v: &str,
) -> Vec<Series> {
    let (native, classic) = split_native(v);
    let (mut warnings, mut infos) = (Vec::new(), Vec::new());
    // Prometheus warns about the quantile whether or not there is input.
    if let Some(bad) = q.iter().find(|q| !(0.0..=1.0).contains(*q)) {
        ev.warnings.push(native::bad_quantile(*bad) + pos_q);
    }
    let out = histogram::histogram_quantile(q, classic, &mut warnings, &mut infos);
    let native = map_native(native, &mut warnings, &mut infos, |i, h, notes| {
        native::quantile(q[i], h, notes)
    });
    let out = join_native(native, out, &mut warnings);
    ev.warnings.extend(warnings.into_iter().map(|w| w + pos_v));
    ev.infos.extend(infos.into_iter().map(|w| w + pos_v));
    out
}

/// The label value `histogram_quantiles` gives quantile `q`: as
/// OpenMetrics writes floats (Prometheus `FormatOpenMetricsFloat`), Go's
/// `%g` with a `.0` when it has neither a point nor an exponent.
fn quantile_label_value(q: f64) -> String {
    let mut s = go_format_g(q);
    if q.is_finite() && !s.contains(['.', 'e']) {
        s.push_str(".0");
    }
    s
}

/// Splits a vector into its histogram samples and its float samples.
fn split_native(v: Vec<Series>) -> (Vec<Series>, Vec<Series>) {
    let mut native = Vec::new();
    let mut floats = Vec::with_capacity(v.len());
    for mut s in v {
        if let Some(h) = s.hists.take() {
            let n = s.vals.len();
            native.push(Series {
                labels: s.labels.clone(),
                drop_name: true,
                vals: vec![None; n],
                hists: Some(h),
            });
        }
        if s.vals.iter().any(Option::is_some) {
            floats.push(s);
        }
    }
    (native, floats)
}

/// Maps every histogram sample to a float with `f(step, histogram, notes)`.
fn map_native(
    native: Vec<Series>,
    warnings: &mut Vec<String>,
    infos: &mut Vec<String>,
    f: impl Fn(usize, &FloatHistogram, &mut Notes<'_>) -> f64,
) -> Vec<Series> {
    let mut out = Vec::with_capacity(native.len());
    for mut s in native {
        let hists = s.hists.take().unwrap_or_default();
        let mut notes = Notes {
            metric: s.labels.metric_name().unwrap_or(""),
            warnings: Vec::new(),
            infos: Vec::new(),
        };
        for (i, h) in hists.iter().enumerate() {
            if let Some(h) = h {
                s.vals[i] = Some(f(i, h, &mut notes));
            }
        }
        warnings.append(&mut notes.warnings);
        infos.append(&mut notes.infos);
        out.push(s);
    }
    out
}

/// Joins native and classic histogram results; where a native histogram and
/// classic buckets of the same series meet at a step, neither counts
/// (Prometheus's mixed classic/native warning).
fn join_native(
    mut native: Vec<Series>,
    mut classic: Vec<Series>,
    warnings: &mut Vec<String>,
) -> Vec<Series> {
    for c in &mut classic {
        let Some(nat) = native.iter_mut().find(|s| s.labels == c.labels) else {
            continue;
        };
        for (cv, nv) in c.vals.iter_mut().zip(nat.vals.iter_mut()) {
            if cv.is_some() && nv.is_some() {
                *cv = None;
                *nv = None;
                warnings.push(format!(
                    "PromQL warning: vector contains a mix of classic and native histograms for metric name {:?}",
                    c.labels.metric_name().unwrap_or("")
                ));
            }
        }
    }
    native.extend(classic);
    native.retain(|s| !s.is_empty());
    native
}
