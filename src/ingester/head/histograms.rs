//! The native histogram samples of one series: cut histogram chunks, an
//! open one, and a sorted buffer of out-of-order histograms, beside the
//! series' XOR chunks (see [`super::series`], which decides admission for
//! both kinds against the series' one newest timestamp).
//!
//! Chunks are [`HistogramChunk`]s or [`FloatHistogramChunk`]s: a series
//! switching between integer and float histograms cuts a chunk, as does
//! anything the chunk refuses with
//! [`HistogramChunkError::starts_new_chunk`] (a layout change, a counter
//! reset — the new chunk's first sample then hinted as one —, a gauge
//! mismatch, a sample after a staleness marker, a full chunk) and the
//! head's size limits.

use std::mem::size_of;

use super::admission::AppendError;
use super::series::{ChunkLimits, StatsDelta};
use crate::chunk::histogram::{FloatHistogramChunk, HistogramChunk, HistogramChunkError};
use crate::chunk::merge::HistogramChunkData;
use crate::model::histogram::{CounterResetHint, FloatHistogram, Histogram, NativeHistogram};

/// A cut chunk: immutable, its buffer sized to fit.
struct CutChunk {
    min_t: i64,
    max_t: i64,
    float: bool,
    bytes: Box<[u8]>,
    /// Head-clock milliseconds of the store's acknowledgement (see
    /// `head/flush.rs`).
    flushed_at: Option<u64>,
}

enum OpenKind {
    Int(HistogramChunk),
    Float(FloatHistogramChunk),
}

struct OpenChunk {
    kind: OpenKind,
    min_t: i64,
    max_t: i64,
}

impl OpenChunk {
    fn new(float: bool, t: i64) -> OpenChunk {
        OpenChunk {
            kind: if float {
                OpenKind::Float(FloatHistogramChunk::new())
            } else {
                OpenKind::Int(HistogramChunk::new())
            },
            min_t: t,
            max_t: t,
        }
    }

    fn is_float(&self) -> bool {
        matches!(self.kind, OpenKind::Float(_))
    }

    fn bytes(&self) -> &[u8] {
        match &self.kind {
            OpenKind::Int(c) => c.bytes(),
            OpenKind::Float(c) => c.bytes(),
        }
    }

    /// Heap bytes of the chunk and its appender's state.
    fn heap_bytes(&self) -> usize {
        match &self.kind {
            OpenKind::Int(c) => c.heap_bytes(),
            OpenKind::Float(c) => c.heap_bytes(),
        }
    }

    fn num_samples(&self) -> usize {
        match &self.kind {
            OpenKind::Int(c) => c.num_samples(),
            OpenKind::Float(c) => c.num_samples(),
        }
    }

    /// Appends a histogram of the chunk's kind.
    fn append(&mut self, t: i64, h: &NativeHistogram) -> Result<(), HistogramChunkError> {
        match (&mut self.kind, h) {
            (OpenKind::Int(c), NativeHistogram::Int(h)) => c.appender().append(t, h)?,
            (OpenKind::Float(c), NativeHistogram::Float(h)) => c.appender().append(t, h)?,
            (OpenKind::Int(_), NativeHistogram::Float(_)) => {
                return Err(HistogramChunkError::WrongKind {
                    chunk_is_float: false,
                });
            }
            (OpenKind::Float(_), NativeHistogram::Int(_)) => {
                return Err(HistogramChunkError::WrongKind {
                    chunk_is_float: true,
                });
            }
        }
        self.max_t = t;
        Ok(())
    }
}

/// `h` with its counter reset hint set to `hint`.
fn with_hint(h: &NativeHistogram, hint: CounterResetHint) -> NativeHistogram {
    match h {
        NativeHistogram::Int(h) => NativeHistogram::Int(Histogram {
            counter_reset_hint: hint,
            ..h.clone()
        }),
        NativeHistogram::Float(h) => NativeHistogram::Float(FloatHistogram {
            counter_reset_hint: hint,
            ..h.clone()
        }),
    }
}

