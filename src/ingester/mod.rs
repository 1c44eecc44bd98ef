//! The ingester: a stateful ring member holding recent samples.
//!
//! Per tenant an in-memory [`head`] (series, postings, XOR chunks); every
//! accepted write is in the [`wal`] before it is acknowledged ([`push`]: log,
//! then apply, in WAL order). On start it joins the ring as JOINING, replays
//! the WAL ([`replay`]), then turns ACTIVE; on shutdown it turns LEAVING,
//! closes the WAL and leaves the ring. Queriers read it over gRPC ([`grpc`]).

pub mod client;
pub mod exemplars;
pub mod flush;
mod grpc;
pub mod head;
pub mod http;
mod metadata;
mod push;
mod replay;
mod unflushed;
pub mod wal;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::limits::{DiscardedSamples, Overrides};
use crate::metrics::Metrics;
use crate::ring::client::RingClient;
use crate::ring::desc::InstanceState;
use crate::ring::lifecycler::{Lifecycler, LifecyclerConfig};
use crate::service::{BackgroundTask, Service, ServiceError};
use crate::store::Store;
use flush::{FlushConfig, Flusher};
use head::{HeadConfig, Heads};
use metadata::MetadataStore;
use push::Sequencer;
use replay::ReplayProgress;
use unflushed::Watermarks;
use wal::{FsyncPolicy, Wal, WalOptions};

pub use grpc::IngesterService;

/// When the WAL is fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Before acknowledging each (group-committed) write: survives power loss.
    Always,
    /// At most every `fsync_interval`: a machine crash may lose that much.
    Interval,
    /// Never: survives a process crash, not a machine crash.
    Never,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// Directory of the write-ahead log.
    pub dir: String,
    /// When the WAL is fsynced: always, interval or never.
    pub fsync: FsyncMode,
    /// With `fsync: interval`, how often.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// Largest WAL segment file, in bytes (a multiple of 32 KiB).
    pub segment_size: usize,
    /// How often finished segments are folded into a checkpoint (and
    /// deleted); 0s: never. Until chunks are flushed to a store, the
    /// checkpoint keeps every sample.
    #[serde(with = "humantime_serde")]
    pub checkpoint_period: Duration,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            dir: "data/wal".to_string(),
            fsync: FsyncMode::Always,
            fsync_interval: Duration::from_secs(1),
            segment_size: wal::DEFAULT_SEGMENT_SIZE,
            checkpoint_period: Duration::from_secs(30 * 60),
        }
    }
}

