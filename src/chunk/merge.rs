//! Chunks as readers receive them (time range + XOR bytes), and the merge
//! readers apply to them.
//!
//! The chunks of one series may overlap in time: out-of-order samples come
//! as chunks of their own, and replicas' copies of a series come from
//! several ingesters. Each chunk's samples strictly increase; a reader
//! merges the chunks into one sorted stream and keeps one sample per
//! timestamp ([`merge_chunks`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::histogram::{FloatHistogramIterator, HistogramChunkError, HistogramIterator};
use super::{ChunkError, XorIterator};
use crate::model::{HPoint, Sample};

/// One XOR chunk (see [`crate::chunk`]) and the time range of its samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkData {
    /// Timestamp of the first sample, milliseconds.
    pub min_t: i64,
    /// Timestamp of the last sample, milliseconds.
    pub max_t: i64,
    /// The encoded chunk, header included.
    pub bytes: Vec<u8>,
}

impl ChunkData {
    /// Whether the chunk's time range meets `[mint, maxt]`.
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.min_t <= maxt && self.max_t >= mint
    }
}

/// The samples of `chunks` inside `[mint, maxt]`, sorted by timestamp, one
/// per timestamp. When chunks disagree at a timestamp, the sample of the
/// chunk listed first wins (the head never stores two samples at one
/// timestamp; replicas of a series can).
///
/// Chunks that follow each other in time are read in turn; otherwise the
/// chunks stream through a heap of iterators, so they may overlap in any
/// way. A chunk that does not decode fails the merge with its error.
pub fn merge_chunks(chunks: &[ChunkData], mint: i64, maxt: i64) -> Result<Vec<Sample>, ChunkError> {
    let chunks: Vec<&ChunkData> = chunks.iter().filter(|c| c.overlaps(mint, maxt)).collect();
    let capacity = chunks
        .iter()
        .map(|c| XorIterator::new(&c.bytes).num_samples())
        .sum();
    let mut out: Vec<Sample> = Vec::with_capacity(capacity);
    if chunks.windows(2).all(|w| w[0].max_t < w[1].min_t) {
        // The common case, without out-of-order chunks or replicas: the
        // chunks follow each other, so they are read one after the other.
        for chunk in chunks {
            let mut it = XorIterator::new(&chunk.bytes);
            let mut next = it.seek(mint);
            while let Some((t, v)) = next {
                if t > maxt {
                    break;
                }
                out.push(Sample { t, v });
                next = it.next();
            }
            check(&it)?;
        }
        return Ok(out);
    }

    let mut iters: Vec<XorIterator<'_>> = Vec::with_capacity(chunks.len());
    // (timestamp, chunk position): ties go to the chunk listed first.
    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::with_capacity(chunks.len());
    for chunk in chunks {
        let mut it = XorIterator::new(&chunk.bytes);
        let first = it.seek(mint);
        check(&it)?;
        if let Some((t, _)) = first {
            heap.push(Reverse((t, iters.len())));
        }
        iters.push(it);
    }
    while let Some(Reverse((t, i))) = heap.pop() {
        if t > maxt {
            // Every later entry is at or after this timestamp.
            break;
        }
        let it = &mut iters[i];
        if out.last().is_none_or(|last| last.t < t) {
            let (_, v) = it
                .at()
                .expect("a heap entry's iterator is positioned on its sample");
            out.push(Sample { t, v });
        }
        let next = it.next();
        check(it)?;
        if let Some((t, _)) = next {
            heap.push(Reverse((t, i)));
        }
    }
    Ok(out)
}

/// Runs of samples, each sorted with strictly increasing timestamps (a
/// decoded chunk), merged as [`merge_chunks`] merges chunks: the samples
/// inside `[mint, maxt]`, one per timestamp, the run listed first winning a
/// timestamp.
pub fn merge_runs(runs: &[Vec<Sample>], mint: i64, maxt: i64) -> Vec<Sample> {
    let runs: Vec<&[Sample]> = runs
        .iter()
        .map(|run| {
            let from = run.partition_point(|s| s.t < mint);
            let to = run.partition_point(|s| s.t <= maxt);
            &run[from..to.max(from)]
        })
        .filter(|run| !run.is_empty())
        .collect();
    let mut out: Vec<Sample> = Vec::with_capacity(runs.iter().map(|r| r.len()).sum());
    if runs.windows(2).all(|w| w[0][w[0].len() - 1].t < w[1][0].t) {
        for run in runs {
            out.extend_from_slice(run);
        }
        return out;
    }
    // (timestamp, run, position in the run): ties go to the run listed first.
    let mut heap: BinaryHeap<Reverse<(i64, usize, usize)>> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| Reverse((run[0].t, i, 0)))
        .collect();
    while let Some(Reverse((t, i, pos))) = heap.pop() {
        if out.last().is_none_or(|last| last.t < t) {
            out.push(runs[i][pos]);
        }
        if let Some(next) = runs[i].get(pos + 1) {
            heap.push(Reverse((next.t, i, pos + 1)));
        }
    }
    out
}

