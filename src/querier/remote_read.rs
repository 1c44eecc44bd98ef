//! Prometheus remote read (`POST /api/v1/read`, also under `/prometheus`):
//! the protocol of Prometheus's `storage/remote` read handler, over the
//! tenant's ingesters.
//!
//! A request is a snappy-compressed `prometheus.ReadRequest`. Each query's
//! matchers (Prometheus semantics, anchored regexes) select the series with
//! samples in `[start_timestamp_ms, end_timestamp_ms]`, both ends included.
//! The response type is the first of the request's
//! `accepted_response_types` that we implement (SAMPLES when the list is
//! empty), as Prometheus negotiates it:
//!
//! * SAMPLES: `Content-Type: application/x-protobuf`,
//!   `Content-Encoding: snappy`, the body a snappy-compressed
//!   `prometheus.ReadResponse` with one `QueryResult` per query, in order.
//! * STREAMED_XOR_CHUNKS: `Content-Type: application/x-streamed-protobuf;
//!   proto=prometheus.ChunkedReadResponse`, the body a stream of frames, not
//!   compressed:
//!
//! ```text
//! ┌───────────────┬───────────────────────────────┬──────────────────────────────────┐
//! │ len <uvarint> │ CRC32-C(message) <4 bytes BE> │ ChunkedReadResponse <len bytes>  │
//! └───────────────┴───────────────────────────────┴──────────────────────────────────┘
//! ```
//!
//! Every frame holds part of exactly one series (its labels and some of its
//! chunks) and the index of its query; frames of a query come in series
//! order, queries in request order, and a query without series sends no
//! frame. A series' samples are re-encoded into XOR chunks of at most
//! [`SAMPLES_PER_CHUNK`] samples (as Prometheus's head cuts them); a frame
//! stops taking chunks once it reaches about [`MAX_BYTES_IN_FRAME`].
//!
//! Native histograms: SAMPLES answers carry them in `TimeSeries.histograms`,
//! always as float histograms (the querier reads every histogram as a
//! [`crate::model::histogram::FloatHistogram`]). STREAMED_XOR_CHUNKS
//! answers carry them as Prometheus FLOAT_HISTOGRAM chunks
//! ([`crate::chunk::prometheus_float_histogram`]); a series that has both
//! floats and histograms gets a chunk per run of either, in time order.
//!
//! Errors are plain text: an undecodable request is 400, one over
//! [`MAX_REQUEST_BYTES`] decompressed 413, a failing read 500. A streamed
//! response reads the first query before answering, so its failure is still
//! a 500; a later query's failure can only abort the stream, which the
//! client sees as a truncated body.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prost::Message;

use super::api::ApiState;
use crate::chunk::{XorChunk, prometheus_float_histogram};
use crate::metrics::Metrics;
use crate::model::{Labels, MatchOp, Matcher, MatcherError, Sample};
use crate::promql::{Queryable, SeriesSamples};
use crate::proto::prometheus::{self as pb, read_request::ResponseType};
use crate::tenant::Tenant;

/// The largest decompressed request we decode.
pub const MAX_REQUEST_BYTES: usize = 10 << 20;
/// Samples per re-encoded chunk, as Prometheus's head cuts chunks.
pub const SAMPLES_PER_CHUNK: usize = 120;
/// A frame's target size (Prometheus's `--storage.remote.read-max-bytes-in-frame`
/// default); a frame may exceed it by at most one chunk.
pub const MAX_BYTES_IN_FRAME: usize = 1 << 20;

pub const SAMPLES_CONTENT_TYPE: &str = "application/x-protobuf";
pub const STREAMED_CONTENT_TYPE: &str =
    "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