impl WalConfig {
    fn options(&self) -> WalOptions {
        WalOptions {
            segment_size: self.segment_size,
            fsync: match self.fsync {
                FsyncMode::Always => FsyncPolicy::Always,
                FsyncMode::Never => FsyncPolicy::Never,
                FsyncMode::Interval => FsyncPolicy::Interval(self.fsync_interval),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngesterConfig {
    pub lifecycler: LifecyclerConfig,
    pub wal: WalConfig,
    pub head: HeadConfig,
    /// Pushes applied concurrently at most; more get a retryable error.
    pub max_inflight_push_requests: usize,
    /// A series without samples for this long is released from memory once
    /// its data is safe: today only series that hold no samples at all (left
    /// by a failed WAL write); with the long-term store, flushed series.
    #[serde(with = "humantime_serde")]
    pub series_idle_timeout: Duration,
    /// Flushing chunks to the long-term store.
    pub flush: FlushConfig,
}

impl Default for IngesterConfig {
    fn default() -> Self {
        IngesterConfig {
            lifecycler: LifecyclerConfig::default(),
            wal: WalConfig::default(),
            head: HeadConfig::default(),
            max_inflight_push_requests: 1024,
            series_idle_timeout: Duration::from_secs(3600),
            flush: FlushConfig::default(),
        }
    }
}

impl IngesterConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.head.validate().map_err(|e| e.to_string())?;
        if self.wal.segment_size == 0 || !self.wal.segment_size.is_multiple_of(wal::PAGE_SIZE) {
            return Err(format!(
                "ingester.wal.segment_size must be a positive multiple of {}",
                wal::PAGE_SIZE
            ));
        }
        if self.max_inflight_push_requests == 0 {
            return Err("ingester.max_inflight_push_requests must be at least 1".to_string());
        }
        Ok(())
    }
}

/// The addresses other processes reach this ingester at.
pub struct Advertised {
    pub grpc_addr: String,
    pub http_addr: String,
}

/// What the gRPC service and the lifecycle share.
pub(crate) struct State {
    heads: Heads,
    overrides: Arc<Overrides>,
    sequencer: Mutex<Arc<Sequencer>>,
    metadata: MetadataStore,
    discarded: DiscardedSamples,
    inflight: Semaphore,
    accepting: AtomicBool,
    samples_appended: Counter,
    exemplars_appended: Counter,
    exemplars_rejected: Counter,
    progress: ReplayProgress,
    replaying: AtomicBool,
    flusher: Option<Arc<Flusher>>,
    /// Set by `POST /shutdown`: flush on stop whatever the config says.
    flush_on_stop: AtomicBool,
}

pub struct Ingester {
    config: IngesterConfig,
    checkpointer: BackgroundTask,
    idle_gc: BackgroundTask,
    flush_loop: BackgroundTask,
    lifecycler: Lifecycler,
    state: Arc<State>,
    replay_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    torn_tails: Counter,
    corruptions: Counter,
    wal_metrics_registered: AtomicBool,
    metrics: Metrics,
}

impl Ingester {
    pub fn new(
        config: IngesterConfig,
        advertised: Advertised,
        ring: Arc<RingClient>,
        forget_unhealthy_after: Duration,
        limits: (Arc<Overrides>, DiscardedSamples),
        store: Option<Arc<Store>>,
        metrics: &Metrics,
    ) -> Ingester {
        let (overrides, discarded) = limits;
        let lifecycler = Lifecycler::new(
            &config.lifecycler,
            advertised.grpc_addr,
            advertised.http_addr,
            ring,
            forget_unhealthy_after,
            metrics,
        );
        let state = Arc::new(State {
            heads: Heads::new(config.head.clone()),
            overrides,
            sequencer: Mutex::new(Arc::new(Sequencer::new(Default::default()))),
            metadata: MetadataStore::default(),
            discarded,
            inflight: Semaphore::new(config.max_inflight_push_requests),
            accepting: AtomicBool::new(false),
            samples_appended: Counter::default(),
            exemplars_appended: Counter::default(),
            exemplars_rejected: Counter::default(),
            progress: ReplayProgress::default(),
            replaying: AtomicBool::new(false),
            flush_on_stop: AtomicBool::new(config.flush.flush_on_shutdown),
            flusher: store
                .map(|store| Arc::new(Flusher::new(config.flush.clone(), store, metrics))),
        });
        let replay_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let torn_tails = Counter::default();
        let corruptions = Counter::default();
        metrics.with_registry(|registry| {
            registry.register(
                "strata_ingester_samples_appended",
                "Samples appended to the in-memory heads (after the WAL).",
                state.samples_appended.clone(),
            );
            registry.register(
                "strata_ingester_exemplars_appended",
                "Exemplars stored in the tenants' exemplar buffers (after the WAL); a duplicate of a series' newest counts.",
                state.exemplars_appended.clone(),
            );
            registry.register(
                "strata_ingester_exemplars_rejected",
                "Exemplars not stored: out of order, invalid, of a refused series, or with exemplars off for the tenant.",
                state.exemplars_rejected.clone(),
            );
            registry.register(
                "strata_ingester_wal_replay_duration_seconds",
                "How long the last WAL replay took.",
                replay_seconds.clone(),
            );
            registry.register(
                "strata_ingester_wal_torn_tails",
                "Torn last WAL records (a crash mid-write) cut off on replay.",
                torn_tails.clone(),
            );
            registry.register(
                "strata_ingester_wal_corruptions_repaired",
                "WAL corruptions before the end, truncated on replay.",
                corruptions.clone(),
            );
            registry.register_collector(Box::new(HeadsCollector {
                state: state.clone(),
            }));
        });
        Ingester {
            config,
            checkpointer: BackgroundTask::default(),
            idle_gc: BackgroundTask::default(),
            flush_loop: BackgroundTask::default(),
            lifecycler,
            state,
            replay_seconds,
            torn_tails,
            corruptions,
            wal_metrics_registered: AtomicBool::new(false),
            metrics: metrics.clone(),
        }
    }

    /// The operator endpoints (`/flush`, `/shutdown`); `shutdown` stops
    /// the process.
    pub fn http_routes(&self, shutdown: tokio_util::sync::CancellationToken) -> axum::Router {
        http::routes(http::IngesterHttp {
            state: self.state.clone(),
            shutdown,
        })
    }

    /// The gRPC service of this ingester.
    pub fn grpc_service(&self) -> IngesterService {
        IngesterService::new(self.state.clone())
    }

    fn wal_dir(&self) -> PathBuf {
        PathBuf::from(&self.config.wal.dir)
    }

    async fn replay_and_open(&self) -> Result<(), ServiceError> {
        let dir = self.wal_dir();
        let state = self.state.clone();
        let started = Instant::now();
        self.state.replaying.store(true, Ordering::Release);
        let replay_dir = dir.clone();
        let result = tokio::task::spawn_blocking(move || {
            replay::replay(&replay_dir, &state.heads, &state.overrides, &state.progress)
        })
        .await;
        self.state.replaying.store(false, Ordering::Release);
        let (tenants, report) = result.map_err(|e| format!("WAL replay task failed: {e}"))??;
        self.replay_seconds.set(started.elapsed().as_secs_f64());
        self.torn_tails.inc_by(report.torn_tails_cut);
        self.corruptions.inc_by(report.corruptions_repaired);
        tracing::info!(
            dir = %dir.display(),
            records = report.records,
            series = report.series,
            samples = report.samples,
            refused = report.samples_refused,
            torn_tails_cut = report.torn_tails_cut,
            corruptions_repaired = report.corruptions_repaired,
            seconds = started.elapsed().as_secs_f64(),
            "WAL replayed"
        );
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the WAL directory {}: {e}", dir.display()))?;
        let options = self.config.wal.options();
        let open_dir = dir.clone();
        let wal = tokio::task::spawn_blocking(move || Wal::open(&open_dir, options))
            .await
            .map_err(|e| format!("opening the WAL failed: {e}"))??;
        if !self.wal_metrics_registered.swap(true, Ordering::AcqRel) {
            self.metrics
                .with_registry(|registry| wal.metrics().register(registry));
        }
        let sequencer = Arc::new(Sequencer::new(tenants));
        sequencer.set_wal(Some(Arc::new(wal)));
        *self.state.sequencer.lock() = sequencer;
        Ok(())
    }
}

#[async_trait]
impl Service for Ingester {
    fn name(&self) -> &'static str {
        "ingester"
    }

    async fn start(&self) -> Result<(), ServiceError> {
        self.lifecycler
            .join(self.config.lifecycler.num_tokens)
            .await?;
        self.replay_and_open().await?;
        self.state.accepting.store(true, Ordering::Release);
        self.lifecycler.change_state(InstanceState::Active).await?;
        let idle_for = self.config.series_idle_timeout;
        if !idle_for.is_zero() {
            let state = self.state.clone();
            let every = Duration::from_secs(60).min(idle_for);
            self.idle_gc.spawn_every(every, every, move || {
                let flushing = state.flusher.is_some();
                for (tenant, head) in state.heads.all() {
                    // Only series with nothing to lose: all flushed, or no samples.
                    let released = head.gc_idle(idle_for, |s| {
                        s.time_range.is_none() || (flushing && !s.unflushed)
                    });
                    if released > 0 {
                        tracing::info!(
                            tenant,
                            released,
                            "released idle series whose samples are all in the store"
                        );
                    }
                }
                std::future::ready(())
            });
        }
        if let Some(flusher) = self.state.flusher.clone()
            && !flusher.config().period.is_zero()
        {
            let state = self.state.clone();
            self.flush_loop.spawn(|cancel| async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(flusher.next_wait()) => {
                            // Failures are logged and counted by the flusher.
                            let _ = flusher.flush_round(&state.heads, false).await;
                        }
                    }
                }
            });
        }
        let period = self.config.wal.checkpoint_period;
        if !period.is_zero() {
            let state = self.state.clone();
            self.checkpointer.spawn_every(period, period, move || {
                let state = state.clone();
                async move {
                    if let Err(err) = checkpoint(&state).await {
                        tracing::error!(error = %err, "WAL checkpoint failed; the segments stay");
                    }
                }
            });
        }
        Ok(())
    }

    async fn stop(&self) -> Result<(), ServiceError> {
        self.checkpointer.stop().await;
        self.idle_gc.stop().await;
        self.flush_loop.stop().await;
        if let Err(err) = self.lifecycler.begin_leaving().await {
            tracing::warn!(error = %err, "could not mark the ingester LEAVING; leaving anyway");
        }
        self.state.accepting.store(false, Ordering::Release);
        // Wait for in-flight pushes, then close the WAL.
        let permits = self.config.max_inflight_push_requests as u32;
        if let Ok(all) = self.state.inflight.acquire_many(permits).await {
            all.forget();
        }
        if let Some(flusher) = &self.state.flusher
            && self.state.flush_on_stop.load(Ordering::Acquire)
        {
            match flusher.flush_all(&self.state.heads).await {
                Ok(report) => tracing::info!(
                    chunks = report.chunks,
                    already_stored = report.already_stored,
                    "flushed every chunk before stopping"
                ),
                Err(err) => tracing::error!(
                    error = %err,
                    "the flush before stopping failed; the unflushed samples stay in the WAL and are replayed on the next start"
                ),
            }
        }
        let sequencer = self.state.sequencer.lock().clone();
        if let Some(wal) = sequencer.set_wal(None) {
            match Arc::try_unwrap(wal) {
                Ok(wal) => {
                    if let Err(err) = wal.close().await {
                        tracing::error!(error = %err, "closing the WAL failed");
                    }
                }
                Err(_) => tracing::warn!("the WAL is still referenced; it closes when dropped"),
            }
        }
        self.lifecycler.leave().await?;
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        if self.state.replaying.load(Ordering::Acquire) {
            return Err(format!(
                "replaying the WAL ({} records so far)",
                self.state.progress.records.load(Ordering::Relaxed)
            ));
        }
        match self.lifecycler.state() {
            InstanceState::Active => Ok(()),
            state => Err(format!("ingester is {state} in the ring")),
        }
    }
}

