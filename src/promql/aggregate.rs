//! Aggregation operators (Prometheus `rangeEvalAgg`, `aggregation`,
//! `aggregationK`, `aggregationCountValues`). Each input series is assigned
//! its group once; the per-step loops then work over group indexes.

use std::collections::HashMap;

use promql_parser::parser::token::*;
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::engine::QueryError;
use super::eval::{Evaluator, unwrap_parens};
use super::stats::{format_float, kahan_sum_inc, quantile};
use super::value::{OutBuilder, Series, Steps, Val, go_quote, is_valid_label_name};
use crate::model::histogram::{CounterResetHint, FloatHistogram};
use crate::model::histogram_kahan;
use crate::model::{Label, Labels, is_metadata_label};

/// The grouping labels of `labels` under `by`/`without`.
fn group_labels(labels: &Labels, without: bool, names: &[String]) -> Labels {
    Labels::from_sorted(
        labels
            .iter()
            .filter(|l| {
                let listed = names.contains(&l.name);
                if without {
                    !listed && !is_metadata_label(&l.name)
                } else {
                    listed
                }
            })
            .cloned()
            .collect(),
    )
}

#[derive(Clone, Copy, Default)]
struct Acc {
    seen: bool,
    value: f64,
    mean: f64,
    c: f64,
    count: f64,
    incremental: bool,
}

/// Above this many group × step accumulators, aggregation goes step by
/// step (one accumulator per group) to bound memory.
const SERIES_MAJOR_MAX_ACCUMULATORS: usize = 1 << 20;

/// Adds one value to its group's accumulator (Prometheus's aggregation
/// arithmetic: Kahan sums, incremental mean on overflow, Welford variance).
fn accumulate(op: TokenId, a: &mut Acc, f: f64, heap: Option<&mut Vec<f64>>) {
    if !a.seen {
        *a = Acc {
            seen: true,
            value: f,
            mean: f,
            c: 0.0,
            count: 1.0,
            incremental: false,
        };
        match op {
            T_STDDEV | T_STDVAR => {
                a.value = if f.is_nan() || f.is_infinite() {
                    f64::NAN
                } else {
                    0.0
                }
            }
            T_GROUP => a.value = 1.0,
            T_QUANTILE => {
                if let Some(heap) = heap {
                    heap.push(f);
                }
            }
            _ => {}
        }
        return;
    }
    match op {
        T_SUM => (a.value, a.c) = kahan_sum_inc(f, a.value, a.c),
        T_AVG => {
            a.count += 1.0;
            if !a.incremental {
                let (v, c) = kahan_sum_inc(f, a.value, a.c);
                if !v.is_infinite() {
                    (a.value, a.c) = (v, c);
                    return;
                }
                a.incremental = true;
                a.mean = a.value / (a.count - 1.0);
                a.c /= a.count - 1.0;
            }
            if a.mean.is_infinite() {
                if f.is_infinite() && (a.mean > 0.0) == (f > 0.0) {
                    return;
                }
                if !f.is_infinite() && !f.is_nan() {
                    return;
                }
            }
            let current = a.mean + a.c;
            (a.mean, a.c) = kahan_sum_inc(f / a.count - current / a.count, a.mean, a.c);
        }
        T_MAX if a.value < f || a.value.is_nan() => a.value = f,
        T_MIN if a.value > f || a.value.is_nan() => a.value = f,
        T_COUNT => a.count += 1.0,
        T_STDDEV | T_STDVAR => {
            a.count += 1.0;
            let delta = f - a.mean;
            a.mean += delta / a.count;
            a.value += delta * (f - a.mean);
        }
        T_QUANTILE => {
            if let Some(heap) = heap {
                heap.push(f);
            }
        }
        _ => {}
    }
}

/// The aggregate of a group at one step.
fn finish(op: TokenId, a: &Acc, q: f64, heap: &mut [f64]) -> f64 {
    match op {
        T_AVG => {
            if a.incremental {
                a.mean + a.c
            } else {
                (a.value + a.c) / a.count
            }
        }
        T_SUM => a.value + a.c,
        T_COUNT => a.count,
        T_STDVAR => a.value / a.count,
        T_STDDEV => (a.value / a.count).sqrt(),
        T_QUANTILE => quantile(q, heap),
        // min, max, group
        _ => a.value,
    }
}

