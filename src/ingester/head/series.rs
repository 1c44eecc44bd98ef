//! One series in the head: its packed labels and its samples, kept as
//! cut (immutable) chunks, an open head chunk and a small sorted buffer of
//! out-of-order samples.
//!
//! Invariants, all under the series mutex:
//! * every chunk's samples strictly increase; in-order samples go to the
//!   head chunk, which is cut into `chunks` when it reaches the configured
//!   sample count or byte size;
//! * out-of-order samples wait in `ooo` (sorted, unique timestamps) and are
//!   encoded into a chunk of their own when `ooo` reaches its capacity, so
//!   chunks may overlap in time, never in timestamps: the series stores at
//!   most one sample per timestamp;
//! * `max_t` is the newest sample, float or native histogram, always an
//!   in-order one; `last_kind` says which it is and `last_v` is its value
//!   when a float. Floats and histograms share this one timeline, as in
//!   Prometheus: a histogram older than the newest float is out of order,
//!   and a float and a histogram at one timestamp conflict (the second is
//!   refused as a duplicate with a different value);
//! * native histograms live in [`HistogramData`] beside the XOR chunks,
//!   with the same rules (out-of-order buffer, chunk cutting).

use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::SeriesRef;
use super::admission::{Admission, AppendError, appendable};
use super::histograms::{HistogramData, same_sample};
use super::packed::PackedLabels;
use crate::chunk::merge::{ChunkData, HistogramChunkData};
use crate::chunk::{ChunkError, XorChunk, XorIterator};
use crate::model::histogram::{FloatHistogram, Histogram, NativeHistogram};
use crate::model::{Labels, is_stale_nan};

/// Where chunks are cut and when out-of-order samples become a chunk.
#[derive(Clone, Copy, Debug)]
pub(super) struct ChunkLimits {
    pub max_samples: usize,
    pub max_bytes: usize,
    pub ooo_capacity: usize,
    /// Chunks do not span boundaries of windows this long.
    pub window_ms: i64,
}

pub(super) struct MemSeries {
    pub series_ref: SeriesRef,
    pub fingerprint: u64,
    /// Sorted by name; no empty values.
    pub labels: PackedLabels,
    /// Head-clock milliseconds of the last append or lookup; what
    /// `gc_idle` measures idleness by. Outside the mutex so lookups can
    /// touch it without locking.
    last_active: AtomicU64,
    /// Set by `gc_idle` when the series leaves the head, under the index
    /// write lock and the data mutex. An appender that finds it set (under
    /// the mutex, or after [`MemSeries::touch`]) looks the series up again.
    deleted: AtomicBool,
    pub data: Mutex<SeriesData>,
}

impl MemSeries {
    pub fn new(
        series_ref: SeriesRef,
        fingerprint: u64,
        labels: PackedLabels,
        now_ms: u64,
    ) -> MemSeries {
        MemSeries {
            series_ref,
            fingerprint,
            labels,
            last_active: AtomicU64::new(now_ms),
            deleted: AtomicBool::new(false),
            data: Mutex::new(SeriesData::default()),
        }
    }

    /// The series' labels, unpacked.
    pub fn labels(&self) -> Labels {
        self.labels.to_labels()
    }

    /// Records activity at `now_ms` and says whether the series is still
    /// in the head. Sequentially consistent with [`MemSeries::try_delete`]:
    /// either this sees the deletion, or the deletion sees this activity
    /// and backs off.
    pub fn touch(&self, now_ms: u64) -> bool {
        self.last_active.fetch_max(now_ms, Ordering::SeqCst);
        !self.deleted.load(Ordering::SeqCst)
    }

    /// [`MemSeries::touch`] for a caller holding the data mutex, which
    /// checks the deletion mark itself: no atomic read-modify-write.
    pub fn touch_locked(&self, _data: &SeriesData, now_ms: u64) {
        if self.last_active.load(Ordering::Relaxed) < now_ms {
            self.last_active.store(now_ms, Ordering::Relaxed);
        }
    }

    pub fn last_active(&self) -> u64 {
        self.last_active.load(Ordering::Relaxed)
    }

