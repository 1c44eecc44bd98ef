//! Native histograms through a real Strata (RF=1): written with remote
//! write 1.0 and 2.0 (integer and float, exponential and custom buckets, a
//! counter reset, gauges, a staleness marker), read back through remote
//! read, then again after a `kill -9` and a restart on the same WAL, bit
//! for bit. Invalid histograms get a 400 naming the series and the defect,
//! and are counted by reason.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::rw::{self, labels, now_ms};
use common::{Strata, http};
use prost::Message;
use strata::model::STALE_NAN_BITS;
use strata::model::histogram::{
    CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, Histogram, NativeHistogram, Span,
};
use strata::proto::histogram::{float_to_proto, from_proto, int_to_proto};
use strata::proto::prometheus::{self as pb, Sample, TimeSeries, WriteRequest};
use strata::proto::write_v2;

fn args() -> Vec<String> {
    vec![
        "--ring.replication-factor=1".into(),
        "--ingester.lifecycler.heartbeat-period=1s".into(),
        "--ring.heartbeat-timeout=10s".into(),
        "--limits.max-native-histogram-buckets=8".into(),
    ]
}

/// Exponential schema 3, three positive and two negative buckets holding
/// `n`, `n+1`, `n+2` and `n`, `n`; a zero bucket of `n`.
fn exponential(n: u64, hint: CounterResetHint) -> Histogram {
    Histogram {
        counter_reset_hint: hint,
        schema: 3,
        zero_threshold: 2f64.powi(-128),
        zero_count: n,
        count: 6 * n + 3,
        sum: n as f64 * 1.25,
        positive_spans: vec![
            Span {
                offset: -1,
                length: 2,
            },
            Span {
                offset: 3,
                length: 1,
            },
        ],
        negative_spans: vec![Span {
            offset: 2,
            length: 2,
        }],
        positive_buckets: vec![n as i64, 1, 1],
        negative_buckets: vec![n as i64, 0],
        custom_values: vec![],
    }
}

/// Custom buckets (schema -53) with bounds 0.1, 0.5, 1: `n` in each of
/// the four buckets.
fn custom(n: u64) -> Histogram {
    Histogram {
        counter_reset_hint: CounterResetHint::Unknown,
        schema: CUSTOM_BUCKETS_SCHEMA,
        zero_threshold: 0.0,
        zero_count: 0,
        count: 4 * n,
        sum: n as f64 * 1.6,
        positive_spans: vec![Span {
            offset: 0,
            length: 4,
        }],
        negative_spans: vec![],
        positive_buckets: vec![n as i64, 0, 0, 0],
        negative_buckets: vec![],
        custom_values: vec![0.1, 0.5, 1.0],
    }
}

fn gauge(v: f64) -> FloatHistogram {
    FloatHistogram {
        counter_reset_hint: CounterResetHint::Gauge,
        schema: 0,
        zero_threshold: 0.001,
        zero_count: 0.5,
        count: 0.5 + 3.0 * v,
        sum: -v,
        positive_spans: vec![Span {
            offset: 1,
            length: 1,
        }],
        negative_spans: vec![Span {
            offset: 0,
            length: 2,
        }],
        positive_buckets: vec![v],
        negative_buckets: vec![v, v],
        custom_values: vec![],
    }
}

fn stale_int() -> Histogram {
    Histogram {
        sum: f64::from_bits(STALE_NAN_BITS),
        ..Histogram::default()
    }
}

