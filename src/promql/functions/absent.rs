//! `absent` and `absent_over_time`, following Prometheus
//! `promql/functions.go` `funcAbsent`, `funcAbsentOverTime` and
//! `createLabelsForAbsentFunction`.

use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, VectorSelector};

use crate::model::{Labels, METRIC_NAME};
use crate::promql::engine::QueryError;
use crate::promql::eval::{Evaluator, unwrap_parens};
use crate::promql::value::{Series, Steps, Val};

/// Labels of the absent series: the selector's equality matchers, except
/// the name and labels matched more than once.
fn absent_labels(expr: &Expr) -> Labels {
    let vs: &VectorSelector = match unwrap_parens(expr) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let mut pairs: Vec<(String, Option<String>)> = Vec::new();
    for m in vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten())
    {
        if m.name == METRIC_NAME {
            continue;
        }
        let existing = pairs.iter_mut().find(|(n, _)| *n == m.name);
        match (existing, &m.op) {
            (None, MatchOp::Equal) => pairs.push((m.name.clone(), Some(m.value.clone()))),
            (None, _) => pairs.push((m.name.clone(), None)),
            (Some(e), _) => e.1 = None,
        }
    }
    Labels::from_pairs(pairs.into_iter().filter_map(|(n, v)| v.map(|v| (n, v))))
}

fn absent_series(labels: Labels, vals: Vec<Option<f64>>) -> Val {
    if vals.iter().all(Option::is_none) {
        return Val::Vector(Vec::new());
    }
    Val::Vector(vec![Series::floats(labels, false, vals)])
}

pub(crate) fn absent(ev: &mut Evaluator<'_>, arg: &Expr, steps: Steps) -> Result<Val, QueryError> {
    let v = ev.eval_vector(arg, steps)?;
    let vals = (0..steps.len())
        .map(|i| {
            if v.iter().any(|s| s.has(i)) {
                None
            } else {
                Some(1.0)
            }
        })
        .collect();
    Ok(absent_series(absent_labels(arg), vals))
}

pub(crate) fn absent_over_time(
    ev: &mut Evaluator<'_>,
    arg: &Expr,
    steps: Steps,
) -> Result<Val, QueryError> {
    let input = ev.range_input(arg, steps)?;
    let mut present = vec![false; steps.len()];
    input.for_each_window(|_, i, _, _| present[i] = true);
    let vals = present
        .iter()
        .map(|&p| if p { None } else { Some(1.0) })
        .collect();
    Ok(absent_series(absent_labels(arg), vals))
}
