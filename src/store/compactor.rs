//! The compactor: rewrites each finished index bucket (a day by default) so
//! that a series keeps one chunk per bucket instead of one per flush
//! window, and retires the packs that held the old chunks.
//!
//! Ingesters flush a chunk per series and `chunk_window` (2 h): each pays
//! its record's labels and framing, an index row, and a read request on
//! the way back. Once a bucket ended `min_age` ago (every ingester has
//! flushed it by then), the compactor, per tenant:
//!
//! 1. lists the bucket's series (every series has a `__name__` row) and,
//!    `batch_series` at a time, reads their chunk rows and chunks: every
//!    chunk lying inside the bucket is rewritten. Float chunks of a series
//!    are merged, sample-exact as a query merges them, into packed chunks
//!    (at most [`MAX_SAMPLES`] samples each); native histogram chunks are
//!    copied as they are. Chunks spanning two buckets stay: flushes pack
//!    them apart (see [`Store::put_packs`]);
//! 2. writes the new chunks into new packs, then their index rows: from
//!    here on, readers see the old and the new chunks and merge them;
//! 3. retires every old pack whose records were all rewritten (the records
//!    tile the pack, checked against its size; a pack they do not tile is
//!    read whole, and its other records must be copies of rewritten chunks,
//!    as two replicas flushing a chunk at the same moment leave): a
//!    `retired` row in the bucket's bookkeeping partition
//!    (`index::bucket_key`). A pack the run
//!    wrote itself is never retired: pack keys are content hashes, so a
//!    rerun after a crash writes the same packs again;
//! 4. deletes the old chunk rows (except those the new rows replaced, same
//!    key), then writes the `compacted` row.
//!
//! A crash anywhere leaves every sample readable: a rerun (no `compacted`
//! row yet) merges what it finds again. Retired packs are deleted
//! `deletion_delay` after retirement, and only once the bucket is marked
//! compacted, so a query that read the old rows just before they went
//! (or a querier's index cache, `storage.index_cache_ttl`) still finds its
//! packs. A flush arriving more than an hour after its bucket ended takes
//! the `compacted` row back ([`Store::write_chunks`]), so the next pass
//! compacts the bucket again with the late chunks (readers merge them
//! meanwhile). A pack holding a record no row points at is retired only
//! when that record is a copy of a chunk the run rewrote.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use super::index::{self, BucketRow, SeriesId};
use super::pack::{PACK_MAGIC, decode_pack};
use super::schema::BucketRef;
use super::{
    ChunkEncoding, ChunkLocation, ChunkRef, IndexEntry, IndexKey, IndexQuery, IndexRow, Store,
    StoreChunk, StoreError,
};
use crate::chunk::merge::merge_runs;
use crate::chunk::{MAX_SAMPLES, XorChunk, packed};
use crate::metrics::Metrics;
use crate::model::{Labels, METRIC_NAME, Sample, now_ms};
use crate::service::{BackgroundTask, Service, ServiceError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactorConfig {
    /// How often the compactor looks for buckets to compact and retired
    /// packs to delete.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A bucket is compacted once it ended this long ago; ingesters have
    /// flushed its chunks by then (`ingester.flush.max_chunk_age` plus
    /// retries). Keep it above the longest `out_of_order_time_window`: a
    /// late flush has the bucket compacted again.
    #[serde(with = "humantime_serde")]
    pub min_age: Duration,
    /// A retired pack is deleted this long after it was retired: longer
    /// than any query, and than `storage.index_cache_ttl` of every querier.
    #[serde(with = "humantime_serde")]
    pub deletion_delay: Duration,
    /// Series rewritten at once: bounds the chunks held in memory.
    pub batch_series: usize,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        CompactorConfig {
            interval: Duration::from_secs(30 * 60),
            min_age: Duration::from_secs(6 * 3600),
            deletion_delay: Duration::from_secs(12 * 3600),
            batch_series: 10_000,
        }
    }
}

/// What a pass (or one tenant's bucket) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Tenant buckets compacted.
    pub buckets: usize,
    /// Tenant buckets that failed (retried at the next pass).
    pub failed: usize,
    pub series: usize,
    pub chunks_read: usize,
    pub chunks_written: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub rows_deleted: usize,
    /// Bytes (keys and values) of the old chunk rows (deleted, or replaced
    /// by a new row of the same key) and of the rows written.
    pub row_bytes_deleted: u64,
    pub row_bytes_written: u64,
    pub packs_written: usize,
    pub packs_retired: usize,
    /// Bytes of the packs retired.
    pub retired_bytes: u64,
    pub packs_deleted: usize,
}

