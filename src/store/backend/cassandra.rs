//! The index and the chunk packs in Apache Cassandra (or ScyllaDB), in one
//! keyspace that is created on connect (SimpleStrategy, the configured
//! replication factor).
//!
//! - index tables: `(h text, r blob, v blob, PRIMARY KEY (h, r))`; a write
//!   groups its rows per partition and sends each partition's rows as
//!   UNLOGGED batches of bounded size (a single-partition batch is applied
//!   atomically by the replica, without the batch log); a query reads
//!   `WHERE h = ? AND r >= ?` page by page;
//! - chunk tables: `(k text, p int, n bigint static, v blob, PRIMARY KEY
//!   (k, p))`: a pack is split into pieces of [`PIECE_BYTES`], one row each
//!   (written concurrently, before any index row names the pack), with its
//!   length `n` in the partition's static column; `get_range` reads just
//!   the pieces its range covers. A cell stays far below Cassandra's
//!   mutation limits, and a query for a few series reads a few pieces of a
//!   pack, not all of it. Tables of the first layout, `(k text PRIMARY KEY,
//!   v blob)` with one blob per pack, are still read and written as they
//!   are.
//!
//! Index and chunk tables share the keyspace; each client lists only its
//! own kind (by the key column: `h` or `k`). The session is opened on
//! first use, within `connect_timeout`; a failed connect is tried again on
//! the next request, and an open session reconnects by itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::Consistency as CqlConsistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::{
    IndexClient, IndexEntry, IndexKey, IndexQuery, IndexRow, ObjectClient, RequestCounter,
    StoreError, TableClient, TableDesc,
};

const BACKEND: &str = "cassandra";

/// The bytes of a pack in one row of a chunk table.
pub const PIECE_BYTES: usize = 64 << 10;

/// Rows of one batch, at most.
const BATCH_ROWS: usize = 200;
/// Bytes of one batch, at most (Cassandra refuses batches over
/// `batch_size_fail_threshold`, 50 KiB by default).
const BATCH_BYTES: usize = 32 << 10;
/// Rows of one page of a query.
const PAGE_ROWS: i32 = 1000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    One,
    Two,
    Three,
    #[default]
    Quorum,
    All,
    LocalQuorum,
    EachQuorum,
    LocalOne,
}

impl From<Consistency> for CqlConsistency {
    fn from(c: Consistency) -> CqlConsistency {
        match c {
            Consistency::One => CqlConsistency::One,
            Consistency::Two => CqlConsistency::Two,
            Consistency::Three => CqlConsistency::Three,
            Consistency::Quorum => CqlConsistency::Quorum,
            Consistency::All => CqlConsistency::All,
            Consistency::LocalQuorum => CqlConsistency::LocalQuorum,
            Consistency::EachQuorum => CqlConsistency::EachQuorum,
            Consistency::LocalOne => CqlConsistency::LocalOne,
        }
    }
}

