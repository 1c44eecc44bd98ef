//! The embedded index: rows in a local redb file, one redb table per index
//! table. The default of a single process: nothing to run beside Strata.
//!
//! A row's redb key is `len(hash) <2 B> | hash | range`, so the rows of one
//! hash key are contiguous and sorted by range key, as in Cassandra and
//! DynamoDB.
//!
//! redb's file keeps the pages that copy-on-write transactions freed, and
//! its B-trees' pages are part empty, so the file grows to about three times
//! the rows it holds. Whenever a write leaves the file half as large again
//! as after the last compaction (and at least [`COMPACT_MIN_BYTES`]), the
//! index compacts it, under an exclusive lock that holds off reads and
//! writes for the while: a file of 36 MB shrinks by a third. The growth
//! threshold keeps the total compaction work proportional to the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};

use super::{
    IndexClient, IndexEntry, IndexKey, IndexQuery, IndexRow, RequestCounter, StoreError,
    TableClient, TableDesc,
};

const BACKEND: &str = "embedded";

type Def<'a> = TableDefinition<'a, &'static [u8], &'static [u8]>;

/// Files smaller than this are never compacted.
pub const COMPACT_MIN_BYTES: u64 = 4 << 20;

pub struct EmbeddedIndex {
    /// Shared by every transaction; taken exclusively only to compact.
    db: Arc<RwLock<Database>>,
    path: PathBuf,
    /// The file's size after the last compaction, or when opened.
    compacted_len: Arc<AtomicU64>,
    /// Bytes of rows (keys and values) deleted since the last compaction.
    freed: Arc<AtomicU64>,
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
            db: Arc::new(RwLock::new(db)),
            path: path.to_path_buf(),
            compacted_len: Arc::new(AtomicU64::new(file_len(path))),
            freed: Arc::new(AtomicU64::new(0)),
            requests,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        super::blocking(BACKEND, move || f(&db.read())).await
    }

    /// Compacts the file if it grew by half since the last compaction, or
    /// if rows of about a third of it were deleted since (the file holds
    /// some 2.8 bytes per byte of rows: an eighth of it in deleted rows is
    /// about a third of its rows).
    async fn compact_if_grown(&self) -> Result<(), StoreError> {
        let len = file_len(&self.path);
        let last = self.compacted_len.load(Ordering::Relaxed);
        let grown = len >= last.saturating_add(last / 2);
        let hollow = self.freed.load(Ordering::Relaxed).saturating_mul(8) >= len;
        if len < COMPACT_MIN_BYTES || !(grown || hollow) {
            return Ok(());
        }
        self.compact().await.map(|_| ())
    }

    /// Compacts the file now; returns its size before and after.
    pub async fn compact(&self) -> Result<(u64, u64), StoreError> {
        self.requests.inc(BACKEND, "compact");
        let db = self.db.clone();
        let path = self.path.clone();
        let compacted_len = self.compacted_len.clone();
        let freed = self.freed.clone();
        super::blocking(BACKEND, move || {
            let before = file_len(&path);
            let started = std::time::Instant::now();
            let mut db = db.write();
            // redb moves pages until it finds nothing more to move.
            db.compact()
                .map_err(|e| err("compact")(redb::Error::from(e)))?;
            drop(db);
            let after = file_len(&path);
            compacted_len.store(after, Ordering::Relaxed);
            freed.store(0, Ordering::Relaxed);
            tracing::info!(
                path = %path.display(),
                before_bytes = before,
                after_bytes = after,
                elapsed = ?started.elapsed(),
                "compacted the embedded index file"
            );
            Ok((before, after))
        })
        .await
    }
}

/// Whether the write transaction sees a table `name` (writes must not
/// create one: only `create_table` does).
fn has_table(
    txn: &redb::WriteTransaction,
    name: &str,
    operation: &'static str,
) -> Result<bool, StoreError> {
    Ok(txn
        .list_tables()
        .map_err(|e| err(operation)(e.into()))?
        .any(|t| t.name() == name))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
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
                if !has_table(&txn, &table, "write")? {
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
        .await?;
        self.compact_if_grown().await
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

    async fn delete(&self, table: &str, keys: &[IndexKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.requests.inc(BACKEND, "delete");
        let table = table.to_string();
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| key(&k.hash, &k.range)).collect();
        let freed = self
            .blocking(move |db| {
                let mut freed = 0u64;
                let txn = db.begin_write().map_err(|e| err("delete")(e.into()))?;
                {
                    if !has_table(&txn, &table, "delete")? {
                        return Ok(0);
                    }
                    let mut t = txn
                        .open_table(Def::new(&table))
                        .map_err(|e| err("delete")(e.into()))?;
                    for k in &keys {
                        let removed = t
                            .remove(k.as_slice())
                            .map_err(|e| err("delete")(e.into()))?;
                        if let Some(v) = removed {
                            freed += (k.len() + v.value().len()) as u64;
                        }
                    }
                }
                txn.commit().map_err(|e| err("delete")(e.into()))?;
                Ok(freed)
            })
            .await?;
        self.freed.fetch_add(freed, Ordering::Relaxed);
        self.compact_if_grown().await
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

    #[tokio::test]
    async fn a_grown_file_is_compacted_and_keeps_every_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index.redb");
        let requests = RequestCounter::default();
        let idx = EmbeddedIndex::open(&path, requests.clone()).expect("open");
        idx.create_table("t", &TableDesc::default())
            .await
            .expect("create");
        // Many small transactions, as flushes write them.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for batch in 0..200u64 {
            let rows: Vec<IndexEntry> = (0..200u64)
                .map(|i| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    entry(
                        &format!("tenant:19700:s:{:032x}", (batch * 200 + i) % 997),
                        &rng.to_be_bytes(),
                        &[7u8; 24],
                    )
                })
                .collect();
            idx.write("t", &rows).await.expect("write");
        }
        let compactions = requests.get(BACKEND, "compact");
        assert!(
            compactions >= 1,
            "the file reached {} bytes",
            file_len(&path)
        );
        let (before, after) = idx.compact().await.expect("compacts");
        assert!(after <= before, "{before} -> {after}");
        let mut rows = 0;
        for h in 0..997u64 {
            rows += idx
                .query("t", &IndexQuery::hash(format!("tenant:19700:s:{h:032x}")))
                .await
                .expect("query")
                .len();
        }
        assert_eq!(rows, 200 * 200);
    }
}