/// Why a remote-read request failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "remote-read request is {size} bytes decompressed, over the limit of {limit} bytes; split the queries over several requests"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("remote-read request is not valid snappy (block format): {0}")]
    Snappy(String),
    #[error("remote-read request is not a valid prometheus.ReadRequest: {0}")]
    Protobuf(String),
    #[error(
        "none of the accepted response types {0:?} is supported; supported: SAMPLES (0), STREAMED_XOR_CHUNKS (1)"
    )]
    UnsupportedResponseType(Vec<i32>),
    #[error("query {query}: unknown label matcher type {value} for label {name:?}")]
    MatcherType {
        query: usize,
        name: String,
        value: i32,
    },
    #[error("query {query}: {source}")]
    Matcher {
        query: usize,
        #[source]
        source: MatcherError,
    },
    #[error("query {query}: reading series failed: {message}")]
    Storage { query: usize, message: String },
    #[error("compressing the response failed: {0}")]
    Compress(String),
    #[error("query {query}: series {labels}: re-encoding samples as a chunk failed: {message}")]
    Encode {
        query: usize,
        labels: String,
        message: String,
    },
}

/// Remote-read requests by the response type answered (`samples`,
/// `streamed_xor_chunks`) or `error`:
/// `strata_querier_remote_read_requests_total{response_type}`.
#[derive(Clone, Default)]
pub struct ReadMetrics {
    requests: Family<Vec<(&'static str, &'static str)>, Counter>,
}

impl ReadMetrics {
    pub fn new(metrics: &Metrics) -> ReadMetrics {
        let read = ReadMetrics::default();
        metrics.with_registry(|registry| {
            registry.register(
                "strata_querier_remote_read_requests",
                "Remote-read requests by the response type answered, or error.",
                read.requests.clone(),
            )
        });
        read
    }

    fn count(&self, response_type: &'static str) {
        self.requests
            .get_or_create(&vec![("response_type", response_type)])
            .inc();
    }
}

/// `POST /api/v1/read`.
pub async fn read(State(state): State<ApiState>, Tenant(tenant): Tenant, body: Bytes) -> Response {
    let request = match decode_request(&body, MAX_REQUEST_BYTES) {
        Ok(request) => request,
        Err(err) => {
            state.remote_read.count("error");
            return err.into_response();
        }
    };
    let queryable = Arc::new(state.querier.queryable(&tenant));
    let answered = match negotiate(&request.accepted_response_types) {
        Ok(response_type) => respond_as(queryable, request, response_type)
            .await
            .map(|response| (response_type, response)),
        Err(err) => Err(err),
    };
    match answered {
        Ok((response_type, response)) => {
            state.remote_read.count(match response_type {
                ResponseType::Samples => "samples",
                ResponseType::StreamedXorChunks => "streamed_xor_chunks",
            });
            response
        }
        Err(err) => {
            state.remote_read.count("error");
            tracing::warn!(tenant = %tenant, error = %err, "remote read failed");
            err.into_response()
        }
    }
}

/// Decompresses (at most `limit` bytes) and decodes a request body.
pub fn decode_request(body: &[u8], limit: usize) -> Result<pb::ReadRequest, ReadError> {
    let size = snap::raw::decompress_len(body).map_err(|e| ReadError::Snappy(e.to_string()))?;
    if size > limit {
        return Err(ReadError::TooLarge { size, limit });
    }
    let bytes = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| ReadError::Snappy(e.to_string()))?;
    pb::ReadRequest::decode(bytes.as_slice()).map_err(|e| ReadError::Protobuf(e.to_string()))
}

/// The first accepted response type we implement; SAMPLES when none is named.
pub fn negotiate(accepted: &[i32]) -> Result<ResponseType, ReadError> {
    if accepted.is_empty() {
        return Ok(ResponseType::Samples);
    }
    accepted
        .iter()
        .find_map(|t| ResponseType::try_from(*t).ok())
        .ok_or_else(|| ReadError::UnsupportedResponseType(accepted.to_vec()))
}

