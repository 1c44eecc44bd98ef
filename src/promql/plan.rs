//! Planning: walk the expression to find every selector and the time range
//! its evaluation reads (offset, `@`, ranges, subqueries and the lookback
//! delta taken into account), then fetch them all before evaluating.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::try_join_all;
use promql_parser::label::MatchOp as ParserMatchOp;
use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};

use super::engine::QueryError;
use super::value::Steps;
use super::{Queryable, SeriesSamples};
use crate::model::histogram::CounterResetHint;
use crate::model::{HPoint, METRIC_NAME, MatchOp, Matcher};

/// Query-wide values every evaluation step needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlanContext {
    pub query_start: i64,
    pub query_end: i64,
    /// The range query's step; 0 for an instant query.
    pub query_step: i64,
    pub lookback: i64,
    pub default_subquery_step: i64,
}

/// One selector to fetch: the OR of matcher sets over `[mint, maxt]`.
pub(crate) struct Selection {
    pub key: usize,
    pub matcher_sets: Vec<Vec<Matcher>>,
    pub mint: i64,
    pub maxt: i64,
    /// Read for histogram statistics only (see [`StatsUse`]).
    pub stats_only: bool,
}

/// Whether a selector is read for histogram statistics only (Prometheus
/// `detectHistogramStatsDecoding`): below `histogram_count`,
/// `histogram_sum`, `histogram_avg`, `timestamp`, `start_timestamp` or
/// `absent`, and below nothing that needs the buckets (a subquery,
/// `histogram_quantile(s)`, `histogram_fraction`, `histogram_stddev`,
/// `histogram_stdvar`, `changes`, `count_values`, the trim operators,
/// `==`, `!=`). Prometheus reads such a selector through its
/// `HistogramStatsIterator`, which detects counter resets itself and so
/// sets the counter reset hints that chunks leave unknown; the hints then
/// show in aggregations' annotations.
#[derive(Clone, Copy, PartialEq)]
enum StatsUse {
    No,
    Yes,
    Never,
}

impl StatsUse {
    fn below(self, e: &Expr) -> StatsUse {
        use promql_parser::parser::token::{
            T_COUNT_VALUES, T_EQLC, T_NEQ, T_TRIM_LOWER, T_TRIM_UPPER,
        };
        let needs_buckets = match e {
            Expr::Subquery(_) => true,
            Expr::Call(c) => matches!(
                c.func.name,
                "histogram_quantile"
                    | "histogram_quantiles"
                    | "histogram_fraction"
                    | "histogram_stddev"
                    | "histogram_stdvar"
                    | "changes"
            ),
            Expr::Aggregate(a) => a.op.id() == T_COUNT_VALUES,
            Expr::Binary(b) => {
                matches!(b.op.id(), T_TRIM_UPPER | T_TRIM_LOWER | T_EQLC | T_NEQ)
            }
            _ => false,
        };
        let stats_only = matches!(
            e,
            Expr::Call(c) if matches!(
                c.func.name,
                "histogram_count"
                    | "histogram_sum"
                    | "histogram_avg"
                    | "timestamp"
                    | "start_timestamp"
                    | "absent"
            )
        );
        match self {
            StatsUse::Never => StatsUse::Never,
            _ if needs_buckets => StatsUse::Never,
            StatsUse::No if stats_only => StatsUse::Yes,
            other => other,
        }
    }
}

/// Fetched series per selector, keyed by [`selector_key`].
pub(crate) type Fetched = HashMap<usize, Vec<SeriesSamples>>;

/// A selector's identity for the duration of one query: its address in the
/// parsed expression, which outlives planning and evaluation.
pub(crate) fn selector_key(vs: &VectorSelector) -> usize {
    vs as *const VectorSelector as usize
}

pub(crate) fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

pub(crate) fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

impl PlanContext {
    pub fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        at.as_ref().map(|at| match at {
            AtModifier::Start => self.query_start,
            AtModifier::End => self.query_end,
            AtModifier::At(t) => system_time_ms(*t),
        })
    }

    /// The time a selector with `at` and `offset` reads at evaluation time `ts`.
    pub fn ref_time(&self, at: Option<i64>, offset: i64, ts: i64) -> i64 {
        at.unwrap_or(ts) - offset
    }

    /// The first and last reference times over `steps`.
    pub fn ref_bounds(&self, at: Option<i64>, offset: i64, steps: Steps) -> (i64, i64) {
        let last = steps.ts(steps.len().saturating_sub(1));
        (
            self.ref_time(at, offset, steps.start),
            self.ref_time(at, offset, last),
        )
    }

    /// The inner evaluation steps of a subquery evaluated over `steps`:
    /// aligned to multiples of its step from the epoch, the first one after
    /// `first reference time - range` (Prometheus's subquery evaluation).
    pub fn subquery_steps(&self, sq: &SubqueryExpr, steps: Steps) -> Steps {
        let at = self.at_ms(&sq.at);
        let offset = offset_ms(&sq.offset);
        let (lo, hi) = self.ref_bounds(at, offset, steps);
        let step = sq
            .step
            .map(|d| d.as_millis() as i64)
            .filter(|&s| s > 0)
            .unwrap_or(self.default_subquery_step);
        let range = sq.range.as_millis() as i64;
        let from = lo - range;
        let mut start = step * (from / step);
        if start <= from {
            start += step;
        }
        Steps {
            start,
            end: hi,
            step,
        }
    }
}

/// Every selector of `expr` evaluated over `steps` with the range it reads.
pub(crate) fn plan(
    expr: &Expr,
    steps: Steps,
    ctx: &PlanContext,
) -> Result<Vec<Selection>, QueryError> {
    let mut out: HashMap<usize, Selection> = HashMap::new();
    walk(expr, steps, ctx, StatsUse::No, &mut out)?;
    Ok(out.into_values().collect())
}