impl CompactionReport {
    fn add(&mut self, o: &CompactionReport) {
        self.buckets += o.buckets;
        self.failed += o.failed;
        self.series += o.series;
        self.chunks_read += o.chunks_read;
        self.chunks_written += o.chunks_written;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        self.rows_deleted += o.rows_deleted;
        self.row_bytes_deleted += o.row_bytes_deleted;
        self.row_bytes_written += o.row_bytes_written;
        self.packs_written += o.packs_written;
        self.packs_retired += o.packs_retired;
        self.retired_bytes += o.retired_bytes;
        self.packs_deleted += o.packs_deleted;
    }
}

#[derive(Clone, Default)]
struct CompactorMetrics {
    buckets: Counter,
    failures: Counter,
    chunks_read: Counter,
    chunks_written: Counter,
    bytes_read: Counter,
    bytes_written: Counter,
    packs_retired: Counter,
    packs_deleted: Counter,
    last_success: Gauge,
}

impl CompactorMetrics {
    fn register(&self, metrics: &Metrics) {
        metrics.with_registry(|r| {
            let r = r.sub_registry_with_prefix("strata_compactor");
            r.register(
                "buckets_compacted",
                "Tenant index buckets compacted.",
                self.buckets.clone(),
            );
            r.register(
                "bucket_failures",
                "Tenant index buckets whose compaction failed (retried at the next pass).",
                self.failures.clone(),
            );
            r.register(
                "chunks_read",
                "Chunks read to be rewritten.",
                self.chunks_read.clone(),
            );
            r.register(
                "chunks_written",
                "Chunks written by compactions.",
                self.chunks_written.clone(),
            );
            r.register(
                "read_bytes",
                "Bytes of chunk records read to be rewritten.",
                self.bytes_read.clone(),
            );
            r.register(
                "written_bytes",
                "Bytes of packs written by compactions.",
                self.bytes_written.clone(),
            );
            r.register(
                "packs_retired",
                "Packs whose every chunk was rewritten, to be deleted after the deletion delay.",
                self.packs_retired.clone(),
            );
            r.register(
                "packs_deleted",
                "Retired packs deleted.",
                self.packs_deleted.clone(),
            );
            r.register(
                "last_success_timestamp_seconds",
                "When the last compaction pass without a failure ended.",
                self.last_success.clone(),
            );
        });
    }

    fn observe(&self, r: &CompactionReport) {
        self.buckets.inc_by(r.buckets as u64);
        self.failures.inc_by(r.failed as u64);
        self.chunks_read.inc_by(r.chunks_read as u64);
        self.chunks_written.inc_by(r.chunks_written as u64);
        self.bytes_read.inc_by(r.bytes_read);
        self.bytes_written.inc_by(r.bytes_written);
        self.packs_retired.inc_by(r.packs_retired as u64);
        self.packs_deleted.inc_by(r.packs_deleted as u64);
    }
}

pub struct Compactor {
    inner: Arc<Inner>,
    task: BackgroundTask,
}

struct Inner {
    config: CompactorConfig,
    store: Arc<Store>,
    metrics: CompactorMetrics,
}

/// One series of a batch: its labels, the rows to delete and the chunks to
/// rewrite.
struct SeriesChunks {
    id: SeriesId,
    labels: Labels,
    chunks: Vec<(ChunkRef, ChunkLocation)>,
}

/// What one tenant's bucket compaction keeps across its batches.
#[derive(Default)]
struct BucketWork {
    /// Old chunk rows, to delete at the end, with their values' sizes.
    old_rows: BTreeMap<IndexKey, usize>,
    /// Rows the rewrite wrote (a row of the same key replaced the old one).
    new_rows: HashSet<IndexKey>,
    /// Per old pack (chunk table, key): the records rewritten.
    rewritten: HashMap<(String, String), Vec<(u64, u32)>>,
    /// Packs the run wrote.
    written: HashSet<(String, String)>,
    /// The chunks rewritten, by series, reference and content hash: a
    /// record no row points at (a replica that stored the same chunk at the
    /// same moment, a flush retried after its pack was written) is covered
    /// when it is one of them.
    chunks: HashSet<(SeriesId, ChunkRef, u128)>,
    report: CompactionReport,
}

