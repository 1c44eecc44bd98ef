//! The ingester's in-memory head: one [`Head`] per tenant holds that
//! tenant's recent series, their samples as XOR chunks, and an inverted
//! index to find them by label matchers. [`Heads`] maps tenants to heads.
//!
//! # Series
//!
//! A series is identified by its labels (empty-valued labels dropped, as
//! Prometheus treats them as absent). It is found by the fingerprint of
//! `(tenant, labels)`; two label sets with the same fingerprint are two
//! series (the second goes to a per-fingerprint collision list compared by
//! full labels). Each series gets a [`SeriesRef`] when created: dense,
//! increasing, never reused within a head, so WAL records can name series
//! by ref. A series keeps its labels packed in one allocation (cheap to
//! compare on every lookup); the index interns label strings once per head
//! in a symbol table shared by its postings.
//!
//! # Samples
//!
//! [`appendable`] decides how a sample enters its series (in order, out of
//! order within the tenant's `out_of_order_time_window`, duplicate, or
//! refused). In-order samples go to the series' open head chunk, cut when it
//! holds [`HeadConfig::max_samples_per_chunk`] samples or
//! [`HeadConfig::max_chunk_bytes`] bytes. Out-of-order samples wait in a
//! small sorted buffer that becomes a chunk of its own at
//! [`HeadConfig::out_of_order_capacity`] samples. A series stores at most one
//! sample per timestamp, and every chunk's timestamps strictly increase.
//!
//! Native histograms ([`Head::append_histogram`]) follow the same rules on
//! the same timeline (a float and a histogram at one timestamp conflict),
//! in histogram chunks beside the XOR chunks, cut by the same limits and
//! whenever the histogram chunk refuses a sample (layout change, counter
//! reset, gauge/counter switch, after a staleness marker, integer/float
//! switch). A float staleness marker on a series whose newest sample is a
//! histogram is stored as a histogram staleness marker, as Prometheus does.
//!
//! # Writing, and the WAL
//!
//! The ingester logs to the WAL, then applies (STYLE example 2). The head
//! offers both halves:
//! * [`Head::append_batch`]: resolve (create if needed) and append a whole
//!   remote-write request's series at once, reporting every refused sample
//!   with its series index, timestamp and reason.
//! * [`Head::get_or_create_series`] gives the ref (and whether the series is
//!   new, so its labels must be logged), [`Head::append_sample`] applies a
//!   logged sample; on replay [`Head::create_series_with_ref`] recreates a
//!   logged series under its ref and [`Head::series_labels`] reads labels
//!   back. [`Head::all_series`] lists every series for a checkpoint.
//!
//! # Reading
//!
//! [`Head::query`] returns, per matching series, copies of the chunks that
//! overlap the range (the open chunk copied, buffered out-of-order samples
//! encoded into one more chunk); [`merge_chunks`] turns them into one sorted
//! stream. [`Head::label_names`], [`Head::label_values`] and
//! [`Head::series`] answer the metadata APIs.
//!
//! # Locking
//!
//! Lock order is index, then a stripe, then a series; no two stripes are
//! held at once.
//! * Series live in [`STRIPES`] stripes, each an `RwLock` over a map by ref
//!   (stripe `ref % STRIPES`) and a map by fingerprint (stripe
//!   `fingerprint % STRIPES`). Looking up an existing series takes one
//!   stripe's read lock and nothing global.
//! * Each series has its own mutex over its chunks; appends to different
//!   series never contend.
//! * The index (symbols and postings) is one `RwLock`: written when a series
//!   is created or removed, read by queries.
//! * [`Head::gc_idle`] marks a series deleted under its mutex while holding
//!   the index write lock. An appender that finds the mark looks the series
//!   up again (creating it anew), and series creation appends its first
//!   samples while still holding the index (downgraded to a read lock), so
//!   no accepted sample lands in a removed series.
//!
//! # Memory
//!
//! [`Head::memory_estimate`] adds up, from counters kept as the head
//! changes: the fixed size of each series (its struct, `Arc` header, and
//! slots in the two stripe maps at 7/8 load), its packed labels (label
//! bytes plus a separator byte per string), the index (each symbol's text plus
//! its `Arc` header and table slot, each postings list's map slot, 8 bytes
//! per postings entry), and the chunks (cut chunks' exact bytes and list
//! slots, the open chunk's buffer capacity, out-of-order buffers; the same
//! for histogram chunks and buffered histograms' vectors). Allocator
//! rounding is not counted; `benches/head.rs` compares the estimate with the
//! bytes a counting allocator sees.