/// What was pushed, per metric name: (timestamp, histogram).
type Pushed = Vec<(&'static str, Vec<(i64, NativeHistogram)>)>;

/// Pushes the RW 1.0 part; returns what it holds.
async fn push_v1(url: &str, t0: i64) -> Result<Pushed> {
    let s = |i: i64| t0 + i * 15_000;
    let requests = vec![
        (0, exponential(1, CounterResetHint::Unknown)),
        (1, exponential(3, CounterResetHint::Unknown)),
        (2, exponential(7, CounterResetHint::NotCounterReset)),
        // A counter reset, not hinted: the head detects it.
        (3, exponential(2, CounterResetHint::Unknown)),
        (4, exponential(4, CounterResetHint::Unknown)),
        (5, stale_int()),
        (6, exponential(1, CounterResetHint::Unknown)),
    ];
    let rpc: Vec<(i64, NativeHistogram)> = requests
        .into_iter()
        .map(|(i, h)| (s(i), NativeHistogram::Int(h)))
        .collect();
    let depth: Vec<(i64, NativeHistogram)> = (0..5)
        .map(|i| {
            (
                s(i),
                NativeHistogram::Float(gauge([3.0, 1.0, 4.0, 1.5, 9.0][i as usize])),
            )
        })
        .collect();
    let to_proto = |samples: &[(i64, NativeHistogram)]| -> Vec<pb::Histogram> {
        samples
            .iter()
            .map(|(t, h)| strata::proto::histogram::to_proto(*t, h))
            .collect()
    };
    let request = WriteRequest {
        timeseries: vec![
            TimeSeries {
                labels: labels(&[("__name__", "rpc_duration_seconds"), ("job", "api")]),
                histograms: to_proto(&rpc),
                ..Default::default()
            },
            TimeSeries {
                labels: labels(&[("__name__", "queue_depth"), ("job", "api")]),
                histograms: to_proto(&depth),
                ..Default::default()
            },
        ],
        metadata: vec![],
    };
    let answer = rw::post(
        url,
        Some("team-h"),
        "application/x-protobuf",
        rw::encode(&request),
    )
    .await?;
    ensure!(answer.status == 204, "{} {}", answer.status, answer.body);
    Ok(vec![("rpc_duration_seconds", rpc), ("queue_depth", depth)])
}

/// Pushes the RW 2.0 part (custom buckets, integer and float, and one
/// float series); returns the histograms it holds.
async fn push_v2(url: &str, t0: i64) -> Result<Pushed> {
    let s = |i: i64| t0 + i * 15_000;
    let latency: Vec<(i64, NativeHistogram)> = (0..4)
        .map(|i| (s(i), NativeHistogram::Int(custom(1 + i as u64 * 2))))
        .collect();
    let ratio: Vec<(i64, NativeHistogram)> = (0..3)
        .map(|i| {
            let mut h = custom(1).to_float();
            h.positive_buckets = vec![0.5 * i as f64, 0.25, 0.0, 1.0];
            h.count = h.positive_buckets.iter().sum();
            (s(i), NativeHistogram::Float(h))
        })
        .collect();
    let v2 = |h: pb::Histogram| write_v2::Histogram {
        count: h.count.map(|c| match c {
            pb::histogram::Count::CountInt(v) => write_v2::histogram::Count::CountInt(v),
            pb::histogram::Count::CountFloat(v) => write_v2::histogram::Count::CountFloat(v),
        }),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: h.zero_count.map(|c| match c {
            pb::histogram::ZeroCount::ZeroCountInt(v) => {
                write_v2::histogram::ZeroCount::ZeroCountInt(v)
            }
            pb::histogram::ZeroCount::ZeroCountFloat(v) => {
                write_v2::histogram::ZeroCount::ZeroCountFloat(v)
            }
        }),
        negative_spans: vec![],
        negative_deltas: h.negative_deltas,
        negative_counts: h.negative_counts,
        positive_spans: h
            .positive_spans
            .into_iter()
            .map(|s| write_v2::BucketSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect(),
        positive_deltas: h.positive_deltas,
        positive_counts: h.positive_counts,
        reset_hint: h.reset_hint,
        timestamp: h.timestamp,
        custom_values: h.custom_values,
    };
    let request = write_v2::Request {
        symbols: vec![
            "".into(),
            "__name__".into(),
            "latency_seconds".into(),
            "job".into(),
            "web".into(),
            "cache_ratio".into(),
            "up".into(),
        ],
        timeseries: vec![
            write_v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                histograms: latency
                    .iter()
                    .map(|(t, h)| v2(strata::proto::histogram::to_proto(*t, h)))
                    .collect(),
                created_timestamp: t0 - 60_000,
                ..Default::default()
            },
            write_v2::TimeSeries {
                labels_refs: vec![1, 5, 3, 4],
                histograms: ratio
                    .iter()
                    .map(|(t, h)| v2(strata::proto::histogram::to_proto(*t, h)))
                    .collect(),
                ..Default::default()
            },
            write_v2::TimeSeries {
                labels_refs: vec![1, 6, 3, 4],
                samples: vec![write_v2::Sample {
                    value: 1.0,
                    timestamp: t0,
                }],
                ..Default::default()
            },
        ],
    };
    let body = snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())?;
    let answer = rw::post(
        url,
        Some("team-h"),
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        body,
    )
    .await?;
    ensure!(answer.status == 204, "{} {}", answer.status, answer.body);
    ensure!(answer.headers["X-Prometheus-Remote-Write-Samples-Written"] == "1");
    ensure!(
        answer.headers["X-Prometheus-Remote-Write-Histograms-Written"] == "7",
        "{:?}",
        answer.headers
    );
    Ok(vec![("latency_seconds", latency), ("cache_ratio", ratio)])
}

