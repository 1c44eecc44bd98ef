//! What a storage backend provides: an index of rows (hash key, range key,
//! value) and objects (packs of chunks), each in named tables. The row shape
//! is Cassandra's partition + clustering key and DynamoDB's hash + range
//! key, so every index backend stores rows natively.
//!
//! Every backend counts the requests it makes to its server in
//! `strata_store_requests_total{backend,operation}` (a DynamoDB
//! `BatchWriteItem` of 25 rows is one request), so the cost of flushing is
//! measured, not guessed.

pub mod cassandra;
pub mod dynamodb;
pub mod embedded;
pub mod filesystem;
pub mod s3;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// One index row.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IndexEntry {
    pub hash: String,
    pub range: Vec<u8>,
    pub value: Vec<u8>,
}

/// The key of one index row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexKey {
    pub hash: String,
    pub range: Vec<u8>,
}

/// Rows of one hash key whose range key starts with `range_prefix` and is
/// not less than `range_start` (when given).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IndexQuery {
    pub hash: String,
    pub range_prefix: Vec<u8>,
    pub range_start: Option<Vec<u8>>,
}

impl IndexQuery {
    pub fn hash(hash: String) -> IndexQuery {
        IndexQuery {
            hash,
            range_prefix: Vec::new(),
            range_start: None,
        }
    }

    pub fn prefix(hash: String, range_prefix: Vec<u8>) -> IndexQuery {
        IndexQuery {
            hash,
            range_prefix,
            range_start: None,
        }
    }

    /// Whether `range` is selected by this query.
    pub fn matches(&self, range: &[u8]) -> bool {
        range.starts_with(&self.range_prefix)
            && self
                .range_start
                .as_ref()
                .is_none_or(|start| range >= start.as_slice())
    }

    /// The smallest range key the query can select.
    pub fn lower_bound(&self) -> &[u8] {
        match &self.range_start {
            Some(start) if start.as_slice() > self.range_prefix.as_slice() => start,
            _ => &self.range_prefix,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexRow {
    pub range: Vec<u8>,
    pub value: Vec<u8>,
}

/// How a new table is provisioned (DynamoDB; others ignore it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableDesc {
    /// Provisioned read/write capacity; `None` is on-demand.
    pub provisioned: Option<(u64, u64)>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum StoreError {
    #[error("{backend}: table {table} does not exist")]
    NoSuchTable {
        backend: &'static str,
        table: String,
    },
    #[error("{backend}: object {key} not found in {table}")]
    NotFound {
        backend: &'static str,
        table: String,
        key: String,
    },
    #[error("{backend}: {operation} failed: {message}")]
    Backend {
        backend: &'static str,
        operation: &'static str,
        message: String,
    },
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn backend(
        backend: &'static str,
        operation: &'static str,
        err: impl std::fmt::Display,
    ) -> StoreError {
        StoreError::Backend {
            backend,
            operation,
            message: err.to_string(),
        }
    }
}

#[async_trait]
pub trait TableClient: Send + Sync {
    async fn list_tables(&self) -> Result<Vec<String>, StoreError>;
    /// Creates a table; creating one that exists succeeds.
    async fn create_table(&self, name: &str, desc: &TableDesc) -> Result<(), StoreError>;
    /// Deletes a table and everything in it; a missing table succeeds.
    async fn delete_table(&self, name: &str) -> Result<(), StoreError>;
}

#[async_trait]
pub trait IndexClient: TableClient {
    /// Writes rows (upserts: an existing row takes the new value), batched
    /// as the backend allows. Fails with [`StoreError::NoSuchTable`] when
    /// the table is missing.
    async fn write(&self, table: &str, entries: &[IndexEntry]) -> Result<(), StoreError>;
    /// The rows `query` selects, sorted by range key. A missing table has
    /// no rows.
    async fn query(&self, table: &str, query: &IndexQuery) -> Result<Vec<IndexRow>, StoreError>;
    /// Deletes rows by key, batched as the backend allows. Deleting a row
    /// that is not there, or from a missing table, succeeds.
    async fn delete(&self, table: &str, keys: &[IndexKey]) -> Result<(), StoreError>;
}

#[async_trait]
pub trait ObjectClient: TableClient {
    /// Stores an object (replacing one of the same key). Fails with
    /// [`StoreError::NoSuchTable`] when the table is missing.
    async fn put(&self, table: &str, key: &str, data: Vec<u8>) -> Result<(), StoreError>;
    /// `len` bytes of an object from `offset`.
    async fn get_range(
        &self,
        table: &str,
        key: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, StoreError>;
    /// The size of an object in bytes; `None` when there is no such object
    /// (or table).
    async fn size(&self, table: &str, key: &str) -> Result<Option<u64>, StoreError>;
    /// Deletes an object. Deleting one that is not there succeeds.
    async fn delete(&self, table: &str, key: &str) -> Result<(), StoreError>;
}

/// Runs blocking file or database work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    backend: &'static str,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::backend(backend, "task", e))?
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub backend: &'static str,
    pub operation: &'static str,
}

/// `strata_store_requests_total`, shared by every backend of a process.
#[derive(Clone, Default)]
pub struct RequestCounter {
    family: Family<RequestLabels, Counter>,
}

impl std::fmt::Debug for RequestCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestCounter")
    }
}

impl RequestCounter {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "strata_store_requests",
            "Requests made to the long-term store's servers, by backend and operation.",
            self.family.clone(),
        );
    }

    pub fn inc(&self, backend: &'static str, operation: &'static str) {
        self.inc_by(backend, operation, 1);
    }

    pub fn inc_by(&self, backend: &'static str, operation: &'static str, n: u64) {
        self.family
            .get_or_create(&RequestLabels { backend, operation })
            .inc_by(n);
    }

    /// Requests so far of one backend and operation.
    pub fn get(&self, backend: &'static str, operation: &'static str) -> u64 {
        self.family
            .get_or_create(&RequestLabels { backend, operation })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_select_by_prefix_and_start() {
        let mut q = IndexQuery::prefix("h".to_string(), b"ab".to_vec());
        assert!(q.matches(b"ab"));
        assert!(q.matches(b"abz"));
        assert!(!q.matches(b"ac"));
        q.range_start = Some(b"abm".to_vec());
        assert!(!q.matches(b"abc"));
        assert!(q.matches(b"abm"));
        assert!(q.matches(b"abz"));
        assert_eq!(q.lower_bound(), b"abm");
    }
}