impl Compactor {
    pub fn new(config: CompactorConfig, store: Arc<Store>, metrics: &Metrics) -> Compactor {
        let m = CompactorMetrics::default();
        m.register(metrics);
        Compactor {
            inner: Arc::new(Inner {
                config,
                store,
                metrics: m,
            }),
            task: BackgroundTask::default(),
        }
    }

    /// One pass as of `now_ms`: compacts every tenant's buckets that ended
    /// `min_age` before it, and deletes retired packs past their delay.
    pub async fn run(&self, now_ms: i64) -> Result<CompactionReport, StoreError> {
        self.inner.run(now_ms).await
    }
}

/// Whether the records `ranges` (offset, length) cover a pack of `size`
/// bytes exactly, after its magic.
fn tiles(ranges: &mut [(u64, u32)], size: u64) -> bool {
    ranges.sort_unstable();
    let mut at = PACK_MAGIC.len() as u64;
    for &(offset, len) in ranges.iter() {
        if offset == at {
            at += u64::from(len);
        } else if offset + u64::from(len) > at {
            return false;
        }
    }
    at == size
}

/// Samples of a float chunk.
fn float_samples(c: &StoreChunk) -> Result<Vec<Sample>, StoreError> {
    let corrupt = |e: crate::chunk::ChunkError| {
        StoreError::Corrupt(format!("chunk of {} at {}: {e}", c.labels, c.from))
    };
    match c.encoding {
        ChunkEncoding::Packed => packed::decode(&c.data),
        _ => packed::xor_samples(&c.data),
    }
    .map_err(corrupt)
}

/// The smaller of the packed and XOR encodings of `samples` (at most
/// [`MAX_SAMPLES`]), XOR on a tie, as the flusher chooses: a chunk
/// rewritten alone keeps its bytes and its name.
fn encode_smallest(samples: &[Sample]) -> (ChunkEncoding, Vec<u8>) {
    let packed = packed::encode(samples);
    let mut xor = XorChunk::new();
    let mut app = xor.appender();
    for s in samples {
        if app.append(s.t, s.v).is_err() {
            return (ChunkEncoding::Packed, packed);
        }
    }
    let xor = xor.into_bytes();
    if packed.len() < xor.len() {
        (ChunkEncoding::Packed, packed)
    } else {
        (ChunkEncoding::Xor, xor)
    }
}

/// A series' chunks as the compaction writes them: float chunks merged
/// into as few chunks as fit, others as they are.
fn rewrite(chunks: Vec<StoreChunk>) -> Result<Vec<StoreChunk>, StoreError> {
    let (floats, mut out): (Vec<StoreChunk>, Vec<StoreChunk>) = chunks
        .into_iter()
        .partition(|c| matches!(c.encoding, ChunkEncoding::Xor | ChunkEncoding::Packed));
    let Some(first) = floats.first() else {
        return Ok(out);
    };
    let (labels, fingerprint) = (first.labels.clone(), first.fingerprint);
    // The order a query merges them in: by time range, the first listed
    // winning a timestamp two chunks disagree on.
    let mut runs: Vec<(i64, i64, Vec<Sample>)> = Vec::with_capacity(floats.len());
    for c in &floats {
        runs.push((c.from, c.through, float_samples(c)?));
    }
    runs.sort_by_key(|r| (r.0, r.1));
    let runs: Vec<Vec<Sample>> = runs.into_iter().map(|r| r.2).collect();
    let samples = merge_runs(&runs, i64::MIN, i64::MAX);
    for part in samples.chunks(MAX_SAMPLES) {
        let (Some(a), Some(b)) = (part.first(), part.last()) else {
            continue;
        };
        let (encoding, data) = encode_smallest(part);
        out.push(StoreChunk {
            labels: labels.clone(),
            fingerprint,
            from: a.t,
            through: b.t,
            encoding,
            data,
        });
    }
    Ok(out)
}

