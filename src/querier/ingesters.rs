//! Reading recent data from the ingesters: every healthy ingester of the
//! ring is asked (a query names matchers, not series, so any of them may
//! hold a match); up to `RF - quorum` of them may fail or be unhealthy
//! without failing the query; the replicas' copies of a series are merged
//! into one, sample-exact (one sample per timestamp).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::future::join_all;

use crate::chunk::merge::{ChunkData, HistogramChunkData, merge_chunks, merge_histogram_chunks};
use crate::ingester::client::{
    ClientPool, ExemplarQueryRequest, LabelMatchers, LabelNamesRequest, LabelValuesRequest,
    MetadataRequest, QueryRequest, SeriesChunkData, SeriesRequest, decode_chunks,
};
use crate::model::{Labels, MatchOp, Matcher};
use crate::promql::{Queryable, SeriesSamples};
use crate::proto::prometheus::{self as pb, MetricMetadata};
use crate::ring::client::RingClient;
use crate::ring::desc::now_ms;
use crate::ring::read::{Operation, quorum};
use crate::tenant::TenantId;

/// The ingesters as seen by one tenant's query.
#[derive(Clone)]
pub struct IngesterQueryable {
    pub tenant: TenantId,
    pub ring: Arc<RingClient>,
    pub clients: Arc<ClientPool>,
    pub replication_factor: usize,
    /// Samples before this are not read (the tenant's max query lookback).
    pub min_time: i64,
    /// Most series the whole query may fetch (0: no limit).
    pub max_series: usize,
    /// Series fetched so far by this query.
    pub fetched: Arc<AtomicUsize>,
    /// Set when `max_series` stopped the query.
    pub limit_hit: Arc<AtomicBool>,
}

/// Cortex's message for the series limit.
pub fn series_limit_message(limit: usize) -> String {
    format!(
        "the query hit the max number of series limit (limit: {limit} series); raise limits.max_fetched_series_per_query"
    )
}

fn to_proto(matchers: &[Matcher]) -> Vec<pb::LabelMatcher> {
    matchers
        .iter()
        .map(|m| pb::LabelMatcher {
            r#type: match m.op {
                MatchOp::Equal => pb::label_matcher::Type::Eq,
                MatchOp::NotEqual => pb::label_matcher::Type::Neq,
                MatchOp::RegexMatch => pb::label_matcher::Type::Re,
                MatchOp::RegexNoMatch => pb::label_matcher::Type::Nre,
            } as i32,
            name: m.name.clone(),
            value: m.value.clone(),
        })
        .collect()
}

/// The ingesters' answers merged: sorted, each item once.
pub(super) fn union_sorted<T: Ord>(answers: Vec<Vec<T>>) -> Vec<T> {
    let mut all: Vec<T> = answers.into_iter().flatten().collect();
    all.sort();
    all.dedup();
    all
}

fn from_proto(labels: Vec<pb::Label>) -> Labels {
    Labels::from_pairs(labels.into_iter().map(|l| (l.name, l.value)))
}

impl IngesterQueryable {
    /// Addresses of the ingesters to ask, and how many of them may fail.
    fn targets(&self) -> Result<(Vec<String>, usize), String> {
        let view = self.ring.view();
        let now = now_ms();
        let total = view.instances().len();
        let healthy: Vec<String> = (0..total)
            .filter(|idx| view.is_healthy(*idx, Operation::Read, now))
            .map(|idx| view.instance(idx).addr.clone())
            .collect();
        let rf = self.replication_factor.max(1);
        let tolerated = rf - quorum(rf);
        let unhealthy = total - healthy.len();
        if unhealthy > tolerated {
            return Err(format!(
                "too many unhealthy ingesters: {unhealthy} of {total} (at most {tolerated} with replication factor {rf})"
            ));
        }
        Ok((healthy, tolerated - unhealthy))
    }

