//! What the head gives the flusher, and what it keeps until a flush is
//! acknowledged.
//!
//! A series' data moves through three states:
//! 1. **unflushed**: the open chunk, the out-of-order buffer, and cut
//!    chunks not yet in the store. Only here (and in the WAL) — never let go.
//! 2. **flushed**: cut chunks the store acknowledged, kept for
//!    `retain_period` so queries see no gap while caches and replicas catch
//!    up, then dropped ([`Head::drop_flushed`]).
//! 3. **gone**: a series with nothing unflushed, idle long enough, leaves
//!    the head ([`super::Head::gc_idle`] with `unflushed == false`).
//!
//! [`Head::flush_candidates`] cuts open chunks that are idle or too old
//! (all of them when forced, on shutdown or `POST /flush`) and copies every
//! unflushed cut chunk; [`Head::mark_flushed`] records the store's
//! acknowledgement. [`Head::flushed_watermarks`] tells the WAL checkpoint,
//! per series, up to which timestamp every sample is in the store.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use super::series::{CutChunk, MemSeries, SeriesData, StatsDelta};
use super::{Head, SeriesRef};
use crate::chunk::merge::{ChunkData, merge_chunks};
use crate::chunk::{MAX_SAMPLES, XorChunk};
use crate::model::Labels;
use crate::store::ChunkEncoding;

/// A chunk to flush: one series' unflushed samples of one chunk window,
/// in one XOR chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct FlushChunk {
    pub series_ref: SeriesRef,
    pub fingerprint: u64,
    pub labels: Labels,
    pub min_t: i64,
    pub max_t: i64,
    pub encoding: ChunkEncoding,
    pub bytes: Vec<u8>,
    /// The head's chunks it holds, marked flushed when the store has it.
    pub sources: Vec<ChunkId>,
}

/// Names a cut chunk of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkId {
    pub min_t: i64,
    pub max_t: i64,
    pub crc: u32,
    /// A histogram chunk (else an XOR one).
    pub histogram: bool,
}

impl ChunkId {
    fn of(c: &CutChunk) -> ChunkId {
        ChunkId {
            min_t: c.min_t,
            max_t: c.max_t,
            crc: crc32c::crc32c(&c.bytes),
            histogram: false,
        }
    }
}

/// One window's chunks as one or more chunks of at most the encoding's
/// sample cap: `(min_t, max_t, bytes, sources)`. A single chunk is copied as
/// it is; several are merged, one sample per timestamp.
fn merge_window(group: &[&CutChunk]) -> Vec<(i64, i64, Vec<u8>, Vec<ChunkId>)> {
    let sources: Vec<ChunkId> = group.iter().map(|c| ChunkId::of(c)).collect();
    if let [one] = group {
        return vec![(one.min_t, one.max_t, one.bytes.to_vec(), sources)];
    }
    let data: Vec<ChunkData> = group
        .iter()
        .map(|c| ChunkData {
            min_t: c.min_t,
            max_t: c.max_t,
            bytes: c.bytes.to_vec(),
        })
        .collect();
    let Ok(samples) = merge_chunks(&data, i64::MIN, i64::MAX) else {
        // The head's own chunks always decode; should one not, flush them
        // as they are rather than lose them.
        return group
            .iter()
            .zip(sources)
            .map(|(c, id)| (c.min_t, c.max_t, c.bytes.to_vec(), vec![id]))
            .collect();
    };
    let mut out = Vec::new();
    for part in samples.chunks(MAX_SAMPLES) {
        let mut chunk = XorChunk::new();
        let mut app = chunk.appender();
        for s in part {
            if let Err(e) = app.append(s.t, s.v) {
                unreachable!("merged samples are sorted, unique and capped: {e}");
            }
        }
        let (Some(first), Some(last)) = (part.first(), part.last()) else {
            continue;
        };
        out.push((first.t, last.t, chunk.into_bytes(), Vec::new()));
    }
    // Marked flushed with the last part: earlier parts stored without it
    // are stored again later, never lost.
    if let Some(last) = out.last_mut() {
        last.3 = sources;
    }
    out
}

/// When open chunks are cut for flushing.
#[derive(Clone, Copy, Debug)]
pub struct FlushPolicy {
    /// Now, in milliseconds since the epoch (sample time).
    pub now_ms: i64,
    /// An open chunk whose series got no sample for this long is cut.
    pub max_idle: Duration,
    /// An open chunk whose first sample is older than this is cut.
    pub max_age: Duration,
    /// Cut every open chunk and out-of-order buffer.
    pub force: bool,
}

