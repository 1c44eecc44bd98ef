//! Writing to the head: finding and creating series (where the series
//! limits apply), batch appends, and the ref-based half the WAL uses.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::RwLockWriteGuard;

use super::admission::{Admission, ooo_window_ms};
use super::packed::{KeyBuilder, PackedLabels, SeriesKey, pairs};
use super::postings::Index;
use super::series::{MemSeries, SeriesData, StatsDelta};
use super::{
    AppendResult, Head, HeadError, RejectedSample, Rejection, SeriesLimitError, SeriesRef,
};
use crate::limits::Limits;
use crate::model::histogram::NativeHistogram;
use crate::model::{Labels, METRIC_NAME, Sample};

/// One batch's shared state while it is applied.
struct Batch<'a> {
    limits: &'a Limits,
    ooo_window_ms: i64,
    now_ms: u64,
    stats: StatsDelta,
    result: AppendResult,
}

/// Whether creating one more series with these packed labels stays within
/// `limits`.
fn check_series_limits(
    index: &Index,
    packed: &[u8],
    limits: &Limits,
) -> Result<(), SeriesLimitError> {
    let limit = limits.max_series_per_tenant;
    if limit > 0 && index.num_series() >= limit {
        return Err(SeriesLimitError::PerTenant { limit });
    }
    let limit = limits.max_series_per_metric;
    if limit > 0
        && let Some((_, metric)) = pairs(packed).find(|&(name, _)| name == METRIC_NAME)
        && index.postings_len(METRIC_NAME, metric) >= limit
    {
        return Err(SeriesLimitError::PerMetric { limit });
    }
    Ok(())
}

impl Head {
    /// Appends a batch (typically one remote-write request): for each
    /// `(labels, samples)`, finds or creates the series and appends its
    /// samples in the order given. Series limits apply when a series is
    /// created; a series over a limit has all its samples refused.
    ///
    /// Refused samples are reported in [`AppendResult::rejected`] with the
    /// index of their series in `batch`, so the caller can name the series
    /// and the reason in its 400 answer and count discards by
    /// [`Rejection::reason`]. A series with no samples is skipped (not
    /// created).
    ///
    /// Looking up existing series takes no global lock; creating series
    /// takes the index write lock.
    pub fn append_batch(&self, batch: &[(&Labels, &[Sample])], limits: &Limits) -> AppendResult {
        let mut state = Batch {
            limits,
            ooo_window_ms: ooo_window_ms(limits),
            now_ms: self.now_ms(),
            stats: StatsDelta::default(),
            result: AppendResult::default(),
        };
        let mut keys = KeyBuilder::new(&self.tenant);
        for (index, &(labels, samples)) in batch.iter().enumerate() {
            if samples.is_empty() {
                continue;
            }
            let key = keys.key(labels.as_slice());
            self.append_series(key, samples, index, &mut state);
        }
        state.result.samples_appended = state.stats.samples_appended;
        self.apply_stats(&state.stats);
        state.result
    }

    fn append_series(
        &self,
        key: SeriesKey<'_>,
        samples: &[Sample],
        series_index: usize,
        batch: &mut Batch<'_>,
    ) {
        // Fast path: an existing series, no global lock.
        if let Some(series) = self.lookup(key) {
            let mut data = series.data.lock();
            if !series.is_deleted() {
                series.touch_locked(&data, batch.now_ms);
                self.append_locked(&mut data, samples, series_index, batch);
                return;
            }
        }
        // Slow path: find or create under the index lock, then append while
        // still holding it (downgraded to read) so `gc_idle` cannot remove
        // the series in between.
        let mut index = self.index.write();
        match self.find_or_create_locked(&mut index, key, Some(batch.limits), batch.now_ms) {
            Ok((series, created)) => {
                if created {
                    batch.result.series_created += 1;
                }
                let _index = RwLockWriteGuard::downgrade(index);
                let mut data = series.data.lock();
                self.append_locked(&mut data, samples, series_index, batch);
            }
            Err(limit) => {
                drop(index);
                batch
                    .result
                    .rejected
                    .extend(samples.iter().map(|s| RejectedSample {
                        series_index,
                        timestamp: s.t,
                        rejection: Rejection::SeriesLimit(limit),
                    }));
            }
        }
    }