mod admission;
mod append;
mod flush;
mod gc;
mod heads;
mod histograms;
mod merge;
mod packed;
mod postings;
mod read;
mod series;

#[cfg(test)]
mod histogram_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::mem::size_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

pub use crate::chunk::merge::{ChunkData, merge_chunks};
pub use admission::{Admission, AppendError, appendable, ooo_window_ms};
pub use flush::{FlushChunk, FlushPolicy};
pub use gc::IdleSeries;
pub use heads::Heads;
pub use merge::SeriesChunks;

use crate::chunk::MAX_SAMPLES;
use crate::ingester::exemplars::ExemplarStorage;
use crate::limits::{DiscardReason, Limits};
use crate::model::Labels;
use packed::SeriesKey;
use postings::Index;
use series::{ChunkLimits, MemSeries, StatsDelta};

/// Number of lock stripes over the series maps.
pub const STRIPES: usize = 64;

/// A series' id within its head: dense, increasing, never reused, so the WAL
/// can name series by ref.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesRef(pub u64);

impl fmt::Display for SeriesRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How the head cuts chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    /// Samples after which a series' open chunk is cut. Default 120, as
    /// Prometheus: about 30 minutes of 15 s scrapes.
    pub max_samples_per_chunk: usize,
    /// Encoded bytes after which a series' open chunk is cut, whatever its
    /// sample count. Default 1024.
    pub max_chunk_bytes: usize,
    /// Out-of-order samples a series buffers before encoding them into a
    /// chunk of their own. Default 32, as Prometheus's
    /// `out_of_order_cap_max`.
    pub out_of_order_capacity: usize,
    /// Chunks never span a boundary of these windows (aligned to the Unix
    /// epoch): an open chunk is cut when a sample of the next window
    /// arrives, as Prometheus cuts at its block range. A flush stores a
    /// window's chunks as one, the same on every replica. Default 2h.
    #[serde(with = "humantime_serde")]
    pub chunk_window: std::time::Duration,
}

impl Default for HeadConfig {
    fn default() -> HeadConfig {
        HeadConfig {
            max_samples_per_chunk: 120,
            max_chunk_bytes: 1024,
            out_of_order_capacity: 32,
            chunk_window: std::time::Duration::from_secs(2 * 3600),
        }
    }
}

/// A [`HeadConfig`] field out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("head config: {field} must be between {min} and {max}, got {value}")]
pub struct HeadConfigError {
    pub field: &'static str,
    pub value: usize,
    pub min: usize,
    pub max: usize,
}