/// A SAMPLES remote read of every series of `tenant` in `[start, end]`.
async fn read(strata: &Strata, tenant: &str, start: i64, end: i64) -> Result<Vec<TimeSeries>> {
    let request = pb::ReadRequest {
        queries: vec![pb::Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers: vec![pb::LabelMatcher {
                r#type: pb::label_matcher::Type::Re as i32,
                name: "job".into(),
                value: ".+".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![],
    };
    let body = snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())?;
    let response = http()
        .post(strata.url("/api/v1/read"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .header("X-Scope-OrgID", tenant)
        .body(body)
        .send()
        .await?;
    ensure!(response.status() == 200, "read: {}", response.status());
    let raw = snap::raw::Decoder::new().decompress_vec(&response.bytes().await?)?;
    let mut decoded = pb::ReadResponse::decode(raw.as_slice())?;
    ensure!(decoded.results.len() == 1);
    Ok(decoded.results.remove(0).timeseries)
}

/// `h` as read back: a float histogram, its hint as given.
fn expected(h: &NativeHistogram, hint: CounterResetHint) -> FloatHistogram {
    FloatHistogram {
        counter_reset_hint: hint,
        ..h.to_float()
    }
}

/// Checks one series read back against what was pushed: every histogram
/// bit for bit as a float histogram, with the hints the chunks give.
fn check_series(
    got: &TimeSeries,
    pushed: &[(i64, NativeHistogram)],
    hints: &[CounterResetHint],
) -> Result<()> {
    ensure!(
        got.samples.is_empty(),
        "no float samples: {:?}",
        got.samples
    );
    ensure!(
        got.histograms.len() == pushed.len(),
        "{} histograms, pushed {}",
        got.histograms.len(),
        pushed.len()
    );
    for ((proto, (t, want)), hint) in got.histograms.iter().zip(pushed).zip(hints) {
        ensure!(
            proto.timestamp == *t,
            "timestamp {} != {t}",
            proto.timestamp
        );
        let Ok(NativeHistogram::Float(h)) = from_proto(proto) else {
            anyhow::bail!("a float histogram at {t}: {proto:?}");
        };
        if want.is_stale_marker() {
            ensure!(h.is_stale_marker(), "stale marker at {t}: {h:?}");
            continue;
        }
        let want = expected(want, *hint);
        ensure!(h.bitwise_eq(&want), "at {t}:\n got {h:?}\nwant {want:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_round_trip_through_remote_read_and_wal_replay() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut strata = Strata::spawn_in("strata", dir.path(), &args())?;
    strata.wait_ready().await?;
    let url = strata.url("/api/v1/push");
    let t0 = now_ms() - 10 * 60_000;
    let mut pushed = push_v1(&url, t0).await?;
    pushed.extend(push_v2(&url, t0).await?);
    let (start, end) = (t0 - 1000, t0 + 200_000);

    use CounterResetHint::{CounterReset as Reset, Gauge, NotCounterReset as Not, Unknown};
    let hints: Vec<(&str, Vec<CounterResetHint>)> = vec![
        // A new chunk at the reset, and after the staleness marker.
        (
            "rpc_duration_seconds",
            vec![Unknown, Not, Not, Reset, Not, Not, Unknown],
        ),
        ("queue_depth", vec![Gauge; 5]),
        ("latency_seconds", vec![Unknown, Not, Not, Not]),
        ("cache_ratio", vec![Unknown, Not, Not]),
    ];
    let check = |series: &[TimeSeries]| -> Result<()> {
        let name = |ts: &TimeSeries| {
            ts.labels
                .iter()
                .find(|l| l.name == "__name__")
                .map(|l| l.value.clone())
                .unwrap_or_default()
        };
        ensure!(series.len() == 5, "{} series", series.len());
        for (metric, samples) in &pushed {
            let got = series
                .iter()
                .find(|s| name(s) == *metric)
                .with_context(|| format!("series {metric} read back"))?;
            let hints = &hints.iter().find(|(m, _)| m == metric).context("hints")?.1;
            check_series(got, samples, hints).with_context(|| metric.to_string())?;
        }
        let up = series.iter().find(|s| name(s) == "up").context("up")?;
        ensure!(
            up.samples
                == vec![Sample {
                    value: 1.0,
                    timestamp: t0
                }]
                && up.histograms.is_empty()
        );
        Ok(())
    };
    let before = read(&strata, "team-h", start, end).await?;
    check(&before)?;

    // Histogram-only series are in the metadata API.
    let series: serde_json::Value = http()
        .get(strata.url("/prometheus/api/v1/series"))
        .query(&[
            ("match[]", "{job=\"api\"}"),
            ("start", &(start / 1000).to_string()),
            ("end", &(end / 1000).to_string()),
        ])
        .header("X-Scope-OrgID", "team-h")
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        series["data"].as_array().map(Vec::len) == Some(2),
        "{series}"
    );

    // kill -9, restart on the same WAL: the very same answer.
    strata.guard.kill9();
    let mut restarted = Strata::spawn_in("strata-restarted", dir.path(), &args())?;
    restarted.wait_ready().await?;
    let after = read(&restarted, "team-h", start, end).await?;
    check(&after)?;
    let bytes = |series: &[TimeSeries]| -> Vec<Vec<u8>> {
        series.iter().map(|s| s.encode_to_vec()).collect()
    };
    ensure!(bytes(&before) == bytes(&after), "replay changed the answer");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_histograms_get_a_precise_400_and_are_counted() -> Result<()> {
    let mut strata = Strata::spawn("strata", &args())?;
    strata.wait_ready().await?;
    let url = strata.url("/api/v1/push");
    let t0 = now_ms() - 60_000;
    let good = exponential(1, CounterResetHint::Unknown);
    let cases: Vec<(&str, Histogram, &str, &str)> = vec![
        (
            "bucket_mismatch",
            Histogram {
                positive_buckets: vec![1, 1],
                ..good.clone()
            },
            "native_histogram_spans_buckets_mismatch",
            "positive spans cover 3 buckets but the histogram has 2 positive buckets",
        ),
        (
            "bad_schema",
            Histogram {
                schema: 12,
                ..good.clone()
            },
            "invalid_native_histogram_schema",
            "schema 12 is out of range",
        ),
        (
            "negative_bucket",
            Histogram {
                positive_buckets: vec![1, -2, 1],
                ..good.clone()
            },
            "native_histogram_negative_count",
            "positive bucket 1 has a negative count: -1",
        ),
        (
            "count_mismatch",
            Histogram {
                count: 100,
                ..good.clone()
            },
            "native_histogram_count_mismatch",
            "count 100 is not the zero and bucket counts' sum 9",
        ),
        (
            "negative_span_offset",
            Histogram {
                positive_spans: vec![
                    Span {
                        offset: 0,
                        length: 2,
                    },
                    Span {
                        offset: -3,
                        length: 1,
                    },
                ],
                ..good.clone()
            },
            "native_histogram_bad_spans",
            "positive span 1 has offset -3",
        ),
    ];
    for (name, bad, reason, message) in &cases {
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: labels(&[("__name__", name), ("job", "bad")]),
                histograms: vec![int_to_proto(t0, &good), int_to_proto(t0 + 1000, bad)],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let answer = rw::post(
            &url,
            Some("team-x"),
            "application/x-protobuf",
            rw::encode(&request),
        )
        .await?;
        ensure!(
            answer.status == 400,
            "{name}: {} {}",
            answer.status,
            answer.body
        );
        ensure!(
            answer
                .body
                .contains(&format!("series {name}{{job=\"bad\"}}"))
                && answer.body.contains(message)
                && answer.body.contains(&format!("timestamp {} ms", t0 + 1000)),
            "{name}: {}",
            answer.body
        );
        ensure!(
            strata.discarded(reason, "team-x").await? == 1.0,
            "{name}: {reason} counted"
        );
    }

    // Over the bucket limit (8, flag above) at schema -4 still: refused.
    let wide = Histogram {
        schema: -4,
        zero_count: 0,
        count: 10,
        sum: 1.0,
        positive_spans: vec![
            Span {
                offset: 0,
                length: 5,
            },
            Span {
                offset: 10,
                length: 5,
            },
        ],
        positive_buckets: vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        negative_spans: vec![],
        negative_buckets: vec![],
        ..good.clone()
    };
    // Over the limit but reducible: stored at a lower resolution.
    let fine = Histogram {
        schema: 2,
        zero_count: 0,
        count: 10,
        sum: 1.0,
        positive_spans: vec![Span {
            offset: 0,
            length: 10,
        }],
        positive_buckets: vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        negative_spans: vec![],
        negative_buckets: vec![],
        ..good.clone()
    };
    let request = WriteRequest {
        timeseries: vec![
            TimeSeries {
                labels: labels(&[("__name__", "wide"), ("job", "bad")]),
                histograms: vec![int_to_proto(t0, &wide)],
                ..Default::default()
            },
            TimeSeries {
                labels: labels(&[("__name__", "fine"), ("job", "bad")]),
                histograms: vec![int_to_proto(t0, &fine)],
                ..Default::default()
            },
            // A float sample and a histogram at one timestamp: the
            // histogram is refused, as Prometheus refuses the second.
            TimeSeries {
                labels: labels(&[("__name__", "both"), ("job", "bad")]),
                samples: vec![Sample {
                    value: 2.0,
                    timestamp: t0,
                }],
                histograms: vec![float_to_proto(t0, &gauge(1.0))],
                ..Default::default()
            },
        ],
        metadata: vec![],
    };
    let answer = rw::post(
        &url,
        Some("team-x"),
        "application/x-protobuf",
        rw::encode(&request),
    )
    .await?;
    ensure!(answer.status == 400, "{} {}", answer.status, answer.body);
    ensure!(
        answer
            .body
            .contains("it has 10 buckets, the limit is 8 (limits.max_native_histogram_buckets"),
        "{}",
        answer.body
    );
    ensure!(
        answer.body.contains("series both{job=\"bad\"}")
            && answer
                .body
                .contains("already stored with a different value"),
        "{}",
        answer.body
    );
    ensure!(
        strata
            .discarded("max_native_histogram_buckets", "team-x")
            .await?
            == 1.0
    );
    ensure!(
        strata
            .discarded("new_value_for_timestamp", "team-x")
            .await?
            == 1.0
    );

    // What was valid is stored: the good histogram of each case, the
    // reduced one, the float sample.
    let stored = tokio::time::timeout(
        Duration::from_secs(10),
        read(&strata, "team-x", t0 - 1000, t0 + 10_000),
    )
    .await??;
    ensure!(stored.len() == cases.len() + 2, "{} series", stored.len());
    let find = |name: &str| {
        stored
            .iter()
            .find(|s| s.labels.iter().any(|l| l.value == name))
            .with_context(|| format!("{name} stored"))
    };
    let reduced = from_proto(&find("fine")?.histograms[0]).map_err(anyhow::Error::msg)?;
    let NativeHistogram::Float(reduced) = reduced else {
        anyhow::bail!("read back as float");
    };
    ensure!(
        reduced.schema < 2 && reduced.positive_buckets.len() <= 8 && reduced.count == 10.0,
        "{reduced:?}"
    );
    let both = find("both")?;
    ensure!(both.samples.len() == 1 && both.histograms.is_empty());
    for (name, ..) in &cases {
        ensure!(
            find(name)?.histograms.len() == 1,
            "{name}: the good one stays"
        );
    }
    Ok(())
}
