//! The ingester's write path: log, then apply.
//!
//! A push resolves its series (creating new ones, within the series limits),
//! queues one WAL batch — the new series' labels, then every sample by series
//! ref — and, once the WAL has it (fsynced under the default policy),
//! applies the samples to the head. Applies happen in WAL order (a ticket
//! taken when the batch is queued), so the head after a replay is the head
//! that answered the pushes: the same samples accepted, the same refused.
//!
//! WAL series refs are global across tenants: `tenant_id << 40 | local ref`,
//! where the tenant id is dense and learnt back from the series records on
//! replay.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::exemplars::{self, Added, Exemplar, ExemplarError};
use super::head::{Head, Rejection, SeriesRef};
use super::wal::records::{
    ExemplarRecord, FloatHistogramRecord, HistogramRecord, SampleRecord, SeriesRecord,
    encode_exemplars, encode_float_histograms, encode_histograms, encode_samples, encode_series,
};
use super::wal::{Wal, WalError};
use crate::limits::{DiscardReason, Limits};
use crate::model::histogram::NativeHistogram;
use crate::model::{Labels, Sample, describe_pairs};
use crate::proto::histogram::from_proto;
use crate::proto::ingester::{RejectReason, Rejected};
use crate::proto::prometheus::TimeSeries;

/// Bits of a global WAL ref that hold the head's local ref.
pub const LOCAL_REF_BITS: u32 = 40;
const LOCAL_REF_MASK: u64 = (1 << LOCAL_REF_BITS) - 1;

pub fn global_ref(tenant_id: u32, local: SeriesRef) -> u64 {
    (u64::from(tenant_id) << LOCAL_REF_BITS) | (local.0 & LOCAL_REF_MASK)
}

pub fn split_ref(global: u64) -> (u32, SeriesRef) {
    (
        (global >> LOCAL_REF_BITS) as u32,
        SeriesRef(global & LOCAL_REF_MASK),
    )
}

/// Dense ids for tenants, as used in WAL refs.
#[derive(Default)]
pub struct TenantIds {
    by_name: HashMap<String, u32>,
    next: u32,
}

impl TenantIds {
    pub fn id(&mut self, tenant: &str) -> u32 {
        if let Some(id) = self.by_name.get(tenant) {
            return *id;
        }
        let id = self.next;
        self.next += 1;
        self.by_name.insert(tenant.to_string(), id);
        id
    }

    /// Every tenant and its id.
    pub fn all(&self) -> Vec<(String, u32)> {
        self.by_name
            .iter()
            .map(|(name, id)| (name.clone(), *id))
            .collect()
    }

    /// Records an id seen in the WAL.
    pub fn learn(&mut self, tenant: &str, id: u32) {
        self.by_name.insert(tenant.to_string(), id);
        self.next = self.next.max(id + 1);
    }
}

/// The WAL and the order of applies.
pub struct Sequencer {
    inner: Mutex<SequencerInner>,
    applied: watch::Sender<u64>,
}

struct SequencerInner {
    wal: Option<Arc<Wal>>,
    next_ticket: u64,
    tenants: TenantIds,
}

