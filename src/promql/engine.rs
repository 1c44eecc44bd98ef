//! The engine's public face: configuration, results, errors, and the two
//! query entry points. A query is parsed, planned (every selector and the
//! time range it needs), fetched through [`Queryable`], then evaluated.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::eval::Evaluator;
use super::plan;
use super::positions::Positions;
use super::value::{Series, Steps, Val, merge_same_labels};
use super::{Queryable, SeriesSamples};
use crate::model::histogram::FloatHistogram;
use crate::model::{HPoint, Labels, is_metadata_label};

/// Engine limits and defaults (Prometheus's `EngineOpts`).
#[derive(Clone, Debug, Deserialize, PartialEq, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// How far back a vector selector looks for a sample (default 5m).
    #[serde(with = "humantime_serde")]
    pub lookback_delta: Duration,
    /// Most samples a query may hold in memory at once (default 50M).
    pub max_samples: usize,
    /// Longest a query may run (default 2m).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Step of subqueries written without one (`x[5m:]`), Prometheus's
    /// global evaluation interval (default 1m).
    #[serde(with = "humantime_serde")]
    pub default_subquery_step: Duration,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            lookback_delta: Duration::from_secs(300),
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step: Duration::from_secs(60),
        }
    }
}

/// One sample of an instant vector result: a float `v`, or a native
/// histogram `h` (then `v` is 0 and means nothing).
#[derive(Clone, Debug, PartialEq)]
pub struct InstantSample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
    pub h: Option<FloatHistogram>,
}

/// A query result, shaped as Prometheus's HTTP API returns it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar { t: i64, v: f64 },
    String { t: i64, s: String },
    Vector(Vec<InstantSample>),
    Matrix(Vec<SeriesSamples>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    /// Prometheus's warning annotations.
    pub warnings: Vec<String>,
    /// Prometheus's info annotations.
    pub infos: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The expression does not parse (Prometheus `bad_data`).
    #[error("{0}")]
    Parse(String),
    /// The expression failed during evaluation (Prometheus `execution`).
    #[error("{0}")]
    Execution(String),
    #[error(
        "query processing would load too many samples into memory in query execution (limit {limit}, raise max_samples)"
    )]
    TooManySamples { limit: usize },
    #[error("query timed out in expression evaluation")]
    Timeout,
    #[error("{0}")]
    Storage(String),
}

/// The PromQL engine. Cheap to share; holds only configuration.
#[derive(Clone, Debug)]
pub struct Engine {
    config: EngineConfig,
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine { config }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Evaluates `expr` at `time_ms`.
    pub async fn instant(
        &self,
        q: &dyn Queryable,
        expr: &str,
        time_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        let steps = Steps {
            start: time_ms,
            end: time_ms,
            step: 1,
        };
        let (val, warnings, infos) = self.run(q, expr, steps).await?;
        let value = match val {
            Val::Scalar(v) => Value::Scalar {
                t: time_ms,
                v: v.first().copied().unwrap_or(f64::NAN),
            },
            Val::String(s) => Value::String { t: time_ms, s },
            Val::Vector(series) => Value::Vector(
                series
                    .into_iter()
                    .filter_map(|s| {
                        if let Some(h) = s.h(0) {
                            return Some(InstantSample {
                                h: Some(h.clone()),
                                labels: s.labels,
                                t: time_ms,
                                v: 0.0,
                            });
                        }
                        s.vals.first().copied().flatten().map(|v| InstantSample {
                            labels: s.labels,
                            t: time_ms,
                            v,
                            h: None,
                        })
                    })
                    .collect(),
            ),
            Val::Matrix(m) => Value::Matrix(m),
        };
        Ok(QueryResult {
            value,
            warnings,
            infos,
        })
    }

    /// Evaluates `expr` at every step from `start_ms` to `end_ms`; the
    /// result is a matrix sorted by labels.
    pub async fn range(
        &self,
        q: &dyn Queryable,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::Parse(
                "zero or negative query resolution step widths are not accepted. Try a positive integer"
                    .to_string(),
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::Parse(
                "end timestamp must not be before start time".to_string(),
            ));
        }
        let steps = Steps {
            start: start_ms,
            end: end_ms,
            step: step_ms,
        };
        let (val, warnings, infos) = self.run(q, expr, steps).await?;
        let mut matrix = match val {
            Val::Scalar(v) => vec![SeriesSamples {
                histograms: Vec::new(),
                labels: Labels::default(),
                samples: v
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| crate::model::Sample { t: steps.ts(i), v })
                    .collect(),
            }],
            Val::Vector(series) => series
                .into_iter()
                .map(|s| SeriesSamples {
                    histograms: s
                        .hists
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .filter_map(|(i, h)| h.map(|h| HPoint { t: steps.ts(i), h }))
                        .collect(),
                    labels: s.labels,
                    samples: s
                        .vals
                        .iter()
                        .enumerate()
                        .filter_map(|(i, v)| v.map(|v| crate::model::Sample { t: steps.ts(i), v }))
                        .collect(),
                })
                .filter(|s| !s.samples.is_empty() || !s.histograms.is_empty())
                .collect(),
            other => {
                return Err(QueryError::Parse(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    match other {
                        Val::String(_) => "string",
                        _ => "range vector",
                    }
                )));
            }
        };
        matrix.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(QueryResult {
            value: Value::Matrix(matrix),
            warnings,
            infos,
        })
    }

    async fn run(
        &self,
        q: &dyn Queryable,
        expr: &str,
        steps: Steps,
    ) -> Result<(Val, Vec<String>, Vec<String>), QueryError> {
        let started = Instant::now();
        let ast = promql_parser::parser::parse(expr).map_err(QueryError::Parse)?;
        let ctx = plan::PlanContext {
            query_start: steps.start,
            query_end: steps.end,
            query_step: if steps.start == steps.end {
                0
            } else {
                steps.step
            },
            lookback: ms(self.config.lookback_delta),
            default_subquery_step: ms(self.config.default_subquery_step).max(1),
        };
        let selections = plan::plan(&ast, steps, &ctx)?;
        let data = tokio::time::timeout(self.config.timeout, plan::fetch(q, selections))
            .await
            .map_err(|_| QueryError::Timeout)??;
        let mut ev = Evaluator {
            data: &data,
            ctx,
            max_samples: self.config.max_samples,
            current_samples: 0,
            deadline: started + self.config.timeout,
            warnings: Vec::new(),
            infos: Vec::new(),
            positions: Positions::new(expr, &ast),
        };
        let val = ev.eval(&ast, steps)?;
        let val = match val {
            Val::Vector(series) => Val::Vector(drop_names(series)?),
            Val::Matrix(_) if steps.len() > 1 => {
                return Err(QueryError::Parse(
                    "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
                        .to_string(),
                ));
            }
            other => other,
        };
        let mut warnings = ev.warnings;
        dedup(&mut warnings);
        let mut infos = ev.infos;
        dedup(&mut infos);
        Ok((val, warnings, infos))
    }
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

/// Applies delayed name removal and rejects label sets that collide after it.
fn drop_names(mut series: Vec<Series>) -> Result<Vec<Series>, QueryError> {
    series.retain(|s| !s.is_empty());
    let mut any = false;
    for s in &mut series {
        if s.drop_name && s.labels.iter().any(|l| is_metadata_label(&l.name)) {
            s.labels = s.labels.without_metadata();
            any = true;
        }
        s.drop_name = false;
    }
    if any {
        let steps = series.first().map_or(0, |s| s.vals.len());
        return merge_same_labels(series, steps);
    }
    Ok(series)
}