    /// Runs `call` against every target; fails if more than tolerated fail.
    async fn fan_out<T, F, Fut>(&self, call: F) -> Result<Vec<T>, String>
    where
        F: Fn(crate::ingester::client::IngesterHandle) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let (targets, tolerated) = self.targets()?;
        let calls = targets.iter().map(|addr| {
            let client = self.clients.get(addr);
            let call = &call;
            async move {
                let client = client.map_err(|e| e.to_string())?;
                call(client)
                    .await
                    .map_err(|status| format!("ingester {addr}: {}", status.message()))
            }
        });
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for result in join_all(calls).await {
            match result {
                Ok(value) => ok.push(value),
                Err(err) => errors.push(err),
            }
        }
        if errors.len() > tolerated {
            return Err(format!(
                "reading from ingesters failed: {}",
                errors.join("; ")
            ));
        }
        Ok(ok)
    }

    pub async fn label_names(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, String> {
        let request = LabelNamesRequest {
            tenant: self.tenant.to_string(),
            start_ms: start,
            end_ms: end,
            matchers: to_proto(matchers),
        };
        let answers = self
            .fan_out(|mut client| {
                let request = request.clone();
                async move { client.label_names(request).await }
            })
            .await?;
        Ok(union_sorted(answers))
    }

    pub async fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, String> {
        let request = LabelValuesRequest {
            tenant: self.tenant.to_string(),
            name: name.to_string(),
            start_ms: start,
            end_ms: end,
            matchers: to_proto(matchers),
        };
        let answers = self
            .fan_out(|mut client| {
                let request = request.clone();
                async move { client.label_values(request).await }
            })
            .await?;
        Ok(union_sorted(answers))
    }

    pub async fn series(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Labels>, String> {
        let request = SeriesRequest {
            tenant: self.tenant.to_string(),
            start_ms: start,
            end_ms: end,
            matchers: to_proto(matchers),
        };
        let answers = self
            .fan_out(|mut client| {
                let request = request.clone();
                async move { client.series(request).await }
            })
            .await?;
        Ok(union_sorted(
            answers
                .into_iter()
                .map(|batch| batch.into_iter().map(|s| from_proto(s.labels)).collect())
                .collect(),
        ))
    }

    /// The exemplars from `start` to `end` of the series matching any of
    /// `matcher_sets`, by series labels (sorted); the replicas' copies
    /// merged, each series' exemplars once, oldest first.
    pub async fn exemplars(
        &self,
        matcher_sets: &[Vec<Matcher>],
        start: i64,
        end: i64,
    ) -> Result<Vec<(Labels, Vec<pb::Exemplar>)>, String> {
        let request = ExemplarQueryRequest {
            tenant: self.tenant.to_string(),
            start_ms: start,
            end_ms: end,
            matcher_sets: matcher_sets
                .iter()
                .map(|set| LabelMatchers {
                    matchers: to_proto(set),
                })
                .collect(),
        };
        let answers = self
            .fan_out(|mut client| {
                let request = request.clone();
                async move { client.query_exemplars(request).await }
            })
            .await?;
        let mut by_labels: BTreeMap<Labels, Vec<pb::Exemplar>> = BTreeMap::new();
        for series in answers.into_iter().flatten() {
            by_labels
                .entry(from_proto(series.labels))
                .or_default()
                .extend(series.exemplars);
        }
        let key = |e: &pb::Exemplar| {
            e.labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect::<Vec<_>>()
        };
        Ok(by_labels
            .into_iter()
            .map(|(labels, mut exemplars)| {
                exemplars.sort_by(|a, b| {
                    a.timestamp
                        .cmp(&b.timestamp)
                        .then(a.value.total_cmp(&b.value))
                        .then_with(|| key(a).cmp(&key(b)))
                });
                exemplars.dedup_by(|a, b| {
                    a.timestamp == b.timestamp
                        && a.value.to_bits() == b.value.to_bits()
                        && a.labels == b.labels
                });
                (labels, exemplars)
            })
            .collect())
    }

    pub async fn metadata(&self, metric: &str, limit: u32) -> Result<Vec<MetricMetadata>, String> {
        let request = MetadataRequest {
            tenant: self.tenant.to_string(),
            metric: metric.to_string(),
            limit,
        };
        let answers = self
            .fan_out(|mut client| {
                let request = request.clone();
                async move { client.metadata(request).await }
            })
            .await?;
        let mut all: Vec<MetricMetadata> = answers.into_iter().flatten().collect();
        all.sort_by(|a, b| {
            (&a.metric_family_name, a.r#type, &a.help, &a.unit).cmp(&(
                &b.metric_family_name,
                b.r#type,
                &b.help,
                &b.unit,
            ))
        });
        all.dedup();
        Ok(all)
    }
}

#[async_trait]
impl Queryable for IngesterQueryable {
    async fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, String> {
        let mint = mint.max(self.min_time);
        if maxt < mint {
            return Ok(Vec::new());
        }
        let request = QueryRequest {
            tenant: self.tenant.to_string(),
            start_ms: mint,
            end_ms: maxt,
            matchers: to_proto(matchers),
        };
        let answers = self
            .fan_out(|mut client| {
                let request = request.clone();
                async move { client.query(request).await }
            })
            .await?;
        // Replicas' copies of a series, by labels: all their chunks together.
        let mut by_labels: BTreeMap<Labels, (Vec<ChunkData>, Vec<HistogramChunkData>)> =
            BTreeMap::new();
        for series in answers.into_iter().flatten() {
            let labels = from_proto(series.labels);
            let entry = by_labels.entry(labels).or_default();
            for chunk in series.chunks {
                match decode_chunks(chunk).map_err(|e| e.to_string())? {
                    SeriesChunkData::Xor(c) => entry.0.push(c),
                    SeriesChunkData::Histogram(c) => entry.1.push(c),
                }
            }
        }
        let mut out = Vec::with_capacity(by_labels.len());
        for (labels, (mut chunks, mut histogram_chunks)) in by_labels {
            chunks.sort_by_key(|c| (c.min_t, c.max_t));
            let samples = merge_chunks(&chunks, mint, maxt)
                .map_err(|e| format!("series {labels}: corrupt chunk from an ingester: {e}"))?;
            histogram_chunks.sort_by_key(|c| (c.min_t, c.max_t));
            let histograms =
                merge_histogram_chunks(&histogram_chunks, mint, maxt).map_err(|e| {
                    format!("series {labels}: corrupt histogram chunk from an ingester: {e}")
                })?;
            if !samples.is_empty() || !histograms.is_empty() {
                out.push(SeriesSamples {
                    labels,
                    samples,
                    histograms,
                });
            }
        }
        let fetched = self.fetched.fetch_add(out.len(), Ordering::Relaxed) + out.len();
        if self.max_series > 0 && fetched > self.max_series {
            self.limit_hit.store(true, Ordering::Relaxed);
            return Err(series_limit_message(self.max_series));
        }
        Ok(out)
    }
}