/// Folds every finished WAL segment into a checkpoint and deletes them,
/// keeping only what the long-term store does not hold yet (see
/// [`unflushed`]): the checkpoint bounds the WAL's size and replay time.
async fn checkpoint(state: &State) -> Result<(), ServiceError> {
    let sequencer = state.sequencer.lock().clone();
    let Some(wal) = sequencer.wal() else {
        return Ok(());
    };
    let contents = wal::list(wal.dir())?;
    let since = contents.checkpoint().map_or(0, |c| c + 1);
    let finished = contents
        .segments
        .iter()
        .filter(|(segment, _)| *segment >= since && *segment < wal.active_segment())
        .count();
    if finished < 2 {
        return Ok(());
    }
    let up_to = wal.next_segment().await? - 1;
    // Everything logged up to the new segment is in the heads; what of it
    // the store holds need not be kept.
    sequencer.settle().await;
    let watermarks = Watermarks::snapshot(&state.heads, &sequencer.tenant_ids());
    let stats = tokio::task::spawn_blocking(move || wal.checkpoint(up_to, |r| watermarks.keep(r)))
        .await
        .map_err(|e| format!("checkpoint task failed: {e}"))??;
    tracing::info!(
        checkpoint = stats.checkpoint,
        records = stats.records_kept,
        bytes = stats.bytes_kept,
        segments_deleted = stats.segments_deleted.len(),
        "WAL checkpoint written"
    );
    Ok(())
}