    /// Whether `gc_idle` removed the series. Stable while the data mutex is
    /// held.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    /// Marks the series deleted unless it was active at or after
    /// `cutoff_ms`. The caller holds the index write lock and the data
    /// mutex (`_data` proves the latter).
    pub fn try_delete(&self, _data: &SeriesData, cutoff_ms: u64) -> bool {
        if self.deleted.swap(true, Ordering::SeqCst) {
            return false;
        }
        if self.last_active.load(Ordering::SeqCst) >= cutoff_ms {
            self.deleted.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }
}

/// A cut chunk: immutable, its buffer sized to fit.
pub(super) struct CutChunk {
    pub min_t: i64,
    pub max_t: i64,
    pub bytes: Box<[u8]>,
    /// Head-clock milliseconds of when the long-term store acknowledged
    /// it; kept in memory a while after (see `head/flush.rs`).
    pub flushed_at: Option<u64>,
}

pub(super) struct HeadChunk {
    pub chunk: XorChunk,
    pub min_t: i64,
    pub max_t: i64,
}

/// The kind of a series' newest sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LastKind {
    Float,
    Histogram,
    FloatHistogram,
}

/// Changes to the head's counters made by one series, summed per batch and
/// applied to the head's atomics once.
#[derive(Default, Debug, Clone, Copy)]
pub(super) struct StatsDelta {
    pub samples_appended: u64,
    pub chunks_cut: u64,
    pub chunk_bytes: i64,
    pub heap_bytes: i64,
    pub min_t: Option<i64>,
    pub max_t: Option<i64>,
}

impl StatsDelta {
    pub fn saw(&mut self, t: i64) {
        self.min_t = Some(self.min_t.map_or(t, |m| m.min(t)));
        self.max_t = Some(self.max_t.map_or(t, |m| m.max(t)));
    }
}

pub(super) struct SeriesData {
    pub(super) chunks: Vec<CutChunk>,
    pub(super) head: Option<HeadChunk>,
    pub(super) ooo: Vec<(i64, f64)>,
    /// The newest sample (always in order), if any.
    pub(super) max_t: Option<i64>,
    last_v: f64,
    last_kind: LastKind,
    pub(super) hist: HistogramData,
    /// The oldest sample, in or out of order (`i64::MAX` when empty).
    min_t: i64,
    /// Sum of `chunks[..].bytes.len()`.
    pub(super) cut_bytes: usize,
}

/// Bytes a chunk buffer of `len` bytes has allocated: `XorChunk::new`
/// reserves 128 bytes and a `Vec` growing a byte at a time doubles.
fn head_chunk_capacity(len: usize) -> usize {
    len.next_power_of_two().max(128)
}

