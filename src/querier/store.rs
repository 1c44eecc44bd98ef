//! What a tenant's query reads: the ingesters (recent data) and the
//! long-term store (flushed data), merged into one answer.
//!
//! The time ranges overlap on purpose: an ingester keeps a flushed chunk
//! for a while, and the store has it as soon as the flush is acknowledged,
//! so a sample is in at least one of them at every moment. Both answers are
//! merged per series, one sample per timestamp, so the overlap costs reads,
//! never a duplicate or a gap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;

use super::ingesters::{IngesterQueryable, series_limit_message, union_sorted};
use crate::chunk::merge::{
    ChunkData, HistogramChunkData, merge_chunks, merge_histogram_chunks, merge_runs,
};
use crate::chunk::{ChunkError, packed};
use crate::model::{HPoint, Labels, Matcher, Sample};
use crate::promql::{Queryable, SeriesSamples};
use crate::proto::prometheus::MetricMetadata;
use crate::store::{ChunkEncoding, Store, StoreChunk};
use crate::tenant::TenantId;

/// The long-term store as seen by one tenant's query.
#[derive(Clone)]
pub struct StoreQueryable {
    pub tenant: TenantId,
    pub store: Arc<Store>,
    /// Samples before this are not read (retention, max query lookback).
    pub min_time: i64,
    /// Samples after this are not read (`query_store_after`).
    pub max_time: i64,
}

/// Float and histogram samples of one series from its stored chunks,
/// sorted, one per timestamp.
pub fn decode_chunks(
    labels: &Labels,
    chunks: Vec<StoreChunk>,
    mint: i64,
    maxt: i64,
) -> Result<(Vec<Sample>, Vec<HPoint>), String> {
    let mut floats = Vec::new();
    let mut packed = Vec::new();
    let mut histograms = Vec::new();
    for c in chunks {
        let float = match c.encoding {
            ChunkEncoding::Xor => {
                floats.push(ChunkData {
                    min_t: c.from,
                    max_t: c.through,
                    bytes: c.data,
                });
                continue;
            }
            ChunkEncoding::Packed => {
                packed.push((c.from, c.through, c.data));
                continue;
            }
            ChunkEncoding::Histogram => false,
            ChunkEncoding::FloatHistogram => true,
        };
        histograms.push(HistogramChunkData {
            min_t: c.from,
            max_t: c.through,
            float,
            bytes: c.data,
        });
    }
    let chunk_error = |e: ChunkError| format!("series {labels}: stored chunk: {e}");
    floats.sort_by_key(|c| (c.min_t, c.max_t));
    histograms.sort_by_key(|c| (c.min_t, c.max_t));
    let samples = if packed.is_empty() {
        merge_chunks(&floats, mint, maxt).map_err(chunk_error)?
    } else {
        // Each chunk decoded to a run, the runs in time order.
        let mut runs: Vec<(i64, i64, Vec<Sample>)> = Vec::new();
        for c in floats.iter().filter(|c| c.overlaps(mint, maxt)) {
            let run = merge_chunks(std::slice::from_ref(c), mint, maxt).map_err(chunk_error)?;
            runs.push((c.min_t, c.max_t, run));
        }
        for (from, through, data) in packed {
            if from <= maxt && through >= mint {
                let run = packed::decode_range(&data, mint, maxt).map_err(chunk_error)?;
                runs.push((from, through, run));
            }
        }
        runs.sort_by_key(|r| (r.0, r.1));
        let runs: Vec<Vec<Sample>> = runs.into_iter().map(|r| r.2).collect();
        merge_runs(&runs, mint, maxt)
    };
    let histograms = merge_histogram_chunks(&histograms, mint, maxt)
        .map_err(|e| format!("series {labels}: stored histogram chunk: {e}"))?;
    Ok((samples, histograms))
}

impl StoreQueryable {
    fn clamp(&self, mint: i64, maxt: i64) -> Option<(i64, i64)> {
        let (mint, maxt) = (mint.max(self.min_time), maxt.min(self.max_time));
        (mint <= maxt).then_some((mint, maxt))
    }

    pub async fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, String> {
        let Some((mint, maxt)) = self.clamp(mint, maxt) else {
            return Ok(Vec::new());
        };
        let stored = self
            .store
            .select(self.tenant.as_str(), matchers, mint, maxt)
            .await
            .map_err(|e| format!("reading from the store failed: {e}"))?;
        let mut out = Vec::with_capacity(stored.len());
        for s in stored {
            let (samples, histograms) = decode_chunks(&s.labels, s.chunks, mint, maxt)?;
            if !samples.is_empty() || !histograms.is_empty() {
                out.push(SeriesSamples {
                    labels: s.labels,
                    samples,
                    histograms,
                });
            }
        }
        Ok(out)
    }