/// Per-tenant head figures at scrape time.
struct HeadsCollector {
    state: Arc<State>,
}

impl std::fmt::Debug for HeadsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeadsCollector")
    }
}

impl Collector for HeadsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let heads = self.state.heads.all();
        let estimates: Vec<_> = heads
            .iter()
            .map(|(tenant, head)| (tenant, head, head.memory_estimate()))
            .collect();
        let mut family = encoder.encode_descriptor(
            "strata_ingester_active_series",
            "Series in memory, per tenant.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (tenant, head, _) in &estimates {
            ConstGauge::new(head.active_series() as i64)
                .encode(family.encode_family(&[("tenant", tenant.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "strata_ingester_exemplars_in_memory",
            "Exemplars in the tenant's exemplar buffer (at most limits.max_global_exemplars_per_user).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (tenant, head, _) in &estimates {
            ConstGauge::new(head.exemplars.lock().len() as i64)
                .encode(family.encode_family(&[("tenant", tenant.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "strata_ingester_memory_series_bytes",
            "Estimated memory of the in-memory series (labels, index, chunks), per tenant.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (tenant, _, estimate) in &estimates {
            ConstGauge::new(estimate.total_bytes as i64)
                .encode(family.encode_family(&[("tenant", tenant.as_str())])?)?;
        }
        let chunks: u64 = estimates.iter().map(|(_, h, _)| h.chunks_cut_total()).sum();
        let counter = ConstCounter::new(chunks);
        counter.encode(encoder.encode_descriptor(
            "strata_ingester_chunks_cut",
            "Chunks cut (full) in the heads.",
            None,
            counter.metric_type(),
        )?)?;
        let bytes: u64 = estimates.iter().map(|(_, h, _)| h.chunk_bytes()).sum();
        let gauge = ConstGauge::new(bytes as i64);
        gauge.encode(encoder.encode_descriptor(
            "strata_ingester_chunk_bytes",
            "Bytes of encoded chunks in memory.",
            None,
            gauge.metric_type(),
        )?)?;
        Ok(())
    }
}