impl SeriesData {
    /// Oldest and newest sample, if any.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        self.max_t.map(|max_t| (self.min_t, max_t))
    }

    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.time_range()
            .is_some_and(|(min_t, max_t)| min_t <= maxt && max_t >= mint)
    }

    /// Encoded bytes of all chunks, cut and open, XOR and histogram.
    pub fn chunk_bytes(&self) -> usize {
        self.cut_bytes
            + self.head.as_ref().map_or(0, |h| h.chunk.bytes().len())
            + self.hist.chunk_bytes()
    }

    /// Estimated heap bytes of the samples: chunk buffers, the chunk list
    /// and the out-of-order buffer.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<CutChunk>()
            + self.cut_bytes
            + self
                .head
                .as_ref()
                .map_or(0, |h| head_chunk_capacity(h.chunk.bytes().len()))
            + self.ooo.capacity() * size_of::<(i64, f64)>()
            + self.hist.heap_bytes()
    }

    /// Admits and stores one sample; see [`appendable`]. Counts into
    /// `stats` what it appends and cuts (not the byte deltas: see
    /// [`SeriesData::heap_bytes`]).
    pub fn append(
        &mut self,
        t: i64,
        v: f64,
        ooo_window_ms: i64,
        limits: ChunkLimits,
        stats: &mut StatsDelta,
    ) -> Result<Admission, AppendError> {
        let float_last = self.last_kind == LastKind::Float;
        let last_v = self.max_t.filter(|_| float_last).map(|_| self.last_v);
        let admission = match appendable(t, v, self.max_t, last_v, ooo_window_ms)? {
            Admission::InOrder if !float_last && is_stale_nan(v) => {
                // A staleness marker for a histogram series is a histogram
                // staleness marker of its kind (Prometheus's
                // `headAppender.Append` does the same).
                let marker = match self.last_kind {
                    LastKind::FloatHistogram => NativeHistogram::Float(FloatHistogram {
                        sum: v,
                        ..FloatHistogram::default()
                    }),
                    _ => NativeHistogram::Int(Histogram {
                        sum: v,
                        ..Histogram::default()
                    }),
                };
                return self.append_histogram(t, &marker, ooo_window_ms, limits, stats);
            }
            Admission::InOrder => {
                self.append_in_order(t, v, limits, stats);
                Admission::InOrder
            }
            Admission::OutOfOrder => self.insert_out_of_order(t, v, limits, stats)?,
            Admission::Duplicate if !float_last => {
                return Err(AppendError::DuplicateTimestampDifferentValue { t });
            }
            Admission::Duplicate => Admission::Duplicate,
        };
        if admission != Admission::Duplicate {
            stats.samples_appended += 1;
            stats.saw(t);
        }
        Ok(admission)
    }

    /// Admits and stores one native histogram sample, against the same
    /// newest timestamp and out-of-order window as floats.
    pub fn append_histogram(
        &mut self,
        t: i64,
        h: &NativeHistogram,
        ooo_window_ms: i64,
        limits: ChunkLimits,
        stats: &mut StatsDelta,
    ) -> Result<Admission, AppendError> {
        if h.validate().is_err() {
            return Err(AppendError::InvalidHistogram { t });
        }
        let admission = match appendable(t, 0.0, self.max_t, None, ooo_window_ms)? {
            Admission::InOrder => {
                self.hist.append_in_order(t, h, limits, stats)?;
                self.max_t = Some(t);
                self.min_t = self.min_t.min(t);
                self.last_kind = match h {
                    NativeHistogram::Int(_) => LastKind::Histogram,
                    NativeHistogram::Float(_) => LastKind::FloatHistogram,
                };
                Admission::InOrder
            }
            Admission::Duplicate | Admission::OutOfOrder => {
                let float_at_t = self.ooo.binary_search_by(|&(st, _)| st.cmp(&t)).is_ok()
                    || self.stored_value_at(t).is_some();
                if float_at_t {
                    return Err(AppendError::DuplicateTimestampDifferentValue { t });
                }
                match self.hist.stored_at(t) {
                    Some(stored) if same_sample(&stored, h) => Admission::Duplicate,
                    Some(_) => return Err(AppendError::DuplicateTimestampDifferentValue { t }),
                    None if self.max_t == Some(t) => {
                        // The newest sample is at t but is no histogram.
                        return Err(AppendError::DuplicateTimestampDifferentValue { t });
                    }
                    None => {
                        self.hist.insert_out_of_order(t, h, limits, stats);
                        self.min_t = self.min_t.min(t);
                        Admission::OutOfOrder
                    }
                }
            }
        };
        if admission != Admission::Duplicate {
            stats.samples_appended += 1;
            stats.saw(t);
        }
        Ok(admission)
    }

    /// Copies of the histogram chunks that overlap `[mint, maxt]`.
    pub fn histogram_chunks_overlapping(&self, mint: i64, maxt: i64) -> Vec<HistogramChunkData> {
        self.hist.chunks_overlapping(mint, maxt)
    }

    fn append_in_order(&mut self, t: i64, v: f64, limits: ChunkLimits, stats: &mut StatsDelta) {
        if self
            .head
            .as_ref()
            .is_some_and(|h| h.min_t.div_euclid(limits.window_ms) != t.div_euclid(limits.window_ms))
        {
            self.cut_head(stats);
        }
        let head = self.head.get_or_insert_with(|| HeadChunk {
            chunk: XorChunk::new(),
            min_t: t,
            max_t: t,
        });
        match head.chunk.appender().append(t, v) {
            Ok(()) => {}
            Err(ChunkError::Full) => {
                // Only with a max_samples_per_chunk above the encoding's
                // cap, which validation refuses; cut and start over.
                self.cut_head(stats);
                let head = self.head.insert(HeadChunk {
                    chunk: XorChunk::new(),
                    min_t: t,
                    max_t: t,
                });
                if let Err(e) = head.chunk.appender().append(t, v) {
                    unreachable!("the first sample of a new chunk is always accepted: {e}");
                }
            }
            Err(e) => unreachable!("admission passed only timestamps after max_t: {e}"),
        }
        self.max_t = Some(t);
        self.last_v = v;
        self.last_kind = LastKind::Float;
        self.min_t = self.min_t.min(t);
        if let Some(head) = &mut self.head {
            head.max_t = t;
            let full = head.chunk.num_samples() >= limits.max_samples
                || head.chunk.bytes().len() >= limits.max_bytes;
            if full {
                self.cut_head(stats);
            }
        }
    }

    /// Moves the head chunk, if any, into the cut chunks.
    pub(super) fn cut_head(&mut self, stats: &mut StatsDelta) {
        let Some(head) = self.head.take() else {
            return;
        };
        let max_t = head.max_t;
        let bytes = head.chunk.into_bytes().into_boxed_slice();
        self.cut_bytes += bytes.len();
        self.chunks.push(CutChunk {
            min_t: head.min_t,
            max_t,
            bytes,
            flushed_at: None,
        });
        stats.chunks_cut += 1;
    }

    fn insert_out_of_order(
        &mut self,
        t: i64,
        v: f64,
        limits: ChunkLimits,
        stats: &mut StatsDelta,
    ) -> Result<Admission, AppendError> {
        let pos = match self.ooo.binary_search_by(|&(st, _)| st.cmp(&t)) {
            Ok(i) => return same_or_conflict(t, v, self.ooo[i].1),
            Err(pos) => pos,
        };
        if let Some(stored) = self.stored_value_at(t) {
            return same_or_conflict(t, v, stored);
        }
        if self.hist.stored_at(t).is_some() {
            return Err(AppendError::DuplicateTimestampDifferentValue { t });
        }
        self.ooo.insert(pos, (t, v));
        self.min_t = self.min_t.min(t);
        if self.ooo.len() >= limits.ooo_capacity {
            self.compact_out_of_order(stats);
        }
        Ok(Admission::OutOfOrder)
    }

    /// The value stored in a chunk (cut or open) at exactly `t`, if any.
    /// Decodes the chunks whose range holds `t`; only out-of-order samples
    /// come here.
    fn stored_value_at(&self, t: i64) -> Option<f64> {
        let cut = self
            .chunks
            .iter()
            .filter(|c| c.min_t <= t && t <= c.max_t)
            .map(|c| &c.bytes[..]);
        let open = self
            .head
            .as_ref()
            .filter(|h| h.min_t <= t && t <= h.max_t)
            .map(|h| h.chunk.bytes());
        cut.chain(open)
            .find_map(|bytes| match XorIterator::new(bytes).seek(t) {
                Some((st, sv)) if st == t => Some(sv),
                _ => None,
            })
    }

    /// Encodes the out-of-order buffer into a cut chunk of its own.
    pub(super) fn compact_out_of_order(&mut self, stats: &mut StatsDelta) {
        if let Some(chunk) = encode(&self.ooo) {
            let bytes = chunk.bytes.into_boxed_slice();
            self.cut_bytes += bytes.len();
            self.chunks.push(CutChunk {
                min_t: chunk.min_t,
                max_t: chunk.max_t,
                bytes,
                flushed_at: None,
            });
            stats.chunks_cut += 1;
        }
        self.ooo = Vec::new();
    }

    /// Copies of the chunks that overlap `[mint, maxt]`, ordered by `min_t`;
    /// the out-of-order buffer's samples in range come as one more chunk.
    pub fn chunks_overlapping(&self, mint: i64, maxt: i64) -> Vec<ChunkData> {
        let mut out: Vec<ChunkData> = self
            .chunks
            .iter()
            .filter(|c| c.min_t <= maxt && c.max_t >= mint)
            .map(|c| ChunkData {
                min_t: c.min_t,
                max_t: c.max_t,
                bytes: c.bytes.to_vec(),
            })
            .collect();
        if let Some(head) = &self.head
            && head.min_t <= maxt
            && head.max_t >= mint
        {
            out.push(ChunkData {
                min_t: head.min_t,
                max_t: head.max_t,
                bytes: head.chunk.bytes().to_vec(),
            });
        }
        let lo = self.ooo.partition_point(|&(t, _)| t < mint);
        let hi = self.ooo.partition_point(|&(t, _)| t <= maxt);
        if let Some(chunk) = encode(&self.ooo[lo..hi.max(lo)]) {
            out.push(chunk);
        }
        out.sort_by_key(|c| c.min_t);
        out
    }
}

