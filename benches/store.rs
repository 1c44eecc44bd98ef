//! The long-term store, end to end through the real ingester head and
//! flusher into the local filesystem and embedded index:
//!
//! - **bytes stored per sample**: 7 days of 15 s scrapes of a node-exporter-
//!   like mix of series, appended to a head and flushed every 2 hours of
//!   data, as an ingester does; the packs and the index file measured on
//!   disk;
//!   beside it, what Prometheus's TSDB blocks spend on the same samples'
//!   chunks: XOR chunks of 120 samples (our XOR encoder is Prometheus's, bit
//!   for bit), each framed in the block's chunk file by a length varint, an
//!   encoding byte and a CRC32, and referenced from the block index by
//!   about 6 bytes of delta-encoded chunk meta (its label index comes on
//!   top and is not counted);
//! - **requests per million samples flushed**, from the backends' own
//!   request counters;
//! - **query latency of a 7-day range query** read from the store alone
//!   (criterion), through the PromQL engine.
//!
//! Then the compactor rewrites each day into one chunk per series, as it
//! does by default once a day has ended, and the sizes are measured again;
//! the queries read the compacted days (`STORE_COMPACT=0` skips this).
//!
//! `STORE_BACKEND=cassandra` runs it all against a real Apache Cassandra
//! (chunks and index), started as the integration tests start theirs
//! (`tests/install-deps.sh` installs it); the default is local files and
//! the embedded index. `STORE_SERIES` sets the number of series (default 1000),
//! `STORE_CHUNK_WINDOW_HOURS` the ingesters' `chunk_window` (default 2, as
//! the ingester's default): one stored chunk per series and window.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use strata::chunk::XorChunk;
use strata::ingester::flush::{FlushConfig, Flusher};
use strata::ingester::head::{HeadConfig, Heads};
use strata::limits::Limits;
use strata::metrics::Metrics;
use strata::model::{Labels, Sample};
use strata::promql::{Engine, EngineConfig};
use strata::querier::store::StoreQueryable;
use strata::store::compactor::{Compactor, CompactorConfig};
use strata::store::{CassandraConfig, ChunkBackend, IndexBackend, PeriodConfig};
use strata::store::{EmbeddedConfig, FilesystemConfig, SchemaConfig, StorageConfig, Store};
use strata::tenant::TenantId;

#[path = "../tests/common/mod.rs"]
mod common;

const STEP_MS: i64 = 15_000;
const DAY_MS: i64 = 86_400_000;
const DAYS: i64 = 7;

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// One series' kind, in node-exporter proportions.
#[derive(Clone, Copy)]
enum Kind {
    /// Bytes or packets: large integer increments.
    Counter,
    /// Requests: small integer increments.
    SmallCounter,
    /// Memory, filesystem: integers that change now and then.
    Gauge,
    /// Temperatures, load: floats with two decimals.
    FloatGauge,
    /// Histogram buckets: small integer increments, often none.
    Bucket,
    /// `up`, info metrics.
    Constant,
}

fn kinds(series: usize) -> Vec<(Labels, Kind)> {
    let mix = [
        (Kind::Counter, 30),
        (Kind::SmallCounter, 15),
        (Kind::Gauge, 25),
        (Kind::FloatGauge, 10),
        (Kind::Bucket, 15),
        (Kind::Constant, 5),
    ];
    let mut out = Vec::with_capacity(series);
    let mut i = 0;
    while out.len() < series {
        for (kind, share) in mix {
            for _ in 0..share {
                if out.len() == series {
                    break;
                }
                let name = match kind {
                    Kind::Counter => "node_network_receive_bytes_total",
                    Kind::SmallCounter => "http_requests_total",
                    Kind::Gauge => "node_memory_MemAvailable_bytes",
                    Kind::FloatGauge => "node_hwmon_temp_celsius",
                    Kind::Bucket => "http_request_duration_seconds_bucket",
                    Kind::Constant => "up",
                };
                let labels = Labels::from_pairs([
                    ("__name__", name.to_string()),
                    ("job", "node".to_string()),
                    ("instance", format!("host-{}:9100", i % 50)),
                    ("series", i.to_string()),
                ]);
                out.push((labels, kind));
                i += 1;
            }
        }
    }
    out
}

struct State {
    value: f64,
    rng: Lcg,
    /// The series' open chunk as Prometheus would cut it.
    prometheus: XorChunk,
}

