//! Binary operators (Prometheus `VectorBinop`, `VectorscalarBinop`,
//! `VectorAnd/Or/Unless`): arithmetic, comparisons (filtering or `bool`),
//! set operators, and vector matching with `on`/`ignoring` and
//! `group_left`/`group_right`. Signatures are hashed once per series; the
//! matching itself runs per step over indexes.

use std::collections::{HashMap, HashSet};

use promql_parser::label::Labels as ParserLabels;
use promql_parser::parser::token::*;
use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::engine::QueryError;
use super::eval::Evaluator;
use super::value::{
    OutBuilder, Series, Steps, Val, labels_string, match_labels, merge_same_labels, signature,
};
use crate::model::histogram::{CounterResetHint, FloatHistogram};
use crate::model::{Label, Labels};

/// `lhs op rhs` for arithmetic operators.
pub(crate) fn arith(op: TokenId, l: f64, r: f64) -> f64 {
    match op {
        T_ADD => l + r,
        T_SUB => l - r,
        T_MUL => l * r,
        T_DIV => l / r,
        T_MOD => l % r,
        T_POW => l.powf(r),
        T_ATAN2 => l.atan2(r),
        _ => f64::NAN,
    }
}

/// An operator as PromQL writes it.
fn token_display(op: TokenId) -> &'static str {
    match op {
        T_ADD => "+",
        T_SUB => "-",
        T_MUL => "*",
        T_DIV => "/",
        T_MOD => "%",
        T_POW => "^",
        T_ATAN2 => "atan2",
        T_EQLC => "==",
        T_NEQ => "!=",
        T_GTR => ">",
        T_LSS => "<",
        T_GTE => ">=",
        T_LTE => "<=",
        T_TRIM_UPPER => "</",
        T_TRIM_LOWER => ">/",
        _ => "?",
    }
}

/// `lhs op rhs` for comparison operators.
pub(crate) fn compare(op: TokenId, l: f64, r: f64) -> bool {
    match op {
        T_EQLC => l == r,
        T_NEQ => l != r,
        T_GTR => l > r,
        T_LSS => l < r,
        T_GTE => l >= r,
        T_LTE => l <= r,
        _ => false,
    }
}

fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// The histogram trim operators `</` and `>/`: defined for a histogram on
/// the left and a float on the right only, and keeping the metric name.
fn is_trim(op: TokenId) -> bool {
    matches!(op, T_TRIM_UPPER | T_TRIM_LOWER)
}