/// One native histogram chunk ([`crate::chunk::histogram`]): integer or
/// float, and the time range of its samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramChunkData {
    pub min_t: i64,
    pub max_t: i64,
    /// A [`crate::chunk::histogram::FloatHistogramChunk`], else a
    /// [`crate::chunk::histogram::HistogramChunk`].
    pub float: bool,
    pub bytes: Vec<u8>,
}

impl HistogramChunkData {
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.min_t <= maxt && self.max_t >= mint
    }
}

/// The histograms of `chunks` inside `[mint, maxt]` as float histograms,
/// sorted by timestamp, one per timestamp; as [`merge_chunks`], the chunk
/// listed first wins a timestamp. A chunk that does not decode fails the
/// merge with its error.
pub fn merge_histogram_chunks(
    chunks: &[HistogramChunkData],
    mint: i64,
    maxt: i64,
) -> Result<Vec<HPoint>, HistogramChunkError> {
    // (timestamp, chunk position, histogram): histogram volumes are small,
    // so a sort replaces the heap of the float merge.
    let mut all: Vec<(i64, usize, HPoint)> = Vec::new();
    for (pos, chunk) in chunks.iter().enumerate() {
        if !chunk.overlaps(mint, maxt) {
            continue;
        }
        if chunk.float {
            let mut it = FloatHistogramIterator::new(&chunk.bytes);
            let mut next = it.seek(mint);
            while let Some((t, h)) = next {
                if t > maxt {
                    break;
                }
                all.push((t, pos, HPoint { t, h: h.clone() }));
                next = it.next();
            }
            if let Some(err) = it.err() {
                return Err(err.clone());
            }
        } else {
            let mut it = HistogramIterator::new(&chunk.bytes);
            let mut next = it.seek(mint);
            while let Some((t, h)) = next {
                if t > maxt {
                    break;
                }
                all.push((t, pos, HPoint { t, h: h.to_float() }));
                next = it.next();
            }
            if let Some(err) = it.err() {
                return Err(err.clone());
            }
        }
    }
    all.sort_by_key(|(t, pos, _)| (*t, *pos));
    all.dedup_by_key(|(t, _, _)| *t);
    Ok(all.into_iter().map(|(_, _, p)| p).collect())
}

