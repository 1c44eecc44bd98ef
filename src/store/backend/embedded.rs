//! The embedded index: rows in a local redb file, one redb table per index
//! table. The default of a single process: nothing to run beside Strata.
//!
//! A row's redb key is `len(hash) <2 B> | hash | range`, so the rows of one
//! hash key are contiguous and sorted by range key, as in Cassandra and
//! DynamoDB.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};

use super::{
    IndexClient, IndexEntry, IndexQuery, IndexRow, RequestCounter, StoreError, TableClient,
    TableDesc,
};

const BACKEND: &str = "embedded";

type Def<'a> = TableDefinition<'a, &'static [u8], &'static [u8]>;

pub struct EmbeddedIndex {
    db: Arc<Database>,
    requests: RequestCounter,
}

fn err(operation: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |e| StoreError::backend(BACKEND, operation, e)
}

fn key(hash: &str, range: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + hash.len() + range.len());
    k.extend_from_slice(&(hash.len() as u16).to_be_bytes());
    k.extend_from_slice(hash.as_bytes());
    k.extend_from_slice(range);
    k
}

impl EmbeddedIndex {
    /// Opens (or creates) the index file at `path`, creating its directory.
    pub fn open(path: &Path, requests: RequestCounter) -> Result<EmbeddedIndex, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::backend(BACKEND, "open", format!("{}: {e}", dir.display()))
            })?;
        }
        let db = Database::create(path).map_err(|e| {
            StoreError::backend(BACKEND, "open", format!("{}: {e}", path.display()))
        })?;
        Ok(EmbeddedIndex {
            db: Arc::new(db),
            requests,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        super::blocking(BACKEND, move || f(&db)).await
    }
}

#[async_trait]
impl TableClient for EmbeddedIndex {
    async fn list_tables(&self) -> Result<Vec<String>, StoreError> {
        self.requests.inc(BACKEND, "list_tables");
        self.blocking(|db| {
            let txn = db.begin_read().map_err(|e| err("list_tables")(e.into()))?;
            let tables = txn
                .list_tables()
                .map_err(|e| err("list_tables")(e.into()))?;
            Ok(tables.map(|t| t.name().to_string()).collect())
        })
        .await
    }

    async fn create_table(&self, name: &str, _desc: &TableDesc) -> Result<(), StoreError> {
        self.requests.inc(BACKEND, "create_table");
        let name = name.to_string();
        self.blocking(move |db| {
            let txn = db
                .begin_write()
                .map_err(|e| err("create_table")(e.into()))?;
            txn.open_table(Def::new(&name))
                .map_err(|e| err("create_table")(e.into()))?;
            txn.commit().map_err(|e| err("create_table")(e.into()))
        })
        .await
    }

    async fn delete_table(&self, name: &str) -> Result<(), StoreError> {
        self.requests.inc(BACKEND, "delete_table");
        let name = name.to_string();
        self.blocking(move |db| {
            let txn = db
                .begin_write()
                .map_err(|e| err("delete_table")(e.into()))?;
            txn.delete_table(Def::new(&name))
                .map_err(|e| err("delete_table")(e.into()))?;
            txn.commit().map_err(|e| err("delete_table")(e.into()))
        })
        .await
    }
}

#[async_trait]
impl IndexClient for EmbeddedIndex {
    async fn write(&self, table: &str, entries: &[IndexEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.requests.inc(BACKEND, "write");
        let table = table.to_string();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|e| (key(&e.hash, &e.range), e.value.clone()))
            .collect();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(|e| err("write")(e.into()))?;
            {
                let exists = txn
                    .list_tables()
                    .map_err(|e| err("write")(e.into()))?
                    .any(|t| t.name() == table);
                if !exists {
                    return Err(StoreError::NoSuchTable {
                        backend: BACKEND,
                        table,
                    });
                }
                let mut t = txn
                    .open_table(Def::new(&table))
                    .map_err(|e| err("write")(e.into()))?;
                for (k, v) in &rows {
                    t.insert(k.as_slice(), v.as_slice())
                        .map_err(|e| err("write")(e.into()))?;
                }
            }
            txn.commit().map_err(|e| err("write")(e.into()))
        })
        .await
    }

    async fn query(&self, table: &str, query: &IndexQuery) -> Result<Vec<IndexRow>, StoreError> {
        self.requests.inc(BACKEND, "query");
        let table = table.to_string();
        let query = query.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(|e| err("query")(e.into()))?;
            let t = match txn.open_table(Def::new(&table)) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(err("query")(e.into())),
            };
            let head = key(&query.hash, &[]);
            let start = key(&query.hash, query.lower_bound());
            let mut out = Vec::new();
            for row in t
                .range::<&[u8]>(start.as_slice()..)
                .map_err(|e| err("query")(e.into()))?
            {
                let (k, v) = row.map_err(|e| err("query")(e.into()))?;
                let k = k.value();
                let Some(range) = k.strip_prefix(head.as_slice()) else {
                    break;
                };
                if !range.starts_with(&query.range_prefix) {
                    break;
                }
                if query.matches(range) {
                    out.push(IndexRow {
                        range: range.to_vec(),
                        value: v.value().to_vec(),
                    });
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hash: &str, range: &[u8], value: &[u8]) -> IndexEntry {
        IndexEntry {
            hash: hash.to_string(),
            range: range.to_vec(),
            value: value.to_vec(),
        }
    }

    #[tokio::test]
    async fn rows_by_hash_prefix_and_start_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index.redb");
        {
            let idx = EmbeddedIndex::open(&path, RequestCounter::default()).expect("open");
            let missing = idx.write("t1", &[entry("h", b"a", b"1")]).await;
            assert!(matches!(missing, Err(StoreError::NoSuchTable { .. })));
            idx.create_table("t1", &TableDesc::default())
                .await
                .expect("create");
            idx.write(
                "t1",
                &[
                    entry("h", b"a1", b"1"),
                    entry("h", b"a2", b"2"),
                    entry("h", b"b1", b"3"),
                    entry("hh", b"a1", b"4"),
                    entry("g", b"a1", b"5"),
                ],
            )
            .await
            .expect("write");
        }
        let idx = EmbeddedIndex::open(&path, RequestCounter::default()).expect("reopen");
        let rows = idx
            .query("t1", &IndexQuery::prefix("h".to_string(), b"a".to_vec()))
            .await
            .expect("query");
        assert_eq!(
            rows.iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
            vec![b"1".to_vec(), b"2".to_vec()]
        );
        let all = idx
            .query("t1", &IndexQuery::hash("h".to_string()))
            .await
            .expect("query");
        assert_eq!(all.len(), 3);
        let mut q = IndexQuery::hash("h".to_string());
        q.range_start = Some(b"a2".to_vec());
        let from = idx.query("t1", &q).await.expect("query");
        assert_eq!(from.len(), 2);
        assert!(
            idx.query("nope", &IndexQuery::hash("h".to_string()))
                .await
                .expect("missing table reads empty")
                .is_empty()
        );
        assert_eq!(
            idx.list_tables().await.expect("list"),
            vec!["t1".to_string()]
        );
        idx.delete_table("t1").await.expect("delete");
        assert!(idx.list_tables().await.expect("list").is_empty());
    }
}