    fn append_locked(
        &self,
        data: &mut SeriesData,
        samples: &[Sample],
        series_index: usize,
        batch: &mut Batch<'_>,
    ) {
        let (chunk_bytes, heap_bytes) = (data.chunk_bytes(), data.heap_bytes());
        for s in samples {
            match data.append(
                s.t,
                s.v,
                batch.ooo_window_ms,
                self.chunk_limits,
                &mut batch.stats,
            ) {
                Ok(Admission::Duplicate) => batch.result.duplicates += 1,
                Ok(Admission::InOrder | Admission::OutOfOrder) => {}
                Err(e) => batch.result.rejected.push(RejectedSample {
                    series_index,
                    timestamp: s.t,
                    rejection: Rejection::Sample(e),
                }),
            }
        }
        batch.stats.chunk_bytes += data.chunk_bytes() as i64 - chunk_bytes as i64;
        batch.stats.heap_bytes += data.heap_bytes() as i64 - heap_bytes as i64;
    }

    /// The series with this key, if in the head.
    fn lookup(&self, key: SeriesKey<'_>) -> Option<Arc<MemSeries>> {
        self.hash_stripe(key.fingerprint)
            .maps
            .read()
            .find(key)
            .cloned()
    }

    /// Finds or creates a series; `limits` is `None` on WAL replay. The
    /// caller holds the index write lock, so no series is created or
    /// removed meanwhile.
    fn find_or_create_locked(
        &self,
        index: &mut Index,
        key: SeriesKey<'_>,
        limits: Option<&Limits>,
        now_ms: u64,
    ) -> Result<(Arc<MemSeries>, bool), SeriesLimitError> {
        if let Some(series) = self.lookup(key) {
            series.touch(now_ms);
            return Ok((series, false));
        }
        if let Some(limits) = limits {
            check_series_limits(index, key.packed, limits)?;
        }
        let series_ref = SeriesRef(self.next_ref.fetch_add(1, Ordering::Relaxed));
        Ok((self.insert_locked(index, series_ref, key, now_ms), true))
    }

    /// Adds a new series to the maps and the index; the caller holds the
    /// index write lock and has checked that neither the labels nor the ref
    /// are taken.
    fn insert_locked(
        &self,
        index: &mut Index,
        series_ref: SeriesRef,
        key: SeriesKey<'_>,
        now_ms: u64,
    ) -> Arc<MemSeries> {
        let series = Arc::new(MemSeries::new(
            series_ref,
            key.fingerprint,
            PackedLabels::new(key.packed),
            now_ms,
        ));
        self.hash_stripe(key.fingerprint)
            .maps
            .write()
            .insert_hash(Arc::clone(&series));
        self.ref_stripe(series_ref)
            .maps
            .write()
            .by_ref
            .insert(series_ref, Arc::clone(&series));
        index.add(series_ref, &series.labels);
        self.num_series.fetch_add(1, Ordering::Relaxed);
        self.series_created.fetch_add(1, Ordering::Relaxed);
        series
    }

    /// The ref of the series with `labels`, creating it (within `limits`)
    /// if needed; `true` when created, so the caller logs its labels to the
    /// WAL before logging samples by ref. Counts as activity for
    /// [`Head::gc_idle`], so the series stays for at least `idle_for` after
    /// this call.
    pub fn get_or_create_series(
        &self,
        labels: &Labels,
        limits: &Limits,
    ) -> Result<(SeriesRef, bool), SeriesLimitError> {
        let mut keys = KeyBuilder::new(&self.tenant);
        self.get_or_create_by_key(keys.key(labels.as_slice()), limits)
    }

    /// [`Head::get_or_create_series`] by key (tests use it to force
    /// fingerprint collisions).
    pub(super) fn get_or_create_by_key(
        &self,
        key: SeriesKey<'_>,
        limits: &Limits,
    ) -> Result<(SeriesRef, bool), SeriesLimitError> {
        let now_ms = self.now_ms();
        if let Some(series) = self.lookup(key)
            && series.touch(now_ms)
        {
            return Ok((series.series_ref, false));
        }
        let mut index = self.index.write();
        let (series, created) =
            self.find_or_create_locked(&mut index, key, Some(limits), now_ms)?;
        Ok((series.series_ref, created))
    }

