//! The long-term store: chunks packed into objects (filesystem, S3,
//! Cassandra) and an index of rows (embedded, Cassandra, DynamoDB) that
//! finds them by tenant, time and labels. Ingesters write flushed chunks
//! here; queriers read everything older than what ingesters hold.
//!
//! - [`schema`]: which backends and tables hold each time range;
//! - [`pack`]: the object format, many verified chunk records per object;
//! - [`index`]: the index rows;
//! - [`backend`]: the backend traits and their implementations;
//! - [`cache`]: byte-sized caches of chunks and index rows.
//!
//! Writing is idempotent: a chunk is named by its series, time range and
//! checksum, a pack by its content, and an index row by its keys, so a
//! retried flush or a replica flushing the same chunk writes the same
//! things. Before writing, a flush reads the series' index rows and skips
//! chunks already stored, so RF=3 stores one copy of each chunk that the
//! replicas cut alike.
//!
//! Reading groups the records a query needs by pack and reads each span of
//! records at most [`SPAN_GAP_BYTES`] apart with one request: a 7-day query
//! costs a request per pack it touches, not one per chunk.

pub mod backend;
pub mod cache;
pub mod chunk_ref;
pub mod compactor;
pub mod index;
pub mod pack;
pub mod schema;
pub mod table_manager;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use self::backend::cassandra::{Cassandra, CassandraIndex, CassandraObjects};
pub use self::backend::cassandra::{CassandraConfig, Consistency as CassandraConsistency};
use self::backend::dynamodb::DynamoDbIndex;
pub use self::backend::dynamodb::{BillingMode as DynamoDbBillingMode, DynamoDbConfig};
use self::backend::embedded::EmbeddedIndex;
use self::backend::filesystem::FilesystemObjects;
pub use self::backend::s3::S3Config;
use self::backend::s3::S3Objects;
pub use self::backend::{
    IndexClient, IndexEntry, IndexKey, IndexQuery, IndexRow, ObjectClient, RequestCounter,
    StoreError, TableClient, TableDesc,
};
use self::cache::{ByteCache, CacheMetrics};
pub use self::chunk_ref::{ChunkEncoding, ChunkRef};
use self::index::SeriesId;
pub use self::pack::{ChunkLocation, PackBuilder, StoreChunk};
pub use self::schema::{ChunkBackend, IndexBackend, PeriodConfig, Schema, SchemaConfig};
use crate::metrics::Metrics;
use crate::model::{Labels, METRIC_NAME, MatchOp, Matcher, now_ms};

/// Where the backends are and how the store behaves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub filesystem: FilesystemConfig,
    pub embedded: EmbeddedConfig,
    pub s3: S3Config,
    pub dynamodb: DynamoDbConfig,
    pub cassandra: CassandraConfig,
    /// Largest object a flush writes, in bytes (a pack of many chunks).
    pub max_pack_bytes: usize,
    /// Bytes of chunk records cached in memory (0: no cache).
    pub chunk_cache_bytes: u64,
    /// Bytes of index rows cached in memory (0: no cache).
    pub index_cache_bytes: u64,
    /// Index rows of buckets that ended longer ago than this are cached;
    /// newer ones still change as ingesters flush.
    #[serde(with = "humantime_serde")]
    pub index_cache_after: Duration,
    /// How long a cached index result is used: rows a flush delayed by a
    /// long store outage adds to an old bucket show within this.
    #[serde(with = "humantime_serde")]
    pub index_cache_ttl: Duration,
    /// Backend requests a query or a flush makes at once, at most.
    pub concurrency: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            filesystem: FilesystemConfig::default(),
            embedded: EmbeddedConfig::default(),
            s3: S3Config::default(),
            dynamodb: DynamoDbConfig::default(),
            cassandra: CassandraConfig::default(),
            max_pack_bytes: 8 << 20,
            chunk_cache_bytes: 256 << 20,
            index_cache_bytes: 64 << 20,
            index_cache_after: Duration::from_secs(12 * 3600),
            index_cache_ttl: Duration::from_secs(15 * 60),
            concurrency: 16,
        }
    }
}

