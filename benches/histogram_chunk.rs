//! Native histogram chunks: append and iterate throughput (per histogram
//! sample) on a realistic latency series, and the bytes per sample it
//! compresses to, next to a bit-exact model of what Prometheus's own
//! histogram chunks would take for the same series and to the same
//! histogram kept as a classic one in XOR chunks.
//!
//! The series: request latencies of a service at ~100 requests/s, log-normal
//! around a 50 ms median that drifts ±10 % over the half hour, observed into
//! schema 3 (8 buckets per doubling) as client libraries do: 20 populated
//! buckets in one span (tails folded into the edge buckets), no zero bucket,
//! sum in float seconds. The process has run 3 hours before the chunk's 120
//! samples, scraped every 15 s with ±50 ms jitter.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata::chunk::XorChunk;
use strata::chunk::histogram::{
    FloatHistogram, FloatHistogramChunk, FloatHistogramIterator, Histogram, HistogramChunk,
    HistogramIterator, Span,
};

const START_MS: i64 = 1_700_000_000_000;
const SCRAPE_INTERVAL_MS: i64 = 15_000;
const JITTER_MS: i64 = 50;
const SAMPLES: usize = 120;
const SCHEMA: i32 = 3;
const BUCKETS: usize = 20;
const REQUESTS_PER_SECOND: f64 = 100.0;
const MEDIAN_SECONDS: f64 = 0.05;
/// Spread of ln(latency).
const SIGMA: f64 = 0.5;
/// Scrapes before the chunk starts (3 hours).
const WARM_UP_SCRAPES: usize = 720;

/// The bucket index of `v` in schema 3: bucket `i` is `(2^((i-1)/8), 2^(i/8)]`.
fn bucket_index(v: f64) -> i32 {
    (v.log2() * f64::from(1 << SCHEMA)).ceil() as i32
}

fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn poisson(rng: &mut StdRng, lambda: f64) -> u64 {
    (lambda + lambda.sqrt() * standard_normal(rng))
        .round()
        .max(0.0) as u64
}

/// The series: `(timestamp, histogram)` for `SAMPLES` scrapes.
fn latency_series(jitter_ms: i64, seed: u64) -> Vec<(i64, Histogram)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let first = bucket_index(MEDIAN_SECONDS) - BUCKETS as i32 / 2;
    let mut counts = [0u64; BUCKETS];
    let mut sum = 0.0f64;
    let mut out = Vec::with_capacity(SAMPLES);
    for scrape in 0..WARM_UP_SCRAPES + SAMPLES {
        let phase = scrape as f64 / (WARM_UP_SCRAPES + SAMPLES) as f64 * std::f64::consts::TAU;
        let mu = (MEDIAN_SECONDS * (1.0 + 0.1 * phase.sin())).ln();
        let rate = REQUESTS_PER_SECOND * (1.0 + 0.3 * (phase * 3.0).cos());
        let requests = poisson(&mut rng, rate * (SCRAPE_INTERVAL_MS / 1000) as f64);
        for _ in 0..requests {
            let v = (mu + SIGMA * standard_normal(&mut rng)).exp();
            let i = (bucket_index(v) - first).clamp(0, BUCKETS as i32 - 1);
            counts[i as usize] += 1;
            sum += v;
        }
        let Some(i) = scrape.checked_sub(WARM_UP_SCRAPES) else {
            continue;
        };
        let t = START_MS + i as i64 * SCRAPE_INTERVAL_MS + rng.random_range(-jitter_ms..=jitter_ms);
        let mut prev = 0i64;
        let deltas = counts
            .iter()
            .map(|&c| {
                let d = c as i64 - prev;
                prev = c as i64;
                d
            })
            .collect();
        out.push((
            t,
            Histogram {
                schema: SCHEMA,
                zero_threshold: 2f64.powi(-128),
                count: counts.iter().sum(),
                sum,
                positive_spans: vec![Span {
                    offset: first,
                    length: BUCKETS as u32,
                }],
                positive_buckets: deltas,
                ..Histogram::default()
            },
        ));
    }
    out
}

fn encode_int(samples: &[(i64, Histogram)]) -> HistogramChunk {
    let mut chunk = HistogramChunk::new();
    let mut app = chunk.appender();
    for (t, h) in samples {
        app.append(*t, h)
            .expect("bench samples share a layout and only grow");
    }
    chunk
}