impl Inner {
    async fn run(&self, now: i64) -> Result<CompactionReport, StoreError> {
        let mut report = CompactionReport::default();
        let schema = self.store.schema();
        let periods = schema.periods();
        let ready_before = now - self.config.min_age.as_millis() as i64;
        for (pi, period) in periods.iter().enumerate() {
            let index = &self.store.indexes[pi];
            let (table_ms, bucket_ms) = (period.table_ms(), period.bucket_ms());
            let start = if pi == 0 { i64::MIN } else { period.from_ms };
            let end = periods.get(pi + 1).map_or(i64::MAX, |n| n.from_ms);
            let mut numbers: Vec<i64> = index
                .list_tables()
                .await?
                .iter()
                .filter_map(|t| t.strip_prefix(&period.config.index_prefix)?.parse().ok())
                .collect();
            numbers.sort_unstable();
            numbers.dedup();
            for n in numbers {
                let lo = (n * table_ms).max(start);
                let hi = ((n + 1) * table_ms).min(end).min(ready_before);
                if lo >= hi {
                    continue;
                }
                for b in period.bucket(lo)..=period.bucket(hi - 1) {
                    if (b + 1) * bucket_ms > ready_before {
                        break;
                    }
                    let bref = BucketRef {
                        period: pi,
                        table: period.index_table(b * bucket_ms),
                        bucket: b,
                    };
                    report.add(&self.bucket_pass(&bref, now).await?);
                }
            }
        }
        self.metrics.observe(&report);
        if report.failed == 0 {
            self.metrics.last_success.set(now / 1000);
        }
        Ok(report)
    }

    /// Compacts the bucket's tenants not compacted yet, and deletes its
    /// retired packs whose delay is over.
    async fn bucket_pass(
        &self,
        bref: &BucketRef,
        now: i64,
    ) -> Result<CompactionReport, StoreError> {
        let mut report = CompactionReport::default();
        let index = &self.store.indexes[bref.period];
        let rows = index
            .query(
                &bref.table,
                &IndexQuery::hash(index::bucket_key(bref.bucket)),
            )
            .await?;
        let mut tenants = BTreeSet::new();
        let mut compacted = HashSet::new();
        let mut retired = Vec::new();
        for row in &rows {
            match index::parse_bucket_row(&row.range) {
                Some(BucketRow::Tenant(t)) => {
                    tenants.insert(t);
                }
                Some(BucketRow::Compacted(t)) => {
                    compacted.insert(t);
                }
                Some(BucketRow::Retired { tenant, table, key }) => {
                    retired.push((tenant, table, key, when(&row.value)));
                }
                None => {}
            }
        }
        let pending: Vec<String> = tenants
            .into_iter()
            .filter(|t| !compacted.contains(t))
            .collect();
        for tenant in &pending {
            let started = std::time::Instant::now();
            match self.compact(tenant, bref, now).await {
                Ok(r) => {
                    tracing::info!(
                        tenant = %tenant,
                        bucket = bref.bucket,
                        series = r.series,
                        chunks_read = r.chunks_read,
                        chunks_written = r.chunks_written,
                        bytes_read = r.bytes_read,
                        bytes_written = r.bytes_written,
                        packs_retired = r.packs_retired,
                        elapsed = ?started.elapsed(),
                        "compacted an index bucket"
                    );
                    report.add(&r);
                    compacted.insert(tenant.clone());
                }
                Err(e) => {
                    tracing::warn!(
                        tenant = %tenant,
                        bucket = bref.bucket,
                        error = %e,
                        "compacting an index bucket failed; retrying at the next pass"
                    );
                    report.failed += 1;
                }
            }
        }
        // The packs first, then their rows in one request: a row left by
        // a failure names a pack whose delete is simply repeated.
        let delay = self.config.deletion_delay.as_millis() as i64;
        let objects = &self.store.objects[bref.period];
        let mut deleted = Vec::new();
        for (tenant, table, key, retired_at) in retired {
            if !compacted.contains(&tenant) || retired_at.is_none_or(|t| t + delay > now) {
                continue;
            }
            objects.delete(&table, &key).await?;
            deleted.push(IndexKey {
                hash: index::bucket_key(bref.bucket),
                range: index::retired_range(&tenant, &table, &key),
            });
        }
        index.delete(&bref.table, &deleted).await?;
        report.packs_deleted = deleted.len();
        Ok(report)
    }