/// A query's matchers, with Prometheus's semantics.
pub fn matchers(query: usize, proto: &[pb::LabelMatcher]) -> Result<Vec<Matcher>, ReadError> {
    use pb::label_matcher::Type;
    proto
        .iter()
        .map(|m| {
            let op = match Type::try_from(m.r#type) {
                Ok(Type::Eq) => MatchOp::Equal,
                Ok(Type::Neq) => MatchOp::NotEqual,
                Ok(Type::Re) => MatchOp::RegexMatch,
                Ok(Type::Nre) => MatchOp::RegexNoMatch,
                Err(_) => {
                    return Err(ReadError::MatcherType {
                        query,
                        name: m.name.clone(),
                        value: m.r#type,
                    });
                }
            };
            Matcher::new(op, &m.name, &m.value)
                .map_err(|source| ReadError::Matcher { query, source })
        })
        .collect()
}

/// Answers a decoded request from `queryable`.
pub async fn respond<Q>(queryable: Arc<Q>, request: pb::ReadRequest) -> Result<Response, ReadError>
where
    Q: Queryable + 'static,
{
    let response_type = negotiate(&request.accepted_response_types)?;
    respond_as(queryable, request, response_type).await
}

/// Answers a decoded request from `queryable` in `response_type`, as
/// [`negotiate`] chose it.
async fn respond_as<Q>(
    queryable: Arc<Q>,
    request: pb::ReadRequest,
    response_type: ResponseType,
) -> Result<Response, ReadError>
where
    Q: Queryable + 'static,
{
    tracing::debug!(
        queries = request.queries.len(),
        accepted = ?request.accepted_response_types,
        response_type = response_type.as_str_name(),
        "remote read"
    );
    // Every query's matchers are checked before anything is read.
    let queries = request
        .queries
        .iter()
        .enumerate()
        .map(|(index, q)| {
            Ok(PreparedQuery {
                index,
                matchers: matchers(index, &q.matchers)?,
                mint: q.start_timestamp_ms,
                maxt: q.end_timestamp_ms,
            })
        })
        .collect::<Result<Vec<_>, ReadError>>()?;
    match response_type {
        ResponseType::Samples => samples_response(queryable.as_ref(), &queries).await,
        ResponseType::StreamedXorChunks => streamed_response(queryable, queries).await,
    }
}

struct PreparedQuery {
    index: usize,
    matchers: Vec<Matcher>,
    mint: i64,
    maxt: i64,
}