impl SeriesData {
    /// Whether anything of the series is not in the store yet.
    pub fn has_unflushed(&self) -> bool {
        self.head.is_some()
            || !self.ooo.is_empty()
            || self.chunks.iter().any(|c| c.flushed_at.is_none())
            || self.hist.has_unflushed()
    }

    /// Every sample at or before the returned timestamp is in the store
    /// (`i64::MIN`: nothing is known to be).
    pub fn flushed_watermark(&self) -> i64 {
        let oldest_unflushed = self
            .chunks
            .iter()
            .filter(|c| c.flushed_at.is_none())
            .map(|c| c.min_t)
            .chain(self.head.as_ref().map(|h| h.min_t))
            .chain(self.ooo.first().map(|&(t, _)| t))
            .chain(self.hist.oldest_unflushed())
            .min();
        match (oldest_unflushed, self.max_t) {
            (Some(t), _) => t.saturating_sub(1),
            (None, Some(max_t)) => max_t,
            (None, None) => i64::MIN,
        }
    }

    fn cut_for_flush(&mut self, idle: bool, policy: &FlushPolicy, stats: &mut StatsDelta) {
        let age_ms = policy.max_age.as_millis() as i64;
        let old = self
            .head
            .as_ref()
            .is_some_and(|h| h.min_t < policy.now_ms.saturating_sub(age_ms));
        if policy.force || idle || old {
            self.cut_head(stats);
        }
        let ooo_old = self
            .ooo
            .first()
            .is_some_and(|&(t, _)| t < policy.now_ms.saturating_sub(age_ms));
        if policy.force || idle || ooo_old {
            self.compact_out_of_order(stats);
        }
        let hist_old = self
            .hist
            .open_min_t()
            .is_some_and(|t| t < policy.now_ms.saturating_sub(age_ms));
        let hist_ooo_old = self
            .hist
            .oldest_unflushed()
            .is_some_and(|t| t < policy.now_ms.saturating_sub(age_ms));
        self.hist.cut_for_flush(
            policy.force || idle || hist_old,
            policy.force || idle || hist_ooo_old,
            stats,
        );
    }
}

impl Head {
    fn all_series_arcs(&self) -> Vec<Arc<MemSeries>> {
        let mut out = Vec::with_capacity(self.active_series() as usize);
        for stripe in self.stripes.iter() {
            out.extend(stripe.maps.read().by_ref.values().cloned());
        }
        out
    }