#[derive(Debug, thiserror::Error)]
pub enum PushFailure {
    #[error("the ingester is not accepting writes: {0}")]
    NotReady(&'static str),
    #[error("writing the WAL failed, nothing was applied: {0}")]
    Wal(#[from] WalError),
}

impl Sequencer {
    pub fn new(tenants: TenantIds) -> Sequencer {
        let (applied, _) = watch::channel(0);
        Sequencer {
            inner: Mutex::new(SequencerInner {
                wal: None,
                next_ticket: 1,
                tenants,
            }),
            applied,
        }
    }

    /// The open WAL, if any.
    pub fn wal(&self) -> Option<Arc<Wal>> {
        self.inner.lock().wal.clone()
    }

    pub fn set_wal(&self, wal: Option<Arc<Wal>>) -> Option<Arc<Wal>> {
        std::mem::replace(&mut self.inner.lock().wal, wal)
    }

    /// Every tenant with its id in WAL refs.
    pub fn tenant_ids(&self) -> Vec<(String, u32)> {
        self.inner.lock().tenants.all()
    }

    /// Waits until every push logged so far has been applied (or failed),
    /// so the heads hold everything the WAL does up to now.
    pub async fn settle(&self) {
        let last = self.inner.lock().next_ticket - 1;
        let mut applied = self.applied.subscribe();
        let _ = applied.wait_for(|a| *a >= last).await;
    }
}

/// A push after series resolution, ready to log.
struct Prepared {
    /// Per request series: its ref, or the rejection of the whole series
    /// (`None`: no samples, nothing to do).
    refs: Vec<Option<Result<SeriesRef, Rejection>>>,
    /// Per request series: its native histograms, converted, and the
    /// timestamps and reasons of those that are not valid (never logged).
    histograms: Vec<SeriesHistograms>,
    /// Per request series: its exemplars to store, in storage order, and
    /// how many were left out (invalid, or exemplars are off).
    exemplars: Vec<SeriesExemplars>,
    records: Vec<Vec<u8>>,
}

#[derive(Default)]
struct SeriesExemplars {
    valid: Vec<Exemplar>,
    /// (timestamp, why) of those refused before logging.
    invalid: Vec<(i64, ExemplarError)>,
}

/// A series' exemplars as the storage takes them: labels checked, sorted by
/// timestamp, value and labels (Prometheus's handler sorts them too).
fn convert_exemplars(series: &TimeSeries, limits: &Limits) -> SeriesExemplars {
    let mut out = SeriesExemplars::default();
    for e in &series.exemplars {
        if limits.max_global_exemplars_per_user == 0 {
            out.invalid.push((e.timestamp, ExemplarError::Disabled));
            continue;
        }
        let pairs = e.labels.iter().map(|l| (l.name.as_str(), l.value.as_str()));
        match exemplars::validate_labels(pairs) {
            Ok(()) => out.valid.push(Exemplar {
                labels: Labels::from_pairs(
                    e.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
                ),
                value: e.value,
                t: e.timestamp,
            }),
            Err(err) => out.invalid.push((e.timestamp, err)),
        }
    }
    out.valid.sort_by(|a, b| {
        a.t.cmp(&b.t)
            .then(a.value.total_cmp(&b.value))
            .then_with(|| a.labels.cmp(&b.labels))
    });
    out
}

#[derive(Default)]
struct SeriesHistograms {
    valid: Vec<(i64, NativeHistogram)>,
    invalid: Vec<(i64, String)>,
}

fn convert_histograms(series: &TimeSeries) -> SeriesHistograms {
    let mut out = SeriesHistograms::default();
    for proto in &series.histograms {
        let converted = from_proto(proto).map_err(|e| e.to_string()).and_then(|h| {
            h.validate()
                .map(|()| h)
                .map_err(|e| format!("invalid native histogram: {e}"))
        });
        match converted {
            Ok(h) => out.valid.push((proto.timestamp, h)),
            Err(message) => out.invalid.push((proto.timestamp, message)),
        }
    }
    out
}

fn prepare(head: &Head, tenant_id: u32, timeseries: &[TimeSeries], limits: &Limits) -> Prepared {
    let mut new_series = Vec::new();
    let mut samples = Vec::new();
    let mut int_histograms = Vec::new();
    let mut float_histograms = Vec::new();
    let mut exemplar_records = Vec::new();
    let mut refs = Vec::with_capacity(timeseries.len());
    let mut histograms = Vec::with_capacity(timeseries.len());
    let mut exemplars = Vec::with_capacity(timeseries.len());
    for series in timeseries {
        let converted = convert_histograms(series);
        if series.samples.is_empty() && series.histograms.is_empty() {
            refs.push(None);
            histograms.push(converted);
            exemplars.push(SeriesExemplars::default());
            continue;
        }
        let series_exemplars = convert_exemplars(series, limits);
        let labels = Labels::from_pairs(
            series
                .labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
        );
        match head.get_or_create_series(&labels, limits) {
            Ok((local, created)) => {
                let global = global_ref(tenant_id, local);
                if created {
                    new_series.push(SeriesRecord {
                        series_ref: global,
                        tenant: head.tenant().to_string(),
                        labels: labels
                            .iter()
                            .map(|l| (l.name.clone(), l.value.clone()))
                            .collect(),
                    });
                }
                samples.extend(series.samples.iter().map(|s| SampleRecord {
                    series_ref: global,
                    t: s.timestamp,
                    v: s.value,
                }));
                for (t, h) in &converted.valid {
                    match h {
                        NativeHistogram::Int(h) => int_histograms.push(HistogramRecord {
                            series_ref: global,
                            t: *t,
                            h: h.clone(),
                        }),
                        NativeHistogram::Float(h) => float_histograms.push(FloatHistogramRecord {
                            series_ref: global,
                            t: *t,
                            h: h.clone(),
                        }),
                    }
                }
                exemplar_records.extend(series_exemplars.valid.iter().map(|e| {
                    ExemplarRecord {
                        series_ref: global,
                        t: e.t,
                        v: e.value,
                        labels: e
                            .labels
                            .iter()
                            .map(|l| (l.name.clone(), l.value.clone()))
                            .collect(),
                    }
                }));
                refs.push(Some(Ok(local)));
            }
            Err(limit) => refs.push(Some(Err(Rejection::SeriesLimit(limit)))),
        }
        histograms.push(converted);
        exemplars.push(series_exemplars);
    }
    let mut records = Vec::new();
    // Keep each record well under the WAL's page-sized fragments limit.
    for chunk in new_series.chunks(512) {
        let mut buf = Vec::new();
        encode_series(chunk, &mut buf);
        records.push(buf);
    }
    for chunk in samples.chunks(4096) {
        let mut buf = Vec::new();
        encode_samples(chunk, &mut buf);
        records.push(buf);
    }
    // Histograms run to tens or hundreds of bytes each.
    for chunk in int_histograms.chunks(256) {
        let mut buf = Vec::new();
        encode_histograms(chunk, &mut buf);
        records.push(buf);
    }
    for chunk in float_histograms.chunks(256) {
        let mut buf = Vec::new();
        encode_float_histograms(chunk, &mut buf);
        records.push(buf);
    }
    for chunk in exemplar_records.chunks(512) {
        let mut buf = Vec::new();
        encode_exemplars(chunk, &mut buf);
        records.push(buf);
    }
    Prepared {
        refs,
        histograms,
        exemplars,
        records,
    }
}

fn reject_reason(reason: DiscardReason) -> RejectReason {
    match reason {
        DiscardReason::OutOfOrder => RejectReason::OutOfOrder,
        DiscardReason::OutOfBounds => RejectReason::OutOfBounds,
        DiscardReason::DuplicateSample => RejectReason::DuplicateSample,
        DiscardReason::PerTenantSeriesLimit => RejectReason::PerTenantSeriesLimit,
        DiscardReason::PerMetricSeriesLimit => RejectReason::PerMetricSeriesLimit,
        _ => RejectReason::Unspecified,
    }
}

/// What a push did: samples appended and per-series refusals.
#[derive(Debug, Default)]
pub struct Applied {
    /// Float and histogram samples appended.
    pub samples_appended: u64,
    /// The histogram samples among them.
    pub histograms_appended: u64,
    /// Histogram samples refused (counted in `discarded` too).
    pub histograms_rejected: u64,
    /// Exemplars stored (or equal to their series' newest: a retry).
    pub exemplars_appended: u64,
    /// Exemplars refused: out of order, invalid, of a refused series, or
    /// exemplar storage off for the tenant.
    pub exemplars_rejected: u64,
    pub rejected: Vec<Rejected>,
    /// (reason, samples) for the discard counters.
    pub discarded: Vec<(DiscardReason, u64)>,
}

/// Logs and applies one push. Runs to completion even if the caller goes
/// away, so that applies stay in WAL order.
pub async fn push(
    sequencer: Arc<Sequencer>,
    head: Arc<Head>,
    timeseries: Vec<TimeSeries>,
    limits: Arc<Limits>,
) -> Result<Applied, PushFailure> {
    let (ticket, logged) = {
        let mut inner = sequencer.inner.lock();
        let Some(wal) = inner.wal.clone() else {
            return Err(PushFailure::NotReady("the WAL is not open"));
        };
        let tenant_id = inner.tenants.id(head.tenant());
        let prepared = prepare(&head, tenant_id, &timeseries, &limits);
        let logged = wal.append(prepared.records);
        let ticket = inner.next_ticket;
        inner.next_ticket += 1;
        (
            ticket,
            (
                logged,
                prepared.refs,
                prepared.histograms,
                prepared.exemplars,
            ),
        )
    };
    let (logged, refs, histograms, exemplars) = logged;
    let task = tokio::spawn(async move {
        let result = logged.await;
        let mut turn = sequencer.applied.subscribe();
        // Every earlier ticket advances the counter, even when it failed.
        let _ = turn.wait_for(|applied| *applied + 1 >= ticket).await;
        let outcome = match result {
            Ok(()) => Ok(apply(
                &head,
                &timeseries,
                &refs,
                &histograms,
                &exemplars,
                &limits,
            )),
            Err(err) => Err(PushFailure::Wal(err)),
        };
        sequencer
            .applied
            .send_modify(|applied| *applied = (*applied).max(ticket));
        outcome
    });
    match task.await {
        Ok(outcome) => outcome,
        Err(_) => Err(PushFailure::NotReady("the push task was cancelled")),
    }
}

fn apply(
    head: &Head,
    timeseries: &[TimeSeries],
    refs: &[Option<Result<SeriesRef, Rejection>>],
    histograms: &[SeriesHistograms],
    exemplars: &[SeriesExemplars],
    limits: &Limits,
) -> Applied {
    let mut applied = Applied::default();
    let mut discarded: HashMap<DiscardReason, u64> = HashMap::new();
    for (index, (((series, series_ref), hists), series_exemplars)) in timeseries
        .iter()
        .zip(refs)
        .zip(histograms)
        .zip(exemplars)
        .enumerate()
    {
        let Some(series_ref) = series_ref else {
            continue;
        };
        let mut histograms_refused = hists.invalid.len() as u64;
        // Per reason: (count, first timestamp, message).
        let mut refused: Vec<(DiscardReason, u32, i64, String)> = Vec::new();
        let mut refuse = |reason: DiscardReason, t: i64, message: String| match refused
            .iter_mut()
            .find(|r| r.0 == reason)
        {
            Some(entry) => entry.1 += 1,
            None => refused.push((reason, 1, t, message)),
        };
        for (t, message) in &hists.invalid {
            refuse(DiscardReason::InvalidSample, *t, message.clone());
        }
        match series_ref {
            Err(rejection) => {
                for s in &series.samples {
                    refuse(rejection.reason(), s.timestamp, rejection.to_string());
                }
                for (t, _) in &hists.valid {
                    refuse(rejection.reason(), *t, rejection.to_string());
                    histograms_refused += 1;
                }
            }
            Ok(local) => {
                for s in &series.samples {
                    let sample = Sample {
                        t: s.timestamp,
                        v: s.value,
                    };
                    match head.append_sample(*local, sample.t, sample.v, limits) {
                        Ok(_) => applied.samples_appended += 1,
                        Err(super::head::HeadError::Append(err)) => {
                            refuse(err.reason(), sample.t, err.to_string())
                        }
                        Err(other) => {
                            refuse(DiscardReason::InvalidSample, sample.t, other.to_string())
                        }
                    }
                }
                // After the floats, as Prometheus's remote-write handler
                // appends them: a histogram at a float's timestamp is the
                // one refused.
                for (t, h) in &hists.valid {
                    match head.append_histogram(*local, *t, h, limits) {
                        Ok(_) => {
                            applied.samples_appended += 1;
                            applied.histograms_appended += 1;
                        }
                        Err(super::head::HeadError::Append(err)) => {
                            histograms_refused += 1;
                            refuse(err.reason(), *t, err.to_string())
                        }
                        Err(other) => {
                            histograms_refused += 1;
                            refuse(DiscardReason::InvalidSample, *t, other.to_string())
                        }
                    }
                }
            }
        }
        applied.histograms_rejected += histograms_refused;
        // Exemplars after the samples, as Prometheus's handler appends them;
        // their refusals are not samples' (no discard count).
        let mut exemplar_refusals: Vec<(RejectReason, u32, i64, String)> = Vec::new();
        let mut refuse_exemplar =
            |reason: RejectReason, t: i64, message: String| match exemplar_refusals
                .iter_mut()
                .find(|r| r.0 == reason)
            {
                Some(entry) => entry.1 += 1,
                None => exemplar_refusals.push((reason, 1, t, message)),
            };
        for (t, err) in &series_exemplars.invalid {
            applied.exemplars_rejected += 1;
            if !matches!(err, ExemplarError::Disabled) {
                refuse_exemplar(RejectReason::ExemplarInvalid, *t, err.to_string());
            }
        }
        match series_ref {
            Ok(local) if !series_exemplars.valid.is_empty() => {
                let series_labels = head.series_labels(*local).unwrap_or_else(|| {
                    Labels::from_pairs(
                        series
                            .labels
                            .iter()
                            .map(|l| (l.name.as_str(), l.value.as_str())),
                    )
                });
                let ooo_window = super::head::ooo_window_ms(limits);
                let mut storage = head.exemplars.lock();
                for e in &series_exemplars.valid {
                    let t = e.t;
                    match storage.add(
                        &series_labels,
                        e.clone(),
                        limits.max_global_exemplars_per_user,
                        ooo_window,
                    ) {
                        Ok(Added::Stored | Added::Duplicate) => applied.exemplars_appended += 1,
                        Err(ExemplarError::Disabled) => applied.exemplars_rejected += 1,
                        Err(err @ ExemplarError::OutOfOrder { .. }) => {
                            applied.exemplars_rejected += 1;
                            refuse_exemplar(RejectReason::ExemplarOutOfOrder, t, err.to_string());
                        }
                        Err(err) => {
                            applied.exemplars_rejected += 1;
                            refuse_exemplar(RejectReason::ExemplarInvalid, t, err.to_string());
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(_) => applied.exemplars_rejected += series_exemplars.valid.len() as u64,
        }
        for (reason, count, t, message) in exemplar_refusals {
            applied.rejected.push(Rejected {
                series_index: index as u32,
                reason: reason as i32,
                samples: count,
                timestamp_ms: t,
                message: format!(
                    "series {}: {count} exemplar(s) refused, the first at timestamp {t} ms: {message}",
                    describe_pairs(series.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
                ),
            });
        }
        for (reason, count, t, message) in refused {
            *discarded.entry(reason).or_default() += u64::from(count);
            applied.rejected.push(Rejected {
                series_index: index as u32,
                reason: reject_reason(reason) as i32,
                samples: count,
                timestamp_ms: t,
                message: format!(
                    "series {}: {count} sample(s) refused, the first at timestamp {t} ms: {message}",
                    describe_pairs(series.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
                ),
            });
        }
    }
    applied.discarded = discarded.into_iter().collect();
    applied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_round_trip() {
        let g = global_ref(7, SeriesRef(123));
        assert_eq!(split_ref(g), (7, SeriesRef(123)));
        assert_ne!(global_ref(1, SeriesRef(5)), global_ref(2, SeriesRef(5)));
    }

    #[test]
    fn tenant_ids_are_dense_and_learnt() {
        let mut ids = TenantIds::default();
        assert_eq!(ids.id("a"), 0);
        assert_eq!(ids.id("b"), 1);
        assert_eq!(ids.id("a"), 0);
        let mut replayed = TenantIds::default();
        replayed.learn("x", 4);
        assert_eq!(replayed.id("y"), 5);
        assert_eq!(replayed.id("x"), 4);
    }
}
