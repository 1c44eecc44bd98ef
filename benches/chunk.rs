//! XOR chunk encoding: append and iterate throughput (per sample) on
//! realistic series, 120 and 240 samples a chunk, and the bytes per sample
//! each series type compresses to (Prometheus's typical figure is ~1.3);
//! the store's packed encoding (`chunk::packed`) beside it, also at 480
//! samples (a 2-hour chunk window of 15 s scrapes), with its encode and
//! decode throughput.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata::chunk::{XorChunk, XorIterator, packed};
use strata::model::Sample;

const START_MS: i64 = 1_700_000_000_000;
const SCRAPE_INTERVAL_MS: i64 = 15_000;
const JITTER_MS: i64 = 50;
const CHUNK_SIZES: [usize; 3] = [120, 240, 480];

#[derive(Clone, Copy)]
enum Series {
    /// A counter growing by whole numbers (`http_requests_total`).
    Counter,
    /// A gauge doing a small random walk, 2 decimals (`temperature_celsius`).
    Gauge,
    /// A constant (`up`).
    Constant,
    /// A histogram bucket: a counter that often stays put, else grows a bit.
    HistogramBucket,
}

impl Series {
    const ALL: [Series; 4] = [
        Series::Counter,
        Series::Gauge,
        Series::Constant,
        Series::HistogramBucket,
    ];

    fn name(self) -> &'static str {
        match self {
            Series::Counter => "counter",
            Series::Gauge => "gauge",
            Series::Constant => "constant",
            Series::HistogramBucket => "histogram_bucket",
        }
    }

    /// `n` samples scraped every 15 s, each timestamp off by up to
    /// ±`jitter_ms`.
    fn samples(self, n: usize, jitter_ms: i64, rng: &mut StdRng) -> Vec<(i64, f64)> {
        let mut v: f64 = match self {
            Series::Counter => 1_234_567.0,
            Series::Gauge => 21.5,
            Series::Constant => 1.0,
            Series::HistogramBucket => 8_042.0,
        };
        (0..n as i64)
            .map(|i| {
                let t =
                    START_MS + i * SCRAPE_INTERVAL_MS + rng.random_range(-jitter_ms..=jitter_ms);
                match self {
                    Series::Counter => v += f64::from(rng.random_range(1..=200u32)),
                    Series::Gauge => {
                        v = ((v + rng.random_range(-0.5..=0.5)) * 100.0).round() / 100.0;
                    }
                    Series::Constant => {}
                    Series::HistogramBucket => {
                        if rng.random_bool(0.4) {
                            v += f64::from(rng.random_range(1..=5u32));
                        }
                    }
                }
                (t, v)
            })
            .collect()
    }
}

fn encode(samples: &[(i64, f64)]) -> XorChunk {
    let mut chunk = XorChunk::new();
    let mut app = chunk.appender();
    for &(t, v) in samples {
        app.append(t, v)
            .expect("bench samples are in order and few");
    }
    chunk
}

/// One benchmarked chunk: a series type at a chunk size.
struct Input {
    series: Series,
    n: usize,
    samples: Vec<(i64, f64)>,
    chunk: XorChunk,
}

fn chunk(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(42);
    let inputs: Vec<Input> = Series::ALL
        .iter()
        .flat_map(|&series| CHUNK_SIZES.map(|n| (series, n)))
        .map(|(series, n)| {
            let samples = series.samples(n, JITTER_MS, &mut rng);
            let chunk = encode(&samples);
            Input {
                series,
                n,
                samples,
                chunk,
            }
        })
        .collect();

    println!("bytes per sample (chunk bytes incl. header / samples), XOR | packed:");
    for Input {
        series,
        n,
        chunk,
        samples,
    } in &inputs
    {
        // The same series scraped on time, for comparison: a jittered
        // timestamp costs 16 bits ('10' + 14), an on-time one 1 bit.
        let on_time_samples = series.samples(*n, 0, &mut StdRng::seed_from_u64(42));
        let on_time = encode(&on_time_samples);
        let per = |bytes: usize| bytes as f64 / *n as f64;
        println!(
            "  {:<17} {n:>3} samples: XOR {:.2} (±{JITTER_MS} ms jitter), {:.2} on time | \
             packed {:.2}, {:.2} on time",
            series.name(),
            per(chunk.bytes().len()),
            per(on_time.bytes().len()),
            per(packed::encode(&to_samples(samples)).len()),
            per(packed::encode(&to_samples(&on_time_samples)).len()),
        );
    }

    let mut group = c.benchmark_group("xor_append");
    for Input {
        series, n, samples, ..
    } in &inputs
    {
        group.throughput(Throughput::Elements(*n as u64));
        group.bench_with_input(BenchmarkId::new(series.name(), n), samples, |b, samples| {
            b.iter(|| encode(black_box(samples)));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("xor_iterate");
    for Input {
        series, n, chunk, ..
    } in &inputs
    {
        group.throughput(Throughput::Elements(*n as u64));
        group.bench_with_input(
            BenchmarkId::new(series.name(), n),
            chunk.bytes(),
            |b, bytes| {
                let mut it = XorIterator::new(bytes);
                b.iter(|| {
                    it.reset(black_box(bytes));
                    let mut sum = 0.0;
                    let mut last_t = 0;
                    while let Some((t, v)) = it.next() {
                        sum += v;
                        last_t = t;
                    }
                    (sum, last_t)
                });
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("packed_encode");
    for input in inputs.iter().filter(|i| i.n == 480) {
        let samples = to_samples(&input.samples);
        group.throughput(Throughput::Elements(input.n as u64));
        group.bench_with_input(
            BenchmarkId::new(input.series.name(), input.n),
            &samples,
            |b, samples| b.iter(|| packed::encode(black_box(samples))),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("packed_decode");
    for input in inputs.iter().filter(|i| i.n == 480) {
        let bytes = packed::encode(&to_samples(&input.samples));
        group.throughput(Throughput::Elements(input.n as u64));
        group.bench_with_input(
            BenchmarkId::new(input.series.name(), input.n),
            &bytes,
            |b, bytes| b.iter(|| packed::decode(black_box(bytes)).expect("decodes")),
        );
    }
    group.finish();

    // The first tenth of a chunk, as a query of an hour of a compacted
    // day reads it: values past the range are skipped, not unpacked.
    let mut group = c.benchmark_group("packed_decode_first_tenth");
    for input in inputs.iter().filter(|i| i.n == 480) {
        let bytes = packed::encode(&to_samples(&input.samples));
        let (mint, maxt) = (input.samples[0].0, input.samples[input.n / 10 - 1].0);
        group.throughput(Throughput::Elements(input.n as u64));
        group.bench_with_input(
            BenchmarkId::new(input.series.name(), input.n),
            &bytes,
            |b, bytes| {
                b.iter(|| packed::decode_range(black_box(bytes), mint, maxt).expect("decodes"))
            },
        );
    }
    group.finish();
}

fn to_samples(samples: &[(i64, f64)]) -> Vec<Sample> {
    samples.iter().map(|&(t, v)| Sample { t, v }).collect()
}

criterion_group!(benches, chunk);
criterion_main!(benches);