impl StorageConfig {
    /// The defaults with the local backends' files under `dir`, for tests.
    #[cfg(test)]
    pub(crate) fn in_dir(dir: &std::path::Path) -> StorageConfig {
        StorageConfig {
            filesystem: FilesystemConfig {
                directory: dir.join("chunks"),
            },
            embedded: EmbeddedConfig {
                path: dir.join("index.redb"),
            },
            ..StorageConfig::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesystemConfig {
    /// Directory of the chunk packs.
    pub directory: PathBuf,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        FilesystemConfig {
            directory: PathBuf::from("data/chunks"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// File of the embedded index.
    pub path: PathBuf,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            path: PathBuf::from("data/index.redb"),
        }
    }
}

/// What a flush wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Chunks written.
    pub chunks: usize,
    /// Chunks skipped because the store already had them.
    pub already_stored: usize,
    pub packs: usize,
    pub pack_bytes: u64,
    pub index_rows: usize,
    /// Bytes of the index rows written (hash key, range key and value).
    pub index_bytes: u64,
}

/// What [`Store::put_packs`] wrote.
pub(crate) struct PutPacks {
    /// Each chunk's reference and location, in the order given.
    pub located: Vec<(ChunkRef, ChunkLocation)>,
    /// (period, chunk table, key) of each pack.
    pub packs: Vec<(usize, String, String)>,
    pub bytes: u64,
}

/// A flush into a bucket that ended longer ago than this is late: the
/// compactor compacts that bucket again (see [`Store::write_chunks`]).
pub const LATE_FLUSH_MS: i64 = 3_600_000;

/// Records of one pack whose gap is at most this are read together: one
/// request instead of several, for a few bytes more.
pub const SPAN_GAP_BYTES: u64 = 256 << 10;

/// A chunk a query reads from a pack.
struct Wanted {
    /// The series' position in the query's answer, and the chunk's in the
    /// series' chunks.
    slot: (usize, usize),
    chunk: ChunkRef,
    loc: ChunkLocation,
}

/// Splits a pack's wanted records (in offset order) where the gap to the
/// next is over [`SPAN_GAP_BYTES`]: each part is read with one request.
fn split_spans(wanted: Vec<Wanted>) -> Vec<Vec<Wanted>> {
    let mut spans: Vec<Vec<Wanted>> = Vec::new();
    for w in wanted {
        let joins = spans.last().and_then(|s| s.last()).is_some_and(|prev| {
            w.loc.offset <= prev.loc.offset + u64::from(prev.loc.len) + SPAN_GAP_BYTES
        });
        match spans.last_mut() {
            Some(span) if joins => span.push(w),
            _ => spans.push(vec![w]),
        }
    }
    spans
}

fn verify(
    bytes: &[u8],
    r: &ChunkRef,
    loc: &ChunkLocation,
    labels: &Labels,
) -> Result<StoreChunk, StoreError> {
    pack::verify_record(bytes, r, labels).map_err(|e| {
        StoreError::Corrupt(format!(
            "chunk {}:{} of {}: {e}",
            loc.key, loc.offset, labels
        ))
    })
}

/// A series read back from the store with its chunks overlapping the
/// query range, each verified against the series' labels.
/// The labels of a series from its partition's rows; `None` without a
/// labels row.
fn series_labels(
    tenant: &str,
    bucket: i64,
    id: &SeriesId,
    rows: &[IndexRow],
) -> Result<Option<Labels>, StoreError> {
    let Some(row) = rows.iter().find(|r| r.range == index::LABELS_RANGE) else {
        return Ok(None);
    };
    index::decode_labels(&row.value).map(Some).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "labels row of series {} does not decode",
            index::series_key(tenant, bucket, id)
        ))
    })
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredSeries {
    pub labels: Labels,
    pub chunks: Vec<StoreChunk>,
}

type IndexCacheKey = (String, IndexQuery);

/// What the index holds of a series in a bucket: whether its labels row is
/// there, and its chunk rows' range keys.
type Stored = (bool, HashSet<Vec<u8>>);

/// The backends of one schema period.
pub struct PeriodClients {
    pub period: usize,
    pub index: Arc<dyn IndexClient>,
    pub objects: Arc<dyn ObjectClient>,
}

struct Rows(Vec<IndexRow>);

