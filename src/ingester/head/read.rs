//! Reading the head: chunks by matchers and time range, and the metadata
//! queries (label names, label values, series).

use std::collections::HashSet;
use std::sync::Arc;

use super::merge::SeriesChunks;
use super::series::MemSeries;
use super::{Head, SeriesRef};
use crate::model::{Labels, Matcher};

impl Head {
    /// The series matching all `matchers` (see [`Head::select`]) with
    /// samples in `[mint, maxt]`, each with copies of its chunks that
    /// overlap the range, sorted by labels. The open chunk is copied as it
    /// is; buffered out-of-order samples in range come as one more chunk.
    /// Chunks may overlap; [`super::merge_chunks`] merges them.
    pub fn query(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesChunks> {
        let mut out: Vec<SeriesChunks> = Vec::new();
        for series in self.selected(matchers) {
            let (chunks, histogram_chunks) = {
                let data = series.data.lock();
                if series.is_deleted() {
                    continue;
                }
                (
                    data.chunks_overlapping(mint, maxt),
                    data.histogram_chunks_overlapping(mint, maxt),
                )
            };
            if !chunks.is_empty() || !histogram_chunks.is_empty() {
                out.push(SeriesChunks {
                    labels: series.labels(),
                    chunks,
                    histogram_chunks,
                });
            }
        }
        out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Refs of the series matching all `matchers`, sorted, with
    /// Prometheus's semantics: a matcher that accepts the empty value also
    /// accepts series without its label; no matchers select nothing.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<SeriesRef> {
        self.index.read().select(matchers)
    }

    /// Labels of the series matching `matchers` with samples in
    /// `[mint, maxt]`, sorted.
    pub fn series(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        let mut out: Vec<Labels> = self
            .selected_in_range(matchers, mint, maxt)
            .iter()
            .map(|s| s.labels())
            .collect();
        out.sort_unstable();
        out
    }

    /// Label names, sorted. With matchers, those of the matching series
    /// with samples in `[mint, maxt]`; without, every name in the head if
    /// the head has samples in the range (as Prometheus's head answers).
    pub fn label_names(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<String> {
        if matchers.is_empty() {
            return if self.head_overlaps(mint, maxt) {
                self.index.read().label_names()
            } else {
                Vec::new()
            };
        }
        let series = self.selected_in_range(matchers, mint, maxt);
        let mut names: HashSet<&str> = HashSet::new();
        for s in &series {
            names.extend(s.labels.iter().map(|(n, _)| n));
        }
        sorted_strings(names)
    }

    /// Values of label `name`, sorted. With matchers, those of the matching
    /// series with samples in `[mint, maxt]`; without, every value in the
    /// head if the head has samples in the range.
    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<String> {
        if matchers.is_empty() {
            return if self.head_overlaps(mint, maxt) {
                self.index.read().label_values(name)
            } else {
                Vec::new()
            };
        }
        let series = self.selected_in_range(matchers, mint, maxt);
        let mut values: HashSet<&str> = HashSet::new();
        for s in &series {
            values.extend(s.labels.iter().filter(|&(n, _)| n == name).map(|(_, v)| v));
        }
        sorted_strings(values)
    }

    fn head_overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.time_range()
            .is_some_and(|(min_t, max_t)| min_t <= maxt && max_t >= mint)
    }

    /// The series matching `matchers`, in ref order. The index lock is
    /// released before the series are looked at.
    fn selected(&self, matchers: &[Matcher]) -> Vec<Arc<MemSeries>> {
        let refs = self.select(matchers);
        refs.into_iter()
            .filter_map(|r| self.series_by_ref(r))
            .collect()
    }

    fn selected_in_range(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Arc<MemSeries>> {
        let mut series = self.selected(matchers);
        series.retain(|s| {
            let data = s.data.lock();
            !s.is_deleted() && data.overlaps(mint, maxt)
        });
        series
    }
}

fn sorted_strings(set: HashSet<&str>) -> Vec<String> {
    let mut out: Vec<String> = set.into_iter().map(|s| s.to_string()).collect();
    out.sort_unstable();
    out
}
