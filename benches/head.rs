//! The ingester head: append throughput (per sample) for 10k series × 120
//! samples pushed as remote-write-like batches of 500 series × 1 sample,
//! steady-state appends to existing series, and a query of 1k series over
//! 2 h. Prints the head's memory per active series (its own estimate and
//! what a counting allocator measured) and bytes per sample, after 120
//! samples, 2 h and 8 h of 15 s scrapes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicI64, AtomicIsize, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata::ingester::head::{Head, HeadConfig, SeriesRef, merge_chunks};
use strata::ingester::wal::records::{HistogramRecord, encode_histograms};
use strata::limits::Limits;
use strata::model::histogram::{Histogram, NativeHistogram, Span};
use strata::model::{Labels, Matcher, Sample};
use strata::proto::histogram::{from_proto, int_to_proto};
use strata::proto::prometheus as pb;

/// Counts live heap bytes, to check the head's memory estimate.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SERIES: usize = 10_000;
const SAMPLES_PER_SERIES: usize = 120;
const BATCH_SERIES: usize = 500;
const START_MS: i64 = 1_700_000_000_000;
const SCRAPE_INTERVAL_MS: i64 = 15_000;
/// 2 h of 15 s scrapes.
const QUERY_SAMPLES: usize = 480;

/// 10k series as a Kubernetes scrape gives them: 100 targets of 100
/// metrics, 7 labels each.
fn series_labels() -> Vec<Labels> {
    (0..SERIES)
        .map(|i| {
            let target = i / 100;
            Labels::from_pairs([
                ("__name__", format!("app_metric_{}_total", i % 100)),
                ("job", format!("job-{}", target % 10)),
                (
                    "instance",
                    format!("10.1.{}.{}:9100", target / 50, target % 50),
                ),
                ("namespace", format!("team-{}", target % 5)),
                (
                    "pod",
                    format!(
                        "app-{target:03}-7d9f8b6c4-x{:04x}",
                        target * 2654435761 % 65536
                    ),
                ),
                ("container", "app".to_string()),
                ("cluster", "prod-eu-1".to_string()),
            ])
        })
        .collect()
}

/// A counter's next value: grows by whole numbers, sometimes stays put.
fn next_value(v: f64, rng: &mut StdRng) -> f64 {
    if rng.random_bool(0.2) {
        v
    } else {
        v + f64::from(rng.random_range(1..=100u32))
    }
}

/// Samples per scrape round: `rounds[r][s]` is series `s`'s sample in
/// round `r` (15 s apart, with ±50 ms jitter).
fn scrape_rounds(rounds: usize, seed: u64) -> Vec<Vec<Sample>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values: Vec<f64> = (0..SERIES)
        .map(|_| f64::from(rng.random_range(0..1_000_000u32)))
        .collect();
    (0..rounds)
        .map(|r| {
            (0..SERIES)
                .map(|s| {
                    values[s] = next_value(values[s], &mut rng);
                    Sample {
                        t: START_MS + r as i64 * SCRAPE_INTERVAL_MS + rng.random_range(-50..=50),
                        v: values[s],
                    }
                })
                .collect()
        })
        .collect()
}

/// Pushes one scrape round in batches of 500 series × 1 sample.
fn push_round(head: &Head, labels: &[Labels], round: &[Sample], limits: &Limits) {
    let mut batch: Vec<(&Labels, &[Sample])> = Vec::with_capacity(BATCH_SERIES);
    for (ls, ss) in labels.chunks(BATCH_SERIES).zip(round.chunks(BATCH_SERIES)) {
        batch.clear();
        batch.extend(ls.iter().zip(ss).map(|(l, s)| (l, std::slice::from_ref(s))));
        let result = head.append_batch(&batch, limits);
        debug_assert!(result.rejected.is_empty());
        black_box(result);
    }
}

fn build(labels: &[Labels], rounds: &[Vec<Sample>], limits: &Limits) -> Head {
    let head = Head::new("bench", &HeadConfig::default());
    for round in rounds {
        push_round(&head, labels, round, limits);
    }
    head
}

fn report_memory(labels: &[Labels], rounds: &[Vec<Sample>], limits: &Limits) {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let head = build(labels, rounds, limits);
    let measured = LIVE_BYTES.load(Ordering::Relaxed) - before;
    let est = head.memory_estimate();
    let samples = head.samples_appended_total();
    println!(
        "head {} series x {} samples: estimate {:.0} B/series (series {:.0}, index {:.0}, samples {:.0}), \
         measured {:.0} B/series; chunks {:.2} B/sample",
        est.series,
        rounds.len(),
        est.bytes_per_series,
        est.series_bytes as f64 / est.series as f64,
        est.index_bytes as f64 / est.series as f64,
        est.sample_bytes as f64 / est.series as f64,
        measured as f64 / est.series as f64,
        head.chunk_bytes() as f64 / samples as f64,
    );
}