pub(crate) fn eval_binary(
    ev: &mut Evaluator<'_>,
    b: &BinaryExpr,
    steps: Steps,
) -> Result<Val, QueryError> {
    let op = b.op.id();
    // A binary expression starts where its left operand does.
    let pos = ev.positions.of(&b.lhs);
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs, steps)?;
    let rhs = ev.eval(&b.rhs, steps)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(
            l.iter()
                .zip(&r)
                .map(|(&l, &r)| {
                    if is_comparison(op) {
                        if compare(op, l, r) { 1.0 } else { 0.0 }
                    } else {
                        arith(op, l, r)
                    }
                })
                .collect(),
        )),
        (Val::Vector(v), Val::Scalar(s)) => {
            let mut notes = Vec::new();
            let out = vector_scalar(op, v, &s, false, return_bool, &mut notes);
            ev.infos.extend(notes.into_iter().map(|n| n + &pos));
            Ok(Val::Vector(out))
        }
        (Val::Scalar(s), Val::Vector(v)) => {
            let mut notes = Vec::new();
            let out = vector_scalar(op, v, &s, true, return_bool, &mut notes);
            ev.infos.extend(notes.into_iter().map(|n| n + &pos));
            Ok(Val::Vector(out))
        }
        (Val::Vector(l), Val::Vector(r)) => {
            let modifier = b.modifier.as_ref();
            let out = match op {
                T_LAND => set_op(SetOp::And, l, r, modifier),
                T_LOR => merge_same_labels(set_op(SetOp::Or, l, r, modifier), steps.len())?,
                T_LUNLESS => set_op(SetOp::Unless, l, r, modifier),
                _ => {
                    let mut notes = Vec::new();
                    let out =
                        vector_vector(op, l, r, modifier, return_bool, steps.len(), &mut notes)?;
                    ev.infos.extend(notes.into_iter().map(|n| n + &pos));
                    out
                }
            };
            Ok(Val::Vector(out))
        }
        (l, r) => Err(QueryError::Execution(format!(
            "binary expression must contain only scalar and instant vector types, got {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    op: TokenId,
    mut v: Vec<Series>,
    s: &[f64],
    swap: bool,
    return_bool: bool,
    notes: &mut Vec<String>,
) -> Vec<Series> {
    let cmp = is_comparison(op);
    let trim = is_trim(op);
    for series in &mut v {
        for (val, &sv) in series.vals.iter_mut().zip(s) {
            let Some(x) = *val else { continue };
            let (l, r) = if swap { (sv, x) } else { (x, sv) };
            *val = if trim {
                notes.push(incompatible(op, "float", "float"));
                None
            } else if cmp {
                let keep = compare(op, l, r);
                if return_bool {
                    Some(if keep { 1.0 } else { 0.0 })
                } else if keep {
                    Some(x)
                } else {
                    None
                }
            } else {
                Some(arith(op, l, r))
            };
        }
        if let Some(hists) = series.hists.as_mut() {
            for (h, &sv) in hists.iter_mut().zip(s) {
                let Some(x) = h.as_mut() else { continue };
                match (op, swap) {
                    (T_MUL, _) => x.mul(sv),
                    (T_DIV, false) => x.div(sv),
                    (T_TRIM_UPPER | T_TRIM_LOWER, false) => x.trim(sv, op == T_TRIM_UPPER),
                    _ => {
                        *h = None;
                        let (l, r) = if swap {
                            ("float", "histogram")
                        } else {
                            ("histogram", "float")
                        };
                        notes.push(incompatible(op, l, r));
                    }
                }
            }
        }
        if !(cmp || trim) || return_bool {
            series.drop_name = true;
        }
    }
    v.retain(|s| !s.is_empty());
    v
}

/// An operand of either kind.
#[derive(Clone, Copy)]
enum Operand<'a> {
    F(f64),
    H(&'a FloatHistogram),
}

/// A result of either kind.
enum Res {
    F(f64),
    H(FloatHistogram),
}

fn operand(s: &Series, step: usize) -> Option<Operand<'_>> {
    match (s.vals[step], s.h(step)) {
        (Some(v), _) => Some(Operand::F(v)),
        (None, Some(h)) => Some(Operand::H(h)),
        _ => None,
    }
}

/// `l op r` where at least one side is a histogram: `+`/`-` of two
/// histograms, `*` by a float either side, `/` by a float on the right,
/// `==`/`!=` of two histograms (filtering keeps `l`); anything else has no
/// result. Also returns an info annotation to add.
fn histogram_op(
    op: TokenId,
    l: Operand<'_>,
    r: Operand<'_>,
    return_bool: bool,
) -> (Option<Res>, Option<String>) {
    use Operand::{F, H};
    match (l, r) {
        (H(a), H(b)) => {
            match op {
                T_ADD | T_SUB => {
                    let mut x = a.clone();
                    let res = if op == T_ADD { x.add(b) } else { x.sub(b) };
                    match res {
                        Ok(rec) => {
                            let note = rec.0.then(|| {
                            format!(
                                "PromQL info: mismatched custom buckets were reconciled during {}",
                                if op == T_ADD { "addition" } else { "subtraction" }
                            )
                        });
                            if op == T_SUB {
                                x.counter_reset_hint = CounterResetHint::Gauge;
                            }
                            (Some(Res::H(x.compact(0))), note)
                        }
                        Err(_) => (None, None),
                    }
                }
                T_EQLC | T_NEQ => {
                    let eq = a.clone().compact(0).equals(&b.clone().compact(0));
                    let keep = eq == (op == T_EQLC);
                    if return_bool {
                        (Some(Res::F(if keep { 1.0 } else { 0.0 })), None)
                    } else if keep {
                        (Some(Res::H(a.clone())), None)
                    } else {
                        (None, None)
                    }
                }
                _ => (None, Some(incompatible(op, "histogram", "histogram"))),
            }
        }
        (H(a), F(f)) | (F(f), H(a)) if op == T_MUL => {
            let mut x = a.clone();
            x.mul(f);
            (Some(Res::H(x)), None)
        }
        (H(a), F(f)) if op == T_DIV => {
            let mut x = a.clone();
            x.div(f);
            (Some(Res::H(x)), None)
        }
        (H(a), F(f)) if is_trim(op) => {
            let mut x = a.clone();
            x.trim(f, op == T_TRIM_UPPER);
            (Some(Res::H(x)), None)
        }
        (H(_), F(_)) => (None, Some(incompatible(op, "histogram", "float"))),
        (F(_), H(_)) => (None, Some(incompatible(op, "float", "histogram"))),
        (F(_), F(_)) if is_trim(op) => (None, Some(incompatible(op, "float", "float"))),
        (F(_), F(_)) => (None, None),
    }
}

/// Prometheus's info for an operator the operand types do not support.
fn incompatible(op: TokenId, l: &str, r: &str) -> String {
    let op = token_display(op);
    format!(
        "PromQL info: incompatible sample types encountered for binary operator \"{op}\": {l} {op} {r}"
    )
}

/// `on` (true) or `ignoring` and the listed labels.
fn matching(modifier: Option<&BinModifier>) -> (bool, Vec<String>) {
    match modifier.and_then(|m| m.matching.as_ref()) {
        Some(LabelModifier::Include(ls)) => (true, ls.labels.clone()),
        Some(LabelModifier::Exclude(ls)) => (false, ls.labels.clone()),
        None => (false, Vec::new()),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum SetOp {
    And,
    Or,
    Unless,
}

fn set_op(
    op: SetOp,
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    modifier: Option<&BinModifier>,
) -> Vec<Series> {
    let (on, names) = matching(modifier);
    let lsig: Vec<u64> = lhs
        .iter()
        .map(|s| signature(&s.labels, on, &names))
        .collect();
    let rsig: Vec<u64> = rhs
        .iter()
        .map(|s| signature(&s.labels, on, &names))
        .collect();
    let n = lhs.first().or(rhs.first()).map_or(0, |s| s.vals.len());
    let mut out = Vec::with_capacity(lhs.len() + rhs.len());
    // Per step, the signatures present on the other side.
    let mut present: Vec<HashSet<u64>> = vec![HashSet::new(); n];
    let (other_sig, other) = match op {
        SetOp::Or => (&lsig, &lhs),
        _ => (&rsig, &rhs),
    };
    for (s, sig) in other.iter().zip(other_sig.iter()) {
        for (i, p) in present.iter_mut().enumerate() {
            if s.has(i) {
                p.insert(*sig);
            }
        }
    }
    match op {
        SetOp::And | SetOp::Unless => {
            for (mut s, sig) in lhs.into_iter().zip(lsig) {
                for (i, p) in present.iter().enumerate() {
                    if s.has(i) && p.contains(&sig) != (op == SetOp::And) {
                        s.vals[i] = None;
                        clear_h(&mut s, i);
                    }
                }
                if !s.is_empty() {
                    out.push(s);
                }
            }
        }
        SetOp::Or => {
            out.extend(lhs);
            for (mut s, sig) in rhs.into_iter().zip(rsig) {
                for (i, p) in present.iter().enumerate() {
                    if s.has(i) && p.contains(&sig) {
                        s.vals[i] = None;
                        clear_h(&mut s, i);
                    }
                }
                if !s.is_empty() {
                    out.push(s);
                }
            }
        }
    }
    out
}

fn clear_h(s: &mut Series, step: usize) {
    if let Some(h) = s.hists.as_mut() {
        h[step] = None;
    }
}

/// The result labels of matching `many` with `one` (Prometheus `resultMetric`).
fn result_labels(
    many: &Labels,
    one: &Labels,
    on: bool,
    names: &[String],
    card: &VectorMatchCardinality,
) -> Labels {
    let mut labels: Vec<Label> = many
        .as_slice()
        .iter()
        .filter(|l| {
            if matches!(card, VectorMatchCardinality::OneToOne) {
                let listed = names.contains(&l.name);
                if on { listed } else { !listed }
            } else {
                true
            }
        })
        .cloned()
        .collect();
    let include: &[String] = match card {
        VectorMatchCardinality::ManyToOne(ParserLabels { labels: ls })
        | VectorMatchCardinality::OneToMany(ParserLabels { labels: ls }) => ls,
        _ => &[],
    };
    for name in include {
        labels.retain(|l| l.name != *name);
        if let Some(v) = one.get(name)
            && !v.is_empty()
        {
            labels.push(Label::new(name.clone(), v));
        }
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    Labels::from_sorted(labels)
}

/// Records that `slot` got a result for match group `sig`; a second result
/// for one group is an error (Prometheus's "multiple matches").
fn check_match(
    card: &VectorMatchCardinality,
    matched: &mut HashMap<u64, HashSet<usize>>,
    sig: u64,
    slot: usize,
) -> Result<(), QueryError> {
    let seen = matched.entry(sig).or_default();
    if matches!(card, VectorMatchCardinality::OneToOne) {
        if !seen.is_empty() {
            return Err(QueryError::Execution(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                    .to_string(),
            ));
        }
    } else if seen.contains(&slot) {
        return Err(QueryError::Execution(
            "multiple matches for labels: grouping labels must ensure unique matches".to_string(),
        ));
    }
    seen.insert(slot);
    Ok(())
}

/// `l op r` for one matched pair, its result (if any) set at `slot`.
#[allow(clippy::too_many_arguments)] // the pair, where it goes, and its notes
fn apply(
    op: TokenId,
    l: Operand<'_>,
    r: Operand<'_>,
    return_bool: bool,
    out: &mut OutBuilder,
    slot: usize,
    step: usize,
    notes: &mut Vec<String>,
) -> Result<(), QueryError> {
    let (l, r) = match (l, r) {
        (Operand::F(l), Operand::F(r)) if !is_trim(op) => (l, r),
        (l, r) => {
            let (res, note) = histogram_op(op, l, r, return_bool);
            if let Some(note) = note {
                notes.push(note);
            }
            return match res {
                Some(Res::F(v)) => out.set(slot, step, v),
                Some(Res::H(h)) => out.set_h(slot, step, h),
                None => Ok(()),
            };
        }
    };
    let value = if is_comparison(op) {
        let keep = compare(op, l, r);
        if return_bool {
            if keep { 1.0 } else { 0.0 }
        } else if keep {
            l
        } else {
            return Ok(());
        }
    } else {
        arith(op, l, r)
    };
    out.set(slot, step, value)
}

fn vector_vector(
    op: TokenId,
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    modifier: Option<&BinModifier>,
    return_bool: bool,
    n: usize,
    notes: &mut Vec<String>,
) -> Result<Vec<Series>, QueryError> {
    let (on, names) = matching(modifier);
    let card = modifier
        .map(|m| m.card.clone())
        .unwrap_or(VectorMatchCardinality::OneToOne);
    let swapped = matches!(card, VectorMatchCardinality::OneToMany(_));
    // fill(v), fill_left(v), fill_right(v): the value of a missing left or
    // right operand; `fill_one` stands in on the "one" side, `fill_many` on
    // the "many" side.
    let fill = modifier.map(|m| m.fill_values.clone()).unwrap_or_default();
    let (fill_many, fill_one) = if swapped {
        (fill.rhs, fill.lhs)
    } else {
        (fill.lhs, fill.rhs)
    };
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let msig: Vec<u64> = many
        .iter()
        .map(|s| signature(&s.labels, on, &names))
        .collect();
    let osig: Vec<u64> = one
        .iter()
        .map(|s| signature(&s.labels, on, &names))
        .collect();
    let cmp = is_comparison(op);
    let drop_name = !(cmp || is_trim(op)) || return_bool;
    let mut out = OutBuilder::new(n);
    let mut pair_slot: HashMap<(u32, u32), usize> = HashMap::new();
    let mut one_by_sig: HashMap<u64, usize> = HashMap::new();
    let mut matched: HashMap<u64, HashSet<usize>> = HashMap::new();
    for step in 0..n {
        one_by_sig.clear();
        for (j, s) in one.iter().enumerate() {
            if !s.has(step) {
                continue;
            }
            if let Some(&prev) = one_by_sig.get(&osig[j]) {
                let side = if swapped { "left" } else { "right" };
                return Err(QueryError::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    labels_string(&match_labels(&s.labels, on, &names)),
                    labels_string(&one[prev].labels),
                    labels_string(&s.labels),
                )));
            }
            one_by_sig.insert(osig[j], j);
        }
        matched.clear();
        for (i, s) in many.iter().enumerate() {
            let Some(mv) = operand(s, step) else { continue };
            let (ov, slot) = match one_by_sig.get(&msig[i]) {
                Some(&j) => {
                    let Some(ov) = operand(&one[j], step) else {
                        continue;
                    };
                    let slot = match pair_slot.get(&(i as u32, j as u32)) {
                        Some(&slot) => slot,
                        None => {
                            let labels =
                                result_labels(&s.labels, &one[j].labels, on, &names, &card);
                            let slot = out.slot(labels, drop_name || s.drop_name);
                            pair_slot.insert((i as u32, j as u32), slot);
                            slot
                        }
                    };
                    (ov, slot)
                }
                // No match: a fill value stands in for the other side.
                None => {
                    let Some(f) = fill_one else { continue };
                    let stand_in = match_labels(&s.labels, on, &names);
                    let labels = result_labels(&s.labels, &stand_in, on, &names, &card);
                    (Operand::F(f), out.slot(labels, drop_name || s.drop_name))
                }
            };
            // Matching errors count even for samples a comparison filters out.
            check_match(&card, &mut matched, msig[i], slot)?;
            let (l, r) = if swapped { (ov, mv) } else { (mv, ov) };
            apply(op, l, r, return_bool, &mut out, slot, step, notes)?;
        }
        // The other side's series nothing matched, against a fill value.
        if let Some(f) = fill_many {
            for (j, s) in one.iter().enumerate() {
                if matched.get(&osig[j]).is_some_and(|m| !m.is_empty()) {
                    continue;
                }
                let Some(ov) = operand(s, step) else { continue };
                let stand_in = match_labels(&s.labels, on, &names);
                let labels = result_labels(&stand_in, &s.labels, on, &names, &card);
                let slot = out.slot(labels, drop_name);
                check_match(&card, &mut matched, osig[j], slot)?;
                let (l, r) = if swapped {
                    (ov, Operand::F(f))
                } else {
                    (Operand::F(f), ov)
                };
                apply(op, l, r, return_bool, &mut out, slot, step, notes)?;
            }
        }
    }
    let mut series = out.finish();
    if drop_name {
        for s in &mut series {
            s.drop_name = true;
        }
    }
    Ok(series)
}
