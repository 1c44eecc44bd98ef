//! Values the evaluator passes between nodes: per-step scalars, instant
//! vectors held as one row of step values per series (labels computed once
//! per series, never per step), and range vectors for instant queries.

use promql_parser::util::raw_byte;
use std::collections::HashMap;

use xxhash_rust::xxh3::Xxh3;

use super::SeriesSamples;
use super::engine::QueryError;
use crate::model::histogram::FloatHistogram;
use crate::model::{Labels, METRIC_NAME};

/// The evaluation timestamps `start, start + step, ...` up to `end` inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Steps {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Steps {
    pub fn len(&self) -> usize {
        if self.end < self.start || self.step <= 0 {
            0
        } else {
            ((self.end - self.start) / self.step) as usize + 1
        }
    }

    pub fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// One series of an instant vector evaluated over [`Steps`]: `vals[i]` is
/// its value at step `i`, `None` where the series has no sample.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Series {
    pub labels: Labels,
    /// Prometheus's delayed name removal: `__name__` is dropped from the
    /// labels when the query's result is assembled.
    pub drop_name: bool,
    pub vals: Vec<Option<f64>>,
    /// Native histogram samples per step, only for series that have any
    /// (float-only series pay nothing). At a step a series has a float or
    /// a histogram, never both.
    pub hists: Option<Vec<Option<FloatHistogram>>>,
}

impl Series {
    /// A float-only series.
    pub fn floats(labels: Labels, drop_name: bool, vals: Vec<Option<f64>>) -> Series {
        Series {
            labels,
            drop_name,
            vals,
            hists: None,
        }
    }

    pub fn points(&self) -> usize {
        self.vals.iter().filter(|v| v.is_some()).count()
            + self.hists.as_ref().map_or(0, |h| {
                // A histogram weighs as much as its buckets (Prometheus's
                // sample accounting).
                h.iter()
                    .flatten()
                    .map(|h| 1 + (h.positive_buckets.len() + h.negative_buckets.len()) / 8)
                    .sum()
            })
    }

    /// The histogram at `step`, if any.
    pub fn h(&self, step: usize) -> Option<&FloatHistogram> {
        self.hists
            .as_ref()
            .and_then(|h| h.get(step))
            .and_then(Option::as_ref)
    }

    /// Whether the series has a float or a histogram at `step`.
    pub fn has(&self, step: usize) -> bool {
        self.vals[step].is_some() || self.h(step).is_some()
    }

    /// Whether the series has no sample at any step.
    pub fn is_empty(&self) -> bool {
        !self.vals.iter().any(Option::is_some)
            && self
                .hists
                .as_ref()
                .is_none_or(|h| !h.iter().any(Option::is_some))
    }

    /// Sets the histogram at `step`.
    pub fn set_h(&mut self, step: usize, h: FloatHistogram) {
        let n = self.vals.len();
        let hists = self.hists.get_or_insert_with(|| vec![None; n]);
        hists[step] = Some(h);
    }

    /// Drops every histogram sample (functions that only take floats).
    pub fn drop_histograms(&mut self) -> bool {
        self.hists
            .take()
            .is_some_and(|h| h.iter().any(Option::is_some))
    }
}

#[derive(Debug)]
pub(crate) enum Val {
    Scalar(Vec<f64>),
    String(String),
    Vector(Vec<Series>),
    /// Only the result of a bare range selector or subquery at one step.
    Matrix(Vec<SeriesSamples>),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::String(_) => "string",
            Val::Vector(_) => "vector",
            Val::Matrix(_) => "matrix",
        }
    }

    pub fn points(&self) -> usize {
        match self {
            Val::Scalar(_) | Val::String(_) => 0,
            Val::Vector(v) => v.iter().map(Series::points).sum(),
            Val::Matrix(m) => m.iter().map(|s| s.samples.len() + s.histograms.len()).sum(),
        }
    }
}

/// Whether `name` may name a label: not empty and valid UTF-8 (Prometheus
/// 3's `LabelName.IsValid`). A string literal's bytes that are not UTF-8
/// reach us as the parser's raw-byte characters.
pub(crate) fn is_valid_label_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| raw_byte(c).is_some())
}