fn append(c: &mut Criterion) {
    let limits = Limits::default();
    let labels = series_labels();
    let rounds = scrape_rounds(SAMPLES_PER_SERIES, 1);
    report_memory(&labels, &rounds, &limits);
    report_memory(&labels, &scrape_rounds(QUERY_SAMPLES, 2), &limits);
    // What a series holds until its flush with a 6 h `chunk_window` (not
    // when `cargo test --all-targets` runs the bench once, unoptimised).
    if std::env::args().any(|a| a == "--bench") {
        report_memory(&labels, &scrape_rounds(4 * QUERY_SAMPLES, 3), &limits);
    }

    let mut group = c.benchmark_group("head_append");
    group.sample_size(10);
    group.throughput(Throughput::Elements((SERIES * SAMPLES_PER_SERIES) as u64));
    group.bench_function("10k_series_x_120_new_head", |b| {
        b.iter_batched(
            || (),
            |()| build(&labels, &rounds, &limits),
            BatchSize::PerIteration,
        )
    });
    group.finish();

    // Steady state: every series exists; one scrape round per iteration.
    let head = build(&labels, &rounds[..1], &limits);
    let round = AtomicI64::new(1);
    let mut samples = rounds[0].clone();
    let mut group = c.benchmark_group("head_append");
    group.throughput(Throughput::Elements(SERIES as u64));
    group.bench_function("existing_series_500x1_batches", |b| {
        b.iter(|| {
            let r = round.fetch_add(1, Ordering::Relaxed);
            for s in samples.iter_mut() {
                s.t = START_MS + r * SCRAPE_INTERVAL_MS;
                s.v += 1.0;
            }
            push_round(&head, &labels, &samples, &limits);
        })
    });
    group.finish();
}

fn query(c: &mut Criterion) {
    let limits = Limits::default();
    let labels = series_labels();
    let head = build(&labels, &scrape_rounds(QUERY_SAMPLES, 3), &limits);
    let matchers = [Matcher::equal("job", "job-3")];
    let (mint, maxt) = (
        START_MS - SCRAPE_INTERVAL_MS,
        START_MS + QUERY_SAMPLES as i64 * SCRAPE_INTERVAL_MS,
    );
    assert_eq!(head.query(&matchers, mint, maxt).len(), 1000);

    let mut group = c.benchmark_group("head_query");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1k_series_2h_chunks", |b| {
        b.iter(|| black_box(head.query(black_box(&matchers), mint, maxt)))
    });
    group.bench_function("1k_series_2h_decoded", |b| {
        b.iter(|| {
            let mut n = 0;
            for series in head.query(black_box(&matchers), mint, maxt) {
                n += merge_chunks(&series.chunks, mint, maxt).map_or(0, |s| s.len());
            }
            assert_eq!(n, 1000 * QUERY_SAMPLES);
            n
        })
    });
    group.finish();
}

/// Series of native histograms in the histogram benches.
const HISTOGRAM_SERIES: usize = 1000;

/// One scrape of a classic latency histogram as a native one: schema 3,
/// 20 positive buckets in two spans and 4 negative ones, each count growing
/// by a few observations per scrape (deltas as remote write sends them).
fn histogram_round(prev: &mut [Vec<i64>], t: i64, rng: &mut StdRng) -> Vec<pb::Histogram> {
    prev.iter_mut()
        .map(|counts| {
            for c in counts.iter_mut() {
                *c += rng.random_range(0..4);
            }
            let deltas = |abs: &[i64]| -> Vec<i64> {
                let mut last = 0;
                abs.iter()
                    .map(|&c| {
                        let d = c - last;
                        last = c;
                        d
                    })
                    .collect()
            };
            let (positive, negative) = counts.split_at(20);
            let h = Histogram {
                schema: 3,
                zero_threshold: 2f64.powi(-128),
                zero_count: 0,
                count: counts.iter().sum::<i64>() as u64,
                sum: counts.iter().sum::<i64>() as f64 * 0.37,
                positive_spans: vec![
                    Span {
                        offset: -5,
                        length: 10,
                    },
                    Span {
                        offset: 3,
                        length: 10,
                    },
                ],
                negative_spans: vec![Span {
                    offset: 0,
                    length: 4,
                }],
                positive_buckets: deltas(positive),
                negative_buckets: deltas(negative),
                ..Histogram::default()
            };
            int_to_proto(t, &h)
        })
        .collect()
}

