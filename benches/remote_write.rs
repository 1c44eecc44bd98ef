//! Remote-write decoding per sample: snappy + protobuf (1.0 and 2.0), and
//! the distributor's label validation, on a realistic request (2000 series
//! of a typical scrape, one sample each).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use strata::distributor::decode::{Protocol, decode, decompress};
use strata::distributor::histogram::validate_histograms;
use strata::distributor::validate::{validate_labels, validate_samples};
use strata::limits::Limits;
use strata::model::histogram::{Histogram, Span};
use strata::proto::histogram::int_to_proto;
use strata::proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use strata::proto::write_v2;

const SERIES: usize = 2000;

fn labels(i: usize) -> Vec<(String, String)> {
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let codes = ["200", "404", "500"];
    vec![
        ("__name__".into(), "http_requests_total".into()),
        ("code".into(), codes[i % 3].into()),
        ("handler".into(), format!("/api/v1/resource/{}", i % 50)),
        (
            "instance".into(),
            format!("10.0.{}.{}:9090", i / 250, i % 250),
        ),
        ("job".into(), "api-server".into()),
        ("method".into(), methods[i % 4].into()),
    ]
}

fn v1_request() -> WriteRequest {
    WriteRequest {
        timeseries: (0..SERIES)
            .map(|i| TimeSeries {
                labels: labels(i)
                    .into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect(),
                samples: vec![Sample {
                    value: (i * 17) as f64,
                    timestamp: 1_700_000_000_000 + i as i64,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
}

/// The same series, each with one native histogram of 24 buckets (schema
/// 3, two positive spans, one negative) instead of a float sample.
fn v1_histogram_request() -> WriteRequest {
    let mut request = v1_request();
    for (i, series) in request.timeseries.iter_mut().enumerate() {
        let n = i as i64 % 7;
        let h = Histogram {
            schema: 3,
            zero_threshold: 2f64.powi(-128),
            count: (24 * (n + 1)) as u64,
            sum: 12.5,
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
            positive_buckets: std::iter::once(n + 1).chain([0; 19]).collect(),
            negative_buckets: std::iter::once(n + 1).chain([0; 3]).collect(),
            ..Histogram::default()
        };
        series.samples.clear();
        series.histograms = vec![int_to_proto(1_700_000_000_000 + i as i64, &h)];
    }
    request
}

fn v2_request() -> write_v2::Request {
    let mut symbols: Vec<String> = vec![String::new()];
    let mut index = std::collections::HashMap::new();
    let mut intern = |s: String| -> u32 {
        *index.entry(s.clone()).or_insert_with(|| {
            symbols.push(s);
            (symbols.len() - 1) as u32
        })
    };
    let timeseries = (0..SERIES)
        .map(|i| write_v2::TimeSeries {
            labels_refs: labels(i)
                .into_iter()
                .flat_map(|(n, v)| [intern(n), intern(v)])
                .collect(),
            samples: vec![write_v2::Sample {
                value: (i * 17) as f64,
                timestamp: 1_700_000_000_000 + i as i64,
            }],
            ..Default::default()
        })
        .collect();
    write_v2::Request {
        symbols,
        timeseries,
    }
}

fn bench(c: &mut Criterion) {
    let v1 = snap::raw::Encoder::new()
        .compress_vec(&v1_request().encode_to_vec())
        .expect("compresses");
    let v2 = snap::raw::Encoder::new()
        .compress_vec(&v2_request().encode_to_vec())
        .expect("compresses");
    println!(
        "request of {SERIES} samples: 1.0 {} bytes compressed, 2.0 {} bytes compressed",
        v1.len(),
        v2.len()
    );
    let mut group = c.benchmark_group("remote_write_decode");
    group.throughput(Throughput::Elements(SERIES as u64));
    let mut scratch = Vec::new();
    group.bench_function("v1_snappy_protobuf", |b| {
        b.iter(|| {
            decompress(&v1, 10 << 20, &mut scratch).expect("decompresses");
            decode(Protocol::V1, &scratch).expect("decodes")
        })
    });
    group.bench_function("v2_snappy_protobuf_symbols", |b| {
        b.iter(|| {
            decompress(&v2, 10 << 20, &mut scratch).expect("decompresses");
            decode(Protocol::V2, &scratch).expect("decodes")
        })
    });
    let limits = Limits::default();
    let decoded = v1_request();
    group.bench_function("validate", |b| {
        b.iter_batched(
            || decoded.timeseries.clone(),
            |mut series| {
                for s in &mut series {
                    validate_labels(s, &limits).expect("valid");
                    validate_samples(s, &limits, 1_700_000_000_000);
                }
                series
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();

    // Native histograms: decoding and validating one sample each.
    let histograms = v1_histogram_request();
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&histograms.encode_to_vec())
        .expect("compresses");
    println!(
        "request of {SERIES} native histograms (24 buckets): {} bytes compressed",
        compressed.len()
    );
    let mut group = c.benchmark_group("remote_write_histograms");
    group.throughput(Throughput::Elements(SERIES as u64));
    group.bench_function("v1_snappy_protobuf", |b| {
        b.iter(|| {
            decompress(&compressed, 10 << 20, &mut scratch).expect("decompresses");
            decode(Protocol::V1, &scratch).expect("decodes")
        })
    });
    group.bench_function("validate", |b| {
        b.iter_batched(
            || histograms.timeseries.clone(),
            |mut series| {
                for s in &mut series {
                    validate_labels(s, &limits).expect("valid");
                    validate_samples(s, &limits, 1_700_000_000_000);
                    assert!(validate_histograms(s, &limits).is_empty());
                }
                series
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