fn encode_float(samples: &[(i64, FloatHistogram)]) -> FloatHistogramChunk {
    let mut chunk = FloatHistogramChunk::new();
    let mut app = chunk.appender();
    for (t, h) in samples {
        app.append(*t, h)
            .expect("bench samples share a layout and only grow");
    }
    chunk
}

/// Bit counts of Prometheus's chunk encodings (`tsdb/chunkenc/histogram.go`,
/// `float_histogram.go`, `varbit.go`, `xor.go` as of v3.x), for a series
/// whose layout never changes (no recoding): counted, not written.
mod prometheus {
    use strata::chunk::histogram::{FloatHistogram, Histogram, Span};

    /// Varbit widths after the 1-bit zero: prefix `k` ones + a zero, then
    /// `WIDTHS[k-1]` bits; 8 ones then 64 bits for anything else.
    const WIDTHS: [u64; 7] = [3, 6, 9, 12, 18, 25, 56];

    pub fn varbit_int(v: i64) -> u64 {
        if v == 0 {
            return 1;
        }
        for (k, n) in (1..).zip(WIDTHS) {
            let half = 1i64 << (n - 1);
            if -(half - 1) <= v && v <= half {
                return k + 1 + n;
            }
        }
        72
    }

    pub fn varbit_uint(v: u64) -> u64 {
        if v == 0 {
            return 1;
        }
        for (k, n) in (1..).zip(WIDTHS) {
            if v < 1 << n {
                return k + 1 + n;
            }
        }
        72
    }

    /// One XOR-coded field (`xorWrite`), starting with no window.
    pub struct Xor {
        prev: u64,
        leading: u32,
        trailing: u32,
    }

    impl Xor {
        pub fn new(first: f64) -> Xor {
            Xor {
                prev: first.to_bits(),
                leading: 0xff,
                trailing: 0,
            }
        }

        pub fn bits(&mut self, v: f64) -> u64 {
            let delta = v.to_bits() ^ self.prev;
            self.prev = v.to_bits();
            if delta == 0 {
                return 1;
            }
            let leading = delta.leading_zeros().min(31);
            let trailing = delta.trailing_zeros();
            if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
                return 2 + u64::from(64 - self.leading - self.trailing);
            }
            self.leading = leading;
            self.trailing = trailing;
            2 + 5 + 6 + u64::from(64 - leading - trailing)
        }
    }

    /// Header (3 bytes) and layout: zero threshold byte for 0 or a power of
    /// two in range, else 9 bytes; schema; spans.
    fn layout_bits(zero_threshold: f64, schema: i32, pos: &[Span], neg: &[Span]) -> u64 {
        let (frac, exp) = frexp(zero_threshold);
        let zt = if zero_threshold == 0.0 || (frac == 0.5 && (-242..=11).contains(&exp)) {
            8
        } else {
            72
        };
        let spans = |spans: &[Span]| {
            varbit_uint(spans.len() as u64)
                + spans
                    .iter()
                    .map(|s| varbit_uint(u64::from(s.length)) + varbit_int(i64::from(s.offset)))
                    .sum::<u64>()
        };
        24 + zt + varbit_int(i64::from(schema)) + spans(pos) + spans(neg)
    }

    fn frexp(v: f64) -> (f64, i32) {
        if v == 0.0 {
            return (0.0, 0);
        }
        let exp = v.abs().log2().floor() as i32 + 1;
        (v / 2f64.powi(exp), exp)
    }

    /// Bytes of an `EncHistogram` chunk holding `samples`.
    pub fn histogram_chunk_bytes(samples: &[(i64, Histogram)]) -> u64 {
        let (t0, h0) = &samples[0];
        let mut bits = layout_bits(
            h0.zero_threshold,
            h0.schema,
            &h0.positive_spans,
            &h0.negative_spans,
        );
        bits += varbit_int(*t0) + varbit_uint(h0.count) + varbit_uint(h0.zero_count) + 64;
        bits += h0
            .positive_buckets
            .iter()
            .chain(&h0.negative_buckets)
            .map(|&b| varbit_int(b))
            .sum::<u64>();
        let mut sum = Xor::new(h0.sum);
        let (mut t, mut t_delta) = (*t0, 0i64);
        let (mut cnt, mut cnt_delta) = (h0.count as i64, 0i64);
        let (mut z, mut z_delta) = (h0.zero_count as i64, 0i64);
        let mut buckets: Vec<i64> = h0
            .positive_buckets
            .iter()
            .chain(&h0.negative_buckets)
            .copied()
            .collect();
        let mut bucket_deltas = vec![0i64; buckets.len()];
        for (ts, h) in &samples[1..] {
            let d = ts - t;
            bits += varbit_int(d - t_delta);
            (t, t_delta) = (*ts, d);
            let d = h.count as i64 - cnt;
            bits += varbit_int(d - cnt_delta);
            (cnt, cnt_delta) = (h.count as i64, d);
            let d = h.zero_count as i64 - z;
            bits += varbit_int(d - z_delta);
            (z, z_delta) = (h.zero_count as i64, d);
            bits += sum.bits(h.sum);
            // The chunk codes the remote-write bucket deltas, per bucket, as
            // a delta of deltas over time.
            for (i, &b) in h
                .positive_buckets
                .iter()
                .chain(&h.negative_buckets)
                .enumerate()
            {
                let d = b - buckets[i];
                bits += varbit_int(d - bucket_deltas[i]);
                (buckets[i], bucket_deltas[i]) = (b, d);
            }
        }
        bits.div_ceil(8)
    }

    /// Bytes of an `EncFloatHistogram` chunk holding `samples`.
    pub fn float_histogram_chunk_bytes(samples: &[(i64, FloatHistogram)]) -> u64 {
        let (t0, h0) = &samples[0];
        let n = h0.positive_buckets.len() + h0.negative_buckets.len();
        let mut bits = layout_bits(
            h0.zero_threshold,
            h0.schema,
            &h0.positive_spans,
            &h0.negative_spans,
        );
        bits += varbit_int(*t0) + 64 * (3 + n as u64);
        let mut fields: Vec<Xor> = [h0.count, h0.zero_count, h0.sum]
            .into_iter()
            .chain(
                h0.positive_buckets
                    .iter()
                    .chain(&h0.negative_buckets)
                    .copied(),
            )
            .map(Xor::new)
            .collect();
        let (mut t, mut t_delta) = (*t0, 0i64);
        for (ts, h) in &samples[1..] {
            let d = ts - t;
            bits += varbit_int(d - t_delta);
            (t, t_delta) = (*ts, d);
            let values = [h.count, h.zero_count, h.sum].into_iter().chain(
                h.positive_buckets
                    .iter()
                    .chain(&h.negative_buckets)
                    .copied(),
            );
            for (f, v) in fields.iter_mut().zip(values) {
                bits += f.bits(v);
            }
        }
        bits.div_ceil(8)
    }
}