pub(crate) fn eval_aggregate(
    ev: &mut Evaluator<'_>,
    a: &AggregateExpr,
    steps: Steps,
) -> Result<Val, QueryError> {
    let op = a.op.id();
    // Annotations end with where the aggregated expression (or, for the
    // parameter's, the parameter) starts.
    let epos = ev.positions.of(&a.expr);
    let ppos = a
        .param
        .as_ref()
        .map_or(String::new(), |p| ev.positions.of(p));
    let n = steps.len();
    let (without, names) = match &a.modifier {
        Some(LabelModifier::Include(ls)) => (false, ls.labels.clone()),
        Some(LabelModifier::Exclude(ls)) => (true, ls.labels.clone()),
        None => (false, Vec::new()),
    };
    if op == T_COUNT_VALUES {
        let Some(param) = &a.param else {
            return Err(QueryError::Execution(
                "count_values requires a label name".to_string(),
            ));
        };
        let label = ev.eval_string(unwrap_parens(param), steps)?;
        if !is_valid_label_name(&label) {
            return Err(QueryError::Execution(format!(
                "invalid label name {}",
                go_quote(&label)
            )));
        }
        let input = ev.eval_vector(&a.expr, steps)?;
        return count_values(input, &label, without, &names, n).map(Val::Vector);
    }
    let param = match (&a.param, op) {
        (Some(p), T_TOPK | T_BOTTOMK | T_QUANTILE | T_LIMITK | T_LIMIT_RATIO) => {
            Some(ev.eval_scalar(p, steps)?)
        }
        _ => None,
    };
    if let Some(p) = &param
        && matches!(op, T_TOPK | T_BOTTOMK | T_LIMITK | T_LIMIT_RATIO)
        && p.iter().any(|v| v.is_nan())
    {
        let what = if op == T_LIMIT_RATIO {
            "Ratio"
        } else {
            "Parameter"
        };
        return Err(QueryError::Execution(format!("{what} value is NaN")));
    }
    let mut input = ev.eval_vector(&a.expr, steps)?;
    let has_histograms = input.iter().any(|s| s.hists.is_some());
    if has_histograms {
        match op {
            // limitk and limit_ratio pass histograms through.
            T_LIMITK | T_LIMIT_RATIO => {}
            // Histograms count as samples.
            T_COUNT | T_GROUP => {
                for s in &mut input {
                    if let Some(h) = s.hists.take() {
                        for (v, h) in s.vals.iter_mut().zip(h) {
                            if h.is_some() {
                                *v = Some(0.0);
                            }
                        }
                    }
                }
            }
            T_SUM | T_AVG => {}
            // The others take floats only.
            _ => {
                let mut ignored = false;
                for s in &mut input {
                    ignored |= s.drop_histograms();
                }
                if ignored {
                    ev.infos.push(format!(
                        "PromQL info: ignored histogram in {} aggregation{epos}",
                        a.op
                    ));
                }
            }
        }
    }
    match op {
        T_TOPK | T_BOTTOMK | T_LIMITK => {
            let k = param.unwrap_or_default();
            return Ok(Val::Vector(select_k(op, input, &k, without, &names, n)));
        }
        T_LIMIT_RATIO => {
            let mut ratio = param.unwrap_or_default();
            if let Some(&bad) = ratio.iter().find(|r| !(-1.0..=1.0).contains(*r)) {
                let capped = bad.clamp(-1.0, 1.0);
                ev.warnings.push(format!(
                    "PromQL warning: ratio value should be between -1 and 1, got {}, capping to {}{}",
                    format_float(bad),
                    format_float(capped),
                    a.param.as_ref().map_or(String::new(), |p| ev.positions.of(p))
                ));
                ratio.iter_mut().for_each(|r| *r = r.clamp(-1.0, 1.0));
            }
            return Ok(Val::Vector(limit_ratio(input, &ratio)));
        }
        _ => {}
    }
    if op == T_QUANTILE
        && let Some(q) = &param
        && q.iter().any(|q| !(0.0..=1.0).contains(q))
    {
        let bad = q
            .iter()
            .find(|q| !(0.0..=1.0).contains(*q))
            .copied()
            .unwrap_or(f64::NAN);
        ev.warnings.push(format!(
            "PromQL warning: quantile value should be between 0 and 1, got {}{ppos}",
            format_float(bad)
        ));
    }

    // Group of every input series, computed once.
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<Labels> = Vec::new();
    let mut group_of = Vec::with_capacity(input.len());
    for s in &input {
        let key = group_labels(&s.labels, without, &names);
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.push(key);
            groups.len() - 1
        });
        group_of.push(g);
    }
    let mut out: Vec<Series> = groups
        .into_iter()
        .map(|labels| Series {
            hists: None,
            labels,
            drop_name: false,
            vals: vec![None; n],
        })
        .collect();
    if !matches!(
        op,
        T_SUM | T_AVG | T_COUNT | T_MIN | T_MAX | T_GROUP | T_STDDEV | T_STDVAR | T_QUANTILE
    ) {
        return Err(QueryError::Execution(format!(
            "aggregation {op} is not supported yet"
        )));
    }
    for (s, &g) in input.iter().zip(&group_of) {
        if s.drop_name {
            // A group keeps a to-be-dropped name (`by (__name__)`).
            out[g].drop_name = true;
        }
    }
    let ngroups = out.len();
    if op != T_QUANTILE && ngroups.saturating_mul(n) <= SERIES_MAJOR_MAX_ACCUMULATORS {
        // Series by series, each series' steps in a row: the input is read
        // in memory order (one accumulator per group and step). Values meet
        // their accumulator in the same order as step by step, so results
        // are bit-identical.
        let mut acc = vec![Acc::default(); ngroups * n];
        for (s, &g) in input.iter().zip(&group_of) {
            let row = &mut acc[g * n..(g + 1) * n];
            for (a, v) in row.iter_mut().zip(&s.vals) {
                if let Some(f) = *v {
                    accumulate(op, a, f, None);
                }
            }
        }
        for (g, series) in out.iter_mut().enumerate() {
            for (step, a) in acc[g * n..(g + 1) * n].iter().enumerate() {
                if a.seen {
                    series.vals[step] = Some(finish(op, a, f64::NAN, &mut Vec::new()));
                }
            }
        }
    } else {
        let mut acc = vec![Acc::default(); ngroups];
        let mut heaps: Vec<Vec<f64>> = if op == T_QUANTILE {
            vec![Vec::new(); ngroups]
        } else {
            Vec::new()
        };
        for step in 0..n {
            acc.iter_mut().for_each(|a| a.seen = false);
            heaps.iter_mut().for_each(Vec::clear);
            for (s, &g) in input.iter().zip(&group_of) {
                let Some(f) = s.vals[step] else { continue };
                accumulate(op, &mut acc[g], f, heaps.get_mut(g));
            }
            for (g, a) in acc.iter().enumerate() {
                if !a.seen {
                    continue;
                }
                let q = param.as_ref().map_or(f64::NAN, |p| p[step]);
                let mut empty = Vec::new();
                let heap = heaps.get_mut(g).unwrap_or(&mut empty);
                out[g].vals[step] = Some(finish(op, a, q, heap));
            }
        }
    }
    if has_histograms && matches!(op, T_SUM | T_AVG) {
        sum_histograms(ev, op, &input, &group_of, &mut out, &epos);
    }
    out.retain(|s| !s.is_empty());
    Ok(Val::Vector(out))
}