/// Whether two histograms are the same sample: equal bit for bit but for
/// the counter reset hint, which a chunk rewrites (Prometheus's
/// `Histogram.Equals` ignores it too).
pub(super) fn same_sample(a: &NativeHistogram, b: &NativeHistogram) -> bool {
    with_hint(a, CounterResetHint::Unknown).bitwise_eq(&with_hint(b, CounterResetHint::Unknown))
}

/// The sample at exactly `t` in a chunk's bytes, if any.
fn decode_at(bytes: &[u8], float: bool, t: i64) -> Option<NativeHistogram> {
    if float {
        let mut it = crate::chunk::histogram::FloatHistogramIterator::new(bytes);
        match it.seek(t) {
            Some((st, h)) if st == t => Some(NativeHistogram::Float(h.clone())),
            _ => None,
        }
    } else {
        let mut it = crate::chunk::histogram::HistogramIterator::new(bytes);
        match it.seek(t) {
            Some((st, h)) if st == t => Some(NativeHistogram::Int(h.clone())),
            _ => None,
        }
    }
}

#[derive(Default)]
pub(super) struct HistogramData {
    chunks: Vec<CutChunk>,
    open: Option<OpenChunk>,
    /// Out-of-order histograms: sorted, unique timestamps.
    ooo: Vec<(i64, NativeHistogram)>,
    /// Sum of `chunks[..].bytes.len()`.
    cut_bytes: usize,
}

impl HistogramData {
    /// Encoded bytes of all chunks, cut and open.
    pub fn chunk_bytes(&self) -> usize {
        self.cut_bytes + self.open.as_ref().map_or(0, |o| o.bytes().len())
    }

    /// Estimated heap bytes: chunk buffers, the open chunk's appender
    /// state, the chunk list, the out-of-order buffer and its histograms'
    /// vectors.
    pub fn heap_bytes(&self) -> usize {
        let ooo: usize = self
            .ooo
            .iter()
            .map(|(_, h)| match h {
                NativeHistogram::Int(h) => {
                    (h.positive_spans.capacity() + h.negative_spans.capacity()) * 8
                        + (h.positive_buckets.capacity()
                            + h.negative_buckets.capacity()
                            + h.custom_values.capacity())
                            * 8
                }
                NativeHistogram::Float(h) => {
                    (h.positive_spans.capacity() + h.negative_spans.capacity()) * 8
                        + (h.positive_buckets.capacity()
                            + h.negative_buckets.capacity()
                            + h.custom_values.capacity())
                            * 8
                }
            })
            .sum();
        self.chunks.capacity() * size_of::<CutChunk>()
            + self.cut_bytes
            + self.open.as_ref().map_or(0, |o| o.heap_bytes())
            + self.ooo.capacity() * size_of::<(i64, NativeHistogram)>()
            + ooo
    }