/// The same histogram as a classic one: one XOR chunk per cumulative `le`
/// bucket (the 20 bounds plus +Inf), `_count` and `_sum`.
fn classic_xor_bytes(samples: &[(i64, FloatHistogram)]) -> usize {
    let n = samples[0].1.positive_buckets.len();
    let mut series: Vec<XorChunk> = (0..n + 3).map(|_| XorChunk::new()).collect();
    for (t, h) in samples {
        let mut cumulative = 0.0;
        let values = h
            .positive_buckets
            .iter()
            .map(|b| {
                cumulative += b;
                cumulative
            })
            .chain([h.count, h.count, h.sum])
            .collect::<Vec<_>>();
        for (chunk, v) in series.iter_mut().zip(values) {
            chunk
                .appender()
                .append(*t, v)
                .expect("bench samples are in order");
        }
    }
    series.iter().map(|c| c.bytes().len()).sum()
}

fn report(name: &str, samples: &[(i64, Histogram)]) {
    let floats: Vec<(i64, FloatHistogram)> =
        samples.iter().map(|(t, h)| (*t, h.to_float())).collect();
    let n = samples.len() as f64;
    let per = |bytes: usize| format!("{bytes:>5} bytes, {:>6.2} bytes/sample", bytes as f64 / n);
    let ours_int = encode_int(samples).bytes().len();
    let ours_float = encode_float(&floats).bytes().len();
    let prom_int = prometheus::histogram_chunk_bytes(samples) as usize;
    let prom_float = prometheus::float_histogram_chunk_bytes(&floats) as usize;
    println!("{name}, {SAMPLES} samples, {BUCKETS} buckets:");
    println!("  strata histogram chunk:             {}", per(ours_int));
    println!("  prometheus histogram chunk (model): {}", per(prom_int));
    println!("  strata float histogram chunk:       {}", per(ours_float));
    println!("  prometheus float chunk (model):     {}", per(prom_float));
    println!(
        "  classic histogram, {} XOR chunks: {}",
        BUCKETS + 3,
        per(classic_xor_bytes(&floats))
    );
    let (absolute, deltas) = bucket_bits(samples);
    println!(
        "  buckets alone, samples 2..: {:.1} bits/sample as delta of deltas of absolute counts \
         (strata), {:.1} of remote-write bucket deltas (prometheus)",
        absolute as f64 / (n - 2.0),
        deltas as f64 / (n - 2.0),
    );
}

