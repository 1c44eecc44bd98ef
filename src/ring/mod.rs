//! The token ring: which ingesters own which series.
//!
//! - [`desc`]: one descriptor per member (tokens, state, zone, heartbeat).
//! - [`token`]: token generation and key hashing.
//! - [`read`]: an immutable [`read::RingView`] answering replication-set lookups.
//! - [`kv`]: the KV store the descriptors live in (etcd, or in memory).
//! - [`client`]: keeps a [`read::RingView`] current by watching the KV store.
//! - [`lifecycler`]: registers this process as a member and heartbeats.
//! - [`http`]: the `/ring` status page and its forget action.

pub mod batch;
pub mod client;
pub mod desc;
pub mod http;
pub mod kv;
pub mod lifecycler;
pub mod read;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use kv::etcd::{EtcdConfig, EtcdKv};
use kv::memory::MemoryKv;
use kv::{KvError, KvStore};

/// Which KV backend holds the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    /// In this process only: for the single-process mode.
    Memory,
    /// etcd v3: for a cluster.
    Etcd,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvStoreConfig {
    /// Backend for the ring: memory (single process) or etcd.
    pub store: KvBackend,
    /// Prefix of every key Strata writes in the KV store.
    pub prefix: String,
    pub etcd: EtcdConfig,
}

impl Default for KvStoreConfig {
    fn default() -> Self {
        KvStoreConfig {
            store: KvBackend::Memory,
            prefix: "strata/".to_string(),
            etcd: EtcdConfig::default(),
        }
    }
}

impl KvStoreConfig {
    /// Builds the configured store. `memory` is the process-wide instance
    /// passed in, so every role of one process shares it.
    pub async fn build(&self, memory: &MemoryKv) -> Result<Arc<dyn KvStore>, KvError> {
        Ok(match self.store {
            KvBackend::Memory => Arc::new(memory.clone()),
            KvBackend::Etcd => Arc::new(EtcdKv::connect(&self.etcd, &self.prefix).await?),
        })
    }
}

/// The ingester ring, as every component sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RingConfig {
    pub kvstore: KvStoreConfig,
    /// A member whose last heartbeat is older than this is unhealthy and skipped.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// An unhealthy member is removed from the ring after this long without a
    /// heartbeat (0s: never, only by the forget action on /ring).
    #[serde(with = "humantime_serde")]
    pub forget_unhealthy_after: Duration,
    /// Number of ingesters each series is written to.
    pub replication_factor: usize,
    /// Place a series' replicas in distinct zones.
    pub zone_awareness_enabled: bool,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            kvstore: KvStoreConfig::default(),
            heartbeat_timeout: Duration::from_secs(60),
            forget_unhealthy_after: Duration::from_secs(15 * 60),
            replication_factor: 3,
            zone_awareness_enabled: false,
        }
    }
}

/// The KV key prefix under which the ingester ring's members live.
pub const INGESTER_RING_KEY: &str = "ingesters/";