    /// Appends an in-order histogram (admission done, `h` valid).
    pub fn append_in_order(
        &mut self,
        t: i64,
        h: &NativeHistogram,
        limits: ChunkLimits,
        stats: &mut StatsDelta,
    ) -> Result<(), AppendError> {
        let float = matches!(h, NativeHistogram::Float(_));
        let window = |t: i64| t.div_euclid(limits.window_ms);
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.is_float() != float || window(o.min_t) != window(t))
        {
            self.cut_open(stats);
        }
        let open = self.open.get_or_insert_with(|| OpenChunk::new(float, t));
        match open.append(t, h) {
            Ok(()) => {}
            Err(err) if err.starts_new_chunk() => {
                let reset = matches!(err, HistogramChunkError::CounterReset(_));
                self.cut_open(stats);
                let open = self.open.insert(OpenChunk::new(float, t));
                let appended = if reset {
                    open.append(t, &with_hint(h, CounterResetHint::CounterReset))
                } else {
                    open.append(t, h)
                };
                if appended.is_err() {
                    self.open = None;
                    return Err(AppendError::InvalidHistogram { t });
                }
            }
            Err(_) => return Err(AppendError::InvalidHistogram { t }),
        }
        if let Some(open) = &self.open
            && (open.num_samples() >= limits.max_samples || open.bytes().len() >= limits.max_bytes)
        {
            self.cut_open(stats);
        }
        Ok(())
    }

    /// Moves the open chunk, if any, into the cut chunks.
    fn cut_open(&mut self, stats: &mut StatsDelta) {
        let Some(open) = self.open.take() else {
            return;
        };
        let float = open.is_float();
        let bytes = match open.kind {
            OpenKind::Int(c) => c.into_bytes(),
            OpenKind::Float(c) => c.into_bytes(),
        }
        .into_boxed_slice();
        self.cut_bytes += bytes.len();
        self.chunks.push(CutChunk {
            min_t: open.min_t,
            max_t: open.max_t,
            float,
            bytes,
            flushed_at: None,
        });
        stats.chunks_cut += 1;
    }

    /// The histogram stored at exactly `t` (in a chunk or the out-of-order
    /// buffer), if any.
    pub fn stored_at(&self, t: i64) -> Option<NativeHistogram> {
        if let Ok(i) = self.ooo.binary_search_by(|(st, _)| st.cmp(&t)) {
            return Some(self.ooo[i].1.clone());
        }
        let cut = self
            .chunks
            .iter()
            .filter(|c| c.min_t <= t && t <= c.max_t)
            .map(|c| (&c.bytes[..], c.float));
        let open = self
            .open
            .as_ref()
            .filter(|o| o.min_t <= t && t <= o.max_t)
            .map(|o| (o.bytes(), o.is_float()));
        cut.chain(open)
            .find_map(|(bytes, float)| decode_at(bytes, float, t))
    }

    /// Buffers an out-of-order histogram (admission and the duplicate
    /// checks done), encoding the buffer into chunks once it is full.
    pub fn insert_out_of_order(
        &mut self,
        t: i64,
        h: &NativeHistogram,
        limits: ChunkLimits,
        stats: &mut StatsDelta,
    ) {
        let pos = self.ooo.partition_point(|(st, _)| *st < t);
        self.ooo.insert(pos, (t, h.clone()));
        if self.ooo.len() >= limits.ooo_capacity {
            for chunk in encode(&self.ooo) {
                self.cut_bytes += chunk.bytes.len();
                self.chunks.push(CutChunk {
                    min_t: chunk.min_t,
                    max_t: chunk.max_t,
                    float: chunk.float,
                    bytes: chunk.bytes.into_boxed_slice(),
                    flushed_at: None,
                });
                stats.chunks_cut += 1;
            }
            self.ooo = Vec::new();
        }
    }

    /// Copies of the chunks that overlap `[mint, maxt]`, ordered by
    /// `min_t`; buffered out-of-order histograms in range come as more
    /// chunks.
    pub fn chunks_overlapping(&self, mint: i64, maxt: i64) -> Vec<HistogramChunkData> {
        let mut out: Vec<HistogramChunkData> = self
            .chunks
            .iter()
            .filter(|c| c.min_t <= maxt && c.max_t >= mint)
            .map(|c| HistogramChunkData {
                min_t: c.min_t,
                max_t: c.max_t,
                float: c.float,
                bytes: c.bytes.to_vec(),
            })
            .collect();
        if let Some(open) = &self.open
            && open.min_t <= maxt
            && open.max_t >= mint
        {
            out.push(HistogramChunkData {
                min_t: open.min_t,
                max_t: open.max_t,
                float: open.is_float(),
                bytes: open.bytes().to_vec(),
            });
        }
        let lo = self.ooo.partition_point(|(t, _)| *t < mint);
        let hi = self.ooo.partition_point(|(t, _)| *t <= maxt);
        out.extend(encode(&self.ooo[lo..hi.max(lo)]));
        out.sort_by_key(|c| c.min_t);
        out
    }
}

/// A histogram chunk handed to the flusher: `(min_t, max_t, float, bytes)`.
pub(super) type UnflushedChunk = (i64, i64, bool, Vec<u8>);

impl HistogramData {
    /// Whether some histogram is not in the store yet.
    pub fn has_unflushed(&self) -> bool {
        self.open.is_some()
            || !self.ooo.is_empty()
            || self.chunks.iter().any(|c| c.flushed_at.is_none())
    }

