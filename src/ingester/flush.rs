//! Flushing: chunks go from the head to the long-term store.
//!
//! Every `period` the flusher asks each tenant's head for its flushable
//! chunks (cut chunks, and open chunks idle for `max_chunk_idle` or older
//! than `max_chunk_age`, which the head cuts), writes them to the store in
//! batches, and marks them flushed once the store acknowledges. Flushed
//! chunks stay in memory for `retain_period`, then go. A failed write
//! leaves its chunks unflushed — in memory and, through the checkpoint's
//! watermarks, in the WAL — and the next round tries again, after a
//! backoff that doubles per consecutive failure up to `max_backoff`.
//!
//! On shutdown (and on `POST /flush`) every open chunk is cut and flushed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

use super::head::{FlushChunk, FlushPolicy, Heads};
use crate::metrics::Metrics;
use crate::model::now_ms;
use crate::store::{ChunkEncoding, Store, StoreChunk, StoreError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlushConfig {
    /// How often the ingester looks for chunks to flush (0s: never).
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// An open chunk whose series got no sample for this long is flushed.
    #[serde(with = "humantime_serde")]
    pub max_chunk_idle: Duration,
    /// An open chunk whose first sample is older than this is flushed.
    #[serde(with = "humantime_serde")]
    pub max_chunk_age: Duration,
    /// How long a flushed chunk stays in memory.
    #[serde(with = "humantime_serde")]
    pub retain_period: Duration,
    /// Chunks written to the store in one batch.
    pub batch_chunks: usize,
    /// Wait after a failed flush round; doubles per failure up to
    /// `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Flush every chunk before the ingester stops.
    pub flush_on_shutdown: bool,
    /// Longest the shutdown flush keeps retrying a failing store; what is
    /// not flushed then stays in the WAL.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for FlushConfig {
    fn default() -> Self {
        FlushConfig {
            period: Duration::from_secs(60),
            max_chunk_idle: Duration::from_secs(5 * 60),
            max_chunk_age: Duration::from_secs(2 * 3600),
            retain_period: Duration::from_secs(60),
            batch_chunks: 10_000,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            flush_on_shutdown: true,
            shutdown_timeout: Duration::from_secs(60),
        }
    }
}

/// What one flush round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub chunks: usize,
    pub already_stored: usize,
    pub packs: usize,
    pub bytes: u64,
    pub index_rows: usize,
    pub index_bytes: u64,
    pub dropped: usize,
}

pub struct Flusher {
    config: FlushConfig,
    store: Arc<Store>,
    failures_in_a_row: AtomicU32,
    flushed_chunks: Counter,
    already_stored: Counter,
    flushed_bytes: Counter,
    failures: Counter,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// One round at a time (the loop, `POST /flush`, shutdown).
    round: tokio::sync::Mutex<()>,
}

impl Flusher {
    pub fn new(config: FlushConfig, store: Arc<Store>, metrics: &Metrics) -> Flusher {
        let flusher = Flusher {
            config,
            store,
            failures_in_a_row: AtomicU32::new(0),
            flushed_chunks: Counter::default(),
            already_stored: Counter::default(),
            flushed_bytes: Counter::default(),
            failures: Counter::default(),
            last_success: Gauge::default(),
            round: tokio::sync::Mutex::new(()),
        };
        metrics.with_registry(|r| {
            r.register(
                "strata_ingester_flushed_chunks",
                "Chunks the ingester wrote to the long-term store.",
                flusher.flushed_chunks.clone(),
            );
            r.register(
                "strata_ingester_flush_already_stored_chunks",
                "Chunks a flush skipped because the store already had them (another replica's flush).",
                flusher.already_stored.clone(),
            );
            r.register(
                "strata_ingester_flushed_bytes",
                "Bytes of packed chunks the ingester wrote to the long-term store.",
                flusher.flushed_bytes.clone(),
            );
            r.register(
                "strata_ingester_flush_failures",
                "Flush batches the long-term store failed; their chunks stay in memory and in the WAL and are retried.",
                flusher.failures.clone(),
            );
            r.register(
                "strata_ingester_flush_last_success_timestamp_seconds",
                "When a flush round last completed without a failure.",
                flusher.last_success.clone(),
            );
        });
        flusher
    }

    pub fn config(&self) -> &FlushConfig {
        &self.config
    }

    /// The wait before the next round: the period, or the backoff after
    /// failures when that is longer.
    pub fn next_wait(&self) -> Duration {
        let failures = self.failures_in_a_row.load(Ordering::Relaxed);
        if failures == 0 {
            return self.config.period;
        }
        let backoff = self
            .config
            .min_backoff
            .saturating_mul(1u32 << failures.min(16).saturating_sub(1))
            .min(self.config.max_backoff);
        backoff.max(self.config.min_backoff)
    }

    /// The chunk as the store keeps it: float chunks re-encoded as packed
    /// decimals (`chunk::packed`) when that is smaller than their XOR bytes.
    /// The encoding is a pure function of the samples, so replicas that cut
    /// the same chunk still store the same bytes under the same name.
    fn to_store(c: &FlushChunk) -> StoreChunk {
        let (encoding, data) = match c.encoding {
            ChunkEncoding::Xor => match crate::chunk::packed::from_xor(&c.bytes) {
                Ok(packed) if packed.len() < c.bytes.len() => (ChunkEncoding::Packed, packed),
                _ => (ChunkEncoding::Xor, c.bytes.clone()),
            },
            encoding => (encoding, c.bytes.clone()),
        };
        StoreChunk {
            labels: c.labels.clone(),
            fingerprint: c.fingerprint,
            from: c.min_t,
            through: c.max_t,
            encoding,
            data,
        }
    }

