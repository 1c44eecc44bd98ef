//! What a WAL checkpoint keeps: only what the long-term store does not
//! have yet.
//!
//! Before a checkpoint, the ingester waits until the heads hold everything
//! logged, then takes each series' flushed watermark (every sample at or
//! before it is in the store, see `head/flush.rs`). The checkpoint keeps a
//! sample only above its series' watermark, and a series record only while
//! the series is in a head, and an exemplar as a sample. A series no longer in its head was removed
//! because everything of it was flushed; a ref above the highest one seen
//! belongs to a series created since, and is kept. A record that does not
//! decode is kept whole.

use std::collections::HashMap;

use super::head::Heads;
use super::push::{global_ref, split_ref};
use super::wal::records::{
    ExemplarRecord, FloatHistogramRecord, HistogramRecord, RecordType, SampleRecord, SeriesRecord,
    decode_exemplars_into, decode_float_histograms_into, decode_histograms_into,
    decode_samples_into, decode_series_into, encode_exemplars, encode_float_histograms,
    encode_histograms, encode_samples, encode_series, record_type,
};

pub struct Watermarks {
    by_ref: HashMap<u64, i64>,
    /// Per tenant id, the highest local ref in its head.
    max_local: HashMap<u32, u64>,
}

impl Watermarks {
    pub fn snapshot(heads: &Heads, tenants: &[(String, u32)]) -> Watermarks {
        let mut by_ref = HashMap::new();
        let mut max_local = HashMap::new();
        for (tenant, id) in tenants {
            let Some(head) = heads.get(tenant) else {
                continue;
            };
            max_local.insert(*id, head.max_series_ref());
            for (local, w) in head.flushed_watermarks() {
                by_ref.insert(global_ref(*id, local), w);
            }
        }
        Watermarks { by_ref, max_local }
    }

    /// Whether the series of `global` may still have unflushed samples.
    fn series_live(&self, global: u64) -> bool {
        if self.by_ref.contains_key(&global) {
            return true;
        }
        let (tenant, local) = split_ref(global);
        self.max_local.get(&tenant).is_none_or(|&max| local.0 > max)
    }

    fn keep_sample(&self, global: u64, t: i64) -> bool {
        match self.by_ref.get(&global) {
            Some(&w) => t > w,
            None => self.series_live(global),
        }
    }

    /// The part of a WAL record to keep in the checkpoint.
    pub fn keep(&self, rec: &[u8]) -> Option<Vec<u8>> {
        match record_type(rec) {
            Ok(RecordType::Series) => {
                let mut series: Vec<SeriesRecord> = Vec::new();
                if decode_series_into(rec, &mut series).is_err() {
                    return Some(rec.to_vec());
                }
                series.retain(|s| self.series_live(s.series_ref));
                (!series.is_empty()).then(|| {
                    let mut out = Vec::new();
                    encode_series(&series, &mut out);
                    out
                })
            }
            Ok(RecordType::Samples) => {
                let mut samples: Vec<SampleRecord> = Vec::new();
                if decode_samples_into(rec, &mut samples).is_err() {
                    return Some(rec.to_vec());
                }
                self.filter(rec, samples, |s| (s.series_ref, s.t), encode_samples)
            }
            Ok(RecordType::Histograms) => {
                let mut hs: Vec<HistogramRecord> = Vec::new();
                if decode_histograms_into(rec, &mut hs).is_err() {
                    return Some(rec.to_vec());
                }
                self.filter(rec, hs, |h| (h.series_ref, h.t), encode_histograms)
            }
            Ok(RecordType::FloatHistograms) => {
                let mut hs: Vec<FloatHistogramRecord> = Vec::new();
                if decode_float_histograms_into(rec, &mut hs).is_err() {
                    return Some(rec.to_vec());
                }
                self.filter(rec, hs, |h| (h.series_ref, h.t), encode_float_histograms)
            }
            // Exemplars live in memory only: kept while their series has
            // unflushed samples (as Prometheus keeps those newer than the
            // head's start).
            Ok(RecordType::Exemplars) => {
                let mut es: Vec<ExemplarRecord> = Vec::new();
                if decode_exemplars_into(rec, &mut es).is_err() {
                    return Some(rec.to_vec());
                }
                self.filter(rec, es, |e| (e.series_ref, e.t), encode_exemplars)
            }
            Err(_) => Some(rec.to_vec()),
        }
    }

