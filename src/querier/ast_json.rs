//! `/api/v1/parse_query`'s answer: a parsed expression as the JSON tree
//! Prometheus's UI draws (`web/api/v1/translate_ast.go` in Prometheus 3.x):
//! one object per node, its `type` and the node's fields, durations in
//! milliseconds, `null` where Prometheus has no value (no parameter, no
//! vector matching between a scalar and a vector, no `@`).

use std::time::{Duration, UNIX_EPOCH};

use promql_parser::label::{Labels, Matchers};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{
    AtModifier, BinaryExpr, Expr, LabelModifier, Offset, VectorMatchCardinality, VectorSelector,
};
use serde_json::{Value as Json, json};

/// The tree of `expr`.
pub fn translate(expr: &Expr) -> Json {
    match expr {
        Expr::Aggregate(a) => {
            let (without, grouping) = match &a.modifier {
                Some(LabelModifier::Include(ls)) => (false, names(ls)),
                Some(LabelModifier::Exclude(ls)) => (true, names(ls)),
                None => (false, Vec::new()),
            };
            json!({
                "type": "aggregation",
                "op": a.op.to_string(),
                "expr": translate(&a.expr),
                "param": a.param.as_deref().map_or(Json::Null, translate),
                "grouping": grouping,
                "without": without,
            })
        }
        Expr::Binary(b) => json!({
            "type": "binaryExpr",
            "op": b.op.to_string(),
            "lhs": translate(&b.lhs),
            "rhs": translate(&b.rhs),
            "matching": matching(b),
            "bool": b.modifier.as_ref().is_some_and(|m| m.return_bool),
        }),
        Expr::Call(c) => json!({
            "type": "call",
            "func": {
                "name": c.func.name,
                "argTypes": c.func.arg_types.iter().map(value_type).collect::<Vec<_>>(),
                "variadic": c.func.variadic,
                "returnType": value_type(&c.func.return_type),
            },
            "args": c.args.args.iter().map(|a| translate(a)).collect::<Vec<_>>(),
        }),
        Expr::MatrixSelector(m) => {
            let mut node = selector(&m.vs, "matrixSelector");
            node["range"] = json!(millis(m.range));
            node["rangeExpr"] = Json::Null;
            node
        }
        Expr::VectorSelector(v) => selector(v, "vectorSelector"),
        Expr::Subquery(s) => {
            let (timestamp, start_or_end) = at(s.at.as_ref());
            json!({
                "type": "subquery",
                "expr": translate(&s.expr),
                "range": millis(s.range),
                "rangeExpr": Json::Null,
                "offset": offset(s.offset.as_ref()),
                "offsetExpr": Json::Null,
                "step": s.step.map_or(0, millis),
                "stepExpr": Json::Null,
                "timestamp": timestamp,
                "startOrEnd": start_or_end,
            })
        }
        Expr::NumberLiteral(n) => json!({"type": "numberLiteral", "val": go_float(n.val)}),
        Expr::Paren(p) => json!({"type": "parenExpr", "expr": translate(&p.expr)}),
        Expr::StringLiteral(s) => json!({"type": "stringLiteral", "val": s.val}),
        Expr::Unary(u) => json!({"type": "unaryExpr", "op": "-", "expr": translate(&u.expr)}),
        // Not produced by the parser for PromQL text.
        Expr::Extension(e) => json!({"type": e.expr.name()}),
    }
}

/// Prometheus's `VectorMatching`: present when both sides are instant
/// vectors, with or without a modifier; set operators match many-to-many.
fn matching(b: &BinaryExpr) -> Json {
    if b.lhs.value_type() != ValueType::Vector || b.rhs.value_type() != ValueType::Vector {
        return Json::Null;
    }
    let set_operator = matches!(b.op.to_string().as_str(), "and" | "or" | "unless");
    let modifier = b.modifier.as_ref();
    let (card, include) = match modifier.map(|m| &m.card) {
        Some(VectorMatchCardinality::ManyToOne(ls)) => ("many-to-one", names(ls)),
        Some(VectorMatchCardinality::OneToMany(ls)) => ("one-to-many", names(ls)),
        Some(VectorMatchCardinality::ManyToMany) => ("many-to-many", Vec::new()),
        _ if set_operator => ("many-to-many", Vec::new()),
        _ => ("one-to-one", Vec::new()),
    };
    let (on, labels) = match modifier.and_then(|m| m.matching.as_ref()) {
        Some(LabelModifier::Include(ls)) => (true, names(ls)),
        Some(LabelModifier::Exclude(ls)) => (false, names(ls)),
        None => (false, Vec::new()),
    };
    let fill = modifier.map(|m| &m.fill_values);
    json!({
        "card": card,
        "labels": labels,
        "on": on,
        "include": include,
        "fillValues": {
            "lhs": fill.and_then(|f| f.lhs),
            "rhs": fill.and_then(|f| f.rhs),
        },
    })
}