/// Where Cassandra is and how Strata uses it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CassandraConfig {
    /// Contact points (host names or IP addresses).
    pub addresses: Vec<String>,
    /// CQL port of every contact point.
    pub port: u16,
    /// Keyspace of Strata's tables, created on connect.
    pub keyspace: String,
    /// Replication factor of the keyspace when Strata creates it.
    pub replication_factor: u32,
    /// Consistency level of every read and write.
    pub consistency: Consistency,
    /// Password authentication; empty: none.
    pub username: String,
    pub password: String,
    /// Longest connecting (and creating the keyspace) may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest one request may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for CassandraConfig {
    fn default() -> Self {
        CassandraConfig {
            addresses: vec!["127.0.0.1".to_string()],
            port: 9042,
            keyspace: "strata".to_string(),
            replication_factor: 3,
            consistency: Consistency::Quorum,
            username: String::new(),
            password: String::new(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Statement {
    IndexInsert,
    IndexQuery,
    ObjectInsert,
    ObjectGet,
    /// The first chunk-table layout: one blob per pack.
    WholeInsert,
    WholeGet,
    IndexDelete,
    /// A pack's size, from its partition's static column.
    ObjectSize,
    /// A whole pack, in either layout.
    ObjectDelete,
}

/// One connection to a Cassandra cluster, shared by the index and chunk
/// clients of a store.
pub struct Cassandra {
    config: CassandraConfig,
    concurrency: usize,
    requests: RequestCounter,
    session: OnceCell<Session>,
    prepared: Mutex<HashMap<(String, Statement), PreparedStatement>>,
    /// Chunk tables' layouts: pieces (true) or one blob per pack.
    layouts: Mutex<HashMap<String, bool>>,
}

fn err(operation: &'static str) -> impl Fn(&dyn std::fmt::Display) -> StoreError {
    move |e| StoreError::backend(BACKEND, operation, e)
}

/// Whether an error says the table does not exist: Cassandra 5 answers
/// "table T does not exist", older versions "unconfigured table T".
fn missing_table(e: &impl std::fmt::Display) -> bool {
    let message = e.to_string();
    message.contains("unconfigured table")
        || message
            .split("Error message: table ")
            .nth(1)
            .is_some_and(|rest| rest.contains(" does not exist"))
}

/// A keyspace or table name Cassandra accepts unquoted: letters, digits
/// and underscores, at most 48.
fn checked(name: &str) -> Result<&str, StoreError> {
    if name.is_empty()
        || name.len() > 48
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(StoreError::backend(
            BACKEND,
            "name",
            format!("{name:?} is not a Cassandra table name (letters, digits, _; at most 48)"),
        ));
    }
    Ok(name)
}

impl Cassandra {
    /// Keeps the configuration; connects on first use. `concurrency`
    /// bounds the batches one write sends at once.
    pub fn new(
        config: &CassandraConfig,
        concurrency: usize,
        requests: RequestCounter,
    ) -> Result<Arc<Cassandra>, StoreError> {
        checked(&config.keyspace)?;
        if config.addresses.is_empty() {
            return Err(StoreError::backend(
                BACKEND,
                "open",
                "storage.cassandra.addresses is empty",
            ));
        }
        Ok(Arc::new(Cassandra {
            config: config.clone(),
            concurrency: concurrency.max(1),
            requests,
            session: OnceCell::new(),
            prepared: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
        }))
    }

    async fn session(&self) -> Result<&Session, StoreError> {
        self.session
            .get_or_try_init(|| async {
                let limit = self.config.connect_timeout;
                tokio::time::timeout(limit, self.connect())
                    .await
                    .map_err(|_| err("connect")(&format!("not connected within {limit:?}")))?
            })
            .await
    }

    async fn connect(&self) -> Result<Session, StoreError> {
        let c = &self.config;
        let profile = ExecutionProfile::builder()
            .consistency(c.consistency.into())
            .request_timeout(Some(c.request_timeout))
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(c.addresses.iter().map(|a| format!("{a}:{}", c.port)))
            .connection_timeout(c.connect_timeout)
            .default_execution_profile_handle(profile.into_handle());
        if !c.username.is_empty() {
            builder = builder.user(&c.username, &c.password);
        }
        let session = builder.build().await.map_err(|e| err("connect")(&e))?;
        self.requests.inc(BACKEND, "create_keyspace");
        session
            .query_unpaged(
                format!(
                    "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = \
                     {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                    c.keyspace,
                    c.replication_factor.max(1)
                ),
                &[],
            )
            .await
            .map_err(|e| err("connect")(&e))?;
        Ok(session)
    }

    /// The prepared statement of `kind` on `table` (prepared once).
    async fn prepared(
        &self,
        table: &str,
        kind: Statement,
    ) -> Result<PreparedStatement, StoreError> {
        let table = checked(table)?;
        let key = (table.to_string(), kind);
        if let Some(p) = self.prepared.lock().get(&key) {
            return Ok(p.clone());
        }
        let ks = &self.config.keyspace;
        let cql = match kind {
            Statement::IndexInsert => {
                format!("INSERT INTO {ks}.{table} (h, r, v) VALUES (?, ?, ?)")
            }
            Statement::IndexQuery => {
                format!("SELECT r, v FROM {ks}.{table} WHERE h = ? AND r >= ?")
            }
            Statement::ObjectInsert => {
                format!("INSERT INTO {ks}.{table} (k, p, n, v) VALUES (?, ?, ?, ?)")
            }
            Statement::ObjectGet => {
                format!("SELECT n, p, v FROM {ks}.{table} WHERE k = ? AND p >= ? AND p <= ?")
            }
            Statement::WholeInsert => format!("INSERT INTO {ks}.{table} (k, v) VALUES (?, ?)"),
            Statement::WholeGet => format!("SELECT v FROM {ks}.{table} WHERE k = ?"),
            Statement::IndexDelete => format!("DELETE FROM {ks}.{table} WHERE h = ? AND r = ?"),
            Statement::ObjectSize => format!("SELECT n FROM {ks}.{table} WHERE k = ? LIMIT 1"),
            Statement::ObjectDelete => format!("DELETE FROM {ks}.{table} WHERE k = ?"),
        };
        let session = self.session().await?;
        self.requests.inc(BACKEND, "prepare");
        let mut p = session.prepare(cql).await.map_err(|e| {
            if missing_table(&e) {
                StoreError::NoSuchTable {
                    backend: BACKEND,
                    table: table.to_string(),
                }
            } else {
                err("prepare")(&e)
            }
        })?;
        if kind == Statement::IndexQuery {
            p.set_page_size(PAGE_ROWS);
        }
        self.prepared.lock().insert(key, p.clone());
        Ok(p)
    }

    /// Runs DDL (or any statement without values), counted as `operation`.
    async fn ddl(&self, operation: &'static str, cql: String) -> Result<(), StoreError> {
        let session = self.session().await?;
        self.requests.inc(BACKEND, operation);
        session
            .query_unpaged(cql, &[])
            .await
            .map_err(|e| err(operation)(&e))?;
        Ok(())
    }

    /// Every table and column of the keyspace, from its schema.
    async fn columns(&self, operation: &'static str) -> Result<Vec<(String, String)>, StoreError> {
        let session = self.session().await?;
        self.requests.inc(BACKEND, operation);
        let result = session
            .query_unpaged(
                "SELECT table_name, column_name FROM system_schema.columns WHERE keyspace_name = ?",
                (self.config.keyspace.as_str(),),
            )
            .await
            .map_err(|e| err(operation)(&e))?
            .into_rows_result()
            .map_err(|e| err(operation)(&e))?;
        let mut out = Vec::new();
        for row in result
            .rows::<(String, String)>()
            .map_err(|e| err(operation)(&e))?
        {
            out.push(row.map_err(|e| err(operation)(&e))?);
        }
        Ok(out)
    }

    /// Tables of the keyspace whose key column is `key_column`.
    async fn tables_with(&self, key_column: &str) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = self
            .columns("list_tables")
            .await?
            .into_iter()
            .filter(|(_, column)| column == key_column)
            .map(|(table, _)| table)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn create(&self, name: &str, columns: &str) -> Result<(), StoreError> {
        let name = checked(name)?;
        self.ddl(
            "create_table",
            format!(
                "CREATE TABLE IF NOT EXISTS {}.{name} ({columns})",
                self.config.keyspace
            ),
        )
        .await
    }

    async fn drop_table(&self, name: &str) -> Result<(), StoreError> {
        let name = checked(name)?;
        self.prepared.lock().retain(|(t, _), _| t != name);
        self.layouts.lock().remove(name);
        self.ddl(
            "delete_table",
            format!("DROP TABLE IF EXISTS {}.{name}", self.config.keyspace),
        )
        .await
    }

    /// Sends one partition's rows as one UNLOGGED batch of `statement`
    /// (one statement when it is a single row).
    async fn partition_batch<V: SerializeRow>(
        &self,
        table: &str,
        operation: &'static str,
        statement: &PreparedStatement,
        mut values: Vec<V>,
    ) -> Result<(), StoreError> {
        let session = self.session().await?;
        self.requests.inc(BACKEND, operation);
        let result = if values.len() == 1 {
            let row = values.pop().expect("one row");
            session.execute_unpaged(statement, row).await.map(|_| ())
        } else {
            let mut batch = Batch::new(BatchType::Unlogged);
            for _ in &values {
                batch.append_statement(statement.clone());
            }
            session.batch(&batch, values).await.map(|_| ())
        };
        result.map_err(|e| {
            if missing_table(&e) {
                StoreError::NoSuchTable {
                    backend: BACKEND,
                    table: table.to_string(),
                }
            } else {
                err(operation)(&e)
            }
        })
    }
}

/// Splits rows (sorted by hash) into per-partition batches of bounded rows
/// and bytes, as index ranges into `rows`; `key` gives a row's hash key and
/// size.
fn batches<T>(rows: &[T], key: impl Fn(&T) -> (&str, usize)) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut bytes = 0;
    for (i, row) in rows.iter().enumerate() {
        let (hash, size) = key(row);
        match out.last_mut() {
            Some(b)
                if key(&rows[b.start]).0 == hash
                    && b.len() < BATCH_ROWS
                    && bytes + size <= BATCH_BYTES =>
            {
                b.end = i + 1;
                bytes += size;
            }
            _ => {
                out.push(i..i + 1);
                bytes = size;
            }
        }
    }
    out
}

/// An index row's hash key and size, for [`batches`].
fn entry_key<'a>(e: &'a &IndexEntry) -> (&'a str, usize) {
    (&e.hash, e.hash.len() + e.range.len() + e.value.len())
}