impl HeadConfig {
    /// Checks every field's range (the chunk encoding holds at most 65 535
    /// samples).
    pub fn validate(&self) -> Result<(), HeadConfigError> {
        let fields = [
            (
                "max_samples_per_chunk",
                self.max_samples_per_chunk,
                1,
                MAX_SAMPLES,
            ),
            ("max_chunk_bytes", self.max_chunk_bytes, 16, 1 << 30),
            (
                "out_of_order_capacity",
                self.out_of_order_capacity,
                1,
                MAX_SAMPLES,
            ),
        ];
        for (field, value, min, max) in fields {
            if !(min..=max).contains(&value) {
                return Err(HeadConfigError {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        let window_s = self.chunk_window.as_secs() as usize;
        if !(60..=7 * 24 * 3600).contains(&window_s) {
            return Err(HeadConfigError {
                field: "chunk_window (seconds)",
                value: window_s,
                min: 60,
                max: 7 * 24 * 3600,
            });
        }
        Ok(())
    }

    fn chunk_limits(&self) -> ChunkLimits {
        ChunkLimits {
            max_samples: self.max_samples_per_chunk.clamp(1, MAX_SAMPLES),
            max_bytes: self.max_chunk_bytes.max(16),
            ooo_capacity: self.out_of_order_capacity.clamp(1, MAX_SAMPLES),
            window_ms: (self.chunk_window.as_millis() as i64).max(60_000),
        }
    }
}

/// Creating a series would exceed a series limit. The message names the
/// config key that raises the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeriesLimitError {
    #[error(
        "per-tenant series limit of {limit} exceeded: this ingester already holds {limit} series \
         of the tenant (raise {})",
        Limits::config_key("max_series_per_tenant")
    )]
    PerTenant { limit: usize },
    #[error(
        "per-metric series limit of {limit} exceeded: this ingester already holds {limit} series \
         of the metric (raise {})",
        Limits::config_key("max_series_per_metric")
    )]
    PerMetric { limit: usize },
}

impl SeriesLimitError {
    pub fn reason(&self) -> DiscardReason {
        match self {
            SeriesLimitError::PerTenant { .. } => DiscardReason::PerTenantSeriesLimit,
            SeriesLimitError::PerMetric { .. } => DiscardReason::PerMetricSeriesLimit,
        }
    }
}

/// Why [`Head::append_batch`] refused a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Sample(#[from] AppendError),
    #[error(transparent)]
    SeriesLimit(#[from] SeriesLimitError),
}

impl Rejection {
    /// The reason label of `strata_discarded_samples_total`.
    pub fn reason(&self) -> DiscardReason {
        match self {
            Rejection::Sample(e) => e.reason(),
            Rejection::SeriesLimit(e) => e.reason(),
        }
    }
}

/// One refused sample of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectedSample {
    /// Position of its series in the batch.
    pub series_index: usize,
    pub timestamp: i64,
    pub rejection: Rejection,
}

/// What [`Head::append_batch`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendResult {
    /// Samples stored (in or out of order).
    pub samples_appended: u64,
    /// Samples equal to a stored one, accepted without effect.
    pub duplicates: u64,
    /// Series the batch created.
    pub series_created: u64,
    /// Every refused sample, in batch order.
    pub rejected: Vec<RejectedSample>,
}

/// Errors of the ref-based (WAL) half of the API.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HeadError {
    #[error("tenant {tenant:?}: no series with ref {series_ref} in the head")]
    UnknownSeries {
        tenant: String,
        series_ref: SeriesRef,
    },
    #[error("tenant {tenant:?}: series ref {series_ref} is already {existing}, not {labels}")]
    SeriesRefConflict {
        tenant: String,
        series_ref: SeriesRef,
        existing: Labels,
        labels: Labels,
    },
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// A head's estimated memory, in bytes; see the module docs for the method.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemoryEstimate {
    pub series: u64,
    /// Series structs, map slots and packed labels.
    pub series_bytes: u64,
    /// Symbols and postings.
    pub index_bytes: u64,
    /// Chunk buffers and out-of-order buffers.
    pub sample_bytes: u64,
    pub total_bytes: u64,
    /// `total_bytes / series` (0 without series).
    pub bytes_per_series: f64,
}

/// Fixed bytes of one series: its struct and `Arc` header, and its slots
/// in the by-ref and by-fingerprint maps (key, pointer and control byte at
/// 7/8 load).
const SERIES_FIXED_BYTES: usize =
    size_of::<MemSeries>() + 16 + 2 * (size_of::<u64>() + size_of::<usize>() + 1) * 8 / 7;