/// Prometheus's head cuts a chunk at 120 samples.
const PROMETHEUS_CHUNK_SAMPLES: usize = 120;
/// A chunk in a block's chunk file: length varint (2 bytes at these sizes),
/// encoding byte and CRC32 around the data; its meta in the index (ref,
/// min and max time as deltas) about 6 more.
const PROMETHEUS_CHUNK_OVERHEAD: usize = 2 + 1 + 4 + 6;

impl State {
    /// Appends to the Prometheus model; returns the bytes of a chunk it
    /// completes.
    fn prometheus_append(&mut self, t: i64, v: f64) -> usize {
        let full = self.prometheus.num_samples() == PROMETHEUS_CHUNK_SAMPLES;
        let done = if full {
            std::mem::replace(&mut self.prometheus, XorChunk::new())
                .bytes()
                .len()
                + PROMETHEUS_CHUNK_OVERHEAD
        } else {
            0
        };
        self.prometheus
            .appender()
            .append(t, v)
            .expect("increasing timestamps");
        done
    }

    fn prometheus_rest(&self) -> usize {
        match self.prometheus.num_samples() {
            0 => 0,
            _ => self.prometheus.bytes().len() + PROMETHEUS_CHUNK_OVERHEAD,
        }
    }
}

impl State {
    fn step(&mut self, kind: Kind) -> f64 {
        let r = self.rng.next();
        match kind {
            Kind::Counter => self.value += (r % 200_000) as f64,
            Kind::SmallCounter => self.value += (r % 20) as f64,
            Kind::Gauge => {
                if r.is_multiple_of(10) {
                    self.value += ((r >> 8) % 1_000_000) as f64 * 4096.0 - 2_048_000_000.0;
                }
            }
            Kind::FloatGauge => {
                self.value = ((self.value * 100.0).round() + ((r % 21) as f64 - 10.0)) / 100.0
            }
            Kind::Bucket => {
                if r.is_multiple_of(3) {
                    self.value += (r % 5) as f64;
                }
            }
            Kind::Constant => {}
        }
        self.value
    }
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

struct Loaded {
    store: Arc<Store>,
    end: i64,
    backend: Backend,
    _dir: tempfile::TempDir,
}

/// Where the bench stores: local files and the embedded index, or a real
/// Cassandra for both (its native port).
#[derive(Clone, Copy)]
enum Backend {
    Local,
    Cassandra(u16),
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Local => "local files and the embedded index",
            Backend::Cassandra(_) => "Cassandra",
        }
    }

    fn objects(self) -> &'static str {
        match self {
            Backend::Local => "filesystem",
            Backend::Cassandra(_) => "cassandra",
        }
    }

    fn index(self) -> &'static str {
        match self {
            Backend::Local => "embedded",
            Backend::Cassandra(_) => "cassandra",
        }
    }
}