fn histogram_rounds(rounds: usize) -> Vec<Vec<pb::Histogram>> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut counts = vec![vec![0i64; 24]; HISTOGRAM_SERIES];
    (0..rounds)
        .map(|r| {
            histogram_round(
                &mut counts,
                START_MS + r as i64 * SCRAPE_INTERVAL_MS,
                &mut rng,
            )
        })
        .collect()
}

fn histogram_series(head: &Head, limits: &Limits) -> Vec<SeriesRef> {
    (0..HISTOGRAM_SERIES)
        .map(|i| {
            let labels = Labels::from_pairs([
                ("__name__", "rpc_duration_seconds".to_string()),
                ("instance", format!("10.0.0.{i}:9090")),
                ("job", "api".to_string()),
            ]);
            head.get_or_create_series(&labels, limits)
                .expect("within limits")
                .0
        })
        .collect()
}

/// What the ingester does per histogram sample besides the WAL's write:
/// convert from the protobuf, validate, encode the WAL record, append to
/// the head (chunks of 120 samples). And the append alone.
fn append_histograms(c: &mut Criterion) {
    let limits = Limits::default();
    let rounds = histogram_rounds(SAMPLES_PER_SERIES);
    {
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        let head = Head::new("bench", &HeadConfig::default());
        let refs = histogram_series(&head, &limits);
        for round in &rounds {
            for (r, proto) in refs.iter().zip(round) {
                let h = from_proto(proto).expect("converts");
                head.append_histogram(*r, proto.timestamp, &h, &limits)
                    .expect("appends");
            }
        }
        let measured = LIVE_BYTES.load(Ordering::Relaxed) - before;
        let est = head.memory_estimate();
        println!(
            "head {} histogram series x {} samples (24 buckets): estimate {:.0} B/series \
             (samples {:.0}), measured {:.0} B/series; chunks {:.2} B/sample",
            est.series,
            rounds.len(),
            est.bytes_per_series,
            est.sample_bytes as f64 / est.series as f64,
            measured as f64 / est.series as f64,
            head.chunk_bytes() as f64 / head.samples_appended_total() as f64,
        );
    }

    let mut group = c.benchmark_group("head_append_histograms");
    group.sample_size(10);
    group.throughput(Throughput::Elements(
        (HISTOGRAM_SERIES * SAMPLES_PER_SERIES) as u64,
    ));
    group.bench_function("1k_series_x_120_convert_validate_wal_append", |b| {
        b.iter_batched(
            || {
                let head = Head::new("bench", &HeadConfig::default());
                let refs = histogram_series(&head, &limits);
                (head, refs)
            },
            |(head, refs)| {
                let mut records: Vec<HistogramRecord> = Vec::with_capacity(HISTOGRAM_SERIES);
                let mut wal = Vec::new();
                for round in &rounds {
                    records.clear();
                    let mut converted = Vec::with_capacity(HISTOGRAM_SERIES);
                    for (r, proto) in refs.iter().zip(round) {
                        let h = from_proto(proto).expect("converts");
                        h.validate().expect("valid");
                        if let NativeHistogram::Int(int) = &h {
                            records.push(HistogramRecord {
                                series_ref: r.0,
                                t: proto.timestamp,
                                h: int.clone(),
                            });
                        }
                        converted.push(h);
                    }
                    wal.clear();
                    encode_histograms(&records, &mut wal);
                    black_box(&wal);
                    for ((r, proto), h) in refs.iter().zip(round).zip(&converted) {
                        head.append_histogram(*r, proto.timestamp, h, &limits)
                            .expect("appends");
                    }
                }
                head
            },
            BatchSize::PerIteration,
        )
    });
    let converted: Vec<Vec<NativeHistogram>> = rounds
        .iter()
        .map(|round| {
            round
                .iter()
                .map(|p| from_proto(p).expect("converts"))
                .collect()
        })
        .collect();
    group.bench_function("1k_series_x_120_append_only", |b| {
        b.iter_batched(
            || {
                let head = Head::new("bench", &HeadConfig::default());
                let refs = histogram_series(&head, &limits);
                (head, refs)
            },
            |(head, refs)| {
                for (round, protos) in converted.iter().zip(&rounds) {
                    for ((r, h), proto) in refs.iter().zip(round).zip(protos) {
                        head.append_histogram(*r, proto.timestamp, h, &limits)
                            .expect("appends");
                    }
                }
                head
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, append, append_histograms, query);
criterion_main!(benches);