    /// The oldest histogram not in the store yet.
    pub fn oldest_unflushed(&self) -> Option<i64> {
        self.chunks
            .iter()
            .filter(|c| c.flushed_at.is_none())
            .map(|c| c.min_t)
            .chain(self.open.as_ref().map(|o| o.min_t))
            .chain(self.ooo.first().map(|(t, _)| *t))
            .min()
    }

    /// The first timestamp of the open chunk, if any.
    pub fn open_min_t(&self) -> Option<i64> {
        self.open.as_ref().map(|o| o.min_t)
    }

    /// Cuts the open chunk and encodes the out-of-order buffer, as asked.
    pub fn cut_for_flush(&mut self, cut_open: bool, compact_ooo: bool, stats: &mut StatsDelta) {
        if cut_open {
            self.cut_open(stats);
        }
        if compact_ooo && !self.ooo.is_empty() {
            for chunk in encode(&self.ooo) {
                self.cut_bytes += chunk.bytes.len();
                self.chunks.push(CutChunk {
                    min_t: chunk.min_t,
                    max_t: chunk.max_t,
                    float: chunk.float,
                    bytes: chunk.bytes.into_boxed_slice(),
                    flushed_at: None,
                });
                stats.chunks_cut += 1;
            }
            self.ooo = Vec::new();
        }
    }

    /// Copies of the unflushed cut chunks.
    pub fn unflushed(&self) -> Vec<UnflushedChunk> {
        self.chunks
            .iter()
            .filter(|c| c.flushed_at.is_none())
            .map(|c| (c.min_t, c.max_t, c.float, c.bytes.to_vec()))
            .collect()
    }

    /// Marks the unflushed chunk with this range and checksum flushed.
    pub fn mark_flushed(&mut self, min_t: i64, max_t: i64, crc: u32, at: u64) {
        if let Some(c) = self.chunks.iter_mut().find(|c| {
            c.flushed_at.is_none()
                && c.min_t == min_t
                && c.max_t == max_t
                && crc32c::crc32c(&c.bytes) == crc
        }) {
            c.flushed_at = Some(at);
        }
    }

    /// Drops chunks flushed at or before `cutoff`; returns how many.
    pub fn drop_flushed(&mut self, cutoff: u64) -> usize {
        let n = self.chunks.len();
        let mut freed = 0;
        self.chunks.retain(|c| {
            let drop = c.flushed_at.is_some_and(|at| at <= cutoff);
            if drop {
                freed += c.bytes.len();
            }
            !drop
        });
        self.cut_bytes -= freed;
        if self.chunks.len() < n {
            self.chunks.shrink_to_fit();
        }
        n - self.chunks.len()
    }
}

/// Chunks holding `samples` (sorted, unique timestamps, valid), cut
/// wherever a chunk refuses the next sample.
fn encode(samples: &[(i64, NativeHistogram)]) -> Vec<HistogramChunkData> {
    let mut out = Vec::new();
    let mut open: Option<OpenChunk> = None;
    let finish = |open: OpenChunk, out: &mut Vec<HistogramChunkData>| {
        let float = open.is_float();
        out.push(HistogramChunkData {
            min_t: open.min_t,
            max_t: open.max_t,
            float,
            bytes: match open.kind {
                OpenKind::Int(c) => c.into_bytes(),
                OpenKind::Float(c) => c.into_bytes(),
            },
        });
    };
    for (t, h) in samples {
        let float = matches!(h, NativeHistogram::Float(_));
        let appended = match open.as_mut() {
            Some(o) if o.is_float() == float => o.append(*t, h),
            _ => Err(HistogramChunkError::Full),
        };
        if let Err(err) = appended {
            if let Some(o) = open.take() {
                finish(o, &mut out);
            }
            let o = open.insert(OpenChunk::new(float, *t));
            let h = if matches!(err, HistogramChunkError::CounterReset(_)) {
                with_hint(h, CounterResetHint::CounterReset)
            } else {
                h.clone()
            };
            if o.append(*t, &h).is_err() {
                // Only valid histograms are buffered; an empty chunk takes
                // any of them. Drop the chunk rather than a whole buffer.
                open = None;
            }
        }
    }
    if let Some(o) = open {
        finish(o, &mut out);
    }
    out
}