/// Varbit bits the buckets of samples 2.. take as deltas of deltas over
/// time, coding absolute counts and coding remote write's bucket deltas.
fn bucket_bits(samples: &[(i64, Histogram)]) -> (u64, u64) {
    let absolute: Vec<Vec<i64>> = samples
        .iter()
        .map(|(_, h)| {
            h.positive_buckets
                .iter()
                .scan(0i64, |c, d| {
                    *c += d;
                    Some(*c)
                })
                .collect()
        })
        .collect();
    let deltas: Vec<Vec<i64>> = samples
        .iter()
        .map(|(_, h)| h.positive_buckets.clone())
        .collect();
    let dod_bits = |lanes: &[Vec<i64>]| -> u64 {
        lanes
            .windows(3)
            .flat_map(|w| (0..w[0].len()).map(move |i| (w[2][i] - w[1][i]) - (w[1][i] - w[0][i])))
            .map(prometheus::varbit_int)
            .sum()
    };
    (dod_bits(&absolute), dod_bits(&deltas))
}

/// What a real Prometheus 3.16 (from tests/install-deps.sh's cache)
/// stores for the same series: `SERIES` of them remote-written to it,
/// then read back over streamed remote read, which answers the TSDB's own
/// chunks as they are. Bytes per sample of those chunks, as Prometheus cuts
/// them (a histogram chunk ends near 1 KiB, not at 120 samples).
const PROMETHEUS_SERIES: u64 = 20;