    /// Cuts open chunks as `policy` says and returns what to flush: per
    /// series and chunk window, its unflushed cut chunks merged into one
    /// chunk, for every window the series has moved past (or all of them
    /// when idle, too old or forced). Replicas holding the same samples
    /// return the same chunks.
    pub fn flush_candidates(&self, policy: &FlushPolicy) -> Vec<FlushChunk> {
        let idle_ms = u64::try_from(policy.max_idle.as_millis()).unwrap_or(u64::MAX);
        let idle_before = self.now_ms().saturating_sub(idle_ms);
        let window_ms = self.chunk_limits.window_ms;
        let old_before = policy
            .now_ms
            .saturating_sub(policy.max_age.as_millis() as i64);
        let mut out = Vec::new();
        let mut stats = StatsDelta::default();
        for series in self.all_series_arcs() {
            let idle = series.last_active() < idle_before;
            let mut data = series.data.lock();
            if series.is_deleted() {
                continue;
            }
            let before = data.heap_bytes() as i64;
            let chunk_bytes_before = data.chunk_bytes() as i64;
            data.cut_for_flush(idle, policy, &mut stats);
            stats.heap_bytes += data.heap_bytes() as i64 - before;
            stats.chunk_bytes += data.chunk_bytes() as i64 - chunk_bytes_before;
            let open_window = data.head.as_ref().map(|h| h.min_t.div_euclid(window_ms));
            // Unflushed cut chunks by window (of their first sample).
            let mut windows: BTreeMap<i64, Vec<&CutChunk>> = BTreeMap::new();
            for c in data.chunks.iter().filter(|c| c.flushed_at.is_none()) {
                windows
                    .entry(c.min_t.div_euclid(window_ms))
                    .or_default()
                    .push(c);
            }
            let ready = |window: i64, open: Option<i64>| {
                let window_end = (window + 1).saturating_mul(window_ms);
                policy.force
                    || idle
                    || open.is_none_or(|open| window < open)
                    || window_end <= old_before
            };
            let mut chunks = Vec::new();
            for (window, group) in windows {
                if ready(window, open_window) {
                    chunks.extend(
                        merge_window(&group)
                            .into_iter()
                            .map(|(a, b, bytes, sources)| {
                                (a, b, ChunkEncoding::Xor, bytes, sources)
                            }),
                    );
                }
            }
            // Histogram chunks go as they are (their layouts may differ).
            let open_hist = data.hist.open_min_t().map(|t| t.div_euclid(window_ms));
            for (min_t, max_t, float, bytes) in data.hist.unflushed() {
                if ready(min_t.div_euclid(window_ms), open_hist) {
                    let source = ChunkId {
                        min_t,
                        max_t,
                        crc: crc32c::crc32c(&bytes),
                        histogram: true,
                    };
                    let encoding = if float {
                        ChunkEncoding::FloatHistogram
                    } else {
                        ChunkEncoding::Histogram
                    };
                    chunks.push((min_t, max_t, encoding, bytes, vec![source]));
                }
            }
            drop(data);
            if !chunks.is_empty() {
                let labels = series.labels();
                out.extend(
                    chunks
                        .into_iter()
                        .map(|(min_t, max_t, encoding, bytes, sources)| FlushChunk {
                            series_ref: series.series_ref,
                            fingerprint: series.fingerprint,
                            labels: labels.clone(),
                            min_t,
                            max_t,
                            encoding,
                            bytes,
                            sources,
                        }),
                );
            }
        }
        self.apply_stats(&stats);
        out
    }

    /// Records that the store holds these chunks.
    pub fn mark_flushed(&self, flushed: &[FlushChunk]) {
        let now = self.now_ms();
        for f in flushed {
            let Some(series) = self.series_by_ref(f.series_ref) else {
                continue;
            };
            let mut data = series.data.lock();
            for source in &f.sources {
                if source.histogram {
                    data.hist
                        .mark_flushed(source.min_t, source.max_t, source.crc, now);
                } else if let Some(c) = data
                    .chunks
                    .iter_mut()
                    .find(|c| c.flushed_at.is_none() && ChunkId::of(c) == *source)
                {
                    c.flushed_at = Some(now);
                }
            }
        }
    }

    /// Drops flushed chunks acknowledged more than `retain` ago; returns how
    /// many.
    pub fn drop_flushed(&self, retain: Duration) -> usize {
        let retain_ms = u64::try_from(retain.as_millis()).unwrap_or(u64::MAX);
        let cutoff = self.now_ms().saturating_sub(retain_ms);
        let mut dropped = 0;
        let mut stats = StatsDelta::default();
        for series in self.all_series_arcs() {
            let mut data = series.data.lock();
            let before = data.heap_bytes() as i64;
            let chunk_bytes_before = data.chunk_bytes() as i64;
            let n = data.chunks.len();
            let mut freed = 0;
            data.chunks.retain(|c| {
                let drop = c.flushed_at.is_some_and(|at| at <= cutoff);
                if drop {
                    freed += c.bytes.len();
                }
                !drop
            });
            data.cut_bytes -= freed;
            let hist_dropped = data.hist.drop_flushed(cutoff);
            if data.chunks.len() < n || hist_dropped > 0 {
                dropped += n - data.chunks.len() + hist_dropped;
                data.chunks.shrink_to_fit();
                stats.heap_bytes += data.heap_bytes() as i64 - before;
                stats.chunk_bytes += data.chunk_bytes() as i64 - chunk_bytes_before;
            }
        }
        self.apply_stats(&stats);
        dropped
    }

    /// Per series, the timestamp up to which every sample is in the store.
    pub fn flushed_watermarks(&self) -> Vec<(SeriesRef, i64)> {
        self.all_series_arcs()
            .into_iter()
            .map(|s| {
                let w = s.data.lock().flushed_watermark();
                (s.series_ref, w)
            })
            .collect()
    }

    /// The highest series ref handed out so far (0: none).
    pub fn max_series_ref(&self) -> u64 {
        self.next_ref
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(1)
    }