    /// Keeps the entries above their series' watermark, re-encoded (the
    /// record as it was when all stay; nothing when none does).
    fn filter<T>(
        &self,
        rec: &[u8],
        mut entries: Vec<T>,
        key: impl Fn(&T) -> (u64, i64),
        encode: impl Fn(&[T], &mut Vec<u8>),
    ) -> Option<Vec<u8>> {
        let before = entries.len();
        entries.retain(|e| {
            let (series_ref, t) = key(e);
            self.keep_sample(series_ref, t)
        });
        if entries.len() == before {
            return Some(rec.to_vec());
        }
        (!entries.is_empty()).then(|| {
            let mut out = Vec::new();
            encode(&entries, &mut out);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ingester::head::{FlushPolicy, HeadConfig};
    use crate::ingester::wal::records::{Record, decode};
    use crate::limits::Limits;
    use crate::model::{Labels, Sample};

    fn series_record(global: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_series(
            &[SeriesRecord {
                series_ref: global,
                tenant: "t".to_string(),
                labels: vec![("__name__".to_string(), "x".to_string())],
            }],
            &mut out,
        );
        out
    }

    fn samples_record(samples: &[(u64, i64)]) -> Vec<u8> {
        let recs: Vec<SampleRecord> = samples
            .iter()
            .map(|&(series_ref, t)| SampleRecord {
                series_ref,
                t,
                v: 1.0,
            })
            .collect();
        let mut out = Vec::new();
        encode_samples(&recs, &mut out);
        out
    }

    #[test]
    fn checkpoints_keep_only_what_the_store_lacks() {
        let heads = Heads::new(HeadConfig::default());
        let head = heads.get_or_create("t");
        let limits = Limits {
            max_series_per_tenant: 0,
            max_series_per_metric: 0,
            ..Limits::default()
        };
        let flushed = Labels::from_pairs([("__name__", "flushed")]);
        let open = Labels::from_pairs([("__name__", "open")]);
        let gone = Labels::from_pairs([("__name__", "gone")]);
        let s = |ts: &[i64]| -> Vec<Sample> { ts.iter().map(|&t| Sample { t, v: 1.0 }).collect() };
        head.append_batch(
            &[(&flushed, &s(&[1000, 2000])), (&gone, &s(&[1000]))],
            &limits,
        );
        let chunks = head.flush_candidates(&FlushPolicy {
            now_ms: 3000,
            max_idle: Duration::from_secs(60),
            max_age: Duration::from_secs(60),
            force: true,
        });
        head.mark_flushed(&chunks);
        head.drop_flushed(Duration::ZERO);
        let released = head.gc_idle_at(
            std::time::Instant::now() + Duration::from_secs(5),
            Duration::from_secs(1),
            |i| i.labels == gone && !i.unflushed,
        );
        assert_eq!(released, 1);
        head.append_batch(&[(&flushed, &s(&[3000])), (&open, &s(&[1000]))], &limits);

        let w = Watermarks::snapshot(&heads, &[("t".to_string(), 7)]);
        let g = |local: u64| global_ref(7, crate::ingester::head::SeriesRef(local));
        // Refs: flushed 1, gone 2, open 3; 4 does not exist yet.
        assert_eq!(w.keep(&series_record(g(1))), Some(series_record(g(1))));
        assert_eq!(
            w.keep(&series_record(g(2))),
            None,
            "its series left the head"
        );
        assert_eq!(w.keep(&series_record(g(4))), Some(series_record(g(4))));
        let kept = w
            .keep(&samples_record(&[
                (g(1), 1000),
                (g(1), 2000),
                (g(1), 3000),
                (g(2), 1000),
                (g(3), 1000),
            ]))
            .expect("some samples stay");
        let Ok(Record::Samples(kept)) = decode(&kept) else {
            panic!("a samples record");
        };
        let kept: Vec<(u64, i64)> = kept.iter().map(|s| (s.series_ref, s.t)).collect();
        assert_eq!(kept, vec![(g(1), 3000), (g(3), 1000)]);
        assert_eq!(w.keep(&samples_record(&[(g(1), 1500)])), None);
        // Another tenant's records are kept whole.
        let other = global_ref(9, crate::ingester::head::SeriesRef(1));
        assert!(w.keep(&samples_record(&[(other, 1)])).is_some());

        // Exemplars stay as samples do: above their series' watermark.
        let exemplar = |series_ref: u64, t: i64| ExemplarRecord {
            series_ref,
            t,
            v: 1.0,
            labels: vec![("trace_id".to_string(), format!("{t}"))],
        };
        let mut rec = Vec::new();
        encode_exemplars(
            &[
                exemplar(g(1), 2000),
                exemplar(g(1), 3000),
                exemplar(g(2), 1000),
                exemplar(g(3), 1000),
            ],
            &mut rec,
        );
        let kept = w.keep(&rec).expect("some exemplars stay");
        let Ok(Record::Exemplars(kept)) = decode(&kept) else {
            panic!("an exemplars record");
        };
        assert_eq!(kept, vec![exemplar(g(1), 3000), exemplar(g(3), 1000)]);
    }
}