fn check(it: &XorIterator<'_>) -> Result<(), ChunkError> {
    match it.err() {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::XorChunk;

    fn run(samples: &[(i64, f64)]) -> Vec<Sample> {
        samples.iter().map(|&(t, v)| Sample { t, v }).collect()
    }

    #[test]
    fn runs_merge_one_sample_per_timestamp_first_run_wins() {
        // In sequence: concatenated, clipped to the range.
        let a = run(&[(1, 1.0), (2, 2.0)]);
        let b = run(&[(3, 3.0), (4, 4.0)]);
        assert_eq!(
            merge_runs(&[a.clone(), Vec::new(), b.clone()], 2, 3),
            run(&[(2, 2.0), (3, 3.0)])
        );
        // Overlapping (a replica's copy, an out-of-order run).
        let c = run(&[(2, 20.0), (3, 30.0), (5, 50.0)]);
        assert_eq!(
            merge_runs(&[a, c, b], i64::MIN, i64::MAX),
            run(&[(1, 1.0), (2, 2.0), (3, 30.0), (4, 4.0), (5, 50.0)])
        );
    }

    fn chunk(samples: &[(i64, f64)]) -> ChunkData {
        let mut c = XorChunk::new();
        let mut app = c.appender();
        for &(t, v) in samples {
            app.append(t, v).expect("increasing timestamps");
        }
        ChunkData {
            min_t: samples[0].0,
            max_t: samples[samples.len() - 1].0,
            bytes: c.into_bytes(),
        }
    }

    fn ts(samples: &[Sample]) -> Vec<i64> {
        samples.iter().map(|s| s.t).collect()
    }

    #[test]
    fn merges_overlapping_chunks_in_order_first_wins() {
        let a = chunk(&[(1, 1.0), (3, 3.0), (5, 5.0)]);
        let b = chunk(&[(2, 20.0), (3, 30.0), (6, 60.0)]);
        let merged = merge_chunks(&[a.clone(), b.clone()], i64::MIN, i64::MAX).expect("valid");
        assert_eq!(ts(&merged), vec![1, 2, 3, 5, 6]);
        assert_eq!(merged[2].v, 3.0, "the first chunk wins a tie");
        let merged = merge_chunks(&[b, a], i64::MIN, i64::MAX).expect("valid");
        assert_eq!(merged[2].v, 30.0);
    }

    #[test]
    fn clips_to_range() {
        let a = chunk(&[(1, 1.0), (3, 3.0), (5, 5.0), (7, 7.0)]);
        let b = chunk(&[(100, 1.0)]);
        let merged = merge_chunks(&[a, b], 3, 6).expect("valid");
        assert_eq!(ts(&merged), vec![3, 5]);
    }

    #[test]
    fn disjoint_chunks_in_any_order() {
        let a = chunk(&[(1, 1.0), (3, 3.0)]);
        let b = chunk(&[(5, 5.0), (7, 7.0)]);
        let want = vec![1, 3, 5, 7];
        assert_eq!(
            ts(&merge_chunks(&[a.clone(), b.clone()], 0, 10).expect("valid")),
            want
        );
        assert_eq!(ts(&merge_chunks(&[b, a], 0, 10).expect("valid")), want);
    }

    #[test]
    fn corrupt_chunk_is_an_error() {
        let mut a = chunk(&[(1, 1.0), (3, 3.0), (5, 5.0)]);
        a.bytes.truncate(4);
        assert!(merge_chunks(&[a.clone()], i64::MIN, i64::MAX).is_err());
        let b = chunk(&[(2, 2.0)]);
        assert!(
            merge_chunks(&[a, b], i64::MIN, i64::MAX).is_err(),
            "overlapping path too"
        );
    }

    fn int_histogram(n: u64) -> crate::model::histogram::Histogram {
        crate::model::histogram::Histogram {
            count: n,
            sum: n as f64,
            positive_spans: vec![crate::model::histogram::Span {
                offset: 0,
                length: 1,
            }],
            positive_buckets: vec![n as i64],
            ..Default::default()
        }
    }

    fn histogram_chunk(samples: &[(i64, u64)], float: bool) -> HistogramChunkData {
        use crate::chunk::histogram::{FloatHistogramChunk, HistogramChunk};
        let bytes = if float {
            let mut c = FloatHistogramChunk::new();
            for &(t, n) in samples {
                c.appender()
                    .append(t, &int_histogram(n).to_float())
                    .expect("appends");
            }
            c.into_bytes()
        } else {
            let mut c = HistogramChunk::new();
            for &(t, n) in samples {
                c.appender().append(t, &int_histogram(n)).expect("appends");
            }
            c.into_bytes()
        };
        HistogramChunkData {
            min_t: samples[0].0,
            max_t: samples[samples.len() - 1].0,
            float,
            bytes,
        }
    }

    #[test]
    fn replicas_histogram_chunks_merge_sample_exact() {
        // Two replicas of a series (one cut differently), and a float
        // chunk that disagrees at t=3: the chunk listed first wins.
        let a = histogram_chunk(&[(1, 1), (2, 2), (3, 3)], false);
        let b = histogram_chunk(&[(2, 2), (3, 30), (4, 40)], true);
        let c = histogram_chunk(&[(5, 5)], false);
        let merged =
            merge_histogram_chunks(&[a.clone(), b.clone(), c.clone()], 2, 5).expect("valid chunks");
        let got: Vec<(i64, f64)> = merged.iter().map(|p| (p.t, p.h.count)).collect();
        assert_eq!(got, vec![(2, 2.0), (3, 3.0), (4, 40.0), (5, 5.0)]);
        let merged = merge_histogram_chunks(&[b, a.clone(), c], i64::MIN, 3).expect("valid");
        let got: Vec<(i64, f64)> = merged.iter().map(|p| (p.t, p.h.count)).collect();
        assert_eq!(got, vec![(1, 1.0), (2, 2.0), (3, 30.0)]);
        let mut corrupt = a;
        corrupt.bytes.truncate(5);
        assert!(merge_histogram_chunks(&[corrupt], i64::MIN, i64::MAX).is_err());
    }
}