fn selector(v: &VectorSelector, kind: &str) -> Json {
    let (timestamp, start_or_end) = at(v.at.as_ref());
    json!({
        "type": kind,
        "name": v.name.clone().unwrap_or_default(),
        "offset": offset(v.offset.as_ref()),
        "offsetExpr": Json::Null,
        "matchers": matchers(v),
        "timestamp": timestamp,
        "startOrEnd": start_or_end,
        "anchored": false,
        "smoothed": false,
    })
}

/// The selector's matchers, the metric name's last as Prometheus adds it.
fn matchers(v: &VectorSelector) -> Json {
    let Matchers { matchers, .. } = &v.matchers;
    let mut out: Vec<Json> = matchers
        .iter()
        .map(|m| json!({"name": m.name, "value": m.value, "type": m.op.to_string()}))
        .collect();
    if let Some(name) = &v.name
        && !matchers.iter().any(|m| m.name == "__name__")
    {
        out.push(json!({"name": "__name__", "value": name, "type": "="}));
    }
    Json::Array(out)
}

fn names(ls: &Labels) -> Vec<String> {
    ls.labels.clone()
}

fn value_type(t: &ValueType) -> String {
    t.to_string()
}

fn millis(d: Duration) -> i64 {
    d.as_millis() as i64
}

fn offset(o: Option<&Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => millis(*d),
        Some(Offset::Neg(d)) => -millis(*d),
        None => 0,
    }
}

/// `timestamp` (milliseconds) and `startOrEnd` of an `@` modifier.
fn at(a: Option<&AtModifier>) -> (Json, Json) {
    match a {
        Some(AtModifier::At(t)) => {
            let ms = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => millis(d),
                Err(e) => -millis(e.duration()),
            };
            (json!(ms), Json::Null)
        }
        Some(AtModifier::Start) => (Json::Null, json!("start")),
        Some(AtModifier::End) => (Json::Null, json!("end")),
        None => (Json::Null, Json::Null),
    }
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`.
fn go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(q: &str) -> Json {
        translate(&promql_parser::parser::parse(q).expect("parses"))
    }

    #[test]
    fn nodes_carry_prometheus_fields() {
        let t = tree("sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m] offset 1m))");
        assert_eq!(t["type"], "aggregation");
        assert_eq!(t["grouping"], json!(["job"]));
        assert_eq!(t["param"], Json::Null);
        let call = &t["expr"];
        assert_eq!(call["func"]["name"], "rate");
        assert_eq!(call["func"]["argTypes"], json!(["matrix"]));
        let m = &call["args"][0];
        assert_eq!(m["type"], "matrixSelector");
        assert_eq!(m["range"], 300_000);
        assert_eq!(m["offset"], 60_000);
        assert_eq!(
            m["matchers"],
            json!([
                {"name": "code", "value": "5..", "type": "=~"},
                {"name": "__name__", "value": "http_requests_total", "type": "="}
            ])
        );
    }

    #[test]
    fn vector_matching_only_between_vectors() {
        assert_eq!(tree("a + 1")["matching"], Json::Null);
        assert_eq!(tree("a + b")["matching"]["card"], "one-to-one");
        assert_eq!(tree("a and b")["matching"]["card"], "many-to-many");
        let m = tree("a / on (x) group_left (y) b");
        assert_eq!(m["matching"]["card"], "many-to-one");
        assert_eq!(m["matching"]["on"], true);
        assert_eq!(m["matching"]["labels"], json!(["x"]));
        assert_eq!(m["matching"]["include"], json!(["y"]));
        assert_eq!(tree("1 > bool 2")["bool"], true);
        assert_eq!(tree("-Inf")["val"], "-Inf");
        assert_eq!(tree("x @ end()")["startOrEnd"], "end");
    }
}
