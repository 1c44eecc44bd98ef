//! Removing idle series from the head.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::packed::PackedLabels;
use super::series::MemSeries;
use super::{Head, SeriesRef};
use crate::model::Labels;

/// A series `gc_idle` would remove, as shown to its `is_safe` callback.
#[derive(Clone, Debug, PartialEq)]
pub struct IdleSeries {
    pub series_ref: SeriesRef,
    pub fingerprint: u64,
    pub labels: Labels,
    /// Oldest and newest sample, if the series has any.
    pub time_range: Option<(i64, i64)>,
    /// Encoded bytes of its chunks.
    pub chunk_bytes: usize,
    /// Whether some of its samples are not in the long-term store yet.
    pub unflushed: bool,
}

impl Head {
    /// Removes the series without pushes for `idle_for` whose data
    /// `is_safe` says is safe elsewhere (flushed to the long-term store),
    /// from the series maps and the postings; returns how many.
    ///
    /// `is_safe` runs without head locks held. A series pushed to after it
    /// was judged idle stays.
    pub fn gc_idle(&self, idle_for: Duration, is_safe: impl Fn(&IdleSeries) -> bool) -> usize {
        self.gc_idle_at(Instant::now(), idle_for, is_safe)
    }

    /// [`Head::gc_idle`] as of `now` (tests move the clock forward).
    pub fn gc_idle_at(
        &self,
        now: Instant,
        idle_for: Duration,
        is_safe: impl Fn(&IdleSeries) -> bool,
    ) -> usize {
        let idle_ms = u64::try_from(idle_for.as_millis()).unwrap_or(u64::MAX);
        let cutoff = self.clock_ms(now).saturating_sub(idle_ms);
        if cutoff == 0 {
            return 0;
        }
        let mut candidates: Vec<Arc<MemSeries>> = Vec::new();
        for stripe in self.stripes.iter() {
            let maps = stripe.maps.read();
            candidates.extend(
                maps.by_ref
                    .values()
                    .filter(|s| s.last_active() < cutoff)
                    .cloned(),
            );
        }
        candidates.retain(|s| {
            let info = {
                let data = s.data.lock();
                IdleSeries {
                    series_ref: s.series_ref,
                    fingerprint: s.fingerprint,
                    labels: s.labels(),
                    time_range: data.time_range(),
                    chunk_bytes: data.chunk_bytes(),
                    unflushed: data.has_unflushed(),
                }
            };
            is_safe(&info)
        });
        if candidates.is_empty() {
            return 0;
        }

        let mut index = self.index.write();
        let (mut chunk_bytes, mut heap_bytes) = (0i64, 0i64);
        candidates.retain(|s| {
            let data = s.data.lock();
            if !s.try_delete(&data, cutoff) {
                return false;
            }
            chunk_bytes += data.chunk_bytes() as i64;
            heap_bytes += data.heap_bytes() as i64;
            true
        });
        for s in &candidates {
            self.hash_stripe(s.fingerprint).maps.write().remove_hash(s);
            self.ref_stripe(s.series_ref)
                .maps
                .write()
                .by_ref
                .remove(&s.series_ref);
        }
        let removed: Vec<(SeriesRef, &PackedLabels)> = candidates
            .iter()
            .map(|s| (s.series_ref, &s.labels))
            .collect();
        index.remove(&removed);
        drop(index);
        let count = candidates.len();

        self.num_series.fetch_sub(count as u64, Ordering::Relaxed);
        self.series_removed
            .fetch_add(count as u64, Ordering::Relaxed);
        self.chunk_bytes.fetch_sub(chunk_bytes, Ordering::Relaxed);
        self.sample_heap_bytes
            .fetch_sub(heap_bytes, Ordering::Relaxed);
        count
    }
}