/// `sum` and `avg` of the histogram samples of each group at each step
/// (Prometheus's histogram aggregation): a group with floats and
/// histograms at a step has no result there.
fn sum_histograms(
    ev: &mut Evaluator<'_>,
    op: TokenId,
    input: &[Series],
    group_of: &[usize],
    out: &mut [Series],
    epos: &str,
) {
    let n = out.first().map_or(0, |s| s.vals.len());
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); out.len()];
    for (i, &g) in group_of.iter().enumerate() {
        if input[i].hists.is_some() {
            members[g].push(i);
        }
    }
    for (g, m) in members.iter().enumerate() {
        if m.is_empty() {
            continue;
        }
        for step in 0..n {
            let hists: Vec<&FloatHistogram> = m.iter().filter_map(|&i| input[i].h(step)).collect();
            let Some(first) = hists.first() else { continue };
            let group_has_floats = group_of
                .iter()
                .enumerate()
                .any(|(i, &gg)| gg == g && input[i].vals[step].is_some());
            if group_has_floats {
                out[g].vals[step] = None;
                ev.warnings.push(format!(
                    "PromQL warning: encountered a mix of histograms and floats for aggregation{epos}"
                ));
                continue;
            }
            let hint = |k: CounterResetHint| hists.iter().any(|h| h.counter_reset_hint == k);
            if hint(CounterResetHint::CounterReset) && hint(CounterResetHint::NotCounterReset) {
                ev.warnings.push(format!(
                    "PromQL warning: conflicting counter resets during histogram aggregation{epos}"
                ));
            }
            let mut sum = match histogram_kahan::sum_histograms(hists.iter().copied(), op == T_AVG)
            {
                Some(Ok((sum, reconciled))) => {
                    if reconciled {
                        ev.infos.push(format!(
                            "PromQL info: mismatched custom buckets were reconciled during aggregation{epos}"
                        ));
                    }
                    sum
                }
                Some(Err(_)) => {
                    ev.warnings.push(format!(
                        "PromQL warning: vector contains a mix of histograms with exponential and custom buckets schemas for metric name {:?}{epos}",
                        input[m[0]].labels.metric_name().unwrap_or("")
                    ));
                    continue;
                }
                None => continue,
            };
            sum.counter_reset_hint = first.counter_reset_hint;
            if sum.counter_reset_hint != CounterResetHint::Gauge {
                sum.counter_reset_hint = CounterResetHint::Unknown;
            }
            out[g].set_h(step, sum.compact(0));
        }
    }
}

