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

use super::series::{MemSeries, SeriesData, StatsDelta};
use super::{Head, SeriesRef};
use crate::model::Labels;

/// A copy of a chunk to flush.
#[derive(Clone, Debug, PartialEq)]
pub struct FlushChunk {
    pub series_ref: SeriesRef,
    pub fingerprint: u64,
    pub labels: Labels,
    pub min_t: i64,
    pub max_t: i64,
    pub bytes: Vec<u8>,
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

    /// Cuts open chunks as `policy` says and returns copies of every
    /// unflushed cut chunk, oldest first within a series.
    pub fn flush_candidates(&self, policy: &FlushPolicy) -> Vec<FlushChunk> {
        let idle_ms = u64::try_from(policy.max_idle.as_millis()).unwrap_or(u64::MAX);
        let idle_before = self.now_ms().saturating_sub(idle_ms);
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
            let mut chunks: Vec<FlushChunk> = data
                .chunks
                .iter()
                .filter(|c| c.flushed_at.is_none())
                .map(|c| FlushChunk {
                    series_ref: series.series_ref,
                    fingerprint: series.fingerprint,
                    labels: Labels::default(),
                    min_t: c.min_t,
                    max_t: c.max_t,
                    bytes: c.bytes.to_vec(),
                })
                .collect();
            drop(data);
            if !chunks.is_empty() {
                let labels = series.labels();
                for c in &mut chunks {
                    c.labels = labels.clone();
                }
                chunks.sort_by_key(|c| (c.min_t, c.max_t));
                out.extend(chunks);
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
            if let Some(c) = data.chunks.iter_mut().find(|c| {
                c.flushed_at.is_none()
                    && c.min_t == f.min_t
                    && c.max_t == f.max_t
                    && *c.bytes == *f.bytes
            }) {
                c.flushed_at = Some(now);
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
            if data.chunks.len() < n {
                dropped += n - data.chunks.len();
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
        // 300 samples: two full chunks of 120 cut, 60 in the open chunk.
        let all = samples((0..300).map(|i| i * 15_000));
        let now = 300 * 15_000;
        head.append_batch(&[(&l, &all)], &limits(Duration::ZERO));

        let cut = head.flush_candidates(&policy(now, false));
        assert_eq!(cut.len(), 2, "only cut chunks when nothing is idle or old");
        assert!(cut.iter().all(|c| c.labels == l));
        head.mark_flushed(&cut);
        assert!(head.flush_candidates(&policy(now, false)).is_empty());
        let w = head.flushed_watermarks();
        assert_eq!(w, vec![(SeriesRef(1), 240 * 15_000 - 1)]);

        // Forced: the open chunk is cut and handed over too.
        let rest = head.flush_candidates(&policy(now, true));
        assert_eq!(rest.len(), 1);
        let mut every: Vec<FlushChunk> = cut.clone();
        every.extend(rest.clone());
        assert_eq!(decoded(&every), all, "the flushed chunks hold every sample");
        head.mark_flushed(&rest);
        assert_eq!(
            head.flushed_watermarks(),
            vec![(SeriesRef(1), 299 * 15_000)]
        );

        let before = head.chunk_bytes();
        assert!(before > 0);
        assert_eq!(head.drop_flushed(Duration::ZERO), 3);
        assert_eq!(head.chunk_bytes(), 0);
        assert_eq!(head.unflushed_chunks(), 0);
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
}
