//! Evaluation: every node is evaluated over all its steps at once and
//! yields per-step scalars or per-series rows of step values.

use std::borrow::Cow;
use std::time::Instant;

use promql_parser::parser::{Expr, MatrixSelector, SubqueryExpr, VectorSelector};

use super::engine::QueryError;
use super::plan::{Fetched, PlanContext, offset_ms, selector_key};
use super::positions::Positions;
use super::value::{Series, Steps, Val};
use super::{SeriesSamples, aggregate, binary, functions};
use crate::model::histogram::CounterResetHint;
use crate::model::{HPoint, Labels, Sample, is_stale_nan};

pub(crate) struct Evaluator<'a> {
    pub data: &'a Fetched,
    pub ctx: PlanContext,
    pub max_samples: usize,
    /// Samples currently held (Prometheus's `currentSamples`, approximated
    /// per node).
    pub current_samples: usize,
    pub deadline: Instant,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
    /// Where each node starts in the query, for annotation messages.
    pub positions: Positions,
}

/// A range-vector argument evaluated for a function: each series' samples
/// and, per step, the right edge of the window `(ref - range, ref]`.
pub(crate) struct RangeInput<'a> {
    pub series: Vec<RangeSeries<'a>>,
    pub range: i64,
    pub refs: Vec<i64>,
}

pub(crate) struct RangeSeries<'a> {
    pub labels: Cow<'a, Labels>,
    pub samples: Cow<'a, [Sample]>,
    /// Histogram samples; empty for float-only series.
    pub histograms: Cow<'a, [HPoint]>,
}

/// The `(lo, hi)` bounds of the window `(r - range, r]` in `ts`, advanced
/// from the previous step's bounds (references only grow).
fn advance(
    ts: impl Fn(usize) -> i64,
    len: usize,
    lo: &mut usize,
    hi: &mut usize,
    r: i64,
    range: i64,
) {
    while *hi < len && ts(*hi) <= r {
        *hi += 1;
    }
    while *lo < *hi && ts(*lo) <= r - range {
        *lo += 1;
    }
}

impl RangeInput<'_> {
    /// Calls `f(series index, step, float window, histogram window)` for
    /// every window holding a sample.
    pub fn for_each_window(&self, mut f: impl FnMut(usize, usize, &[Sample], &[HPoint])) {
        for (si, s) in self.series.iter().enumerate() {
            let samples = &s.samples[..];
            let hists = &s.histograms[..];
            let first = samples
                .first()
                .map_or(i64::MAX, |p| p.t)
                .min(hists.first().map_or(i64::MAX, |p| p.t));
            let (mut lo, mut hi) = (0, 0);
            let (mut hlo, mut hhi) = (0, 0);
            for (i, &r) in self.refs.iter().enumerate() {
                if r < first {
                    continue;
                }
                advance(
                    |k| samples[k].t,
                    samples.len(),
                    &mut lo,
                    &mut hi,
                    r,
                    self.range,
                );
                if !hists.is_empty() {
                    advance(
                        |k| hists[k].t,
                        hists.len(),
                        &mut hlo,
                        &mut hhi,
                        r,
                        self.range,
                    );
                }
                if lo < hi || hlo < hhi {
                    f(si, i, &samples[lo..hi], &hists[hlo..hhi]);
                }
            }
        }
    }
}

pub(crate) fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