    /// Compacts one tenant's part of a bucket (steps 1–4 above).
    async fn compact(
        &self,
        tenant: &str,
        bref: &BucketRef,
        now: i64,
    ) -> Result<CompactionReport, StoreError> {
        let store = &self.store;
        let index = &store.indexes[bref.period];
        let b = bref.bucket;
        let bucket_ms = store.schema().periods()[bref.period].bucket_ms();
        let (start, end) = (b * bucket_ms, (b + 1) * bucket_ms);
        let names = index
            .query(
                &bref.table,
                &IndexQuery::hash(index::global_label_key(tenant, b, METRIC_NAME)),
            )
            .await?;
        let mut ids: Vec<SeriesId> = names
            .iter()
            .filter_map(|r| index::split_value_range(&r.range))
            .map(|(_, id)| id)
            .collect();
        ids.sort_unstable();
        ids.dedup();

        let mut work = BucketWork::default();
        for batch in ids.chunks(self.config.batch_series.max(1)) {
            self.compact_batch(tenant, bref, (start, end), batch, &mut work)
                .await?;
        }

        // Retire the old packs whose every record was rewritten.
        let objects = &store.objects[bref.period];
        let mut retire = Vec::new();
        for ((table, key), mut ranges) in std::mem::take(&mut work.rewritten) {
            if work.written.contains(&(table.clone(), key.clone())) {
                continue;
            }
            let Some(size) = objects.size(&table, &key).await? else {
                continue;
            };
            if tiles(&mut ranges, size)
                || self
                    .covered_with_duplicates(&table, &key, size, bref, &ranges, &work.chunks)
                    .await?
            {
                work.report.retired_bytes += size;
                retire.push(IndexEntry {
                    hash: index::bucket_key(b),
                    range: index::retired_range(tenant, &table, &key),
                    value: now.to_be_bytes().to_vec(),
                });
            }
        }
        work.report.packs_retired = retire.len();
        index.write(&bref.table, &retire).await?;

        // The old rows, but those a new row of the same key replaced.
        work.report.row_bytes_deleted = work
            .old_rows
            .iter()
            .map(|(k, value_len)| (k.hash.len() + k.range.len() + value_len) as u64)
            .sum();
        let old: Vec<IndexKey> = work
            .old_rows
            .into_keys()
            .filter(|k| !work.new_rows.contains(k))
            .collect();
        index.delete(&bref.table, &old).await?;
        work.report.rows_deleted = old.len();
        index
            .write(
                &bref.table,
                &[IndexEntry {
                    hash: index::bucket_key(b),
                    range: index::compacted_range(tenant),
                    value: now.to_be_bytes().to_vec(),
                }],
            )
            .await?;
        work.report.buckets = 1;
        Ok(work.report)
    }

