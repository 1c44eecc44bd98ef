//! The KV store the ring descriptors live in: a small trait with get, list,
//! put, compare-and-swap, delete and watch, and two backends: [`etcd`] (a
//! cluster) and [`memory`] (one process).
//!
//! Keys passed to a store are relative; a store adds its own prefix.
//! Revisions are the store's modification revisions: they only grow, and a
//! watch started after revision `r` sees every change with revision `> r`
//! (or fails, and the caller lists again).

pub mod etcd;
pub mod memory;

use async_trait::async_trait;
use futures::stream::BoxStream;

/// A key, its value and the revision it was last modified at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub revision: i64,
}

/// Everything under a prefix, as of `revision`.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub entries: Vec<KvEntry>,
    pub revision: i64,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KvEntry),
    Delete { key: String, revision: i64 },
}

impl WatchEvent {
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(entry) => entry.revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// What a compare-and-swap expects of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist.
    Absent,
    /// The key must exist with this modification revision.
    Revision(i64),
}

/// A stream of watch batches; it ends or yields an error when the watch
/// breaks, and the caller lists again.
pub type WatchStream = BoxStream<'static, Result<Vec<WatchEvent>, KvError>>;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("KV store {store}: {op} of {key:?} timed out after {timeout:?}")]
    Timeout {
        store: &'static str,
        op: &'static str,
        key: String,
        timeout: std::time::Duration,
    },
    #[error("KV store {store}: {op} of {key:?} failed: {message}")]
    Backend {
        store: &'static str,
        op: &'static str,
        key: String,
        message: String,
    },
    #[error(
        "KV store {store}: watch of {prefix:?} cannot resume after revision {revision}: {reason}"
    )]
    WatchLost {
        store: &'static str,
        prefix: String,
        revision: i64,
        reason: String,
    },
    #[error("KV store {store}: cannot connect to {endpoints}: {message}")]
    Connect {
        store: &'static str,
        endpoints: String,
        message: String,
    },
}

/// The ring's view of a KV store.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// The backend's name, for logs and metrics (`etcd`, `memory`).
    fn name(&self) -> &'static str;

    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError>;

    /// Every key under `prefix`, with the store's revision at the time.
    async fn list(&self, prefix: &str) -> Result<Snapshot, KvError>;

    /// Writes `value` unconditionally; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64, KvError>;

    /// Writes `value` (or deletes the key when `value` is `None`) only if the
    /// key is as `expect` says. Returns whether the write happened.
    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Option<Vec<u8>>,
    ) -> Result<bool, KvError>;

    async fn delete(&self, key: &str) -> Result<(), KvError>;

    /// Changes under `prefix` with revision greater than `after_revision`.
    async fn watch_prefix(&self, prefix: &str, after_revision: i64)
    -> Result<WatchStream, KvError>;
}
