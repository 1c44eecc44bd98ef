//! Functions over series labels and order, following Prometheus
//! `promql/functions.go` (`funcLabelReplace`, `funcLabelJoin`, `funcSort`,
//! `funcSortDesc`, `funcSortByLabel`, `funcSortByLabelDesc`).

use std::cmp::Ordering;

use regex::Regex;

use crate::model::{Label, Labels, METRIC_NAME};
use crate::promql::engine::QueryError;
use crate::promql::value::{Series, is_valid_label_name, merge_same_labels};

fn set_label(labels: &Labels, name: &str, value: &str) -> Labels {
    if value.is_empty() {
        labels.without(name)
    } else {
        labels.with(name, value)
    }
}

pub(crate) fn label_replace(
    series: Vec<Series>,
    dst: &str,
    replacement: &str,
    src: &str,
    regex: &str,
    steps: usize,
) -> Result<Vec<Series>, QueryError> {
    let re = Regex::new(&format!("^(?s:{regex})$")).map_err(|_| {
        QueryError::Execution(format!(
            "invalid regular expression in label_replace(): {regex}"
        ))
    })?;
    if !is_valid_label_name(dst) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let mut out = Vec::with_capacity(series.len());
    for mut s in series {
        let value = s.labels.get(src).unwrap_or("");
        if let Some(caps) = re.captures(value) {
            let mut res = String::new();
            caps.expand(replacement, &mut res);
            s.labels = set_label(&s.labels, dst, &res);
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
        out.push(s);
    }
    merge_same_labels(out, steps)
}

pub(crate) fn label_join(
    series: Vec<Series>,
    dst: &str,
    sep: &str,
    srcs: &[String],
    steps: usize,
) -> Result<Vec<Series>, QueryError> {
    if let Some(src) = srcs.iter().find(|s| !is_valid_label_name(s)) {
        return Err(QueryError::Execution(format!(
            "invalid source label name in label_join(): {src}"
        )));
    }
    if !is_valid_label_name(dst) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    let mut out = Vec::with_capacity(series.len());
    for mut s in series {
        let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
        let value = joined.join(sep);
        s.labels = set_label(&s.labels, dst, &value);
        if dst == METRIC_NAME {
            s.drop_name = false;
        }
        out.push(s);
    }
    merge_same_labels(out, steps)
}

/// `sort` / `sort_desc` at the first step: NaNs last either way.
pub(crate) fn sort_by_value(series: &mut [Series], desc: bool) {
    let value = |s: &Series| s.vals.first().copied().flatten().unwrap_or(f64::NAN);
    series.sort_by(|a, b| {
        let (x, y) = (value(a), value(b));
        x.is_nan().cmp(&y.is_nan()).then_with(|| {
            let o = x.partial_cmp(&y).unwrap_or(Ordering::Equal);
            if desc { o.reverse() } else { o }
        })
    });
}

/// Natural order: runs of digits compare as numbers.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let na = std::str::from_utf8(&a[..da])
                    .unwrap_or("")
                    .trim_start_matches('0');
                let nb = std::str::from_utf8(&b[..db])
                    .unwrap_or("")
                    .trim_start_matches('0');
                let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if o != Ordering::Equal {
                    return o;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

pub(crate) fn sort_by_label(series: &mut [Series], names: &[String], desc: bool) {
    series.sort_by(|a, b| {
        for n in names {
            let (x, y) = (a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
            if x == y {
                continue;
            }
            let o = natural_cmp(x, y);
            return if desc { o.reverse() } else { o };
        }
        let o = cmp_labels(&a.labels, &b.labels);
        if desc { o.reverse() } else { o }
    });
}

fn cmp_labels(a: &Labels, b: &Labels) -> Ordering {
    let key = |l: &Label| (l.name.clone(), l.value.clone());
    a.iter().map(key).cmp(b.iter().map(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(pairs: &[(&str, &str)], v: f64) -> Series {
        Series {
            labels: Labels::from_pairs(pairs.iter().copied()),
            drop_name: true,
            vals: vec![Some(v)],
            hists: None,
        }
    }

    #[test]
    fn replace_and_join() {
        let input = vec![series(&[("__name__", "up"), ("src", "a-b")], 1.0)];
        let out = label_replace(input, "dst", "x${1}y", "src", "a-(.*)", 1).expect("valid");
        assert_eq!(out[0].labels.get("dst"), Some("xby"));
        let out =
            label_join(out, "__name__", "_", &["src".into(), "dst".into()], 1).expect("valid");
        assert_eq!(out[0].labels.get("__name__"), Some("a-b_xby"));
        assert!(!out[0].drop_name);
        let dup = vec![series(&[("a", "1")], 1.0), series(&[("a", "2")], 2.0)];
        assert!(label_replace(dup, "a", "x", "a", ".*", 1).is_err());
    }

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("a10", "a9"), Ordering::Greater);
        assert_eq!(natural_cmp("a1", "b"), Ordering::Less);
    }
}