/// The index client over a [`Cassandra`] connection.
pub struct CassandraIndex(pub Arc<Cassandra>);

/// The chunk client over a [`Cassandra`] connection.
pub struct CassandraObjects(pub Arc<Cassandra>);

#[async_trait]
impl TableClient for CassandraIndex {
    async fn list_tables(&self) -> Result<Vec<String>, StoreError> {
        self.0.tables_with("h").await
    }

    async fn create_table(&self, name: &str, _desc: &TableDesc) -> Result<(), StoreError> {
        self.0
            .create(name, "h text, r blob, v blob, PRIMARY KEY (h, r)")
            .await
    }

    async fn delete_table(&self, name: &str) -> Result<(), StoreError> {
        self.0.drop_table(name).await
    }
}

#[async_trait]
impl IndexClient for CassandraIndex {
    async fn write(&self, table: &str, entries: &[IndexEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let c = &self.0;
        let insert = c.prepared(table, Statement::IndexInsert).await?;
        // Last value wins for a key written twice, as one after the other.
        let mut rows: BTreeMap<(&str, &[u8]), &IndexEntry> = BTreeMap::new();
        for e in entries {
            rows.insert((e.hash.as_str(), e.range.as_slice()), e);
        }
        let rows: Vec<&IndexEntry> = rows.into_values().collect();
        let (rows, insert) = (&rows, &insert);
        stream::iter(batches(rows, entry_key))
            .map(|batch| {
                let values: Vec<(&String, &Vec<u8>, &Vec<u8>)> = rows[batch]
                    .iter()
                    .map(|r| (&r.hash, &r.range, &r.value))
                    .collect();
                c.partition_batch(table, "write", insert, values)
            })
            .buffer_unordered(c.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn query(&self, table: &str, query: &IndexQuery) -> Result<Vec<IndexRow>, StoreError> {
        let c = &self.0;
        let select = match c.prepared(table, Statement::IndexQuery).await {
            Err(StoreError::NoSuchTable { .. }) => return Ok(Vec::new()),
            other => other?,
        };
        let session = c.session().await?;
        let lower = query.lower_bound();
        let mut out = Vec::new();
        let mut paging = PagingState::start();
        loop {
            c.requests.inc(BACKEND, "query");
            let (result, next) = match session
                .execute_single_page(&select, (&query.hash, lower), paging)
                .await
            {
                Ok(page) => page,
                Err(e) if missing_table(&e) => return Ok(Vec::new()),
                Err(e) => return Err(err("query")(&e)),
            };
            let rows = result.into_rows_result().map_err(|e| err("query")(&e))?;
            let mut past_prefix = false;
            for row in rows
                .rows::<(Vec<u8>, Option<Vec<u8>>)>()
                .map_err(|e| err("query")(&e))?
            {
                let (range, value) = row.map_err(|e| err("query")(&e))?;
                if !range.starts_with(&query.range_prefix) {
                    // Sorted from the lower bound: the prefix's rows are
                    // behind us.
                    past_prefix = true;
                    break;
                }
                if query.matches(&range) {
                    out.push(IndexRow {
                        range,
                        value: value.unwrap_or_default(),
                    });
                }
            }
            match next {
                PagingStateResponse::HasMorePages { state } if !past_prefix => paging = state,
                _ => break,
            }
        }
        Ok(out)
    }

    async fn delete(&self, table: &str, keys: &[IndexKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let c = &self.0;
        let delete = match c.prepared(table, Statement::IndexDelete).await {
            Err(StoreError::NoSuchTable { .. }) => return Ok(()),
            other => other?,
        };
        let mut keys: Vec<&IndexKey> = keys.iter().collect();
        keys.sort();
        keys.dedup();
        let delete = &delete;
        let keys = &keys;
        let parts = batches(keys, |k| (&k.hash, k.hash.len() + k.range.len()));
        let result = stream::iter(parts)
            .map(|part| {
                let values: Vec<(String, Vec<u8>)> = keys[part]
                    .iter()
                    .map(|k| (k.hash.clone(), k.range.clone()))
                    .collect();
                c.partition_batch(table, "delete", delete, values)
            })
            .buffer_unordered(c.concurrency)
            .try_collect::<Vec<()>>()
            .await;
        match result {
            Err(StoreError::NoSuchTable { .. }) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

#[async_trait]
impl TableClient for CassandraObjects {
    async fn list_tables(&self) -> Result<Vec<String>, StoreError> {
        self.0.tables_with("k").await
    }

    async fn create_table(&self, name: &str, _desc: &TableDesc) -> Result<(), StoreError> {
        self.0
            .create(
                name,
                "k text, p int, n bigint static, v blob, PRIMARY KEY (k, p)",
            )
            .await
    }

    async fn delete_table(&self, name: &str) -> Result<(), StoreError> {
        self.0.drop_table(name).await
    }
}

impl CassandraObjects {
    /// Whether `table` has the pieces layout (else the first, one blob per
    /// pack), from the schema; remembered per table.
    async fn pieced(&self, table: &str) -> Result<bool, StoreError> {
        let c = &self.0;
        if let Some(&p) = c.layouts.lock().get(table) {
            return Ok(p);
        }
        let columns: Vec<String> = c
            .columns("describe_table")
            .await?
            .into_iter()
            .filter(|(t, _)| t == table)
            .map(|(_, column)| column)
            .collect();
        if columns.is_empty() {
            return Err(StoreError::NoSuchTable {
                backend: BACKEND,
                table: table.to_string(),
            });
        }
        let pieced = columns.iter().any(|c| c == "p");
        c.layouts.lock().insert(table.to_string(), pieced);
        Ok(pieced)
    }

    fn missing<'a>(
        table: &'a str,
        operation: &'static str,
    ) -> impl Fn(&dyn std::fmt::Display) -> StoreError + 'a {
        move |e| {
            if missing_table(&e) {
                StoreError::NoSuchTable {
                    backend: BACKEND,
                    table: table.to_string(),
                }
            } else {
                err(operation)(e)
            }
        }
    }
}

#[async_trait]
impl ObjectClient for CassandraObjects {
    async fn put(&self, table: &str, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        let c = &self.0;
        if !self.pieced(checked(table)?).await? {
            let insert = c.prepared(table, Statement::WholeInsert).await?;
            let session = c.session().await?;
            c.requests.inc(BACKEND, "put");
            session
                .execute_unpaged(&insert, (key, data))
                .await
                .map_err(|e| Self::missing(table, "put")(&e))?;
            return Ok(());
        }
        let insert = c.prepared(table, Statement::ObjectInsert).await?;
        let session = c.session().await?;
        let total = data.len() as i64;
        let (insert, session) = (&insert, &session);
        let pieces: Vec<(i32, Vec<u8>)> = data
            .chunks(PIECE_BYTES)
            .enumerate()
            .map(|(p, piece)| (p as i32, piece.to_vec()))
            .collect();
        stream::iter(pieces)
            .map(|(p, piece)| async move {
                c.requests.inc(BACKEND, "put");
                session
                    .execute_unpaged(insert, (key, p, total, piece))
                    .await
                    .map(|_| ())
                    .map_err(|e| Self::missing(table, "put")(&e))
            })
            .buffer_unordered(c.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn get_range(
        &self,
        table: &str,
        key: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, StoreError> {
        let c = &self.0;
        let not_found = || StoreError::NotFound {
            backend: BACKEND,
            table: table.to_string(),
            key: key.to_string(),
        };
        let pieced = match self.pieced(checked(table)?).await {
            Err(StoreError::NoSuchTable { .. }) => return Err(not_found()),
            other => other?,
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(len as usize);
        let out_of_range = |have: usize| {
            StoreError::Corrupt(format!(
                "{table}/{key}: {have} bytes, wanted {len} at {offset}"
            ))
        };
        let session = c.session().await?;
        if !pieced {
            let select = c.prepared(table, Statement::WholeGet).await?;
            c.requests.inc(BACKEND, "get_range");
            let result = session
                .execute_unpaged(&select, (key,))
                .await
                .map_err(|e| err("get_range")(&e))?
                .into_rows_result()
                .map_err(|e| err("get_range")(&e))?;
            let Some((blob,)) = result
                .maybe_first_row::<(Option<Vec<u8>>,)>()
                .map_err(|e| err("get_range")(&e))?
            else {
                return Err(not_found());
            };
            let blob = blob.unwrap_or_default();
            return blob
                .get(start..end)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| out_of_range(blob.len()));
        }
        let select = c.prepared(table, Statement::ObjectGet).await?;
        let first = start / PIECE_BYTES;
        let last = end.saturating_sub(1).max(start) / PIECE_BYTES;
        let (Ok(first_p), Ok(last_p)) = (i32::try_from(first), i32::try_from(last)) else {
            return Err(out_of_range(0));
        };
        c.requests.inc(BACKEND, "get_range");
        let result = session
            .execute_unpaged(&select, (key, first_p, last_p))
            .await
            .map_err(|e| err("get_range")(&e))?
            .into_rows_result()
            .map_err(|e| err("get_range")(&e))?;
        let mut bytes = Vec::with_capacity((last - first + 1) * PIECE_BYTES);
        let mut total = None;
        let mut next = first;
        for row in result
            .rows::<(Option<i64>, i32, Option<Vec<u8>>)>()
            .map_err(|e| err("get_range")(&e))?
        {
            let (n, p, v) = row.map_err(|e| err("get_range")(&e))?;
            if p as usize != next {
                return Err(StoreError::Corrupt(format!(
                    "{table}/{key}: piece {next} is missing"
                )));
            }
            next += 1;
            total = total.or(n);
            bytes.extend_from_slice(&v.unwrap_or_default());
        }
        let Some(total) = total else {
            return Err(not_found());
        };
        // Only the pack's own bytes: a longer pack it replaced may have
        // left pieces past its end.
        let total = usize::try_from(total).unwrap_or(0);
        if end > total || next != last + 1 {
            return Err(out_of_range(total));
        }
        let at = start - first * PIECE_BYTES;
        Ok(bytes[at..at + len as usize].to_vec())
    }

    async fn size(&self, table: &str, key: &str) -> Result<Option<u64>, StoreError> {
        let c = &self.0;
        let pieced = match self.pieced(checked(table)?).await {
            Err(StoreError::NoSuchTable { .. }) => return Ok(None),
            other => other?,
        };
        let session = c.session().await?;
        let kind = if pieced {
            Statement::ObjectSize
        } else {
            Statement::WholeGet
        };
        let select = c.prepared(table, kind).await?;
        c.requests.inc(BACKEND, "size");
        let result = session
            .execute_unpaged(&select, (key,))
            .await
            .map_err(|e| err("size")(&e))?
            .into_rows_result()
            .map_err(|e| err("size")(&e))?;
        if pieced {
            let row = result
                .maybe_first_row::<(Option<i64>,)>()
                .map_err(|e| err("size")(&e))?;
            Ok(row.and_then(|(n,)| n).map(|n| n.max(0) as u64))
        } else {
            let row = result
                .maybe_first_row::<(Option<Vec<u8>>,)>()
                .map_err(|e| err("size")(&e))?;
            Ok(row.map(|(v,)| v.map_or(0, |v| v.len() as u64)))
        }
    }

    async fn delete(&self, table: &str, key: &str) -> Result<(), StoreError> {
        let c = &self.0;
        let delete = match c.prepared(checked(table)?, Statement::ObjectDelete).await {
            Err(StoreError::NoSuchTable { .. }) => return Ok(()),
            other => other?,
        };
        let session = c.session().await?;
        c.requests.inc(BACKEND, "delete");
        match session.execute_unpaged(&delete, (key,)).await {
            Ok(_) => Ok(()),
            Err(e) if missing_table(&e) => Ok(()),
            Err(e) => Err(err("delete")(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hash: &str, range: &[u8], value_len: usize) -> IndexEntry {
        IndexEntry {
            hash: hash.to_string(),
            range: range.to_vec(),
            value: vec![0; value_len],
        }
    }

    #[test]
    fn batches_hold_one_partition_and_stay_bounded() {
        let mut rows = Vec::new();
        for i in 0..(BATCH_ROWS + 5) as u32 {
            rows.push(entry("a", &i.to_be_bytes(), 1));
        }
        rows.push(entry("b", b"x", 1));
        for i in 0..4u32 {
            rows.push(entry("c", &i.to_be_bytes(), BATCH_BYTES / 3));
        }
        let refs: Vec<&IndexEntry> = rows.iter().collect();
        let got: Vec<&[&IndexEntry]> = batches(&refs, entry_key)
            .into_iter()
            .map(|b| &refs[b])
            .collect();
        let shape: Vec<(String, usize)> =
            got.iter().map(|b| (b[0].hash.clone(), b.len())).collect();
        assert_eq!(
            shape,
            vec![
                ("a".to_string(), BATCH_ROWS),
                ("a".to_string(), 5),
                ("b".to_string(), 1),
                ("c".to_string(), 2),
                ("c".to_string(), 2),
            ]
        );
        assert!(got.iter().all(|b| b.iter().all(|r| r.hash == b[0].hash)));
    }

    #[test]
    fn missing_tables_are_recognised() {
        assert!(missing_table(
            &"Database returned an error: The query is syntactically correct but invalid, \
              Error message: table t1 does not exist"
        ));
        assert!(missing_table(&"unconfigured table index_1"));
        assert!(!missing_table(&"Error message: Keyspace ks does not exist"));
    }

    #[test]
    fn names_are_checked() {
        assert!(checked("index_2900").is_ok());
        assert!(checked("x; DROP KEYSPACE y").is_err());
        assert!(checked(&"a".repeat(49)).is_err());
    }
}