impl cache::Sized for Rows {
    fn bytes(&self) -> u64 {
        self.0
            .iter()
            .map(|r| (r.range.len() + r.value.len() + 48) as u64)
            .sum::<u64>()
            + 24
    }
}

pub struct Store {
    schema: Schema,
    /// Per schema period.
    indexes: Vec<Arc<dyn IndexClient>>,
    objects: Vec<Arc<dyn ObjectClient>>,
    config: StorageConfig,
    requests: RequestCounter,
    chunk_cache: ByteCache<(String, String, u64), Vec<u8>>,
    index_cache: ByteCache<IndexCacheKey, Rows>,
}

impl Store {
    /// Opens the backends the schema's periods use. Embedded and
    /// filesystem backends open their files here; nothing waits on a
    /// remote server: S3, DynamoDB and Cassandra clients connect on first
    /// use, and a request to a server that is down fails within the
    /// backend's timeout (and succeeds again once it is back).
    pub fn new(
        config: &StorageConfig,
        schema: &SchemaConfig,
        metrics: &Metrics,
    ) -> Result<Store, StoreError> {
        let schema = Schema::new(schema).map_err(|e| StoreError::Backend {
            backend: "schema",
            operation: "load",
            message: e.to_string(),
        })?;
        let requests = RequestCounter::default();
        let cache_metrics = CacheMetrics::default();
        metrics.with_registry(|r| {
            requests.register(r);
            cache_metrics.register(r);
        });
        let mut index_clients: HashMap<IndexBackend, Arc<dyn IndexClient>> = HashMap::new();
        let mut object_clients: HashMap<ChunkBackend, Arc<dyn ObjectClient>> = HashMap::new();
        let mut indexes = Vec::new();
        let mut objects = Vec::new();
        // One Cassandra session serves both the index and the chunks.
        let mut shared_cassandra: Option<Arc<Cassandra>> = None;
        let mut cassandra = || -> Result<Arc<Cassandra>, StoreError> {
            if let Some(c) = &shared_cassandra {
                return Ok(c.clone());
            }
            let c = Cassandra::new(&config.cassandra, config.concurrency, requests.clone())?;
            shared_cassandra = Some(c.clone());
            Ok(c)
        };
        for p in schema.periods() {
            let index = match index_clients.get(&p.config.index) {
                Some(c) => c.clone(),
                None => {
                    let c: Arc<dyn IndexClient> = match p.config.index {
                        IndexBackend::Embedded => Arc::new(EmbeddedIndex::open(
                            &config.embedded.path,
                            requests.clone(),
                        )?),
                        IndexBackend::Dynamodb => Arc::new(DynamoDbIndex::new(
                            &config.dynamodb,
                            config.concurrency,
                            requests.clone(),
                        )),
                        IndexBackend::Cassandra => Arc::new(CassandraIndex(cassandra()?)),
                    };
                    index_clients.insert(p.config.index, c.clone());
                    c
                }
            };
            let object = match object_clients.get(&p.config.chunks) {
                Some(c) => c.clone(),
                None => {
                    let c: Arc<dyn ObjectClient> = match p.config.chunks {
                        ChunkBackend::Filesystem => Arc::new(FilesystemObjects::new(
                            config.filesystem.directory.clone(),
                            requests.clone(),
                        )),
                        ChunkBackend::S3 => Arc::new(S3Objects::new(&config.s3, requests.clone())?),
                        ChunkBackend::Cassandra => Arc::new(CassandraObjects(cassandra()?)),
                    };
                    object_clients.insert(p.config.chunks, c.clone());
                    c
                }
            };
            indexes.push(index);
            objects.push(object);
        }
        Ok(Store {
            schema,
            indexes,
            objects,
            chunk_cache: ByteCache::new("chunks", config.chunk_cache_bytes, cache_metrics.clone()),
            index_cache: ByteCache::new("index", config.index_cache_bytes, cache_metrics)
                .with_ttl(config.index_cache_ttl),
            config: config.clone(),
            requests,
        })
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Backend requests made so far, for the benchmarks' requests-per-
    /// million-samples figure.
    pub fn requests(&self) -> &RequestCounter {
        &self.requests
    }

    /// The index and chunk table clients of each period, for the table
    /// manager.
    pub fn table_clients(&self) -> Vec<PeriodClients> {
        (0..self.indexes.len())
            .map(|i| PeriodClients {
                period: i,
                index: self.indexes[i].clone(),
                objects: self.objects[i].clone(),
            })
            .collect()
    }

    /// Stores chunks of one tenant: skips those already stored, packs the
    /// rest into objects, then writes their index rows. A chunk is findable
    /// only once its object is written, so a failure part way leaves
    /// nothing half-visible; retrying writes the same objects and rows.
    pub async fn write_chunks(
        &self,
        tenant: &str,
        chunks: &[StoreChunk],
    ) -> Result<WriteStats, StoreError> {
        let mut stats = WriteStats::default();
        // (series id, bucket) -> what the index already has.
        let mut partitions: BTreeMap<(SeriesId, i64), (schema::BucketRef, &Labels)> =
            BTreeMap::new();
        let mut chunk_buckets = Vec::with_capacity(chunks.len());
        for c in chunks {
            let id = index::series_id(&c.labels);
            let buckets = self.schema.buckets(c.from, c.through);
            for b in &buckets {
                partitions
                    .entry((id, b.bucket))
                    .or_insert_with(|| (b.clone(), &c.labels));
            }
            chunk_buckets.push((id, buckets));
        }
        let lookups: Vec<((SeriesId, i64), usize, String)> = partitions
            .iter()
            .map(|(key, (bref, _))| (*key, bref.period, bref.table.clone()))
            .collect();
        let existing: HashMap<(SeriesId, i64), Stored> = stream::iter(lookups)
            .map(|((id, bucket), period, table)| async move {
                let q = index::series_query(tenant, bucket, &id, i64::MIN);
                let rows = self.indexes[period].query(&table, &q).await?;
                let has_labels = rows.iter().any(|r| r.range == index::LABELS_RANGE);
                let keys = rows
                    .into_iter()
                    .filter(|r| r.range != index::LABELS_RANGE)
                    .map(|r| r.range)
                    .collect();
                Ok::<_, StoreError>(((id, bucket), (has_labels, keys)))
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .try_collect()
            .await?;

        let mut todo: Vec<usize> = Vec::new();
        for (i, (c, (id, buckets))) in chunks.iter().zip(&chunk_buckets).enumerate() {
            let key = c.chunk_ref().range_key();
            let stored = buckets.iter().all(|b| {
                existing
                    .get(&(*id, b.bucket))
                    .is_some_and(|(_, keys)| keys.contains(&key))
            });
            if stored {
                stats.already_stored += 1;
            } else {
                todo.push(i);
            }
        }
        let to_write: Vec<&StoreChunk> = todo.iter().map(|&i| &chunks[i]).collect();
        let packed = self.put_packs(tenant, &to_write).await?;
        stats.packs += packed.packs.len();
        stats.pack_bytes += packed.bytes;

        // Index rows, per index table.
        let mut rows: BTreeMap<(usize, String), Vec<IndexEntry>> = BTreeMap::new();
        for ((id, bucket), (bref, labels)) in &partitions {
            let has_labels = existing.get(&(*id, *bucket)).is_some_and(|(l, _)| *l);
            if !has_labels {
                let out = rows.entry((bref.period, bref.table.clone())).or_default();
                index::series_entries(tenant, *bucket, labels, out);
                // A new series in the bucket: the compactor finds the
                // tenant there.
                out.push(index::tenant_entry(tenant, *bucket));
            }
        }
        for (&i, (r, loc)) in todo.iter().zip(&packed.located) {
            let (id, buckets) = &chunk_buckets[i];
            for b in buckets {
                rows.entry((b.period, b.table.clone()))
                    .or_default()
                    .push(index::chunk_entry(tenant, b.bucket, id, r, loc));
            }
            stats.chunks += 1;
        }
        let (n, bytes) = self.write_rows(rows).await?;
        stats.index_rows += n;
        stats.index_bytes += bytes;
        let written: HashSet<&schema::BucketRef> = todo
            .iter()
            .flat_map(|&i| chunk_buckets[i].1.iter())
            .collect();
        self.rearm_compaction(tenant, written.into_iter()).await?;
        Ok(stats)
    }

    /// A flush into buckets that ended over [`LATE_FLUSH_MS`] ago (an
    /// ingester back after a long outage, a store outage that delayed
    /// flushes) takes back the tenant's `compacted` mark there, so the
    /// compactor rewrites the bucket again with the late chunks. Called
    /// after the chunk rows are written.
    async fn rearm_compaction<'a>(
        &self,
        tenant: &str,
        buckets: impl Iterator<Item = &'a schema::BucketRef>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut late: BTreeMap<(usize, String), Vec<IndexKey>> = BTreeMap::new();
        for b in buckets {
            let end = (b.bucket + 1) * self.schema.periods()[b.period].bucket_ms();
            if end.saturating_add(LATE_FLUSH_MS) < now {
                late.entry((b.period, b.table.clone()))
                    .or_default()
                    .push(IndexKey {
                        hash: index::bucket_key(b.bucket),
                        range: index::compacted_range(tenant),
                    });
            }
        }
        for ((period, table), keys) in late {
            self.indexes[period].delete(&table, &keys).await?;
        }
        Ok(())
    }

    /// Packs chunks of one tenant into objects and writes them: one
    /// group of packs per chunk table and span of index buckets, so a
    /// pack never holds chunks of two buckets unless each of them spans
    /// both (the compactor retires a bucket's packs whole). Returns each
    /// chunk's reference and location, in order.
    pub(crate) async fn put_packs(
        &self,
        tenant: &str,
        chunks: &[&StoreChunk],
    ) -> Result<PutPacks, StoreError> {
        // (period, chunk table, first bucket, last bucket) -> packs, each
        // with the positions of its chunks.
        type Group = (usize, String, i64, i64);
        let mut packs: BTreeMap<Group, Vec<(PackBuilder, Vec<usize>)>> = BTreeMap::new();
        for (i, c) in chunks.iter().enumerate() {
            let period = self.schema.period_index(c.from);
            let p = &self.schema.periods()[period];
            let group = (
                period,
                p.chunk_table(c.from),
                p.bucket(c.from),
                p.bucket(c.through),
            );
            let builders = packs.entry(group).or_default();
            if builders
                .last()
                .is_none_or(|(b, _)| b.len() + c.data.len() > self.config.max_pack_bytes)
            {
                builders.push((PackBuilder::new(), Vec::new()));
            }
            let (builder, members) = builders
                .last_mut()
                .expect("a builder was pushed when there was none");
            builder.add(c);
            members.push(i);
        }
        let mut slots: Vec<Option<(ChunkRef, ChunkLocation)>> = vec![None; chunks.len()];
        let mut out = PutPacks {
            located: Vec::new(),
            packs: Vec::new(),
            bytes: 0,
        };
        let mut puts = Vec::new();
        for ((period, table, _, _), builders) in packs {
            for (b, members) in builders {
                let (key, bytes, located) = b.finish(tenant, &table);
                out.bytes += bytes.len() as u64;
                out.packs.push((period, table.clone(), key.clone()));
                for (i, loc) in members.into_iter().zip(located) {
                    slots[i] = Some(loc);
                }
                puts.push((period, table.clone(), key, bytes));
            }
        }
        stream::iter(puts)
            .map(|(period, table, key, bytes)| async move {
                let client = &self.objects[period];
                match client.put(&table, &key, bytes.clone()).await {
                    Err(StoreError::NoSuchTable { .. }) => {
                        client.create_table(&table, &TableDesc::default()).await?;
                        client.put(&table, &key, bytes).await
                    }
                    other => other,
                }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        out.located = slots
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| StoreError::Corrupt("a packed chunk has no location".to_string()))?;
        Ok(out)
    }

    /// Writes index rows per (period, table), creating a missing table;
    /// returns the rows and bytes written.
    pub(crate) async fn write_rows(
        &self,
        rows: BTreeMap<(usize, String), Vec<IndexEntry>>,
    ) -> Result<(usize, u64), StoreError> {
        let (mut n, mut bytes) = (0, 0);
        for ((period, table), mut entries) in rows {
            entries.sort_by(|a, b| (&a.hash, &a.range).cmp(&(&b.hash, &b.range)));
            entries.dedup_by(|a, b| a.hash == b.hash && a.range == b.range);
            n += entries.len();
            bytes += entries
                .iter()
                .map(|e| (e.hash.len() + e.range.len() + e.value.len()) as u64)
                .sum::<u64>();
            let client = &self.indexes[period];
            match client.write(&table, &entries).await {
                Err(StoreError::NoSuchTable { .. }) => {
                    client.create_table(&table, &TableDesc::default()).await?;
                    client.write(&table, &entries).await?;
                }
                other => other?,
            }
        }
        Ok((n, bytes))
    }

    /// The buckets a read of `[mint, maxt]` looks at: from the first
    /// period's start to a day past now (an open-ended API call must not
    /// walk every day since the epoch).
    fn read_buckets(&self, mint: i64, maxt: i64) -> Vec<schema::BucketRef> {
        let first = self.schema.periods().first().map_or(0, |p| p.from_ms);
        self.schema
            .buckets(mint.max(first), maxt.min(now_ms() + 86_400_000))
    }

    async fn query_index(
        &self,
        bucket: &schema::BucketRef,
        query: IndexQuery,
    ) -> Result<Arc<Rows>, StoreError> {
        let period = &self.schema.periods()[bucket.period];
        let bucket_end = (bucket.bucket + 1) * period.bucket_ms();
        let cacheable = bucket_end < now_ms() - self.config.index_cache_after.as_millis() as i64;
        let key = (bucket.table.clone(), query);
        if cacheable && let Some(rows) = self.index_cache.get(&key) {
            return Ok(rows);
        }
        let rows = Arc::new(Rows(
            self.indexes[bucket.period].query(&key.0, &key.1).await?,
        ));
        if cacheable {
            self.index_cache.insert(key, rows.clone());
        }
        Ok(rows)
    }

    /// Ids of the series of one bucket that may match `matchers`.
    async fn candidates(
        &self,
        tenant: &str,
        bucket: &schema::BucketRef,
        matchers: &[Matcher],
    ) -> Result<Option<HashSet<SeriesId>>, StoreError> {
        let metric = matchers
            .iter()
            .find(|m| m.name == METRIC_NAME && m.op == MatchOp::Equal)
            .map(|m| m.value.as_str());
        let selective: Vec<&Matcher> = matchers
            .iter()
            .filter(|m| !m.matches_empty())
            .filter(|m| !(metric.is_some() && m.name == METRIC_NAME))
            .collect();
        let b = bucket.bucket;
        let mut sets: Vec<HashSet<SeriesId>> = Vec::new();
        if let Some(metric) = metric
            && selective.is_empty()
        {
            let rows = self
                .query_index(
                    bucket,
                    IndexQuery::hash(index::metric_key(tenant, b, metric)),
                )
                .await?;
            sets.push(
                rows.0
                    .iter()
                    .filter_map(|r| r.range.as_slice().try_into().ok())
                    .collect(),
            );
        }
        for m in selective {
            let hash = match metric {
                Some(metric) => index::label_key(tenant, b, metric, &m.name),
                None => index::global_label_key(tenant, b, &m.name),
            };
            let prefix = match m.op {
                MatchOp::Equal => index::value_prefix(&m.value),
                _ => Vec::new(),
            };
            let rows = self
                .query_index(bucket, IndexQuery::prefix(hash, prefix))
                .await?;
            sets.push(
                rows.0
                    .iter()
                    .filter_map(|r| index::split_value_range(&r.range))
                    .filter(|(value, _)| m.matches(value))
                    .map(|(_, id)| id)
                    .collect(),
            );
            if sets.last().is_some_and(HashSet::is_empty) {
                break;
            }
        }
        sets.sort_by_key(HashSet::len);
        let mut iter = sets.into_iter();
        let Some(mut acc) = iter.next() else {
            return Ok(None);
        };
        for s in iter {
            acc.retain(|id| s.contains(id));
        }
        Ok(Some(acc))
    }

    /// Where a chunk row of `tenant` says its chunk is: in the chunk table
    /// of the chunk's `from`, as the flusher chose it.
    fn chunk_location(
        &self,
        tenant: &str,
        chunk: &ChunkRef,
        row: &IndexRow,
    ) -> Result<ChunkLocation, StoreError> {
        let table = self.schema.period(chunk.from).chunk_table(chunk.from);
        index::decode_location(&row.value, tenant, &table).ok_or_else(|| {
            StoreError::Corrupt("a chunk row's location does not decode".to_string())
        })
    }

    /// The series matching `matchers` with their chunk references
    /// overlapping `[mint, maxt]`, without fetching chunks.
    pub async fn select_refs(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<(Labels, Vec<(ChunkRef, ChunkLocation)>)>, StoreError> {
        let buckets = self.read_buckets(mint, maxt);
        let mut found: HashMap<SeriesId, (Labels, HashMap<ChunkRef, ChunkLocation>)> =
            HashMap::new();
        for bucket in &buckets {
            let Some(ids) = self.candidates(tenant, bucket, matchers).await? else {
                return Err(StoreError::Backend {
                    backend: "index",
                    operation: "select",
                    message:
                        "a selector needs at least one matcher that does not match the empty string"
                            .to_string(),
                });
            };
            let series: Vec<(SeriesId, Arc<Rows>)> = stream::iter(ids)
                .map(|id| async move {
                    let q = index::series_query(tenant, bucket.bucket, &id, mint);
                    Ok::<_, StoreError>((id, self.query_index(bucket, q).await?))
                })
                .buffer_unordered(self.config.concurrency.max(1))
                .try_collect()
                .await?;
            for (id, rows) in series {
                let Some(labels) = series_labels(tenant, bucket.bucket, &id, &rows.0)? else {
                    continue;
                };
                if !matchers
                    .iter()
                    .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
                {
                    continue;
                }
                let entry = found.entry(id).or_insert_with(|| (labels, HashMap::new()));
                for r in rows.0.iter() {
                    let Some(chunk) = ChunkRef::from_range_key(&r.range) else {
                        continue;
                    };
                    if chunk.through < mint || chunk.from > maxt {
                        continue;
                    }
                    let loc = self.chunk_location(tenant, &chunk, r)?;
                    entry.1.insert(chunk, loc);
                }
            }
        }
        let mut out: Vec<(Labels, Vec<(ChunkRef, ChunkLocation)>)> = found
            .into_values()
            .map(|(labels, chunks)| {
                let mut chunks: Vec<_> = chunks.into_iter().collect();
                chunks.sort_by_key(|(c, _)| (c.from, c.through, c.checksum));
                (labels, chunks)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The series matching `matchers` with their chunks overlapping
    /// `[mint, maxt]`, fetched and verified.
    pub async fn select(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<StoredSeries>, StoreError> {
        let refs = self.select_refs(tenant, matchers, mint, maxt).await?;
        self.read_chunks(refs, true).await
    }

    /// Fetches and verifies the chunks of `refs` (as [`Store::select_refs`]
    /// gives them), each series' in the order given. With `cache`, records
    /// come from and go to the chunk cache.
    pub async fn read_chunks(
        &self,
        refs: Vec<(Labels, Vec<(ChunkRef, ChunkLocation)>)>,
        cache: bool,
    ) -> Result<Vec<StoredSeries>, StoreError> {
        // Each series' chunks in the order `select_refs` gives them.
        let mut slots: Vec<Vec<Option<StoreChunk>>> = refs
            .iter()
            .map(|(_, chunks)| vec![None; chunks.len()])
            .collect();
        // Cached records first; the rest grouped by pack, in offset order.
        let mut by_pack: HashMap<(usize, &str, &str), Vec<Wanted>> = HashMap::new();
        for (i, (labels, chunks)) in refs.iter().enumerate() {
            for (j, (r, loc)) in chunks.iter().enumerate() {
                let key = (loc.table.clone(), loc.key.clone(), loc.offset);
                let cached = if cache {
                    self.chunk_cache.get(&key)
                } else {
                    None
                };
                match cached {
                    Some(bytes) => slots[i][j] = Some(verify(&bytes, r, loc, labels)?),
                    None => by_pack
                        .entry((self.schema.period_index(r.from), &loc.table, &loc.key))
                        .or_default()
                        .push(Wanted {
                            slot: (i, j),
                            chunk: r.clone(),
                            loc: loc.clone(),
                        }),
                }
            }
        }
        let spans: Vec<(usize, Vec<Wanted>)> = by_pack
            .into_iter()
            .flat_map(|((period, _, _), mut wanted)| {
                wanted.sort_by_key(|w| w.loc.offset);
                split_spans(wanted)
                    .into_iter()
                    .map(move |span| (period, span))
            })
            .collect();
        let read: Vec<Vec<((usize, usize), StoreChunk)>> = stream::iter(spans)
            .map(|(period, span)| {
                let refs = &refs;
                async move { self.read_span(period, &span, refs, cache).await }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .try_collect()
            .await?;
        for ((i, j), chunk) in read.into_iter().flatten() {
            slots[i][j] = Some(chunk);
        }
        Ok(refs
            .into_iter()
            .zip(slots)
            .map(|((labels, _), chunks)| StoredSeries {
                labels,
                chunks: chunks.into_iter().flatten().collect(),
            })
            .collect())
    }

    /// Reads the records of one span of a pack with one request, caches
    /// and verifies each.
    async fn read_span(
        &self,
        period: usize,
        span: &[Wanted],
        refs: &[(Labels, Vec<(ChunkRef, ChunkLocation)>)],
        cache: bool,
    ) -> Result<Vec<((usize, usize), StoreChunk)>, StoreError> {
        let (Some(first), Some(last)) = (span.first(), span.last()) else {
            return Ok(Vec::new());
        };
        let start = first.loc.offset;
        let end = last.loc.offset + u64::from(last.loc.len);
        let len = u32::try_from(end - start).map_err(|_| {
            StoreError::Corrupt(format!("a span of pack {} is over 4 GiB", first.loc.key))
        })?;
        let bytes = self.objects[period]
            .get_range(&first.loc.table, &first.loc.key, start, len)
            .await?;
        let mut out = Vec::with_capacity(span.len());
        for w in span {
            let at = (w.loc.offset - start) as usize;
            let record = bytes
                .get(at..at + w.loc.len as usize)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "pack {} ends before chunk {}:{}",
                        w.loc.key, w.loc.key, w.loc.offset
                    ))
                })?
                .to_vec();
            let record = Arc::new(record);
            if cache {
                self.chunk_cache.insert(
                    (w.loc.table.clone(), w.loc.key.clone(), w.loc.offset),
                    record.clone(),
                );
            }
            out.push((
                w.slot,
                verify(&record, &w.chunk, &w.loc, &refs[w.slot.0].0)?,
            ));
        }
        Ok(out)
    }

    /// Label names of the tenant's series in `[mint, maxt]`; with matchers,
    /// of the matching series only.
    pub async fn label_names(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut names: HashSet<String> = HashSet::new();
        if matchers.is_empty() {
            for bucket in self.read_buckets(mint, maxt) {
                let rows = self
                    .query_index(
                        &bucket,
                        IndexQuery::hash(index::names_key(tenant, bucket.bucket)),
                    )
                    .await?;
                names.extend(
                    rows.0
                        .iter()
                        .filter_map(|r| std::str::from_utf8(&r.range).ok())
                        .map(str::to_string),
                );
            }
        } else {
            for (labels, _) in self.select_refs(tenant, matchers, mint, maxt).await? {
                names.extend(labels.iter().map(|l| l.name.clone()));
            }
        }
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        Ok(names)
    }

    /// Values of label `name` in `[mint, maxt]`; with matchers, of the
    /// matching series only.
    pub async fn label_values(
        &self,
        tenant: &str,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut values: HashSet<String> = HashSet::new();
        if matchers.is_empty() {
            for bucket in self.read_buckets(mint, maxt) {
                let rows = self
                    .query_index(
                        &bucket,
                        IndexQuery::hash(index::global_label_key(tenant, bucket.bucket, name)),
                    )
                    .await?;
                values.extend(
                    rows.0
                        .iter()
                        .filter_map(|r| index::split_value_range(&r.range))
                        .map(|(v, _)| v.to_string()),
                );
            }
        } else {
            for (labels, _) in self.select_refs(tenant, matchers, mint, maxt).await? {
                if let Some(v) = labels.get(name) {
                    values.insert(v.to_string());
                }
            }
        }
        let mut values: Vec<String> = values.into_iter().collect();
        values.sort();
        Ok(values)
    }
}

#[cfg(test)]
mod tests;