    pub async fn label_names(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, String> {
        let Some((start, end)) = self.clamp(start, end) else {
            return Ok(Vec::new());
        };
        self.store
            .label_names(self.tenant.as_str(), matchers, start, end)
            .await
            .map_err(|e| format!("reading from the store failed: {e}"))
    }

    pub async fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, String> {
        let Some((start, end)) = self.clamp(start, end) else {
            return Ok(Vec::new());
        };
        self.store
            .label_values(self.tenant.as_str(), name, matchers, start, end)
            .await
            .map_err(|e| format!("reading from the store failed: {e}"))
    }

    pub async fn series(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Labels>, String> {
        let Some((start, end)) = self.clamp(start, end) else {
            return Ok(Vec::new());
        };
        Ok(self
            .store
            .select_refs(self.tenant.as_str(), matchers, start, end)
            .await
            .map_err(|e| format!("reading from the store failed: {e}"))?
            .into_iter()
            .map(|(labels, _)| labels)
            .collect())
    }
}

#[async_trait]
impl Queryable for StoreQueryable {
    async fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, String> {
        StoreQueryable::select(self, matchers, mint, maxt).await
    }
}

/// Merges two sorted sample lists, one sample per timestamp (`a` wins).
fn merge_by_time<T>(a: Vec<T>, b: Vec<T>, t: impl Fn(&T) -> i64) -> Vec<T> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => {
                let (tx, ty) = (t(x), t(y));
                if tx <= ty {
                    if tx == ty {
                        b.next();
                    }
                    out.extend(a.next());
                } else {
                    out.extend(b.next());
                }
            }
            (Some(_), None) => out.extend(a.next()),
            (None, Some(_)) => out.extend(b.next()),
            (None, None) => return out,
        }
    }
}

/// Merges two answers series by series (by labels).
pub fn merge_answers(a: Vec<SeriesSamples>, b: Vec<SeriesSamples>) -> Vec<SeriesSamples> {
    if b.is_empty() {
        return a;
    }
    let mut by_labels: BTreeMap<Labels, SeriesSamples> = BTreeMap::new();
    for s in a {
        by_labels.insert(s.labels.clone(), s);
    }
    for s in b {
        match by_labels.remove(&s.labels) {
            None => {
                by_labels.insert(s.labels.clone(), s);
            }
            Some(first) => {
                let merged = SeriesSamples {
                    labels: first.labels,
                    samples: merge_by_time(first.samples, s.samples, |x| x.t),
                    histograms: merge_by_time(first.histograms, s.histograms, |x| x.t),
                };
                by_labels.insert(merged.labels.clone(), merged);
            }
        }
    }
    by_labels.into_values().collect()
}

/// The ingesters' answer, united with the store's when there is a store.
async fn with_store<T: Ord>(
    recent: impl Future<Output = Result<Vec<T>, String>>,
    stored: Option<impl Future<Output = Result<Vec<T>, String>>>,
) -> Result<Vec<T>, String> {
    match stored {
        None => recent.await,
        Some(stored) => {
            let (a, b) = tokio::try_join!(recent, stored)?;
            Ok(union_sorted(vec![a, b]))
        }
    }
}

/// One tenant's view of all its data: ingesters and, when configured, the
/// store.
#[derive(Clone)]
pub struct TenantQueryable {
    pub ingesters: IngesterQueryable,
    pub store: Option<StoreQueryable>,
}

impl TenantQueryable {
    pub async fn label_names(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, String> {
        with_store(
            self.ingesters.label_names(matchers, start, end),
            self.store
                .as_ref()
                .map(|s| s.label_names(matchers, start, end)),
        )
        .await
    }

    pub async fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, String> {
        with_store(
            self.ingesters.label_values(name, matchers, start, end),
            self.store
                .as_ref()
                .map(|s| s.label_values(name, matchers, start, end)),
        )
        .await
    }

    pub async fn series(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Labels>, String> {
        with_store(
            self.ingesters.series(matchers, start, end),
            self.store.as_ref().map(|s| s.series(matchers, start, end)),
        )
        .await
    }

    pub async fn metadata(&self, metric: &str, limit: u32) -> Result<Vec<MetricMetadata>, String> {
        self.ingesters.metadata(metric, limit).await
    }
}

#[async_trait]
impl Queryable for TenantQueryable {
    async fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, String> {
        let Some(store) = &self.store else {
            return self.ingesters.select(matchers, mint, maxt).await;
        };
        let (recent, stored) = tokio::try_join!(
            self.ingesters.select(matchers, mint, maxt),
            store.select(matchers, mint, maxt)
        )?;
        let recent_len = recent.len();
        let merged = merge_answers(recent, stored);
        let limit = self.ingesters.max_series;
        if limit > 0 {
            // The ingesters counted theirs; count the series only the
            // store had.
            let added = merged.len() - recent_len;
            let fetched = self.ingesters.fetched.fetch_add(added, Ordering::Relaxed) + added;
            if fetched > limit {
                self.ingesters.limit_hit.store(true, Ordering::Relaxed);
                return Err(series_limit_message(limit));
            }
        }
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sample;

    fn s(name: &str, samples: &[(i64, f64)]) -> SeriesSamples {
        SeriesSamples {
            labels: Labels::from_pairs([("__name__", name)]),
            samples: samples.iter().map(|&(t, v)| Sample { t, v }).collect(),
            histograms: Vec::new(),
        }
    }

    #[test]
    fn answers_merge_per_series_one_sample_per_timestamp() {
        let recent = vec![s("a", &[(3, 3.0), (4, 4.0)]), s("b", &[(1, 1.0)])];
        let stored = vec![
            s("a", &[(1, 1.0), (2, 2.0), (3, 30.0)]),
            s("c", &[(9, 9.0)]),
        ];
        let merged = merge_answers(recent, stored);
        assert_eq!(
            merged,
            vec![
                s("a", &[(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]),
                s("b", &[(1, 1.0)]),
                s("c", &[(9, 9.0)]),
            ]
        );
    }
}
