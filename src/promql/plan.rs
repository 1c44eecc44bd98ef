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
use crate::model::{METRIC_NAME, MatchOp, Matcher};

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
    walk(expr, steps, ctx, &mut out)?;
    Ok(out.into_values().collect())
}

fn walk(
    expr: &Expr,
    steps: Steps,
    ctx: &PlanContext,
    out: &mut HashMap<usize, Selection>,
) -> Result<(), QueryError> {
    if steps.len() == 0 {
        return Ok(());
    }
    match expr {
        Expr::VectorSelector(vs) => add(vs, ctx.lookback, steps, ctx, out)?,
        Expr::MatrixSelector(ms) => add(&ms.vs, ms.range.as_millis() as i64, steps, ctx, out)?,
        Expr::Subquery(sq) => walk(&sq.expr, ctx.subquery_steps(sq, steps), ctx, out)?,
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, steps, ctx, out)?;
            }
            walk(&a.expr, steps, ctx, out)?;
        }
        Expr::Unary(u) => walk(&u.expr, steps, ctx, out)?,
        Expr::Binary(b) => {
            walk(&b.lhs, steps, ctx, out)?;
            walk(&b.rhs, steps, ctx, out)?;
        }
        Expr::Paren(p) => walk(&p.expr, steps, ctx, out)?,
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, steps, ctx, out)?;
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
            }
        }
        all.retain(|s| !s.samples.is_empty() || !s.histograms.is_empty());
        Ok::<_, QueryError>((sel.key, all))
    });
    Ok(try_join_all(futures).await?.into_iter().collect())
}
