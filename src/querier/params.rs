//! Request parameters of the Prometheus HTTP API: from the query string and,
//! for POST, from a form body; times as RFC 3339 or Unix seconds; durations
//! as Prometheus durations or seconds; `match[]` selectors.

use axum::http::{HeaderMap, Method, header};

use crate::model::{MatchOp, Matcher};

/// All parameters of a request, in order, repeated keys kept.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(method: &Method, headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Params {
        let mut pairs: Vec<(String, String)> = query
            .map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default())
            .unwrap_or_default();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if *method == Method::POST && is_form {
            pairs.extend(
                serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default(),
            );
        }
        Params(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A time parameter in milliseconds: Unix seconds (with fraction) or RFC 3339.
pub fn parse_time(value: &str) -> Result<i64, String> {
    if let Ok(seconds) = value.parse::<f64>() {
        if !seconds.is_finite() {
            return Err(format!("cannot parse {value:?} to a valid timestamp"));
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    humantime::parse_rfc3339_weak(value)
        .ok()
        .or_else(|| humantime::parse_rfc3339(value).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| format!("cannot parse {value:?} to a valid timestamp"))
}

/// A duration parameter in milliseconds: seconds (with fraction) or a
/// Prometheus duration such as `1m30s`.
pub fn parse_duration(value: &str) -> Result<i64, String> {
    if let Ok(seconds) = value.parse::<f64>() {
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(format!("cannot parse {value:?} to a valid duration"));
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    promql_parser::util::parse_duration(value)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("cannot parse {value:?} to a valid duration"))
}

/// The matchers of a series selector such as `up{job="api"}`.
pub fn parse_selector(selector: &str) -> Result<Vec<Matcher>, String> {
    let expr = promql_parser::parser::parse(selector).map_err(|e| e.to_string())?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!(
            "invalid parameter \"match[]\": {selector:?} is not a series selector"
        ));
    };
    let matchers = selector_matchers(&vs)?;
    if matchers.iter().all(|m| m.matches_empty()) {
        return Err("match[] must contain at least one non-empty matcher".to_string());
    }
    Ok(matchers)
}

/// A vector selector's matchers, its metric name as a `__name__` matcher.
fn selector_matchers(vs: &promql_parser::parser::VectorSelector) -> Result<Vec<Matcher>, String> {
    use promql_parser::label::MatchOp as P;
    let mut matchers = Vec::new();
    if let Some(name) = &vs.name
        && !vs
            .matchers
            .matchers
            .iter()
            .any(|m| m.name == crate::model::METRIC_NAME)
    {
        matchers.push(Matcher::equal(crate::model::METRIC_NAME, name));
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            P::Equal => MatchOp::Equal,
            P::NotEqual => MatchOp::NotEqual,
            P::Re(_) => MatchOp::RegexMatch,
            P::NotRe(_) => MatchOp::RegexNoMatch,
        };
        matchers.push(Matcher::new(op, &m.name, &m.value).map_err(|e| e.to_string())?);
    }
    Ok(matchers)
}

/// The matchers of every series selector in a PromQL expression, in the
/// order they appear (Prometheus's `parser.ExtractSelectors`).
pub fn query_selectors(query: &str) -> Result<Vec<Vec<Matcher>>, String> {
    use promql_parser::parser::Expr;
    fn walk(expr: &Expr, out: &mut Vec<Vec<Matcher>>) -> Result<(), String> {
        match expr {
            Expr::VectorSelector(vs) => out.push(selector_matchers(vs)?),
            Expr::MatrixSelector(ms) => out.push(selector_matchers(&ms.vs)?),
            Expr::Aggregate(a) => {
                if let Some(param) = &a.param {
                    walk(param, out)?;
                }
                walk(&a.expr, out)?;
            }
            Expr::Unary(u) => walk(&u.expr, out)?,
            Expr::Binary(b) => {
                walk(&b.lhs, out)?;
                walk(&b.rhs, out)?;
            }
            Expr::Paren(p) => walk(&p.expr, out)?,
            Expr::Subquery(s) => walk(&s.expr, out)?,
            Expr::Call(c) => {
                for arg in &c.args.args {
                    walk(arg, out)?;
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
        Ok(())
    }
    let expr = promql_parser::parser::parse(query).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    walk(&expr, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_selector_of_a_query_is_found() {
        let sets = query_selectors(r#"sum(rate(a{x="1"}[5m])) / on() b + 1"#).expect("parses");
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0][0], Matcher::equal("__name__", "a"));
        assert_eq!(sets[0][1], Matcher::equal("x", "1"));
        assert_eq!(sets[1], vec![Matcher::equal("__name__", "b")]);
        assert!(query_selectors("1 + 2").expect("parses").is_empty());
        assert!(query_selectors("sum(").is_err());
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn selectors() {
        let m = parse_selector("up{job=\"api\",instance=~\"a.*\"}").expect("valid");
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].name, "__name__");
        assert!(parse_selector("{job=~\".*\"}").is_err());
        assert!(parse_selector("sum(up)").is_err());
    }
}