    /// Chunks not in the store yet, open ones included.
    pub fn unflushed_chunks(&self) -> usize {
        self.all_series_arcs()
            .iter()
            .map(|s| {
                let d = s.data.lock();
                d.chunks.iter().filter(|c| c.flushed_at.is_none()).count()
                    + usize::from(d.head.is_some())
                    + d.hist.unflushed().len()
                    + usize::from(d.hist.open_min_t().is_some())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::merge::{ChunkData, merge_chunks};
    use crate::ingester::head::HeadConfig;
    use crate::limits::Limits;
    use crate::model::Sample;

    const MINUTE: i64 = 60_000;

    fn limits(ooo: Duration) -> Limits {
        Limits {
            max_series_per_tenant: 0,
            max_series_per_metric: 0,
            out_of_order_time_window: ooo,
            ..Limits::default()
        }
    }

    fn samples(ts: impl IntoIterator<Item = i64>) -> Vec<Sample> {
        ts.into_iter().map(|t| Sample { t, v: t as f64 }).collect()
    }

    fn policy(now_ms: i64, force: bool) -> FlushPolicy {
        FlushPolicy {
            now_ms,
            max_idle: Duration::from_secs(3600),
            max_age: Duration::from_secs(7200),
            force,
        }
    }

    fn decoded(chunks: &[FlushChunk]) -> Vec<Sample> {
        let data: Vec<ChunkData> = chunks
            .iter()
            .map(|c| ChunkData {
                min_t: c.min_t,
                max_t: c.max_t,
                bytes: c.bytes.clone(),
            })
            .collect();
        merge_chunks(&data, i64::MIN, i64::MAX).expect("valid chunks")
    }

    #[test]
    fn flushing_hands_over_every_sample_once_and_frees_memory() {
        let head = Head::new("t", &HeadConfig::default());
        let l = Labels::from_pairs([("__name__", "up")]);
        // 550 samples: the 2h window 0 holds 480 (four cut chunks of 120),
        // window 1 the other 70, in the open chunk.
        let all = samples((0..550).map(|i| i * 15_000));
        let now = 550 * 15_000;
        head.append_batch(&[(&l, &all)], &limits(Duration::ZERO));

        let done = head.flush_candidates(&policy(now, false));
        assert_eq!(
            done.len(),
            1,
            "window 0, which the series moved past, as one chunk"
        );
        assert_eq!(done[0].sources.len(), 4);
        assert_eq!(decoded(&done), all[..480].to_vec());
        assert!(done.iter().all(|c| c.labels == l));
        head.mark_flushed(&done);
        assert!(head.flush_candidates(&policy(now, false)).is_empty());
        let w = head.flushed_watermarks();
        assert_eq!(w, vec![(SeriesRef(1), 480 * 15_000 - 1)]);

        // Forced: the open chunk is cut and handed over too.
        let rest = head.flush_candidates(&policy(now, true));
        assert_eq!(rest.len(), 1);
        let mut every: Vec<FlushChunk> = done.clone();
        every.extend(rest.clone());
        assert_eq!(decoded(&every), all, "the flushed chunks hold every sample");
        head.mark_flushed(&rest);
        assert_eq!(
            head.flushed_watermarks(),
            vec![(SeriesRef(1), 549 * 15_000)]
        );

        let before = head.chunk_bytes();
        assert!(before > 0);
        assert_eq!(head.drop_flushed(Duration::ZERO), 5);
        assert_eq!(head.chunk_bytes(), 0);
        assert_eq!(head.unflushed_chunks(), 0);
    }

    #[test]
    fn replicas_with_the_same_samples_flush_the_same_chunks() {
        let l = Labels::from_pairs([("__name__", "up")]);
        let all = samples((0..1000).map(|i| i * 15_000 + i % 7));
        let flushed = |batches: &[usize]| {
            let head = Head::new("t", &HeadConfig::default());
            let mut out = Vec::new();
            let mut from = 0;
            for &to in batches {
                head.append_batch(&[(&l, &all[from..to])], &limits(Duration::ZERO));
                let got = head.flush_candidates(&policy(all[to - 1].t, false));
                head.mark_flushed(&got);
                out.extend(got.into_iter().map(|c| (c.min_t, c.max_t, c.bytes)));
                from = to;
            }
            out
        };
        // Pushed and flushed at different moments, the same chunks result.
        assert_eq!(flushed(&[1000]), flushed(&[3, 500, 777, 1000]));
    }

    #[test]
    fn idle_and_old_open_chunks_are_cut() {
        let head = Head::new("t", &HeadConfig::default());
        let l = Labels::from_pairs([("__name__", "up")]);
        head.append_batch(&[(&l, &samples([0, 15_000]))], &limits(Duration::ZERO));
        // Neither idle nor old: nothing.
        assert!(head.flush_candidates(&policy(MINUTE, false)).is_empty());
        // The first sample is older than max_age: cut.
        let old = head.flush_candidates(&policy(3 * 3600 * 1000, false));
        assert_eq!(old.len(), 1);
        assert_eq!(decoded(&old), samples([0, 15_000]));
    }

    #[test]
    fn a_late_sample_below_the_watermark_lowers_it() {
        let head = Head::new("t", &HeadConfig::default());
        let l = Labels::from_pairs([("__name__", "up")]);
        let lim = limits(Duration::from_secs(3600));
        head.append_batch(&[(&l, &samples([10 * MINUTE, 11 * MINUTE]))], &lim);
        let all = head.flush_candidates(&policy(12 * MINUTE, true));
        head.mark_flushed(&all);
        assert_eq!(head.flushed_watermarks()[0].1, 11 * MINUTE);
        // Out of order, older than everything flushed: unflushed again.
        head.append_batch(&[(&l, &samples([5 * MINUTE]))], &lim);
        assert_eq!(head.flushed_watermarks()[0].1, 5 * MINUTE - 1);
        let late = head.flush_candidates(&policy(12 * MINUTE, true));
        assert_eq!(decoded(&late), samples([5 * MINUTE]));
    }

    #[test]
    fn only_fully_flushed_idle_series_are_released() {
        let head = Head::new("t", &HeadConfig::default());
        let a = Labels::from_pairs([("__name__", "a")]);
        let b = Labels::from_pairs([("__name__", "b")]);
        let lim = limits(Duration::ZERO);
        head.append_batch(&[(&a, &samples([0])), (&b, &samples([0]))], &lim);
        let chunks = head.flush_candidates(&policy(MINUTE, true));
        let (of_a, _): (Vec<FlushChunk>, Vec<FlushChunk>) =
            chunks.into_iter().partition(|c| c.labels == a);
        head.mark_flushed(&of_a);
        let later = std::time::Instant::now() + Duration::from_secs(10);
        let released = head.gc_idle_at(later, Duration::from_secs(1), |s| !s.unflushed);
        assert_eq!(released, 1);
        assert_eq!(head.active_series(), 1);
        assert!(
            head.series_labels(SeriesRef(2)).is_some(),
            "b still has unflushed data"
        );
    }

    #[test]
    fn histogram_chunks_are_flushed_and_count_as_unflushed_until_then() {
        use crate::model::histogram::{Histogram, NativeHistogram, Span};
        let head = Head::new("t", &HeadConfig::default());
        let l = Labels::from_pairs([("__name__", "h")]);
        let lim = limits(Duration::ZERO);
        let (r, _) = head.get_or_create_series(&l, &lim).expect("series");
        let h = |n: u64| {
            NativeHistogram::Int(Histogram {
                count: n,
                sum: n as f64,
                positive_spans: vec![Span {
                    offset: 0,
                    length: 1,
                }],
                positive_buckets: vec![n as i64],
                ..Histogram::default()
            })
        };
        for i in 0..10u64 {
            head.append_histogram(r, i as i64 * 15_000, &h(i), &lim)
                .expect("in order");
        }
        assert_eq!(head.flushed_watermarks(), vec![(r, -1)]);
        // The open histogram chunk's window is current: nothing yet.
        assert!(head.flush_candidates(&policy(150_000, false)).is_empty());
        let all = head.flush_candidates(&policy(150_000, true));
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].encoding, ChunkEncoding::Histogram);
        assert_eq!((all[0].min_t, all[0].max_t), (0, 135_000));
        head.mark_flushed(&all);
        assert_eq!(head.flushed_watermarks(), vec![(r, 135_000)]);
        assert_eq!(head.drop_flushed(Duration::ZERO), 1);
        assert_eq!(head.unflushed_chunks(), 0);
    }
}
