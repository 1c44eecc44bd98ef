//! Rebuilding the heads from the WAL on start: streamed record by record
//! (memory bounded by one record and the series map), with progress for
//! `/ready` and the logs. A torn last record (a crash mid-write) is cut off,
//! logged and counted. Corruption before the end is logged loudly with what
//! is cut, counted, and repaired (the log is truncated at the corruption):
//! the replicas on the other ingesters still hold those samples.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::exemplars::Exemplar;
use super::head::{Head, Heads, SeriesRef};
use super::push::{TenantIds, split_ref};
use super::wal::records::{
    ExemplarRecord, FloatHistogramRecord, HistogramRecord, RecordType, SampleRecord, SeriesRecord,
    decode_exemplars_into, decode_float_histograms_into, decode_histograms_into,
    decode_samples_into, decode_series_into, record_type,
};
use super::wal::{Reader, WalError, repair};
use crate::limits::Overrides;
use crate::model::Labels;
use crate::model::histogram::NativeHistogram;

/// What a replay did.
#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    pub records: u64,
    pub series: u64,
    pub samples: u64,
    /// Samples the head refused on replay (as it did when they arrived).
    pub samples_refused: u64,
    pub torn_tails_cut: u64,
    pub corruptions_repaired: u64,
    /// Samples whose series record was missing (only after a repair).
    pub orphan_samples: u64,
    /// Exemplars stored again, and those refused again (out of order,
    /// storage off, or their series missing).
    pub exemplars: u64,
    pub exemplars_refused: u64,
}

/// Progress counters, read by `/ready` while the replay runs.
#[derive(Debug, Default)]
pub struct ReplayProgress {
    pub records: AtomicU64,
}

/// Applies one logged histogram sample, counting it in `report`.
fn apply_histogram(
    refs: &HashMap<u64, (Arc<Head>, SeriesRef)>,
    overrides: &Overrides,
    series_ref: u64,
    t: i64,
    h: &NativeHistogram,
    report: &mut ReplayReport,
) {
    let Some((head, local)) = refs.get(&series_ref) else {
        report.orphan_samples += 1;
        return;
    };
    let limits = overrides.get(head.tenant());
    match head.append_histogram(*local, t, h, &limits) {
        Ok(_) => report.samples += 1,
        Err(_) => report.samples_refused += 1,
    }
}