/// Mixes a `u64` key (fingerprint or ref) for hashbrown, whose control
/// bytes take the hash's top bits: refs are small and dense, so they need
/// mixing; fingerprints are already hashes.
#[derive(Default, Clone, Copy)]
struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (x ^ (x >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type U64Map<V> = HashMap<u64, V, BuildHasherDefault<U64Hasher>>;
type RefMap<V> = HashMap<SeriesRef, V, BuildHasherDefault<U64Hasher>>;

#[derive(Default)]
struct StripeMaps {
    by_ref: RefMap<Arc<MemSeries>>,
    /// The first series of each fingerprint in this stripe.
    by_hash: U64Map<Arc<MemSeries>>,
    /// Later series whose fingerprint collides with a `by_hash` entry.
    conflicts: U64Map<Vec<Arc<MemSeries>>>,
}

impl StripeMaps {
    fn find(&self, key: SeriesKey<'_>) -> Option<&Arc<MemSeries>> {
        let first = self.by_hash.get(&key.fingerprint)?;
        if first.labels.bytes() == key.packed {
            return Some(first);
        }
        self.conflicts
            .get(&key.fingerprint)?
            .iter()
            .find(|s| s.labels.bytes() == key.packed)
    }

    fn insert_hash(&mut self, series: Arc<MemSeries>) {
        let fingerprint = series.fingerprint;
        match self.by_hash.entry(fingerprint) {
            Entry::Occupied(_) => self.conflicts.entry(fingerprint).or_default().push(series),
            Entry::Vacant(slot) => {
                slot.insert(series);
            }
        }
    }

    fn remove_hash(&mut self, series: &Arc<MemSeries>) {
        let fingerprint = series.fingerprint;
        let is_first = self
            .by_hash
            .get(&fingerprint)
            .is_some_and(|s| Arc::ptr_eq(s, series));
        if is_first {
            self.by_hash.remove(&fingerprint);
            if let Some(mut rest) = self.conflicts.remove(&fingerprint)
                && let Some(promoted) = rest.pop()
            {
                self.by_hash.insert(fingerprint, promoted);
                if !rest.is_empty() {
                    self.conflicts.insert(fingerprint, rest);
                }
            }
        } else if let Some(rest) = self.conflicts.get_mut(&fingerprint) {
            rest.retain(|s| !Arc::ptr_eq(s, series));
            if rest.is_empty() {
                self.conflicts.remove(&fingerprint);
            }
        }
    }
}

/// One lock stripe, on a cache line of its own.
#[derive(Default)]
#[repr(align(64))]
struct Stripe {
    maps: RwLock<StripeMaps>,
}

/// The in-memory series of one tenant. See the module docs.
pub struct Head {
    tenant: String,
    chunk_limits: ChunkLimits,
    /// Zero of the head clock that `last_active` counts from.
    epoch: Instant,
    stripes: Box<[Stripe]>,
    index: RwLock<Index>,
    next_ref: AtomicU64,
    num_series: AtomicU64,
    series_created: AtomicU64,
    series_removed: AtomicU64,
    samples_appended: AtomicU64,
    chunks_cut: AtomicU64,
    chunk_bytes: AtomicI64,
    sample_heap_bytes: AtomicI64,
    min_t: AtomicI64,
    max_t: AtomicI64,
    /// The tenant's exemplars (see [`crate::ingester::exemplars`]).
    pub exemplars: parking_lot::Mutex<ExemplarStorage>,
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Head")
            .field("tenant", &self.tenant)
            .field("series", &self.active_series())
            .finish_non_exhaustive()
    }
}

impl Head {
    /// An empty head for `tenant`. `config` should have passed
    /// [`HeadConfig::validate`]; out-of-range values are clamped.
    pub fn new(tenant: impl Into<String>, config: &HeadConfig) -> Head {
        Head {
            tenant: tenant.into(),
            chunk_limits: config.chunk_limits(),
            epoch: Instant::now(),
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            index: RwLock::new(Index::default()),
            next_ref: AtomicU64::new(1),
            num_series: AtomicU64::new(0),
            series_created: AtomicU64::new(0),
            series_removed: AtomicU64::new(0),
            samples_appended: AtomicU64::new(0),
            chunks_cut: AtomicU64::new(0),
            chunk_bytes: AtomicI64::new(0),
            sample_heap_bytes: AtomicI64::new(0),
            min_t: AtomicI64::new(i64::MAX),
            max_t: AtomicI64::new(i64::MIN),
            exemplars: parking_lot::Mutex::new(ExemplarStorage::default()),
        }
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Series in the head now.
    pub fn active_series(&self) -> u64 {
        self.num_series.load(Ordering::Relaxed)
    }

    /// Series created since the head started (WAL replay included).
    pub fn series_created_total(&self) -> u64 {
        self.series_created.load(Ordering::Relaxed)
    }

    /// Series removed by [`Head::gc_idle`].
    pub fn series_removed_total(&self) -> u64 {
        self.series_removed.load(Ordering::Relaxed)
    }

    /// Samples stored (duplicates and refused samples not counted).
    pub fn samples_appended_total(&self) -> u64 {
        self.samples_appended.load(Ordering::Relaxed)
    }

    /// Chunks cut: full head chunks and out-of-order buffers encoded.
    pub fn chunks_cut_total(&self) -> u64 {
        self.chunks_cut.load(Ordering::Relaxed)
    }

    /// Encoded bytes of every chunk in the head, cut and open.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes.load(Ordering::Relaxed).max(0) as u64
    }

    /// Oldest and newest sample timestamps ever stored in the head, if any
    /// (not lowered when series are removed).
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let (min_t, max_t) = (
            self.min_t.load(Ordering::Relaxed),
            self.max_t.load(Ordering::Relaxed),
        );
        (min_t <= max_t).then_some((min_t, max_t))
    }

    /// The head's estimated memory; see the module docs.
    pub fn memory_estimate(&self) -> MemoryEstimate {
        let (index_bytes, label_bytes) = {
            let index = self.index.read();
            (index.heap_bytes(), index.packed_label_bytes())
        };
        let series = self.active_series();
        let series_bytes = series * SERIES_FIXED_BYTES as u64 + label_bytes as u64;
        let sample_bytes = self.sample_heap_bytes.load(Ordering::Relaxed).max(0) as u64;
        let total_bytes = series_bytes + index_bytes as u64 + sample_bytes;
        MemoryEstimate {
            series,
            series_bytes,
            index_bytes: index_bytes as u64,
            sample_bytes,
            total_bytes,
            bytes_per_series: if series == 0 {
                0.0
            } else {
                total_bytes as f64 / series as f64
            },
        }
    }

    /// Milliseconds on the head clock.
    fn now_ms(&self) -> u64 {
        self.clock_ms(Instant::now())
    }

    fn clock_ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn ref_stripe(&self, r: SeriesRef) -> &Stripe {
        &self.stripes[(r.0 % STRIPES as u64) as usize]
    }

    fn hash_stripe(&self, fingerprint: u64) -> &Stripe {
        &self.stripes[(fingerprint % STRIPES as u64) as usize]
    }

    fn series_by_ref(&self, r: SeriesRef) -> Option<Arc<MemSeries>> {
        self.ref_stripe(r).maps.read().by_ref.get(&r).cloned()
    }

    /// Adds what a batch did to the head's counters, once per batch.
    fn apply_stats(&self, delta: &StatsDelta) {
        if delta.samples_appended > 0 {
            self.samples_appended
                .fetch_add(delta.samples_appended, Ordering::Relaxed);
        }
        if delta.chunks_cut > 0 {
            self.chunks_cut
                .fetch_add(delta.chunks_cut, Ordering::Relaxed);
        }
        if delta.chunk_bytes != 0 {
            self.chunk_bytes
                .fetch_add(delta.chunk_bytes, Ordering::Relaxed);
        }
        if delta.heap_bytes != 0 {
            self.sample_heap_bytes
                .fetch_add(delta.heap_bytes, Ordering::Relaxed);
        }
        if let Some(t) = delta.min_t {
            self.min_t.fetch_min(t, Ordering::Relaxed);
        }
        if let Some(t) = delta.max_t {
            self.max_t.fetch_max(t, Ordering::Relaxed);
        }
    }
}
