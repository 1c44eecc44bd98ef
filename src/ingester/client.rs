//! How other components talk to ingesters: a pool of handles keyed by
//! address — gRPC clients, connected lazily and reused, or, for the
//! ingester of this very process, a direct call without the loopback
//! network. This is the only item of the ingester module the distributor and
//! querier use.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use super::IngesterService;
use crate::chunk::merge::{ChunkData, HistogramChunkData};
use crate::proto::ingester::ChunkEncoding;
use crate::proto::ingester::ingester_server::Ingester as _;
use crate::proto::prometheus::{
    Chunk, ChunkedSeries, Labels as ProtoLabels, MetricMetadata, TimeSeries,
};

pub use crate::proto::ingester::ingester_client::IngesterClient;
pub use crate::proto::ingester::{
    ExemplarQueryRequest, LabelMatchers, LabelNamesRequest, LabelValuesRequest, MetadataRequest,
    PushRequest, PushResponse, QueryRequest, QueryStreamResponse, RejectReason, Rejected,
    SeriesRequest,
};

/// One chunk of a QueryStream answer, by its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeriesChunkData {
    Xor(ChunkData),
    Histogram(HistogramChunkData),
}

/// A QueryStream chunk of a type this reader does not know (an ingester
/// newer than the querier).
#[derive(Debug, thiserror::Error)]
#[error("an ingester sent a chunk of unknown encoding {encoding}; upgrade the querier")]
pub struct UnknownChunkEncoding {
    pub encoding: i32,
}