    /// Whether every record of a pack that the rows do not tile is either
    /// one of the records rewritten or a copy of a chunk rewritten (same
    /// series, reference and content): reads and decodes the whole pack.
    async fn covered_with_duplicates(
        &self,
        table: &str,
        key: &str,
        size: u64,
        bref: &BucketRef,
        ranges: &[(u64, u32)],
        chunks: &HashSet<(SeriesId, ChunkRef, u128)>,
    ) -> Result<bool, StoreError> {
        let Ok(len) = u32::try_from(size) else {
            return Ok(false);
        };
        let bytes = self.store.objects[bref.period]
            .get_range(table, key, 0, len)
            .await?;
        let records = match decode_pack(&bytes) {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(pack = key, error = %e, "a pack does not decode; it is kept");
                return Ok(false);
            }
        };
        let rewritten: HashSet<(u64, u32)> = ranges.iter().copied().collect();
        Ok(records.iter().all(|(offset, len, c)| {
            rewritten.contains(&(*offset, *len))
                || chunks.contains(&(
                    index::series_id(&c.labels),
                    c.chunk_ref(),
                    xxh3_128(&c.data),
                ))
        }))
    }

    /// Rewrites the chunks of a batch of series and writes their new rows.
    async fn compact_batch(
        &self,
        tenant: &str,
        bref: &BucketRef,
        (start, end): (i64, i64),
        ids: &[SeriesId],
        work: &mut BucketWork,
    ) -> Result<(), StoreError> {
        let store = &self.store;
        let index = &store.indexes[bref.period];
        let b = bref.bucket;
        let rows: Vec<(SeriesId, Vec<IndexRow>)> = stream::iter(ids.iter().copied())
            .map(|id| async move {
                let q = index::series_query(tenant, b, &id, i64::MIN);
                Ok::<_, StoreError>((id, index.query(&bref.table, &q).await?))
            })
            .buffered(store.config.concurrency.max(1))
            .try_collect()
            .await?;
        let mut series: Vec<SeriesChunks> = Vec::new();
        for (id, rows) in rows {
            let Some(labels) = super::series_labels(tenant, b, &id, &rows)? else {
                continue;
            };
            let mut chunks = Vec::new();
            for r in &rows {
                let Some(chunk) = ChunkRef::from_range_key(&r.range) else {
                    continue;
                };
                if chunk.from < start || chunk.through >= end {
                    continue;
                }
                let loc = store.chunk_location(tenant, &chunk, r)?;
                work.old_rows.insert(
                    IndexKey {
                        hash: index::series_key(tenant, b, &id),
                        range: r.range.clone(),
                    },
                    r.value.len(),
                );
                chunks.push((chunk, loc));
            }
            if !chunks.is_empty() {
                chunks.sort_by_key(|(c, _)| (c.from, c.through, c.checksum));
                series.push(SeriesChunks { id, labels, chunks });
            }
        }
        if series.is_empty() {
            return Ok(());
        }
        for s in &series {
            for (_, loc) in &s.chunks {
                work.report.chunks_read += 1;
                work.report.bytes_read += u64::from(loc.len);
                work.rewritten
                    .entry((loc.table.clone(), loc.key.clone()))
                    .or_default()
                    .push((loc.offset, loc.len));
            }
        }
        work.report.series += series.len();
        let ids: Vec<SeriesId> = series.iter().map(|s| s.id).collect();
        let refs = series.into_iter().map(|s| (s.labels, s.chunks)).collect();
        let read = store.read_chunks(refs, false).await?;
        let mut new_chunks: Vec<(SeriesId, StoreChunk)> = Vec::new();
        for (id, s) in ids.into_iter().zip(read) {
            for c in &s.chunks {
                work.chunks.insert((id, c.chunk_ref(), xxh3_128(&c.data)));
            }
            for c in rewrite(s.chunks)? {
                new_chunks.push((id, c));
            }
        }
        let to_write: Vec<&StoreChunk> = new_chunks.iter().map(|(_, c)| c).collect();
        let put = store.put_packs(tenant, &to_write).await?;
        work.report.packs_written += put.packs.len();
        work.report.bytes_written += put.bytes;
        work.report.chunks_written += new_chunks.len();
        for (_, table, key) in put.packs {
            work.written.insert((table, key));
        }
        let mut rows: BTreeMap<(usize, String), Vec<IndexEntry>> = BTreeMap::new();
        let entries = rows.entry((bref.period, bref.table.clone())).or_default();
        for ((id, _), (r, loc)) in new_chunks.iter().zip(&put.located) {
            let e = index::chunk_entry(tenant, b, id, r, loc);
            work.new_rows.insert(IndexKey {
                hash: e.hash.clone(),
                range: e.range.clone(),
            });
            entries.push(e);
        }
        let (_, bytes) = store.write_rows(rows).await?;
        work.report.row_bytes_written += bytes;
        Ok(())
    }
}