    /// One round over every tenant; `force` cuts and flushes every open
    /// chunk. Stops at the first failing batch (its chunks and the rest stay
    /// unflushed for the next round).
    pub async fn flush_round(&self, heads: &Heads, force: bool) -> Result<FlushReport, StoreError> {
        let _round = self.round.lock().await;
        let mut report = FlushReport::default();
        let policy = FlushPolicy {
            now_ms: now_ms(),
            max_idle: self.config.max_chunk_idle,
            max_age: self.config.max_chunk_age,
            force,
        };
        let result = async {
            for (tenant, head) in heads.all() {
                let chunks = head.flush_candidates(&policy);
                for batch in chunks.chunks(self.config.batch_chunks.max(1)) {
                    let store_chunks: Vec<StoreChunk> = batch.iter().map(Flusher::to_store).collect();
                    let stats = match self.store.write_chunks(&tenant, &store_chunks).await {
                        Ok(stats) => stats,
                        Err(err) => {
                            self.failures.inc();
                            tracing::warn!(
                                tenant,
                                chunks = batch.len(),
                                error = %err,
                                "flushing chunks to the long-term store failed; they stay in memory and in the WAL and are retried"
                            );
                            return Err(err);
                        }
                    };
                    head.mark_flushed(batch);
                    self.flushed_chunks.inc_by(stats.chunks as u64);
                    self.already_stored.inc_by(stats.already_stored as u64);
                    self.flushed_bytes.inc_by(stats.pack_bytes);
                    report.chunks += stats.chunks;
                    report.already_stored += stats.already_stored;
                    report.packs += stats.packs;
                    report.bytes += stats.pack_bytes;
                    report.index_rows += stats.index_rows;
                    report.index_bytes += stats.index_bytes;
                }
                report.dropped += head.drop_flushed(self.config.retain_period);
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                self.failures_in_a_row.store(0, Ordering::Relaxed);
                self.last_success.set(now_ms() as f64 / 1000.0);
                if report.chunks > 0 || report.already_stored > 0 {
                    tracing::info!(
                        chunks = report.chunks,
                        already_stored = report.already_stored,
                        packs = report.packs,
                        bytes = report.bytes,
                        index_rows = report.index_rows,
                        dropped = report.dropped,
                        "flushed chunks to the long-term store"
                    );
                }
                Ok(report)
            }
            Err(err) => {
                self.failures_in_a_row.fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    /// Flushes everything, retrying a failing store until
    /// `shutdown_timeout`.
    pub async fn flush_all(&self, heads: &Heads) -> Result<FlushReport, StoreError> {
        let deadline = Instant::now() + self.config.shutdown_timeout;
        loop {
            match self.flush_round(heads, true).await {
                Ok(report) => return Ok(report),
                Err(err) => {
                    let wait = self.next_wait();
                    if Instant::now() + wait > deadline {
                        return Err(err);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::store::StorageConfig {
            filesystem: crate::store::FilesystemConfig {
                directory: dir.path().join("chunks"),
            },
            embedded: crate::store::EmbeddedConfig {
                path: dir.path().join("index.redb"),
            },
            ..Default::default()
        };
        let metrics = Metrics::new();
        let store = Arc::new(
            Store::new(&storage, &crate::store::SchemaConfig::default(), &metrics).expect("store"),
        );
        let f = Flusher::new(FlushConfig::default(), store, &metrics);
        assert_eq!(f.next_wait(), Duration::from_secs(60));
        let waits: Vec<u64> = (0..9)
            .map(|_| {
                f.failures_in_a_row.fetch_add(1, Ordering::Relaxed);
                f.next_wait().as_secs()
            })
            .collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    fn flush_chunk(values: impl Iterator<Item = f64>) -> FlushChunk {
        let mut chunk = crate::chunk::XorChunk::new();
        let mut app = chunk.appender();
        let mut last = 0;
        for (i, v) in values.enumerate() {
            last = 1_700_000_000_000 + i as i64 * 15_000;
            app.append(last, v).expect("increasing timestamps");
        }
        FlushChunk {
            series_ref: crate::ingester::head::SeriesRef(1),
            fingerprint: 7,
            labels: crate::model::Labels::from_pairs([("__name__", "x")]),
            min_t: 1_700_000_000_000,
            max_t: last,
            encoding: ChunkEncoding::Xor,
            bytes: chunk.into_bytes(),
            sources: Vec::new(),
        }
    }

    #[test]
    fn float_chunks_are_stored_packed_when_that_is_smaller() {
        // Two decimals: packed, and every sample comes back bit for bit.
        let decimals = flush_chunk((0..480).map(|i| f64::from(2000 + i % 37) / 100.0));
        let stored = Flusher::to_store(&decimals);
        assert_eq!(stored.encoding, ChunkEncoding::Packed);
        assert!(stored.data.len() * 4 < decimals.bytes.len());
        let want: Vec<(i64, f64)> = crate::chunk::XorIterator::new(&decimals.bytes).collect();
        assert_eq!(want.len(), 480);
        let got: Vec<(i64, f64)> = crate::chunk::packed::decode(&stored.data)
            .expect("decodes")
            .into_iter()
            .map(|s| (s.t, s.v))
            .collect();
        assert_eq!(got, want);
        // Arbitrary floats: XOR stays.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise = flush_chunk((0..480).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f64::from_bits(x >> 2)
        }));
        let stored = Flusher::to_store(&noise);
        assert_eq!(stored.encoding, ChunkEncoding::Xor);
        assert_eq!(stored.data, noise.bytes);
    }
}