/// Replays every record of the WAL in `dir` into `heads`; returns the
/// tenant ids learnt.
pub fn replay(
    dir: &Path,
    heads: &Heads,
    overrides: &Overrides,
    progress: &ReplayProgress,
) -> Result<(TenantIds, ReplayReport), WalError> {
    let mut report = ReplayReport::default();
    let mut tenants = TenantIds::default();
    // Global WAL ref -> the head and local ref it was replayed to.
    let mut refs: HashMap<u64, (Arc<Head>, SeriesRef)> = HashMap::new();
    if !dir.exists() {
        return Ok((tenants, report));
    }
    // At most a few passes: each repair cuts the log shorter.
    for _pass in 0..8 {
        let mut reader = Reader::open(dir)?;
        let mut series_buf: Vec<SeriesRecord> = Vec::new();
        let mut samples_buf: Vec<SampleRecord> = Vec::new();
        let mut histograms_buf: Vec<HistogramRecord> = Vec::new();
        let mut float_histograms_buf: Vec<FloatHistogramRecord> = Vec::new();
        let mut exemplars_buf: Vec<ExemplarRecord> = Vec::new();
        let mut skip = report.records;
        let mut failed: Option<WalError> = None;
        loop {
            let record = match reader.next_record() {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            };
            // After a repair the reader starts over: skip what was applied.
            if skip > 0 {
                skip -= 1;
                continue;
            }
            report.records += 1;
            progress.records.store(report.records, Ordering::Relaxed);
            match record_type(record) {
                Ok(RecordType::Series) => {
                    series_buf.clear();
                    if let Err(err) = decode_series_into(record, &mut series_buf) {
                        tracing::error!(error = %err, "skipping an undecodable WAL series record");
                        continue;
                    }
                    for series in series_buf.drain(..) {
                        let (tenant_id, local) = split_ref(series.series_ref);
                        tenants.learn(&series.tenant, tenant_id);
                        let head = heads.get_or_create(&series.tenant);
                        let labels = Labels::from_pairs(series.labels);
                        match head.create_series_with_ref(local, &labels) {
                            Ok(actual) => {
                                report.series += 1;
                                refs.insert(series.series_ref, (head, actual));
                            }
                            Err(err) => {
                                tracing::error!(error = %err, "WAL series record conflicts with the head")
                            }
                        }
                    }
                }
                Ok(RecordType::Samples) => {
                    samples_buf.clear();
                    if let Err(err) = decode_samples_into(record, &mut samples_buf) {
                        tracing::error!(error = %err, "skipping an undecodable WAL samples record");
                        continue;
                    }
                    for sample in &samples_buf {
                        let Some((head, local)) = refs.get(&sample.series_ref) else {
                            report.orphan_samples += 1;
                            continue;
                        };
                        let limits = overrides.get(head.tenant());
                        match head.append_sample(*local, sample.t, sample.v, &limits) {
                            Ok(_) => report.samples += 1,
                            Err(_) => report.samples_refused += 1,
                        }
                    }
                }
                Ok(RecordType::Histograms) => {
                    histograms_buf.clear();
                    if let Err(err) = decode_histograms_into(record, &mut histograms_buf) {
                        tracing::error!(error = %err, "skipping an undecodable WAL histograms record");
                        continue;
                    }
                    for r in histograms_buf.drain(..) {
                        let h = NativeHistogram::Int(r.h);
                        apply_histogram(&refs, overrides, r.series_ref, r.t, &h, &mut report);
                    }
                }
                Ok(RecordType::FloatHistograms) => {
                    float_histograms_buf.clear();
                    if let Err(err) =
                        decode_float_histograms_into(record, &mut float_histograms_buf)
                    {
                        tracing::error!(error = %err, "skipping an undecodable WAL float histograms record");
                        continue;
                    }
                    for r in float_histograms_buf.drain(..) {
                        let h = NativeHistogram::Float(r.h);
                        apply_histogram(&refs, overrides, r.series_ref, r.t, &h, &mut report);
                    }
                }
                Ok(RecordType::Exemplars) => {
                    exemplars_buf.clear();
                    if let Err(err) = decode_exemplars_into(record, &mut exemplars_buf) {
                        tracing::error!(error = %err, "skipping an undecodable WAL exemplars record");
                        continue;
                    }
                    for r in exemplars_buf.drain(..) {
                        let Some((head, local)) = refs.get(&r.series_ref) else {
                            report.exemplars_refused += 1;
                            continue;
                        };
                        let Some(series) = head.series_labels(*local) else {
                            report.exemplars_refused += 1;
                            continue;
                        };
                        let limits = overrides.get(head.tenant());
                        let limit = limits.max_global_exemplars_per_user;
                        let window = super::head::ooo_window_ms(&limits);
                        let exemplar = Exemplar {
                            labels: Labels::from_pairs(r.labels),
                            value: r.v,
                            t: r.t,
                        };
                        match head.exemplars.lock().add(&series, exemplar, limit, window) {
                            Ok(_) => report.exemplars += 1,
                            Err(_) => report.exemplars_refused += 1,
                        }
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "skipping a WAL record of unknown type");
                }
            }
        }
        if let Some(torn) = reader.torn_tail() {
            tracing::warn!(
                segment = torn.segment,
                offset = torn.offset,
                "the WAL ends in a torn record (a crash mid-write); cutting it off"
            );
            report.torn_tails_cut += 1;
            repair(dir, torn.segment)?;
        }
        match failed {
            None => return Ok((tenants, report)),
            Some(WalError::Corruption {
                segment, offset, ..
            }) => {
                let repaired = repair(dir, segment)?;
                report.corruptions_repaired += 1;
                tracing::error!(
                    segment,
                    offset,
                    bytes_cut = repaired.bytes_cut,
                    segments_deleted = repaired.deleted_segments.len(),
                    "the WAL is corrupt before its end; truncated it at the corruption (the other replicas hold what was cut)"
                );
            }
            Some(other) => return Err(other),
        }
    }
    Ok((tenants, report))
}