fn load(rt: &tokio::runtime::Runtime, series: usize, backend: Backend) -> Loaded {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut storage = StorageConfig {
        filesystem: FilesystemConfig {
            directory: dir.path().join("chunks"),
        },
        embedded: EmbeddedConfig {
            path: dir.path().join("index.redb"),
        },
        ..StorageConfig::default()
    };
    let mut schema = SchemaConfig::default();
    if let Backend::Cassandra(port) = backend {
        storage.cassandra = CassandraConfig {
            addresses: vec!["127.0.0.1".to_string()],
            port,
            keyspace: "store_bench".to_string(),
            replication_factor: 1,
            ..CassandraConfig::default()
        };
        schema.periods = vec![PeriodConfig {
            chunks: ChunkBackend::Cassandra,
            index: IndexBackend::Cassandra,
            ..PeriodConfig::default()
        }];
    }
    let metrics = Metrics::new();
    let store = Arc::new(Store::new(&storage, &schema, &metrics).expect("store opens"));
    let flusher = Flusher::new(
        FlushConfig {
            retain_period: Duration::ZERO,
            ..FlushConfig::default()
        },
        store.clone(),
        &metrics,
    );
    let window_hours: u64 = std::env::var("STORE_CHUNK_WINDOW_HOURS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    // Data appended between flushes: one chunk window, which the flusher
    // writes once the series moves on to the next.
    let flush_every_ms = window_hours as i64 * 3_600_000;
    let heads = Heads::new(HeadConfig {
        chunk_window: Duration::from_secs(window_hours * 3600),
        ..HeadConfig::default()
    });
    let head = heads.get_or_create("bench");
    let limits = Limits {
        max_series_per_tenant: 0,
        max_series_per_metric: 0,
        ..Limits::default()
    };
    let all = kinds(series);
    let mut states: Vec<State> = (0..series)
        .map(|i| State {
            value: (i * 1000) as f64,
            rng: Lcg(i as u64 + 1),
            prometheus: XorChunk::new(),
        })
        .collect();
    // Whole days, ending at the last midnight.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let end = now / DAY_MS * DAY_MS;
    let start = end - DAYS * DAY_MS;
    let points_per_block = flush_every_ms / STEP_MS;
    let mut samples_total = 0u64;
    let mut prometheus_bytes = 0usize;
    let (mut index_rows, mut index_row_bytes) = (0usize, 0u64);
    let mut packed_bytes = 0u64;
    let started = Instant::now();
    let mut t0 = start;
    while t0 < end {
        let mut blocks: Vec<Vec<Sample>> = Vec::with_capacity(series);
        for (s, (_, kind)) in states.iter_mut().zip(&all) {
            let block: Vec<Sample> = (0..points_per_block)
                .map(|i| Sample {
                    t: t0 + i * STEP_MS,
                    v: s.step(*kind),
                })
                .collect();
            for sample in &block {
                prometheus_bytes += s.prometheus_append(sample.t, sample.v);
            }
            blocks.push(block);
        }
        let batch: Vec<(&Labels, &[Sample])> = all
            .iter()
            .zip(&blocks)
            .map(|((l, _), b)| (l, b.as_slice()))
            .collect();
        head.append_batch(&batch, &limits);
        samples_total += (series as i64 * points_per_block) as u64;
        t0 += flush_every_ms;
        let report = rt
            .block_on(flusher.flush_round(&heads, false))
            .expect("flush");
        index_rows += report.index_rows;
        index_row_bytes += report.index_bytes;
        packed_bytes += report.bytes;
    }
    let report = rt
        .block_on(flusher.flush_round(&heads, true))
        .expect("flush");
    let elapsed = started.elapsed();
    prometheus_bytes += states.iter().map(State::prometheus_rest).sum::<usize>();
    let requests = store.requests();
    let puts = requests.get(backend.objects(), "put");
    let index_writes = requests.get(backend.index(), "write");
    let index_queries = requests.get(backend.index(), "query");
    let per_million = |n: u64| n as f64 * 1e6 / samples_total as f64;
    println!(
        "store: {series} series x {DAYS} days of {}s samples = {samples_total} samples into {}, {window_hours} h chunk window, appended and flushed in {elapsed:.1?} (last round: {report:?})",
        STEP_MS / 1000,
        backend.name()
    );
    let sizes = |packed: u64| match backend {
        Backend::Local => {
            let pack_bytes = dir_bytes(&dir.path().join("chunks"));
            let index_bytes = std::fs::metadata(dir.path().join("index.redb"))
                .map(|m| m.len())
                .unwrap_or(0);
            format!(
                "packs {pack_bytes} B = {:.3} B/sample; embedded index file {index_bytes} B = {:.3} B/sample; total {:.3} B/sample",
                pack_bytes as f64 / samples_total as f64,
                index_bytes as f64 / samples_total as f64,
                (pack_bytes + index_bytes) as f64 / samples_total as f64
            )
        }
        Backend::Cassandra(_) => format!(
            "packs {packed} B = {:.3} B/sample (as written; Cassandra's files are not measured)",
            packed as f64 / samples_total as f64
        ),
    };
    println!("store: as flushed: {}", sizes(packed_bytes));
    println!(
        "store: Prometheus blocks, same samples: chunks {prometheus_bytes} B = {:.3} B/sample (XOR chunks of {PROMETHEUS_CHUNK_SAMPLES} samples, their framing and index meta; label index not counted)",
        prometheus_bytes as f64 / samples_total as f64
    );
    println!(
        "store: index rows written: {index_rows} rows, {index_row_bytes} B of keys and values = {:.3} B/sample (what a Cassandra or DynamoDB index holds before its own overhead)",
        index_row_bytes as f64 / samples_total as f64
    );
    println!(
        "store: per million samples flushed: {:.1} object puts (Cassandra: 64 KiB pieces), {:.1} index write batches, {:.1} index queries (de-duplication lookups)",
        per_million(puts),
        per_million(index_writes),
        per_million(index_queries)
    );
    if std::env::var("STORE_COMPACT").as_deref() != Ok("0") {
        // The compactor as it runs by default, once every day has ended
        // `min_age` ago; a second pass deletes the retired packs (no
        // deletion delay here).
        let compactor = Compactor::new(
            CompactorConfig {
                deletion_delay: Duration::ZERO,
                ..CompactorConfig::default()
            },
            store.clone(),
            &metrics,
        );
        let started = Instant::now();
        let now = end + 7 * 3_600_000;
        let r = rt.block_on(compactor.run(now)).expect("compaction");
        let compacted_in = started.elapsed();
        let deleted = rt.block_on(compactor.run(now)).expect("deletion pass");
        let packed = packed_bytes + r.bytes_written - r.retired_bytes;
        let rows = index_row_bytes + r.row_bytes_written - r.row_bytes_deleted;
        println!(
            "store: compacted {} tenant-days in {compacted_in:.1?} ({:.1} M samples/s): {} chunks read ({} B) into {} chunks ({} B) in {} packs; {} packs retired ({} B), {} deleted by the next pass",
            r.buckets,
            samples_total as f64 / compacted_in.as_secs_f64() / 1e6,
            r.chunks_read,
            r.bytes_read,
            r.chunks_written,
            r.bytes_written,
            r.packs_written,
            r.packs_retired,
            r.retired_bytes,
            deleted.packs_deleted
        );
        println!("store: after compaction: {}", sizes(packed));
        println!(
            "store: after compaction: index rows {rows} B of keys and values = {:.3} B/sample; packs + index rows = {:.3} B/sample (Cassandra / DynamoDB)",
            rows as f64 / samples_total as f64,
            (packed + rows) as f64 / samples_total as f64
        );
    }
    Loaded {
        store,
        end,
        backend,
        _dir: dir,
    }
}

fn store_queries(c: &mut Criterion) {
    // `cargo test --all-targets` runs benches once without `--bench`: a
    // small data set keeps that quick.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let series: usize = std::env::var("STORE_SERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benchmarking { 1000 } else { 10 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let backend = match std::env::var("STORE_BACKEND").as_deref() {
        Ok("cassandra") => Backend::Cassandra(
            rt.block_on(common::Cassandra::shared())
                .expect("cassandra starts (tests/install-deps.sh installs it)"),
        ),
        _ => Backend::Local,
    };
    let loaded = load(&rt, series, backend);
    let queryable = StoreQueryable {
        tenant: TenantId::parse("bench").expect("valid tenant"),
        store: loaded.store.clone(),
        min_time: i64::MIN,
        max_time: i64::MAX,
    };
    let engine = Engine::new(EngineConfig::default());
    let (start, end) = (loaded.end - DAYS * DAY_MS, loaded.end);
    let mut group = c.benchmark_group("store_7d_range");
    group.sample_size(10);
    // Two 7-day queries, and one over an hour of three days ago (a
    // compacted day holds a series' day in one chunk, which such a query
    // reads and decodes whole).
    let hour_ago = start + 4 * DAY_MS;
    for (name, query, (start, end, step)) in [
        (
            "sum_rate_counters_1h_step",
            "sum by (instance) (rate(node_network_receive_bytes_total[5m]))",
            (start, end, 3_600_000),
        ),
        (
            "avg_over_time_gauge_1h_step",
            "avg(avg_over_time(node_memory_MemAvailable_bytes[1h]))",
            (start, end, 3_600_000),
        ),
        (
            "sum_rate_counters_1h_range_3d_ago_1m_step",
            "sum by (instance) (rate(node_network_receive_bytes_total[5m]))",
            (hour_ago, hour_ago + 3_600_000, 60_000),
        ),
    ] {
        // The first run reads the packs (the chunk cache is cold).
        let reads = || {
            loaded
                .store
                .requests()
                .get(loaded.backend.objects(), "get_range")
        };
        let reads_before = reads();
        let started = Instant::now();
        let result = rt
            .block_on(engine.range(&queryable, query, start, end, step))
            .expect("query runs");
        println!(
            "store: {name}: {} series in the answer; cold: {:.1?}, {} object reads",
            series_count(&result),
            started.elapsed(),
            reads() - reads_before
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(engine.range(&queryable, query, start, end, step))
                    .expect("query runs")
            })
        });
    }
    group.finish();
}

fn series_count(result: &strata::promql::QueryResult) -> usize {
    match &result.value {
        strata::promql::Value::Matrix(m) => m.len(),
        strata::promql::Value::Vector(v) => v.len(),
        _ => 1,
    }
}

criterion_group!(benches, store_queries);
criterion_main!(benches);