impl<'a> Evaluator<'a> {
    pub fn check_deadline(&self) -> Result<(), QueryError> {
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout);
        }
        Ok(())
    }

    /// Accounts `n` more samples held; errors past `max_samples`.
    pub fn hold(&mut self, n: usize) -> Result<(), QueryError> {
        self.current_samples += n;
        if self.current_samples > self.max_samples {
            return Err(QueryError::TooManySamples {
                limit: self.max_samples,
            });
        }
        Ok(())
    }

    pub fn eval(&mut self, expr: &Expr, steps: Steps) -> Result<Val, QueryError> {
        self.check_deadline()?;
        let before = self.current_samples;
        let val = self.eval_node(expr, steps)?;
        self.current_samples = before;
        self.hold(val.points())?;
        Ok(val)
    }

    fn eval_node(&mut self, expr: &Expr, steps: Steps) -> Result<Val, QueryError> {
        let n = steps.len();
        match expr {
            Expr::NumberLiteral(l) => Ok(Val::Scalar(vec![l.val; n])),
            Expr::StringLiteral(s) => Ok(Val::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, steps),
            Expr::Unary(u) => match self.eval(&u.expr, steps)? {
                Val::Scalar(mut v) => {
                    v.iter_mut().for_each(|x| *x = -*x);
                    Ok(Val::Scalar(v))
                }
                Val::Vector(mut series) => {
                    for s in &mut series {
                        s.drop_name = true;
                        s.vals.iter_mut().flatten().for_each(|x| *x = -*x);
                        if let Some(h) = s.hists.as_mut() {
                            h.iter_mut().flatten().for_each(|h| h.mul(-1.0));
                        }
                    }
                    Ok(Val::Vector(series))
                }
                other => Err(QueryError::Execution(format!(
                    "unary expression only allowed on expressions of type scalar or vector, got: {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.vector_selector(vs, steps))),
            Expr::MatrixSelector(ms) => self.bare_range(expr, ms.range.as_millis() as i64, steps),
            Expr::Subquery(sq) => self.bare_range(expr, sq.range.as_millis() as i64, steps),
            Expr::Binary(b) => binary::eval_binary(self, b, steps),
            Expr::Aggregate(a) => aggregate::eval_aggregate(self, a, steps),
            Expr::Call(c) => functions::eval_call(self, c, steps),
            Expr::Extension(_) => Err(QueryError::Execution(
                "extension expressions are not supported".to_string(),
            )),
        }
    }

    fn fetched(&self, vs: &VectorSelector) -> &'a [SeriesSamples] {
        self.data
            .get(&selector_key(vs))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// An instant vector selector: at each step the latest sample (float
    /// or histogram) within the lookback delta, unless it is a staleness
    /// marker.
    pub fn vector_selector(&mut self, vs: &VectorSelector, steps: Steps) -> Vec<Series> {
        self.select_instant(vs, steps, false)
    }

    /// As [`Self::vector_selector`]; with `timestamps` each chosen sample
    /// becomes its timestamp in seconds (for `timestamp()`).
    pub fn select_instant(
        &mut self,
        vs: &VectorSelector,
        steps: Steps,
        timestamps: bool,
    ) -> Vec<Series> {
        let at = self.ctx.at_ms(&vs.at);
        let offset = offset_ms(&vs.offset);
        let lookback = self.ctx.lookback;
        let n = steps.len();
        let mut out = Vec::new();
        for s in self.fetched(vs) {
            let samples = &s.samples;
            let hists = &s.histograms;
            let mut vals = vec![None; n];
            let mut hvals: Option<Vec<Option<crate::model::histogram::FloatHistogram>>> =
                (!hists.is_empty() && !timestamps).then(|| vec![None; n]);
            let mut any = false;
            let (mut p, mut hp) = (0, 0);
            for (i, val) in vals.iter_mut().enumerate() {
                let r = self.ctx.ref_time(at, offset, steps.ts(i));
                if at.is_some() {
                    p = samples.partition_point(|x| x.t <= r);
                    hp = hists.partition_point(|x| x.t <= r);
                } else {
                    while p < samples.len() && samples[p].t <= r {
                        p += 1;
                    }
                    while hp < hists.len() && hists[hp].t <= r {
                        hp += 1;
                    }
                }
                let last_f = p.checked_sub(1).map(|k| &samples[k]);
                let last_h = hp.checked_sub(1).map(|k| &hists[k]);
                match (last_f, last_h) {
                    (Some(f), h) if h.is_none_or(|h| h.t < f.t) => {
                        if f.t <= r - lookback || is_stale_nan(f.v) {
                            continue;
                        }
                        *val = Some(if timestamps { f.t as f64 / 1000.0 } else { f.v });
                    }
                    (_, Some(h)) => {
                        if h.t <= r - lookback || h.h.is_stale_marker() {
                            continue;
                        }
                        match hvals.as_mut() {
                            Some(hv) => hv[i] = Some(h.h.clone()),
                            None => *val = Some(h.t as f64 / 1000.0),
                        }
                    }
                    _ => continue,
                }
                any = true;
            }
            if any {
                out.push(Series {
                    labels: s.labels.clone(),
                    drop_name: false,
                    vals,
                    hists: hvals,
                });
            }
        }
        out
    }

    /// A bare range selector or subquery, only valid at a single step.
    fn bare_range(&mut self, expr: &Expr, range: i64, steps: Steps) -> Result<Val, QueryError> {
        if steps.len() != 1 {
            return Err(QueryError::Parse(
                "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
                    .to_string(),
            ));
        }
        let input = self.range_input(expr, steps)?;
        let r = input.refs[0];
        let mut out = Vec::new();
        for s in input.series {
            let samples: Vec<Sample> = s
                .samples
                .iter()
                .filter(|p| p.t > r - range && p.t <= r)
                .copied()
                .collect();
            let histograms: Vec<HPoint> = s
                .histograms
                .iter()
                .filter(|p| p.t > r - range && p.t <= r)
                .cloned()
                .collect();
            if !samples.is_empty() || !histograms.is_empty() {
                out.push(SeriesSamples {
                    histograms,
                    labels: s.labels.into_owned(),
                    samples,
                });
            }
        }
        Ok(Val::Matrix(out))
    }

    /// Evaluates a matrix selector or subquery argument over `steps`.
    pub fn range_input(&mut self, expr: &Expr, steps: Steps) -> Result<RangeInput<'a>, QueryError> {
        match unwrap_parens(expr) {
            Expr::MatrixSelector(ms) => Ok(self.matrix_selector(ms, steps)),
            Expr::Subquery(sq) => self.subquery(sq, steps),
            other => Err(QueryError::Execution(format!(
                "expected a range vector argument, got {}",
                other.value_type()
            ))),
        }
    }

    fn refs(&self, at: Option<i64>, offset: i64, steps: Steps) -> Vec<i64> {
        (0..steps.len())
            .map(|i| self.ctx.ref_time(at, offset, steps.ts(i)))
            .collect()
    }

    fn matrix_selector(&mut self, ms: &MatrixSelector, steps: Steps) -> RangeInput<'a> {
        let at = self.ctx.at_ms(&ms.vs.at);
        let refs = self.refs(at, offset_ms(&ms.vs.offset), steps);
        let series = self
            .fetched(&ms.vs)
            .iter()
            .map(|s| {
                // Range selections never include staleness markers.
                let samples = if s.samples.iter().any(|p| is_stale_nan(p.v)) {
                    Cow::Owned(
                        s.samples
                            .iter()
                            .filter(|p| !is_stale_nan(p.v))
                            .copied()
                            .collect(),
                    )
                } else {
                    Cow::Borrowed(&s.samples[..])
                };
                let histograms = if s.histograms.iter().any(|p| p.h.is_stale_marker()) {
                    Cow::Owned(
                        s.histograms
                            .iter()
                            .filter(|p| !p.h.is_stale_marker())
                            .cloned()
                            .collect(),
                    )
                } else {
                    Cow::Borrowed(&s.histograms[..])
                };
                RangeSeries {
                    labels: Cow::Borrowed(&s.labels),
                    samples,
                    histograms,
                }
            })
            .collect();
        RangeInput {
            series,
            range: ms.range.as_millis() as i64,
            refs,
        }
    }

    fn subquery(&mut self, sq: &SubqueryExpr, steps: Steps) -> Result<RangeInput<'a>, QueryError> {
        let inner = self.ctx.subquery_steps(sq, steps);
        let at = self.ctx.at_ms(&sq.at);
        let refs = self.refs(at, offset_ms(&sq.offset), steps);
        let range = sq.range.as_millis() as i64;
        let series = match self.eval(&sq.expr, inner)? {
            Val::Vector(series) => series
                .into_iter()
                .map(|s| {
                    let labels = if s.drop_name {
                        s.labels.without_metadata()
                    } else {
                        s.labels
                    };
                    let samples: Vec<Sample> = s
                        .vals
                        .iter()
                        .enumerate()
                        .filter_map(|(i, v)| v.map(|v| Sample { t: inner.ts(i), v }))
                        .collect();
                    let histograms: Vec<HPoint> = s
                        .hists
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .filter_map(|(i, h)| h.map(|h| HPoint { t: inner.ts(i), h }))
                        .map(|mut p| {
                            // The steps pick samples apart, so a hint about
                            // the sample stored before no longer holds.
                            if p.h.counter_reset_hint != CounterResetHint::Gauge {
                                p.h.counter_reset_hint = CounterResetHint::Unknown;
                            }
                            p
                        })
                        .collect();
                    RangeSeries {
                        labels: Cow::Owned(labels),
                        samples: Cow::Owned(samples),
                        histograms: Cow::Owned(histograms),
                    }
                })
                .collect(),
            Val::Scalar(v) => vec![RangeSeries {
                labels: Cow::Owned(Labels::default()),
                samples: Cow::Owned(
                    v.iter()
                        .enumerate()
                        .map(|(i, &v)| Sample { t: inner.ts(i), v })
                        .collect(),
                ),
                histograms: Cow::Owned(Vec::new()),
            }],
            other => {
                return Err(QueryError::Execution(format!(
                    "subquery is only allowed on instant vector, got {} instead",
                    other.type_name()
                )));
            }
        };
        Ok(RangeInput {
            series,
            range,
            refs,
        })
    }

    /// Evaluates `expr` expecting an instant vector.
    pub fn eval_vector(&mut self, expr: &Expr, steps: Steps) -> Result<Vec<Series>, QueryError> {
        match self.eval(expr, steps)? {
            Val::Vector(v) => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `expr` expecting a scalar (one value per step).
    pub fn eval_scalar(&mut self, expr: &Expr, steps: Steps) -> Result<Vec<f64>, QueryError> {
        match self.eval(expr, steps)? {
            Val::Scalar(v) => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn eval_string(&mut self, expr: &Expr, steps: Steps) -> Result<String, QueryError> {
        match self.eval(expr, steps)? {
            Val::String(s) => Ok(s),
            other => Err(QueryError::Execution(format!(
                "expected string, got {}",
                other.type_name()
            ))),
        }
    }
}
