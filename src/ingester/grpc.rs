//! The ingester's gRPC API (`proto/strata/ingester.proto`): pushes from
//! distributors and reads from queriers. Every call is scoped to the tenant
//! it names; a tenant without a head has no data, never another's.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::State;
use super::push::{PushFailure, push};
use crate::model::{Labels, MatchOp, Matcher};
use crate::proto::ingester::ingester_server::{Ingester, IngesterServer};
use crate::proto::ingester::{
    ChunkEncoding, ExemplarQueryRequest, ExemplarQueryResponse, LabelNamesRequest,
    LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, MetadataRequest, MetadataResponse,
    PushRequest, PushResponse, QueryRequest, QueryStreamResponse, SeriesRequest, SeriesResponse,
};
use crate::proto::prometheus::{self as pb, label_matcher};
use crate::tenant::TenantId;

/// Refused series described in one push answer (all are counted).
const MAX_REJECTIONS_IN_RESPONSE: usize = 100;

/// Series per streamed query message.
const SERIES_PER_MESSAGE: usize = 128;

#[derive(Clone)]
pub struct IngesterService {
    state: Arc<State>,
}

impl IngesterService {
    pub(crate) fn new(state: Arc<State>) -> IngesterService {
        IngesterService { state }
    }

    /// The tonic server for this service.
    pub fn into_server(self, max_message_size: usize) -> IngesterServer<IngesterService> {
        IngesterServer::new(self)
            .max_decoding_message_size(max_message_size)
            .max_encoding_message_size(max_message_size)
    }
}

fn tenant(id: &str) -> Result<TenantId, Status> {
    TenantId::parse(id).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Remote-read/protobuf matchers to ours.
pub fn matchers(from: &[pb::LabelMatcher]) -> Result<Vec<Matcher>, Status> {
    from.iter()
        .map(|m| {
            let op = match label_matcher::Type::try_from(m.r#type) {
                Ok(label_matcher::Type::Eq) => MatchOp::Equal,
                Ok(label_matcher::Type::Neq) => MatchOp::NotEqual,
                Ok(label_matcher::Type::Re) => MatchOp::RegexMatch,
                Ok(label_matcher::Type::Nre) => MatchOp::RegexNoMatch,
                Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "unknown matcher type {}",
                        m.r#type
                    )));
                }
            };
            Matcher::new(op, &m.name, &m.value).map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .collect()
}

fn proto_labels(labels: &Labels) -> Vec<pb::Label> {
    labels
        .iter()
        .map(|l| pb::Label {
            name: l.name.clone(),
            value: l.value.clone(),
        })
        .collect()
}