/// A QueryStream chunk as the merges take it, by its
/// [`ChunkEncoding`] (see `proto/strata/ingester.proto`).
pub fn decode_chunks(chunk: Chunk) -> Result<SeriesChunkData, UnknownChunkEncoding> {
    let (min_t, max_t, bytes) = (chunk.min_time_ms, chunk.max_time_ms, chunk.data);
    match ChunkEncoding::try_from(chunk.r#type) {
        Ok(ChunkEncoding::Xor) => Ok(SeriesChunkData::Xor(ChunkData {
            min_t,
            max_t,
            bytes,
        })),
        Ok(encoding @ (ChunkEncoding::StrataHistogram | ChunkEncoding::StrataFloatHistogram)) => {
            Ok(SeriesChunkData::Histogram(HistogramChunkData {
                min_t,
                max_t,
                float: encoding == ChunkEncoding::StrataFloatHistogram,
                bytes,
            }))
        }
        Ok(ChunkEncoding::Unspecified) | Err(_) => Err(UnknownChunkEncoding {
            encoding: chunk.r#type,
        }),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("ingester address {addr:?} is not valid: {message}")]
pub struct ClientError {
    pub addr: String,
    pub message: String,
}

/// One ingester, over gRPC or in this process.
#[derive(Clone)]
pub enum IngesterHandle {
    Remote(IngesterClient<Channel>),
    Local(IngesterService),
}

impl IngesterHandle {
    pub async fn push(&mut self, request: PushRequest) -> Result<PushResponse, Status> {
        Ok(match self {
            IngesterHandle::Remote(client) => client.push(request).await?.into_inner(),
            IngesterHandle::Local(service) => {
                service.push(Request::new(request)).await?.into_inner()
            }
        })
    }

    /// Every series of a query, its streamed batches collected.
    pub async fn query(&mut self, request: QueryRequest) -> Result<Vec<ChunkedSeries>, Status> {
        let mut series = Vec::new();
        match self {
            IngesterHandle::Remote(client) => {
                let mut stream = client.query_stream(request).await?.into_inner();
                while let Some(message) = stream.message().await? {
                    series.extend(message.series);
                }
            }
            IngesterHandle::Local(service) => {
                let mut stream = service
                    .query_stream(Request::new(request))
                    .await?
                    .into_inner();
                while let Some(message) = stream.next().await {
                    series.extend(message?.series);
                }
            }
        }
        Ok(series)
    }

    pub async fn label_names(&mut self, request: LabelNamesRequest) -> Result<Vec<String>, Status> {
        Ok(match self {
            IngesterHandle::Remote(client) => client.label_names(request).await?.into_inner().names,
            IngesterHandle::Local(service) => {
                service
                    .label_names(Request::new(request))
                    .await?
                    .into_inner()
                    .names
            }
        })
    }

    pub async fn label_values(
        &mut self,
        request: LabelValuesRequest,
    ) -> Result<Vec<String>, Status> {
        Ok(match self {
            IngesterHandle::Remote(client) => {
                client.label_values(request).await?.into_inner().values
            }
            IngesterHandle::Local(service) => {
                service
                    .label_values(Request::new(request))
                    .await?
                    .into_inner()
                    .values
            }
        })
    }

    pub async fn series(&mut self, request: SeriesRequest) -> Result<Vec<ProtoLabels>, Status> {
        Ok(match self {
            IngesterHandle::Remote(client) => client.series(request).await?.into_inner().series,
            IngesterHandle::Local(service) => {
                service
                    .series(Request::new(request))
                    .await?
                    .into_inner()
                    .series
            }
        })
    }

    /// Series with their exemplars (labels and exemplars only).
    pub async fn query_exemplars(
        &mut self,
        request: ExemplarQueryRequest,
    ) -> Result<Vec<TimeSeries>, Status> {
        Ok(match self {
            IngesterHandle::Remote(client) => {
                client
                    .query_exemplars(request)
                    .await?
                    .into_inner()
                    .timeseries
            }
            IngesterHandle::Local(service) => {
                service
                    .query_exemplars(Request::new(request))
                    .await?
                    .into_inner()
                    .timeseries
            }
        })
    }

    pub async fn metadata(
        &mut self,
        request: MetadataRequest,
    ) -> Result<Vec<MetricMetadata>, Status> {
        Ok(match self {
            IngesterHandle::Remote(client) => client.metadata(request).await?.into_inner().metadata,
            IngesterHandle::Local(service) => {
                service
                    .metadata(Request::new(request))
                    .await?
                    .into_inner()
                    .metadata
            }
        })
    }
}

/// Handles to ingesters: one gRPC channel per address, or the local one.
pub struct ClientPool {
    clients: Mutex<HashMap<String, IngesterClient<Channel>>>,
    local: Mutex<Option<(String, IngesterService)>>,
    connect_timeout: Duration,
    max_message_size: usize,
}

impl ClientPool {
    pub fn new(connect_timeout: Duration, max_message_size: usize) -> ClientPool {
        ClientPool {
            clients: Mutex::new(HashMap::new()),
            local: Mutex::new(None),
            connect_timeout,
            max_message_size,
        }
    }

    /// Calls to the ingester advertised at `addr` go straight to
    /// `service` (the ingester of this process).
    pub fn set_local(&self, addr: &str, service: IngesterService) {
        *self.local.lock() = Some((addr.to_string(), service));
    }

    /// The handle for `addr` (`host:port`): the local ingester, or a gRPC
    /// client that connects on first use and reconnects after failures.
    pub fn get(&self, addr: &str) -> Result<IngesterHandle, ClientError> {
        if let Some((local, service)) = self.local.lock().as_ref()
            && local == addr
        {
            return Ok(IngesterHandle::Local(service.clone()));
        }
        self.remote(addr).map(IngesterHandle::Remote)
    }

    fn remote(&self, addr: &str) -> Result<IngesterClient<Channel>, ClientError> {
        if let Some(client) = self.clients.lock().get(addr) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ClientError {
                addr: addr.to_string(),
                message: e.to_string(),
            })?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10));
        let client = IngesterClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(self.max_message_size)
            .max_encoding_message_size(self.max_message_size);
        self.clients.lock().insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// Forgets the client of an address (e.g. an instance left the ring).
    pub fn remove(&self, addr: &str) {
        self.clients.lock().remove(addr);
    }
}