/// topk, bottomk and limitk: the input series themselves, k per group.
fn select_k(
    op: TokenId,
    input: Vec<Series>,
    k: &[f64],
    without: bool,
    names: &[String],
    n: usize,
) -> Vec<Series> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut group_of = Vec::with_capacity(input.len());
    for s in &input {
        let key = group_labels(&s.labels, without, names);
        let next = index.len();
        group_of.push(*index.entry(key).or_insert(next));
    }
    let ngroups = index.len();
    let mut chosen: Vec<Vec<bool>> = vec![vec![false; n]; input.len()];
    // For an instant query, the output order: groups in order, best first.
    let mut order: Vec<usize> = Vec::new();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); ngroups];
    #[allow(clippy::needless_range_loop)] // `step` indexes every series' values
    for step in 0..n {
        let kf = k.get(step).copied().unwrap_or(0.0);
        if kf.is_nan() || kf < 1.0 {
            continue;
        }
        let k = if kf >= usize::MAX as f64 {
            usize::MAX
        } else {
            kf as usize
        };
        members.iter_mut().for_each(Vec::clear);
        for (i, s) in input.iter().enumerate() {
            if s.has(step) {
                members[group_of[i]].push(i);
            }
        }
        for m in &mut members {
            let value = |i: &usize| input[*i].vals[step].unwrap_or(f64::NAN);
            match op {
                T_TOPK => m.sort_by(|a, b| {
                    let (x, y) = (value(a), value(b));
                    x.is_nan()
                        .cmp(&y.is_nan())
                        .then_with(|| y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal))
                }),
                T_BOTTOMK => m.sort_by(|a, b| {
                    let (x, y) = (value(a), value(b));
                    x.is_nan()
                        .cmp(&y.is_nan())
                        .then_with(|| x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal))
                }),
                _ => {}
            }
            for &i in m.iter().take(k) {
                chosen[i][step] = true;
                if n == 1 {
                    order.push(i);
                }
            }
        }
    }
    keep_chosen(input, &chosen, (n == 1).then_some(order))
}

/// limit_ratio: each series at the steps where its label hash falls in the
/// ratio (Prometheus `HashRatioSampler`: the hash over `u64::MAX` below a
/// positive ratio, or at least `1 + ratio` for a negative one), so that
/// `limit_ratio(r, v)` and `limit_ratio(r - 1, v)` split `v`.
fn limit_ratio(input: Vec<Series>, ratio: &[f64]) -> Vec<Series> {
    let chosen: Vec<Vec<bool>> = input
        .iter()
        .map(|s| {
            let offset = s.labels.prometheus_hash() as f64 / u64::MAX as f64;
            ratio
                .iter()
                .enumerate()
                .map(|(step, &r)| {
                    s.has(step) && ((r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r))
                })
                .collect()
        })
        .collect();
    keep_chosen(input, &chosen, None)
}

/// The series of `input` with only their samples at the chosen steps; in
/// `order` when given (an instant query's), else in input order.
fn keep_chosen(input: Vec<Series>, chosen: &[Vec<bool>], order: Option<Vec<usize>>) -> Vec<Series> {
    let mut input: Vec<Option<Series>> = input.into_iter().map(Some).collect();
    let order = order.unwrap_or_else(|| (0..input.len()).collect());
    let mut out = Vec::new();
    for i in order {
        let Some(mut s) = input[i].take() else {
            continue;
        };
        for (step, &keep) in chosen[i].iter().enumerate() {
            if !keep {
                s.vals[step] = None;
                if let Some(h) = s.hists.as_mut() {
                    h[step] = None;
                }
            }
        }
        if !s.is_empty() {
            out.push(s);
        }
    }
    out
}

fn count_values(
    input: Vec<Series>,
    label: &str,
    without: bool,
    names: &[String],
    n: usize,
) -> Result<Vec<Series>, QueryError> {
    let mut names = names.to_vec();
    if !without {
        names.push(label.to_string());
    }
    let mut out = OutBuilder::new(n);
    let mut counts: HashMap<usize, f64> = HashMap::new();
    for step in 0..n {
        counts.clear();
        for s in &input {
            let value = match (s.vals[step], s.h(step)) {
                (Some(v), _) => format_float(v),
                (None, Some(h)) => h.to_string(),
                (None, None) => continue,
            };
            let mut labels: Vec<Label> = s
                .labels
                .iter()
                .filter(|l| l.name != label)
                .cloned()
                .collect();
            labels.push(Label::new(label, value));
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            let labels = group_labels(&Labels::from_sorted(labels), without, &names);
            let slot = out.slot(labels, false);
            *counts.entry(slot).or_default() += 1.0;
        }
        for (&slot, &c) in &counts {
            out.set(slot, step, c)?;
        }
    }
    Ok(out.finish())
}