    /// Appends one sample to the series `series_ref` (from
    /// [`Head::get_or_create_series`] or WAL replay), with the tenant's
    /// out-of-order window from `limits`.
    pub fn append_sample(
        &self,
        series_ref: SeriesRef,
        t: i64,
        v: f64,
        limits: &Limits,
    ) -> Result<Admission, HeadError> {
        let unknown = || HeadError::UnknownSeries {
            tenant: self.tenant.clone(),
            series_ref,
        };
        let series = self.series_by_ref(series_ref).ok_or_else(unknown)?;
        series.touch(self.now_ms());
        let mut stats = StatsDelta::default();
        let admission = {
            let mut data = series.data.lock();
            if series.is_deleted() {
                return Err(unknown());
            }
            let (chunk_bytes, heap_bytes) = (data.chunk_bytes(), data.heap_bytes());
            let admission = data.append(t, v, ooo_window_ms(limits), self.chunk_limits, &mut stats);
            stats.chunk_bytes = data.chunk_bytes() as i64 - chunk_bytes as i64;
            stats.heap_bytes = data.heap_bytes() as i64 - heap_bytes as i64;
            admission
        };
        self.apply_stats(&stats);
        Ok(admission?)
    }

    /// Appends one native histogram sample to the series `series_ref`, as
    /// [`Head::append_sample`] does a float one.
    pub fn append_histogram(
        &self,
        series_ref: SeriesRef,
        t: i64,
        h: &NativeHistogram,
        limits: &Limits,
    ) -> Result<Admission, HeadError> {
        let unknown = || HeadError::UnknownSeries {
            tenant: self.tenant.clone(),
            series_ref,
        };
        let series = self.series_by_ref(series_ref).ok_or_else(unknown)?;
        series.touch(self.now_ms());
        let mut stats = StatsDelta::default();
        let admission = {
            let mut data = series.data.lock();
            if series.is_deleted() {
                return Err(unknown());
            }
            let (chunk_bytes, heap_bytes) = (data.chunk_bytes(), data.heap_bytes());
            let admission =
                data.append_histogram(t, h, ooo_window_ms(limits), self.chunk_limits, &mut stats);
            stats.chunk_bytes = data.chunk_bytes() as i64 - chunk_bytes as i64;
            stats.heap_bytes = data.heap_bytes() as i64 - heap_bytes as i64;
            admission
        };
        self.apply_stats(&stats);
        Ok(admission?)
    }

    /// Recreates a series logged in the WAL under its logged ref, without
    /// series limits (it existed before the restart). Returns the ref to
    /// apply the series' logged samples to: `series_ref`, or the ref of a
    /// series already in the head with the same labels (a replay may meet a
    /// series logged twice under two refs). Idempotent. Later series get
    /// refs above every replayed one.
    pub fn create_series_with_ref(
        &self,
        series_ref: SeriesRef,
        labels: &Labels,
    ) -> Result<SeriesRef, HeadError> {
        let mut keys = KeyBuilder::new(&self.tenant);
        let key = keys.key(labels.as_slice());
        let now_ms = self.now_ms();
        let mut index = self.index.write();
        if let Some(existing) = self.series_by_ref(series_ref) {
            if existing.labels.bytes() == key.packed {
                return Ok(series_ref);
            }
            return Err(HeadError::SeriesRefConflict {
                tenant: self.tenant.clone(),
                series_ref,
                existing: existing.labels(),
                labels: labels.clone(),
            });
        }
        if let Some(series) = self.lookup(key) {
            series.touch(now_ms);
            return Ok(series.series_ref);
        }
        self.insert_locked(&mut index, series_ref, key, now_ms);
        self.next_ref
            .fetch_max(series_ref.0.saturating_add(1), Ordering::Relaxed);
        Ok(series_ref)
    }

    /// The labels of series `series_ref`, if in the head.
    pub fn series_labels(&self, series_ref: SeriesRef) -> Option<Labels> {
        self.series_by_ref(series_ref).map(|s| s.labels())
    }

    /// Every series in the head with its labels, by ref (for a WAL
    /// checkpoint).
    pub fn all_series(&self) -> Vec<(SeriesRef, Labels)> {
        let mut out: Vec<(SeriesRef, Labels)> = Vec::with_capacity(self.active_series() as usize);
        for stripe in self.stripes.iter() {
            let maps = stripe.maps.read();
            out.extend(maps.by_ref.values().map(|s| (s.series_ref, s.labels())));
        }
        out.sort_unstable_by_key(|(r, _)| *r);
        out
    }
}
