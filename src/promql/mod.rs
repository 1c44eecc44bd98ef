//! Our PromQL engine: Prometheus 3.x semantics, parsing with `promql-parser`.
//!
//! A query runs in two phases: the engine walks the parsed expression,
//! fetches every selector's series from a [`Queryable`] over the time range
//! the expression needs (async: the querier reads ingesters and the store),
//! then evaluates step by step over the fetched series (sync).

use async_trait::async_trait;

use crate::model::{HPoint, Labels, Matcher, Sample};

/// One series and its samples, sorted by time: float samples and native
/// histogram samples, each list sorted, no timestamp in both.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    pub histograms: Vec<HPoint>,
}

/// Where the engine reads series from. Implemented by the querier (ingesters
/// and the store) and by tests (in memory).
#[async_trait]
pub trait Queryable: Send + Sync {
    /// Every series matching all `matchers` with its samples whose
    /// timestamps lie in `[mint, maxt]` (inclusive, milliseconds). Series
    /// without samples in the range may be left out.
    async fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, String>;
}

mod aggregate;
mod binary;
mod engine;
mod eval;
mod functions;
mod plan;
mod positions;
mod stats;
mod value;

pub use engine::{Engine, EngineConfig, InstantSample, QueryError, QueryResult, Value};

#[cfg(test)]
mod tests;