/// A chunk of `samples` (sorted, unique timestamps, at most the encoding's
/// cap), or `None` when there are none.
fn encode(samples: &[(i64, f64)]) -> Option<ChunkData> {
    let (first, last) = (samples.first()?, samples.last()?);
    let mut chunk = XorChunk::new();
    let mut app = chunk.appender();
    for &(t, v) in samples {
        if let Err(e) = app.append(t, v) {
            unreachable!("out-of-order buffers are sorted, unique and capped: {e}");
        }
    }
    Some(ChunkData {
        min_t: first.0,
        max_t: last.0,
        bytes: chunk.into_bytes(),
    })
}

fn same_or_conflict(t: i64, v: f64, stored: f64) -> Result<Admission, AppendError> {
    if stored.to_bits() == v.to_bits() {
        Ok(Admission::Duplicate)
    } else {
        Err(AppendError::DuplicateTimestampDifferentValue { t })
    }
}

impl Default for SeriesData {
    fn default() -> SeriesData {
        SeriesData {
            chunks: Vec::new(),
            head: None,
            ooo: Vec::new(),
            max_t: None,
            last_v: 0.0,
            last_kind: LastKind::Float,
            hist: HistogramData::default(),
            min_t: i64::MAX,
            cut_bytes: 0,
        }
    }
}
