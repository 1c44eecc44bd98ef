//! How other components talk to ingesters: a pool of gRPC clients keyed by
//! address, connected lazily and reused. This is the only item of the
//! ingester module the distributor and querier use.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

pub use crate::proto::ingester::ingester_client::IngesterClient;
pub use crate::proto::ingester::{
    LabelNamesRequest, LabelValuesRequest, MetadataRequest, PushRequest, PushResponse,
    QueryRequest, QueryStreamResponse, RejectReason, Rejected, SeriesRequest,
};

#[derive(Debug, thiserror::Error)]
#[error("ingester address {addr:?} is not valid: {message}")]
pub struct ClientError {
    pub addr: String,
    pub message: String,
}

/// gRPC clients to ingesters, one channel per address.
pub struct ClientPool {
    clients: Mutex<HashMap<String, IngesterClient<Channel>>>,
    connect_timeout: Duration,
    max_message_size: usize,
}

impl ClientPool {
    pub fn new(connect_timeout: Duration, max_message_size: usize) -> ClientPool {
        ClientPool {
            clients: Mutex::new(HashMap::new()),
            connect_timeout,
            max_message_size,
        }
    }

    /// The client for `addr` (`host:port`); connects on first use and
    /// reconnects by itself after failures.
    pub fn get(&self, addr: &str) -> Result<IngesterClient<Channel>, ClientError> {
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