type QueryStream = Pin<Box<dyn Stream<Item = Result<QueryStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Ingester for IngesterService {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        if !self.state.accepting.load(Ordering::Acquire) {
            return Err(Status::unavailable(
                "the ingester is not accepting writes (starting or leaving)",
            ));
        }
        let Ok(_permit) = self.state.inflight.try_acquire() else {
            return Err(Status::resource_exhausted(
                "too many pushes in flight on this ingester (ingester.max_inflight_push_requests)",
            ));
        };
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let limits = self.state.overrides.get(tenant.as_str());
        if !request.metadata.is_empty() {
            let refused = self.state.metadata.add(
                tenant.as_str(),
                &request.metadata,
                limits.max_metadata_per_metric,
            );
            self.state.discarded.add(
                tenant.as_str(),
                crate::limits::DiscardReason::MetadataLimit,
                refused as u64,
            );
        }
        if request.timeseries.is_empty() {
            return Ok(Response::new(PushResponse::default()));
        }
        let head = self.state.heads.get_or_create(tenant.as_str());
        let sequencer = self.state.sequencer.lock().clone();
        match push(sequencer, head, request.timeseries, limits).await {
            Ok(applied) => {
                self.state.samples_appended.inc_by(applied.samples_appended);
                self.state
                    .exemplars_appended
                    .inc_by(applied.exemplars_appended);
                self.state
                    .exemplars_rejected
                    .inc_by(applied.exemplars_rejected);
                for (reason, count) in &applied.discarded {
                    self.state.discarded.add(tenant.as_str(), *reason, *count);
                }
                let samples_rejected = applied.discarded.iter().map(|(_, n)| *n).sum();
                let mut rejected = applied.rejected;
                rejected.truncate(MAX_REJECTIONS_IN_RESPONSE);
                Ok(Response::new(PushResponse {
                    samples_appended: applied.samples_appended,
                    rejected,
                    samples_rejected,
                    histograms_appended: applied.histograms_appended,
                    histograms_rejected: applied.histograms_rejected,
                    exemplars_appended: applied.exemplars_appended,
                    exemplars_rejected: applied.exemplars_rejected,
                }))
            }
            Err(PushFailure::NotReady(why)) => Err(Status::unavailable(why)),
            Err(err @ PushFailure::Wal(_)) => Err(Status::internal(err.to_string())),
        }
    }

    type QueryStreamStream = QueryStream;

    async fn query_stream(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<Self::QueryStreamStream>, Status> {
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let matchers = matchers(&request.matchers)?;
        let Some(head) = self.state.heads.get(tenant.as_str()) else {
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        };
        let series =
            tokio::task::block_in_place(|| head.query(&matchers, request.start_ms, request.end_ms));
        let messages: Vec<Result<QueryStreamResponse, Status>> = series
            .chunks(SERIES_PER_MESSAGE)
            .map(|batch| {
                Ok(QueryStreamResponse {
                    series: batch
                        .iter()
                        .map(|s| pb::ChunkedSeries {
                            labels: proto_labels(&s.labels),
                            chunks: s
                                .chunks
                                .iter()
                                .map(|c| pb::Chunk {
                                    min_time_ms: c.min_t,
                                    max_time_ms: c.max_t,
                                    r#type: ChunkEncoding::Xor as i32,
                                    data: c.bytes.clone(),
                                })
                                .chain(s.histogram_chunks.iter().map(|c| pb::Chunk {
                                    min_time_ms: c.min_t,
                                    max_time_ms: c.max_t,
                                    r#type: if c.float {
                                        ChunkEncoding::StrataFloatHistogram
                                    } else {
                                        ChunkEncoding::StrataHistogram
                                    } as i32,
                                    data: c.bytes.clone(),
                                }))
                                .collect(),
                        })
                        .collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(messages))))
    }

    async fn label_names(
        &self,
        request: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let matchers = matchers(&request.matchers)?;
        let names = self
            .state
            .heads
            .get(tenant.as_str())
            .map(|head| head.label_names(&matchers, request.start_ms, request.end_ms))
            .unwrap_or_default();
        Ok(Response::new(LabelNamesResponse { names }))
    }

    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let matchers = matchers(&request.matchers)?;
        let values = self
            .state
            .heads
            .get(tenant.as_str())
            .map(|head| {
                head.label_values(&request.name, &matchers, request.start_ms, request.end_ms)
            })
            .unwrap_or_default();
        Ok(Response::new(LabelValuesResponse { values }))
    }

    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<SeriesResponse>, Status> {
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let matchers = matchers(&request.matchers)?;
        let series = self
            .state
            .heads
            .get(tenant.as_str())
            .map(|head| head.series(&matchers, request.start_ms, request.end_ms))
            .unwrap_or_default()
            .iter()
            .map(|labels| pb::Labels {
                labels: proto_labels(labels),
            })
            .collect();
        Ok(Response::new(SeriesResponse { series }))
    }

    async fn metadata(
        &self,
        request: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let metadata =
            self.state
                .metadata
                .get(tenant.as_str(), &request.metric, request.limit as usize);
        Ok(Response::new(MetadataResponse { metadata }))
    }

    async fn query_exemplars(
        &self,
        request: Request<ExemplarQueryRequest>,
    ) -> Result<Response<ExemplarQueryResponse>, Status> {
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let sets = request
            .matcher_sets
            .iter()
            .map(|set| matchers(&set.matchers))
            .collect::<Result<Vec<_>, _>>()?;
        let found = self
            .state
            .heads
            .get(tenant.as_str())
            .map(|head| {
                head.exemplars
                    .lock()
                    .select(request.start_ms, request.end_ms, &sets)
            })
            .unwrap_or_default();
        let timeseries = found
            .into_iter()
            .map(|s| pb::TimeSeries {
                labels: proto_labels(&s.series),
                exemplars: s
                    .exemplars
                    .iter()
                    .map(|e| pb::Exemplar {
                        labels: proto_labels(&e.labels),
                        value: e.value,
                        timestamp: e.t,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(ExemplarQueryResponse { timeseries }))
    }
}