impl PreparedQuery {
    async fn select<Q: Queryable + ?Sized>(
        &self,
        queryable: &Q,
    ) -> Result<Vec<SeriesSamples>, ReadError> {
        queryable
            .select(&self.matchers, self.mint, self.maxt)
            .await
            .map_err(|message| ReadError::Storage {
                query: self.index,
                message,
            })
    }
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

async fn samples_response<Q: Queryable + ?Sized>(
    queryable: &Q,
    queries: &[PreparedQuery],
) -> Result<Response, ReadError> {
    let mut results = Vec::with_capacity(queries.len());
    for query in queries {
        let series = query.select(queryable).await?;
        results.push(pb::QueryResult {
            timeseries: series
                .into_iter()
                .map(|s| pb::TimeSeries {
                    labels: proto_labels(&s.labels),
                    samples: s
                        .samples
                        .iter()
                        .map(|p| pb::Sample {
                            value: p.v,
                            timestamp: p.t,
                        })
                        .collect(),
                    // As float histograms: the querier reads every
                    // histogram as one (integer counts stay exact up to
                    // 2^53).
                    histograms: s
                        .histograms
                        .iter()
                        .map(|p| crate::proto::histogram::float_to_proto(p.t, &p.h))
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        });
    }
    let message = pb::ReadResponse { results }.encode_to_vec();
    let body = snap::raw::Encoder::new()
        .compress_vec(&message)
        .map_err(|e| ReadError::Compress(e.to_string()))?;
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SAMPLES_CONTENT_TYPE),
    );
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    Ok(response)
}

/// Reads the first query before answering (so that its failure is a 500),
/// then streams the frames, reading each later query when the frames before
/// it are sent.
async fn streamed_response<Q>(
    queryable: Arc<Q>,
    queries: Vec<PreparedQuery>,
) -> Result<Response, ReadError>
where
    Q: Queryable + 'static,
{
    let mut pending = VecDeque::new();
    let mut queries = VecDeque::from(queries);
    if let Some(first) = queries.pop_front() {
        let series = first.select(queryable.as_ref()).await?;
        pending.extend(query_frames(first.index, &series, MAX_BYTES_IN_FRAME)?);
    }
    let state = (queryable, queries, pending);
    let stream = futures::stream::unfold(Some(state), |state| async move {
        let (queryable, mut queries, mut pending) = state?;
        loop {
            if let Some(frame) = pending.pop_front() {
                return Some((Ok(frame), Some((queryable, queries, pending))));
            }
            let query = queries.pop_front()?;
            let frames = match query.select(queryable.as_ref()).await {
                Ok(series) => query_frames(query.index, &series, MAX_BYTES_IN_FRAME),
                Err(err) => Err(err),
            };
            match frames {
                Ok(frames) => pending.extend(frames),
                Err(err) => {
                    tracing::warn!(error = %err, "remote read stream aborted");
                    // The error ends the body early; nothing follows it.
                    return Some((Err(std::io::Error::other(err.to_string())), None));
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(STREAMED_CONTENT_TYPE),
    );
    Ok(response)
}

/// A series' samples as XOR chunks of at most [`SAMPLES_PER_CHUNK`] samples.
/// The samples must be sorted by time, one per timestamp.
pub fn encode_chunks(samples: &[Sample]) -> Result<Vec<pb::Chunk>, crate::chunk::ChunkError> {
    samples
        .chunks(SAMPLES_PER_CHUNK)
        .map(|run| {
            let mut chunk = XorChunk::new();
            let mut appender = chunk.appender();
            for s in run {
                appender.append(s.t, s.v)?;
            }
            Ok(pb::Chunk {
                // `chunks` never yields an empty run.
                min_time_ms: run.first().map_or(0, |s| s.t),
                max_time_ms: run.last().map_or(0, |s| s.t),
                r#type: pb::chunk::Encoding::Xor as i32,
                data: chunk.into_bytes(),
            })
        })
        .collect()
}

/// A series' floats as XOR chunks and its native histograms as
/// float-histogram chunks, in time order: each run of consecutive floats
/// (or histograms) is encoded on its own, so no two chunks overlap.
pub fn encode_series_chunks(
    series: &SeriesSamples,
) -> Result<Vec<pb::Chunk>, crate::chunk::ChunkError> {
    if series.histograms.is_empty() {
        return encode_chunks(&series.samples);
    }
    let mut out = Vec::new();
    let (floats, histograms) = (&series.samples, &series.histograms);
    let (mut f, mut h) = (0, 0);
    while f < floats.len() || h < histograms.len() {
        if h == histograms.len() || (f < floats.len() && floats[f].t < histograms[h].t) {
            let end = histograms.get(h).map_or(floats.len(), |next| {
                f + floats[f..].partition_point(|s| s.t < next.t)
            });
            out.extend(encode_chunks(&floats[f..end])?);
            f = end;
        } else {
            let end = floats.get(f).map_or(histograms.len(), |next| {
                h + histograms[h..].partition_point(|p| p.t < next.t)
            });
            out.extend(
                prometheus_float_histogram::encode(&histograms[h..end])
                    .into_iter()
                    .map(|c| pb::Chunk {
                        min_time_ms: c.min_time,
                        max_time_ms: c.max_time,
                        r#type: pb::chunk::Encoding::FloatHistogram as i32,
                        data: c.data,
                    }),
            );
            h = end;
        }
    }
    Ok(out)
}

/// The frames of one query's series: each frame part of one series, cut
/// once its chunks reach `max_bytes_in_frame` (less the labels' size).
pub fn query_frames(
    query: usize,
    series: &[SeriesSamples],
    max_bytes_in_frame: usize,
) -> Result<Vec<Bytes>, ReadError> {
    let mut frames = Vec::new();
    for s in series {
        let chunks = encode_series_chunks(s).map_err(|e| ReadError::Encode {
            query,
            labels: s.labels.to_string(),
            message: e.to_string(),
        })?;
        let labels = proto_labels(&s.labels);
        // Sizes as encoded inside `ChunkedSeries` (field keys and lengths included).
        let budget = max_bytes_in_frame as i64
            - prost::encoding::message::encoded_len_repeated(1, &labels) as i64;
        let mut batch: Vec<pb::Chunk> = Vec::new();
        let mut left = budget;
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            left -= prost::encoding::message::encoded_len(2, &chunk) as i64;
            batch.push(chunk);
            if left > 0 && i + 1 < count {
                continue;
            }
            let message = pb::ChunkedReadResponse {
                chunked_series: vec![pb::ChunkedSeries {
                    labels: labels.clone(),
                    chunks: std::mem::take(&mut batch),
                }],
                query_index: query as i64,
            };
            frames.push(frame(&message.encode_to_vec()));
            left = budget;
        }
    }
    Ok(frames)
}

/// One frame: uvarint length, big-endian CRC32-C of `message`, `message`.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 14);
    prost::encoding::encode_varint(message.len() as u64, &mut out);
    out.extend_from_slice(&crc32c::crc32c(message).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use prost::bytes::Buf;

    /// Series in memory, selected with the ingesters' semantics.
    struct Memory(Vec<SeriesSamples>);

    #[async_trait]
    impl Queryable for Memory {
        async fn select(
            &self,
            matchers: &[Matcher],
            mint: i64,
            maxt: i64,
        ) -> Result<Vec<SeriesSamples>, String> {
            if matchers.iter().any(|m| m.name == "fail") {
                return Err("disk on fire".to_string());
            }
            Ok(self
                .0
                .iter()
                .filter(|s| {
                    !matchers.is_empty()
                        && matchers
                            .iter()
                            .all(|m| m.matches(s.labels.get(&m.name).unwrap_or("")))
                })
                .map(|s| SeriesSamples {
                    histograms: Vec::new(),
                    labels: s.labels.clone(),
                    samples: s
                        .samples
                        .iter()
                        .filter(|p| p.t >= mint && p.t <= maxt)
                        .copied()
                        .collect(),
                })
                .filter(|s| !s.samples.is_empty())
                .collect())
        }
    }

    fn memory() -> Arc<Memory> {
        let series = |job: &str, n: i64| SeriesSamples {
            histograms: Vec::new(),
            labels: Labels::from_pairs([("__name__", "up"), ("job", job)]),
            samples: (0..n)
                .map(|i| Sample {
                    t: 1000 * i,
                    v: i as f64,
                })
                .collect(),
        };
        Arc::new(Memory(vec![series("api", 300), series("apiserver", 5)]))
    }

    fn matcher(kind: pb::label_matcher::Type, name: &str, value: &str) -> pb::LabelMatcher {
        pb::LabelMatcher {
            r#type: kind as i32,
            name: name.into(),
            value: value.into(),
        }
    }

    fn query(start: i64, end: i64, matchers: Vec<pb::LabelMatcher>) -> pb::Query {
        pb::Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers,
            hints: None,
        }
    }

    async fn body(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body reads")
            .to_vec()
    }

    /// Splits a streamed body into its messages, checking every CRC.
    fn unframe(mut bytes: &[u8]) -> Vec<pb::ChunkedReadResponse> {
        let mut out = Vec::new();
        while bytes.has_remaining() {
            let len = prost::encoding::decode_varint(&mut bytes).expect("length") as usize;
            let crc = bytes.get_u32();
            let (message, rest) = bytes.split_at(len);
            assert_eq!(crc32c::crc32c(message), crc, "frame CRC");
            out.push(pb::ChunkedReadResponse::decode(message).expect("frame decodes"));
            bytes = rest;
        }
        out
    }

    #[test]
    fn negotiation_takes_the_first_supported_type() {
        assert_eq!(negotiate(&[]).unwrap(), ResponseType::Samples);
        assert_eq!(negotiate(&[1, 0]).unwrap(), ResponseType::StreamedXorChunks);
        assert_eq!(negotiate(&[0, 1]).unwrap(), ResponseType::Samples);
        assert_eq!(negotiate(&[7, 1]).unwrap(), ResponseType::StreamedXorChunks);
        let err = negotiate(&[7]).unwrap_err();
        assert!(
            matches!(err, ReadError::UnsupportedResponseType(_)),
            "{err}"
        );
    }

    #[test]
    fn bad_requests_are_400_and_oversized_413() {
        let err = decode_request(b"\xff\xff\xff\xff\xff\xff", MAX_REQUEST_BYTES).unwrap_err();
        assert!(matches!(err, ReadError::Snappy(_)), "{err}");
        let garbage = snap::raw::Encoder::new()
            .compress_vec(b"\x0a\xff\xff")
            .unwrap();
        let err = decode_request(&garbage, MAX_REQUEST_BYTES).unwrap_err();
        assert!(matches!(err, ReadError::Protobuf(_)), "{err}");
        let big = snap::raw::Encoder::new()
            .compress_vec(&vec![0u8; 1000])
            .unwrap();
        let err = decode_request(&big, 999).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { .. }), "{err}");
        let err = matchers(2, &[matcher(pb::label_matcher::Type::Re, "job", "(")]).unwrap_err();
        assert!(matches!(err, ReadError::Matcher { .. }), "{err}");
        assert!(err.to_string().starts_with("query 2:"), "{err}");
        let unknown = pb::LabelMatcher {
            r#type: 9,
            name: "job".into(),
            value: "x".into(),
        };
        assert!(matches!(
            matchers(0, &[unknown]),
            Err(ReadError::MatcherType { value: 9, .. })
        ));
    }

    #[tokio::test]
    async fn samples_response_holds_each_query_in_order() {
        use pb::label_matcher::Type;
        let request = pb::ReadRequest {
            queries: vec![
                // Anchored: "api" does not match "apiserver".
                query(10_000, 12_000, vec![matcher(Type::Re, "job", "api")]),
                query(0, 1_000_000, vec![matcher(Type::Eq, "job", "nothing")]),
                query(3_000, 4_000, vec![matcher(Type::Neq, "job", "api")]),
            ],
            accepted_response_types: vec![],
        };
        let response = respond(memory(), request).await.unwrap();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            SAMPLES_CONTENT_TYPE
        );
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "snappy");
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body(response).await)
            .unwrap();
        let decoded = pb::ReadResponse::decode(raw.as_slice()).unwrap();
        assert_eq!(decoded.results.len(), 3);
        let first = &decoded.results[0].timeseries;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].labels[1].value, "api");
        let times: Vec<i64> = first[0].samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(times, vec![10_000, 11_000, 12_000], "both ends included");
        assert!(decoded.results[1].timeseries.is_empty());
        assert_eq!(
            decoded.results[2].timeseries[0].labels[1].value,
            "apiserver"
        );
    }

    #[tokio::test]
    async fn streamed_response_frames_chunks_of_120_samples() {
        use pb::label_matcher::Type;
        let request = pb::ReadRequest {
            queries: vec![
                query(0, 1_000_000, vec![matcher(Type::Eq, "__name__", "up")]),
                query(0, 1_000_000, vec![matcher(Type::Eq, "job", "nothing")]),
                query(0, 2_000, vec![matcher(Type::Eq, "job", "apiserver")]),
            ],
            accepted_response_types: vec![ResponseType::StreamedXorChunks as i32],
        };
        let response = respond(memory(), request).await.unwrap();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            STREAMED_CONTENT_TYPE
        );
        assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
        let messages = unframe(&body(response).await);
        let indexes: Vec<i64> = messages.iter().map(|m| m.query_index).collect();
        assert_eq!(
            indexes,
            vec![0, 0, 2],
            "one frame per series, none for query 1"
        );
        let api = &messages[0].chunked_series[0];
        let sizes: Vec<usize> = api
            .chunks
            .iter()
            .map(|c| XorChunk::from_bytes(c.data.clone()).unwrap().num_samples())
            .collect();
        assert_eq!(sizes, vec![120, 120, 60]);
        let mut samples = Vec::new();
        for c in &api.chunks {
            assert_eq!(c.r#type, pb::chunk::Encoding::Xor as i32);
            let chunk = XorChunk::from_bytes(c.data.clone()).unwrap();
            let got: Vec<(i64, f64)> = chunk.iter().collect();
            assert_eq!(got.first().unwrap().0, c.min_time_ms);
            assert_eq!(got.last().unwrap().0, c.max_time_ms);
            samples.extend(got);
        }
        let expected: Vec<(i64, f64)> = (0..300).map(|i| (1000 * i, i as f64)).collect();
        assert_eq!(samples, expected);
        let tail = &messages[2].chunked_series[0];
        assert_eq!(tail.chunks.len(), 1);
        assert_eq!(
            (tail.chunks[0].min_time_ms, tail.chunks[0].max_time_ms),
            (0, 2_000)
        );
    }

    #[test]
    fn a_series_splits_over_frames_at_the_size_limit() {
        let series = SeriesSamples {
            histograms: Vec::new(),
            labels: Labels::from_pairs([("__name__", "x")]),
            samples: (0..1200)
                .map(|i| Sample {
                    t: i * 15_000 + (i * 7919) % 1000,
                    v: (i as f64).sin(),
                })
                .collect(),
        };
        let frames = query_frames(4, std::slice::from_ref(&series), 3000).unwrap();
        let mut bytes = Vec::new();
        for f in &frames {
            bytes.extend_from_slice(f);
        }
        let messages = unframe(&bytes);
        assert!(messages.len() > 1, "split into {} frames", messages.len());
        let mut got = Vec::new();
        for m in &messages {
            assert_eq!(m.query_index, 4);
            assert_eq!(m.chunked_series.len(), 1);
            assert_eq!(m.chunked_series[0].labels[0].value, "x");
            // A frame goes over the limit by at most its last chunk.
            let last = m.chunked_series[0].chunks.last().unwrap();
            let last = prost::encoding::message::encoded_len(2, last);
            assert!(m.encoded_len() < 3000 + last + 16, "{}", m.encoded_len());
            for c in &m.chunked_series[0].chunks {
                got.extend(XorChunk::from_bytes(c.data.clone()).unwrap().iter());
            }
        }
        let expected: Vec<(i64, f64)> = series.samples.iter().map(|s| (s.t, s.v)).collect();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_failing_read_is_500_before_streaming() {
        let request = pb::ReadRequest {
            queries: vec![query(
                0,
                1,
                vec![matcher(pb::label_matcher::Type::Eq, "fail", "1")],
            )],
            accepted_response_types: vec![1],
        };
        let err = respond(memory(), request).await.unwrap_err();
        assert!(matches!(err, ReadError::Storage { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_later_failing_read_aborts_the_stream() {
        use pb::label_matcher::Type;
        let request = pb::ReadRequest {
            queries: vec![
                query(0, 1_000_000, vec![matcher(Type::Eq, "job", "api")]),
                query(0, 1, vec![matcher(Type::Eq, "fail", "1")]),
            ],
            accepted_response_types: vec![ResponseType::StreamedXorChunks as i32],
        };
        let response = respond(memory(), request).await.unwrap();
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        let read = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        assert!(read.is_err(), "the body ends in an error, not a clean end");
    }
}