fn walk(
    expr: &Expr,
    steps: Steps,
    ctx: &PlanContext,
    stats: StatsUse,
    out: &mut HashMap<usize, Selection>,
) -> Result<(), QueryError> {
    if steps.len() == 0 {
        return Ok(());
    }
    let stats_only = stats == StatsUse::Yes;
    let stats = stats.below(expr);
    match expr {
        Expr::VectorSelector(vs) => add(vs, ctx.lookback, steps, ctx, stats_only, out)?,
        Expr::MatrixSelector(ms) => add(
            &ms.vs,
            ms.range.as_millis() as i64,
            steps,
            ctx,
            stats_only,
            out,
        )?,
        Expr::Subquery(sq) => walk(&sq.expr, ctx.subquery_steps(sq, steps), ctx, stats, out)?,
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, steps, ctx, stats, out)?;
            }
            walk(&a.expr, steps, ctx, stats, out)?;
        }
        Expr::Unary(u) => walk(&u.expr, steps, ctx, stats, out)?,
        Expr::Binary(b) => {
            walk(&b.lhs, steps, ctx, stats, out)?;
            walk(&b.rhs, steps, ctx, stats, out)?;
        }
        Expr::Paren(p) => walk(&p.expr, steps, ctx, stats, out)?,
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, steps, ctx, stats, out)?;
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
        Expr::Extension(_) => {
            return Err(QueryError::Execution(
                "extension expressions are not supported".to_string(),
            ));
        }
    }
    Ok(())
}

fn add(
    vs: &VectorSelector,
    window: i64,
    steps: Steps,
    ctx: &PlanContext,
    stats_only: bool,
    out: &mut HashMap<usize, Selection>,
) -> Result<(), QueryError> {
    let at = ctx.at_ms(&vs.at);
    let (lo, hi) = ctx.ref_bounds(at, offset_ms(&vs.offset), steps);
    // Windows are left-open: (ref - window, ref].
    let mint = lo - window + 1;
    let maxt = hi;
    let key = selector_key(vs);
    if let Some(sel) = out.get_mut(&key) {
        sel.mint = sel.mint.min(mint);
        sel.maxt = sel.maxt.max(maxt);
        return Ok(());
    }
    out.insert(
        key,
        Selection {
            key,
            matcher_sets: matcher_sets(vs)?,
            mint,
            maxt,
            stats_only,
        },
    );
    Ok(())
}

fn convert(m: &promql_parser::label::Matcher) -> Result<Matcher, QueryError> {
    let op = match m.op {
        ParserMatchOp::Equal => MatchOp::Equal,
        ParserMatchOp::NotEqual => MatchOp::NotEqual,
        ParserMatchOp::Re(_) => MatchOp::RegexMatch,
        ParserMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
    };
    Matcher::new(op, &m.name, &m.value).map_err(|e| QueryError::Parse(e.to_string()))
}

/// The selector's matchers; more than one set for `{a="1" or b="2"}`.
pub(crate) fn matcher_sets(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let mut base = Vec::new();
    if let Some(name) = &vs.name {
        base.push(Matcher::equal(METRIC_NAME, name));
    }
    for m in &vs.matchers.matchers {
        base.push(convert(m)?);
    }
    if vs.matchers.or_matchers.is_empty() {
        return Ok(vec![base]);
    }
    let mut sets = Vec::new();
    for group in &vs.matchers.or_matchers {
        let mut set = base.clone();
        for m in group {
            set.push(convert(m)?);
        }
        sets.push(set);
    }
    Ok(sets)
}

/// Fetches every selection concurrently.
/// Unknown counter reset hints after a series' first histogram become what
/// comparing with the histogram before says (Prometheus
/// `HistogramStatsIterator.getResetHint`).
fn detect_reset_hints(hs: &mut [HPoint]) {
    for i in 1..hs.len() {
        let (before, after) = hs.split_at_mut(i);
        let (prev, cur) = (&before[i - 1].h, &mut after[0].h);
        if cur.counter_reset_hint == CounterResetHint::Unknown {
            cur.counter_reset_hint = if cur.detect_reset(prev) {
                CounterResetHint::CounterReset
            } else {
                CounterResetHint::NotCounterReset
            };
        }
    }
}

pub(crate) async fn fetch(
    q: &dyn Queryable,
    selections: Vec<Selection>,
) -> Result<Fetched, QueryError> {
    let futures = selections.into_iter().map(|sel| async move {
        let mut all: Vec<SeriesSamples> = Vec::new();
        for set in &sel.matcher_sets {
            let got = q
                .select(set, sel.mint, sel.maxt)
                .await
                .map_err(QueryError::Storage)?;
            all.extend(got);
        }
        if sel.matcher_sets.len() > 1 {
            all.sort_by(|a, b| a.labels.cmp(&b.labels));
            all.dedup_by(|a, b| a.labels == b.labels);
        }
        for s in &mut all {
            s.samples.retain(|p| p.t >= sel.mint && p.t <= sel.maxt);
            if !s.samples.is_sorted_by_key(|p| p.t) {
                s.samples.sort_by_key(|p| p.t);
            }
            if !s.histograms.is_empty() {
                s.histograms.retain(|p| p.t >= sel.mint && p.t <= sel.maxt);
                if !s.histograms.is_sorted_by_key(|p| p.t) {
                    s.histograms.sort_by_key(|p| p.t);
                }
                if sel.stats_only {
                    detect_reset_hints(&mut s.histograms);
                }
            }
        }
        all.retain(|s| !s.samples.is_empty() || !s.histograms.is_empty());
        Ok::<_, QueryError>((sel.key, all))
    });
    Ok(try_join_all(futures).await?.into_iter().collect())
}