/// `s` as Go's `%q` writes it, for messages Prometheus writes so: raw
/// bytes as `\xNN`, quotes, backslashes and control characters escaped.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match (c, raw_byte(c)) {
            (_, Some(b)) => out.push_str(&format!("\\x{b:02x}")),
            ('"', _) => out.push_str("\\\""),
            ('\\', _) => out.push_str("\\\\"),
            ('\n', _) => out.push_str("\\n"),
            ('\t', _) => out.push_str("\\t"),
            ('\r', _) => out.push_str("\\r"),
            (c, _) if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            (c, _) => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) const DUPLICATE_LABELSET: &str = "vector cannot contain metrics with the same labelset";

/// Collects output series by label set across steps, as Prometheus's
/// `rangeEval` does; two samples with one label set at one step are an error.
pub(crate) struct OutBuilder {
    index: HashMap<Labels, usize>,
    pub series: Vec<Series>,
    steps: usize,
}

impl OutBuilder {
    pub fn new(steps: usize) -> OutBuilder {
        OutBuilder {
            index: HashMap::new(),
            series: Vec::new(),
            steps,
        }
    }

    /// The slot of `labels`, created on first use.
    pub fn slot(&mut self, labels: Labels, drop_name: bool) -> usize {
        if let Some(&i) = self.index.get(&labels) {
            return i;
        }
        let i = self.series.len();
        self.series.push(Series::floats(
            labels.clone(),
            drop_name,
            vec![None; self.steps],
        ));
        self.index.insert(labels, i);
        i
    }

    pub fn set(&mut self, slot: usize, step: usize, v: f64) -> Result<(), QueryError> {
        let s = &mut self.series[slot];
        if s.has(step) {
            return Err(QueryError::Execution(DUPLICATE_LABELSET.to_string()));
        }
        s.vals[step] = Some(v);
        Ok(())
    }

    /// Sets a histogram result.
    pub fn set_h(&mut self, slot: usize, step: usize, h: FloatHistogram) -> Result<(), QueryError> {
        let s = &mut self.series[slot];
        if s.has(step) {
            return Err(QueryError::Execution(DUPLICATE_LABELSET.to_string()));
        }
        s.set_h(step, h);
        Ok(())
    }

    pub fn finish(self) -> Vec<Series> {
        self.series.into_iter().filter(|s| !s.is_empty()).collect()
    }
}

/// Merges series with identical labels (they may not overlap in time).
pub(crate) fn merge_same_labels(
    series: Vec<Series>,
    steps: usize,
) -> Result<Vec<Series>, QueryError> {
    let mut out = OutBuilder::new(steps);
    for s in series {
        let slot = out.slot(s.labels, s.drop_name);
        for (i, v) in s.vals.into_iter().enumerate() {
            if let Some(v) = v {
                out.set(slot, i, v)?;
            }
        }
        for (i, h) in s.hists.into_iter().flatten().enumerate() {
            if let Some(h) = h {
                out.set_h(slot, i, h)?;
            }
        }
    }
    Ok(out.finish())
}

/// The matching signature of `labels` for `on(names)` (`on == true`) or
/// `ignoring(names)`; ignoring always ignores the metric name.
pub(crate) fn signature(labels: &Labels, on: bool, names: &[String]) -> u64 {
    let mut h = Xxh3::new();
    for l in labels.iter() {
        let listed = names.contains(&l.name);
        let keep = if on {
            listed
        } else {
            !listed && l.name != METRIC_NAME
        };
        if keep {
            h.update(l.name.as_bytes());
            h.update(&[0xfe]);
            h.update(l.value.as_bytes());
            h.update(&[0xff]);
        }
    }
    h.digest()
}

/// The labels a signature is computed from (for error messages).
pub(crate) fn match_labels(labels: &Labels, on: bool, names: &[String]) -> Labels {
    Labels::from_sorted(
        labels
            .iter()
            .filter(|l| {
                let listed = names.contains(&l.name);
                if on {
                    listed
                } else {
                    !listed && l.name != METRIC_NAME
                }
            })
            .cloned()
            .collect(),
    )
}

/// Prometheus's `labels.String()`: `{a="1", b="2"}`, the name included.
pub(crate) fn labels_string(labels: &Labels) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_from_non_utf8_escapes_are_invalid_and_quoted_as_go() {
        let parsed = promql_parser::util::unquote_string(r#""a\xc5z""#).expect("valid literal");
        assert!(!is_valid_label_name(&parsed));
        assert_eq!(go_quote(&parsed), r#""a\xc5z""#);
        let utf8 = promql_parser::util::unquote_string(r#""\xc3\xa9""#).expect("valid literal");
        assert!(is_valid_label_name(&utf8));
        assert_eq!(go_quote("a\"b\n"), r#""a\"b\n""#);
        assert!(!is_valid_label_name(""));
    }
}