/// The time in a bookkeeping row's value (big-endian milliseconds).
fn when(value: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

#[async_trait]
impl Service for Compactor {
    fn name(&self) -> &'static str {
        "compactor"
    }

    async fn start(&self) -> Result<(), ServiceError> {
        let interval = self.inner.config.interval.max(Duration::from_secs(1));
        let inner = self.inner.clone();
        // The first pass a minute after start (or sooner with a short
        // interval): not in the way of a starting process.
        let first = interval.min(Duration::from_secs(60));
        self.task.spawn_every(first, interval, move || {
            let inner = inner.clone();
            async move {
                match inner.run(now_ms()).await {
                    Ok(r) if r.buckets + r.packs_deleted + r.failed > 0 => tracing::info!(
                        buckets = r.buckets,
                        failed = r.failed,
                        chunks_read = r.chunks_read,
                        chunks_written = r.chunks_written,
                        packs_retired = r.packs_retired,
                        packs_deleted = r.packs_deleted,
                        "compaction pass done"
                    ),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "compaction pass failed; retrying at the next interval"),
                }
            }
        });
        Ok(())
    }

    async fn stop(&self) -> Result<(), ServiceError> {
        self.task.stop().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(encoding: ChunkEncoding, samples: &[(i64, f64)]) -> StoreChunk {
        let s: Vec<Sample> = samples.iter().map(|&(t, v)| Sample { t, v }).collect();
        let data = match encoding {
            ChunkEncoding::Packed => packed::encode(&s),
            _ => {
                let mut c = XorChunk::new();
                let mut app = c.appender();
                for x in &s {
                    app.append(x.t, x.v).expect("append");
                }
                c.into_bytes()
            }
        };
        StoreChunk {
            labels: Labels::from_pairs([("__name__", "x")]),
            fingerprint: 7,
            from: s[0].t,
            through: s[s.len() - 1].t,
            encoding,
            data,
        }
    }

    fn series_chunk(name: &str, samples: &[(i64, f64)]) -> StoreChunk {
        let labels = Labels::from_pairs([("__name__", name)]);
        StoreChunk {
            fingerprint: crate::model::fingerprint("t", labels.as_slice()),
            labels,
            ..chunk(ChunkEncoding::Xor, samples)
        }
    }

    /// Two replicas that stored the same chunk at the same moment leave a
    /// record no row points at, a copy of a chunk the compaction rewrites:
    /// its pack is retired. So is a pack with a copy of a chunk whose first
    /// pack got no rows (a flush retried after writing its pack). A pack
    /// with a record that is a copy of nothing is kept.
    #[tokio::test]
    async fn packs_of_racing_replicas_and_retried_flushes_are_retired() {
        use crate::store::{SchemaConfig, StorageConfig};
        const HOUR: i64 = 3_600_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StorageConfig::in_dir(dir.path());
        let store = Arc::new(
            Store::new(&config, &SchemaConfig::default(), &Metrics::new()).expect("store"),
        );
        let d0 = 20_000 * 86_400_000;
        let window = |w: i64, v: f64| -> Vec<(i64, f64)> {
            (0..8)
                .map(|i| (d0 + w * 2 * HOUR + i * 60_000, v + i as f64))
                .collect()
        };
        let (a1, b1, c1) = (
            series_chunk("a", &window(0, 1.0)),
            series_chunk("b", &window(0, 2.0)),
            series_chunk("c", &window(0, 3.0)),
        );
        let (a2, b2) = (
            series_chunk("a", &window(1, 4.0)),
            series_chunk("b", &window(1, 5.0)),
        );
        let (e1, stray) = (
            series_chunk("e", &window(0, 6.0)),
            series_chunk("e", &window(3, 7.0)),
        );
        // Writes packs and rows as a flush that skipped the de-duplication
        // read would; `indexed` says which chunks get rows.
        let flush = |chunks: Vec<&StoreChunk>, indexed: usize| {
            let store = store.clone();
            let chunks: Vec<StoreChunk> = chunks.into_iter().cloned().collect();
            async move {
                let refs: Vec<&StoreChunk> = chunks.iter().collect();
                let put = store.put_packs("t", &refs).await.expect("packs");
                let b = d0 / 86_400_000;
                let table = store.schema().period(d0).index_table(d0);
                let mut rows = Vec::new();
                for (c, (r, loc)) in chunks.iter().zip(&put.located).take(indexed) {
                    index::series_entries("t", b, &c.labels, &mut rows);
                    rows.push(index::tenant_entry("t", b));
                    rows.push(index::chunk_entry(
                        "t",
                        b,
                        &index::series_id(&c.labels),
                        r,
                        loc,
                    ));
                }
                store
                    .write_rows(BTreeMap::from([((0, table), rows)]))
                    .await
                    .expect("rows");
                put.packs
            }
        };
        let mut packs = Vec::new();
        packs.extend(flush(vec![&a1, &b1], 2).await);
        // The other replica, at the same moment: its row for a1 replaces
        // the first one's.
        packs.extend(flush(vec![&a1, &c1], 2).await);
        // A pack written, its rows not; the retry packs differently. No
        // row points into the first pack, so no compaction finds it: it
        // stays (listing every object to find such packs is not worth it).
        let mut kept = flush(vec![&a2, &b2], 0).await;
        packs.extend(flush(vec![&a2, &c1], 1).await);
        packs.extend(flush(vec![&b2], 1).await);
        // A record that is a copy of nothing: its pack stays.
        kept.extend(flush(vec![&e1, &stray], 1).await);
        assert_eq!((packs.len(), kept.len()), (4, 2));

        let all = [
            crate::model::Matcher::new(crate::model::MatchOp::RegexMatch, "__name__", ".+")
                .expect("matcher"),
        ];
        let all = &all;
        let read = |store: Arc<Store>| async move {
            store
                .select("t", all, d0, d0 + 86_400_000)
                .await
                .expect("select")
                .into_iter()
                .map(|s| {
                    let mut runs: Vec<Vec<Sample>> = s
                        .chunks
                        .iter()
                        .map(|c| float_samples(c).expect("decodes"))
                        .collect();
                    runs.sort_by_key(|r| r.first().map(|s| s.t));
                    (s.labels, merge_runs(&runs, i64::MIN, i64::MAX))
                })
                .collect::<Vec<_>>()
        };
        let before = read(store.clone()).await;
        let compactor = Compactor::new(
            CompactorConfig {
                deletion_delay: Duration::ZERO,
                ..CompactorConfig::default()
            },
            store.clone(),
            &Metrics::new(),
        );
        let now = d0 + 86_400_000 + 7 * HOUR;
        let r = compactor.run(now).await.expect("compaction");
        assert_eq!((r.buckets, r.packs_retired), (1, 4), "{r:?}");
        assert_eq!(compactor.run(now).await.expect("deletes").packs_deleted, 4);
        let objects = store.objects[0].clone();
        for (_, table, key) in &packs {
            assert_eq!(objects.size(table, key).await.expect("size"), None);
        }
        for (_, table, key) in &kept {
            assert!(objects.size(table, key).await.expect("size").is_some());
        }
        assert_eq!(read(store.clone()).await, before);
    }

    #[test]
    fn records_tile_a_pack_only_when_all_are_there() {
        let m = PACK_MAGIC.len() as u64;
        assert!(tiles(&mut [(m + 10, 5), (m, 10)], m + 15));
        // A record twice (two rows of one record) still tiles.
        assert!(tiles(&mut [(m, 10), (m, 10), (m + 10, 5)], m + 15));
        assert!(!tiles(&mut [(m, 10)], m + 15), "a record not rewritten");
        assert!(!tiles(&mut [(m + 10, 5)], m + 15), "the first one missing");
        assert!(!tiles(&mut [(m, 10), (m + 11, 4)], m + 15), "a gap");
        assert!(!tiles(&mut [], m + 15));
    }

    #[test]
    fn float_chunks_merge_into_one_and_others_stay() {
        let a: Vec<(i64, f64)> = (0..100).map(|i| (i * 15_000, i as f64 * 0.5)).collect();
        let b: Vec<(i64, f64)> = (100..200).map(|i| (i * 15_000, i as f64 * 0.5)).collect();
        // A replica's overlapping chunk, and one with a disagreeing value
        // that loses to the chunk that starts first.
        let replica: Vec<(i64, f64)> = (50..150).map(|i| (i * 15_000, i as f64 * 0.5)).collect();
        let histogram = StoreChunk {
            encoding: ChunkEncoding::Histogram,
            data: vec![1, 2, 3],
            ..chunk(ChunkEncoding::Xor, &a[..2])
        };
        let out = rewrite(vec![
            chunk(ChunkEncoding::Packed, &b),
            chunk(ChunkEncoding::Xor, &a),
            chunk(ChunkEncoding::Xor, &replica),
            histogram.clone(),
        ])
        .expect("rewrite");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], histogram);
        let merged = &out[1];
        assert_eq!((merged.from, merged.through), (0, 199 * 15_000));
        let samples = float_samples(merged).expect("decodes");
        let want: Vec<Sample> = a.iter().chain(&b).map(|&(t, v)| Sample { t, v }).collect();
        assert_eq!(samples, want);
        assert_eq!(merged.encoding, ChunkEncoding::Packed, "the smaller");
    }

    #[test]
    fn long_series_are_cut_at_the_chunk_limit() {
        let n = MAX_SAMPLES + 10;
        let a: Vec<(i64, f64)> = (0..n as i64).map(|i| (i * 1000, 1.0)).collect();
        let (x, y) = a.split_at(n / 2);
        let out = rewrite(vec![
            chunk(ChunkEncoding::Packed, x),
            chunk(ChunkEncoding::Packed, y),
        ])
        .expect("rewrite");
        assert_eq!(out.len(), 2);
        assert_eq!(float_samples(&out[0]).expect("decodes").len(), MAX_SAMPLES);
        assert_eq!(out[1].from, MAX_SAMPLES as i64 * 1000);
        assert_eq!(out[1].through, (n as i64 - 1) * 1000);
    }
}