fn prometheus_tsdb_bytes() -> anyhow::Result<Option<(usize, usize, usize)>> {
    use prost::Message;
    use strata::proto::prometheus as pb;
    let binary = std::env::var_os("STRATA_TOOLS")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(".cache/strata-tools"))
        })
        .unwrap_or_default()
        .join("prometheus-3.16/prometheus");
    if !binary.exists() {
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(dir.path().join("p.yml"), "global: {}\n")?;
    let mut child = std::process::Command::new(&binary)
        .arg(format!(
            "--config.file={}",
            dir.path().join("p.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let client = reqwest::Client::new();
            let base = format!("http://127.0.0.1:{port}");
            // An encoded protobuf, snappy-compressed, as remote `Write` or
            // `Read` 0.1.0.
            let post = |url: &str, kind: &str, message: Vec<u8>| {
                let body = snap::raw::Encoder::new().compress_vec(&message);
                let request = client
                    .post(url)
                    .header("Content-Type", "application/x-protobuf")
                    .header("Content-Encoding", "snappy")
                    .header(format!("X-Prometheus-Remote-{kind}-Version"), "0.1.0");
                async move { Ok::<_, anyhow::Error>(request.body(body?).send().await?) }
            };
            for _ in 0..300 {
                if let Ok(r) = client.get(format!("{base}/-/ready")).send().await
                    && r.status() == 200
                {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            // The series an hour ago, so that the head takes them.
            let shift = strata::model::now_ms() - 3_600_000 - START_MS;
            let mut written = 0;
            for series in 0..PROMETHEUS_SERIES {
                let samples = latency_series(JITTER_MS, 1_000 + series);
                written += samples.len();
                let request = pb::WriteRequest {
                    timeseries: vec![pb::TimeSeries {
                        labels: vec![
                            pb::Label {
                                name: "__name__".into(),
                                value: "bench_latency_seconds".into(),
                            },
                            pb::Label {
                                name: "series".into(),
                                value: series.to_string(),
                            },
                        ],
                        histograms: samples
                            .iter()
                            .map(|(t, h)| strata::proto::histogram::int_to_proto(t + shift, h))
                            .collect(),
                        ..Default::default()
                    }],
                    metadata: vec![],
                };
                let answer = post(
                    &format!("{base}/api/v1/write"),
                    "Write",
                    request.encode_to_vec(),
                )
                .await?;
                anyhow::ensure!(answer.status().is_success(), "write: {}", answer.status());
            }
            let read = pb::ReadRequest {
                queries: vec![pb::Query {
                    start_timestamp_ms: 0,
                    end_timestamp_ms: i64::MAX,
                    matchers: vec![pb::LabelMatcher {
                        r#type: 0,
                        name: "__name__".into(),
                        value: "bench_latency_seconds".into(),
                    }],
                    hints: None,
                }],
                accepted_response_types: vec![
                    pb::read_request::ResponseType::StreamedXorChunks as i32,
                ],
            };
            let bytes = post(&format!("{base}/api/v1/read"), "Read", read.encode_to_vec())
                .await?
                .bytes()
                .await?;
            // Frames: uvarint length, 4-byte CRC, a ChunkedReadResponse.
            let (mut rest, mut chunk_bytes, mut chunks) = (&bytes[..], 0, 0);
            while !rest.is_empty() {
                let len = prost::encoding::decode_varint(&mut rest)? as usize;
                anyhow::ensure!(rest.len() >= 4 + len, "truncated frame");
                let message = pb::ChunkedReadResponse::decode(&rest[4..4 + len])?;
                rest = &rest[4 + len..];
                for series in message.chunked_series {
                    for chunk in series.chunks {
                        chunk_bytes += chunk.data.len();
                        chunks += 1;
                    }
                }
            }
            Ok(Some((written, chunk_bytes, chunks)))
        });
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn histogram_chunk(c: &mut Criterion) {
    let samples = latency_series(JITTER_MS, 42);
    report(&format!("latency series, ±{JITTER_MS} ms jitter"), &samples);
    report("latency series, on time", &latency_series(0, 42));
    let ours: usize = (0..PROMETHEUS_SERIES)
        .map(|s| {
            encode_int(&latency_series(JITTER_MS, 1_000 + s))
                .bytes()
                .len()
        })
        .sum();
    let n = (PROMETHEUS_SERIES as usize * SAMPLES) as f64;
    match prometheus_tsdb_bytes() {
        Ok(Some((written, bytes, chunks))) => println!(
            "{PROMETHEUS_SERIES} latency series × {SAMPLES} samples: Prometheus 3.16's TSDB \
             {:.2} bytes/sample in {chunks} chunks ({written} samples), Strata's chunks {:.2}",
            bytes as f64 / written as f64,
            ours as f64 / n
        ),
        Ok(None) => {
            println!("Prometheus 3.16 is not built (tests/install-deps.sh): no TSDB figure")
        }
        Err(err) => println!("measuring Prometheus 3.16's TSDB failed: {err:#}"),
    }

    let floats: Vec<(i64, FloatHistogram)> =
        samples.iter().map(|(t, h)| (*t, h.to_float())).collect();
    let int_chunk = encode_int(&samples);
    let float_chunk = encode_float(&floats);

    let mut group = c.benchmark_group("histogram_append");
    group.throughput(Throughput::Elements(SAMPLES as u64));
    group.bench_with_input(BenchmarkId::new("int", SAMPLES), &samples, |b, s| {
        b.iter(|| encode_int(black_box(s)));
    });
    group.bench_with_input(BenchmarkId::new("float", SAMPLES), &floats, |b, s| {
        b.iter(|| encode_float(black_box(s)));
    });
    group.finish();

    let mut group = c.benchmark_group("histogram_iterate");
    group.throughput(Throughput::Elements(SAMPLES as u64));
    group.bench_with_input(
        BenchmarkId::new("int", SAMPLES),
        int_chunk.bytes(),
        |b, bytes| {
            let mut it = HistogramIterator::new(bytes);
            b.iter(|| {
                it.reset(black_box(bytes));
                let mut total = 0u64;
                while let Some((_, h)) = it.next() {
                    total = total.wrapping_add(h.count);
                }
                total
            });
        },
    );
    group.bench_with_input(
        BenchmarkId::new("float", SAMPLES),
        float_chunk.bytes(),
        |b, bytes| {
            let mut it = FloatHistogramIterator::new(bytes);
            b.iter(|| {
                it.reset(black_box(bytes));
                let mut total = 0.0;
                while let Some((_, h)) = it.next() {
                    total += h.count;
                }
                total
            });
        },
    );
    group.finish();
}

criterion_group!(benches, histogram_chunk);
criterion_main!(benches);
