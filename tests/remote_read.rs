//! Remote read (`/api/v1/read`): the two response types decoded by hand
//! (snappy `ReadResponse`; CRC-checked frames of XOR chunks) against what
//! was pushed, tenant isolation, clear refusals; then Debian's Prometheus
//! 2.42 reading Strata through `remote_read` and answering PromQL with
//! Strata's samples.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::rw::{self, now_ms};
use common::{Sender, Strata, eventually, http};
use prost::Message;
use serde_json::Value as Json;
use strata::chunk::XorChunk;
use strata::proto::prometheus::{self as pb, label_matcher::Type, read_request::ResponseType};

const STREAMED: &str = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

/// Labels (sorted by name) to samples; values kept as bits so NaN compares.
type Series = BTreeMap<Vec<(String, String)>, Vec<(i64, u64)>>;

struct Pushed {
    labels: Vec<(&'static str, &'static str)>,
    samples: Vec<(i64, f64)>,
}

/// team-a's series: 300 one-second samples (three chunks' worth), a sparse
/// jittered one, and one with special values.
fn team_a(t0: i64) -> Vec<Pushed> {
    vec![
        Pushed {
            labels: vec![
                ("__name__", "rr_requests_total"),
                ("instance", "i1"),
                ("job", "api"),
            ],
            samples: (0..300).map(|i| (t0 + i * 1000, i as f64 * 1.5)).collect(),
        },
        Pushed {
            labels: vec![
                ("__name__", "rr_requests_total"),
                ("instance", "i2"),
                ("job", "api"),
            ],
            samples: (0..50)
                .map(|i| (t0 + i * 6000 + 7, (i * i) as f64 / 3.0))
                .collect(),
        },
        Pushed {
            labels: vec![("__name__", "rr_temperature"), ("job", "api")],
            samples: [0.1, -2.5, 1e300, f64::NAN, f64::INFINITY, 1e-7, 42.0]
                .iter()
                .enumerate()
                .map(|(i, v)| (t0 + 500 + i as i64 * 10_000, *v))
                .collect(),
        },
    ]
}

/// team-b's: the same labels as one of team-a's series, other values.
fn team_b(t0: i64) -> Vec<Pushed> {
    vec![Pushed {
        labels: vec![
            ("__name__", "rr_requests_total"),
            ("instance", "i1"),
            ("job", "api"),
        ],
        samples: (0..300)
            .map(|i| (t0 + i * 1000, 1000.0 + i as f64))
            .collect(),
    }]
}

async fn push(strata: &Strata, tenant: &str, series: &[Pushed]) -> Result<()> {
    let answer = rw::push(
        &strata.url("/api/v1/push"),
        tenant,
        series
            .iter()
            .map(|s| rw::series(&s.labels, &s.samples))
            .collect(),
    )
    .await?;
    ensure!(
        answer.status / 100 == 2,
        "push: {} {}",
        answer.status,
        answer.body
    );
    Ok(())
}

/// What a query over `pushed` must return: series matching `keep`, samples in
/// `[start, end]`, series without samples left out.
fn expected(pushed: &[Pushed], keep: impl Fn(&Pushed) -> bool, start: i64, end: i64) -> Series {
    pushed
        .iter()
        .filter(|s| keep(s))
        .map(|s| {
            let labels = s
                .labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            let samples = s
                .samples
                .iter()
                .filter(|(t, _)| *t >= start && *t <= end)
                .map(|(t, v)| (*t, v.to_bits()))
                .collect::<Vec<_>>();
            (labels, samples)
        })
        .filter(|(_, samples)| !samples.is_empty())
        .collect()
}

/// The first difference between two reads, briefly.
fn diff(got: &[Series], want: &[Series]) -> String {
    if got.len() != want.len() {
        return format!("{} results, want {}", got.len(), want.len());
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (gk, wk): (Vec<_>, Vec<_>) = (g.keys().collect(), w.keys().collect());
        if gk != wk {
            return format!("query {i}: series {gk:?}, want {wk:?}");
        }
        for (labels, samples) in w {
            let theirs = &g[labels];
            if theirs != samples {
                let at = theirs.iter().zip(samples).position(|(a, b)| a != b);
                return format!(
                    "query {i}, {labels:?}: {} samples, want {}; first difference at {at:?}: {:?} vs {:?}",
                    theirs.len(),
                    samples.len(),
                    at.map(|k| theirs[k]),
                    at.map(|k| samples[k]),
                );
            }
        }
    }
    "none".to_string()
}

fn matcher(kind: Type, name: &str, value: &str) -> pb::LabelMatcher {
    pb::LabelMatcher {
        r#type: kind as i32,
        name: name.into(),
        value: value.into(),
    }
}

fn query(start: i64, end: i64, matchers: Vec<pb::LabelMatcher>) -> pb::Query {
    pb::Query {
        start_timestamp_ms: start,
        end_timestamp_ms: end,
        matchers,
        hints: None,
    }
}

fn labels_of(labels: Vec<pb::Label>) -> Vec<(String, String)> {
    labels.into_iter().map(|l| (l.name, l.value)).collect()
}

async fn post_read(
    url: &str,
    tenant: Option<&str>,
    queries: Vec<pb::Query>,
    accepted: Vec<ResponseType>,
) -> Result<reqwest::Response> {
    let request = pb::ReadRequest {
        queries,
        accepted_response_types: accepted.into_iter().map(|t| t as i32).collect(),
    };
    let body = snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())?;
    let mut post = http()
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .body(body);
    if let Some(tenant) = tenant {
        post = post.header("X-Scope-OrgID", tenant);
    }
    Ok(post.send().await?)
}

/// A SAMPLES read: one `Series` per query.
async fn read_samples(url: &str, tenant: &str, queries: Vec<pb::Query>) -> Result<Vec<Series>> {
    let n = queries.len();
    let response = post_read(url, Some(tenant), queries, vec![]).await?;
    ensure!(response.status() == 200, "read: {}", response.status());
    let headers = response.headers().clone();
    ensure!(headers["content-type"] == "application/x-protobuf");
    ensure!(headers["content-encoding"] == "snappy");
    let raw = snap::raw::Decoder::new().decompress_vec(&response.bytes().await?)?;
    let decoded = pb::ReadResponse::decode(raw.as_slice())?;
    ensure!(decoded.results.len() == n, "one result per query");
    let mut out = Vec::new();
    for result in decoded.results {
        let mut series = Series::new();
        let mut order = Vec::new();
        for ts in result.timeseries {
            let labels = labels_of(ts.labels);
            order.push(labels.clone());
            let samples: Vec<(i64, u64)> = ts
                .samples
                .iter()
                .map(|s| (s.timestamp, s.value.to_bits()))
                .collect();
            ensure!(
                samples.windows(2).all(|w| w[0].0 < w[1].0),
                "samples sorted by time"
            );
            ensure!(series.insert(labels, samples).is_none(), "series repeated");
        }
        ensure!(order.is_sorted(), "series sorted by labels: {order:?}");
        out.push(series);
    }
    Ok(out)
}

/// A STREAMED_XOR_CHUNKS read, decoded frame by frame: checks every CRC,
/// one series per frame, frames in query order, chunks of at most 120
/// samples whose min/max times are their first/last sample's.
async fn read_streamed(url: &str, tenant: &str, queries: Vec<pb::Query>) -> Result<Vec<Series>> {
    let n = queries.len();
    let response = post_read(
        url,
        Some(tenant),
        queries,
        vec![ResponseType::StreamedXorChunks, ResponseType::Samples],
    )
    .await?;
    ensure!(response.status() == 200, "read: {}", response.status());
    ensure!(response.headers()["content-type"] == STREAMED);
    ensure!(response.headers().get("content-encoding").is_none());
    let body = response.bytes().await?;
    let mut out = vec![Series::new(); n];
    let mut rest: &[u8] = &body;
    let mut last_index = 0;
    let mut frames = 0;
    while !rest.is_empty() {
        let len = prost::encoding::decode_varint(&mut rest).context("frame length")? as usize;
        ensure!(rest.len() >= 4 + len, "truncated frame");
        let crc = u32::from_be_bytes(rest[..4].try_into()?);
        let message = &rest[4..4 + len];
        ensure!(
            crc32c::crc32c(message) == crc,
            "frame {frames}: CRC mismatch"
        );
        rest = &rest[4 + len..];
        frames += 1;
        let frame = pb::ChunkedReadResponse::decode(message)?;
        ensure!(frame.chunked_series.len() == 1, "one series per frame");
        let index = usize::try_from(frame.query_index)?;
        ensure!(
            index < n && index >= last_index,
            "query index {index} in order"
        );
        last_index = index;
        let series = frame.chunked_series.into_iter().next().context("series")?;
        let samples = out[index].entry(labels_of(series.labels)).or_default();
        for chunk in series.chunks {
            ensure!(chunk.r#type == pb::chunk::Encoding::Xor as i32, "XOR chunk");
            let decoded: Vec<(i64, f64)> = XorChunk::from_bytes(chunk.data)?.iter().collect();
            ensure!(
                !decoded.is_empty() && decoded.len() <= 120,
                "{}",
                decoded.len()
            );
            ensure!(decoded[0].0 == chunk.min_time_ms);
            ensure!(decoded[decoded.len() - 1].0 == chunk.max_time_ms);
            samples.extend(decoded.into_iter().map(|(t, v)| (t, v.to_bits())));
        }
    }
    for series in &out {
        for samples in series.values() {
            ensure!(
                samples.windows(2).all(|w| w[0].0 < w[1].0),
                "sorted, no repeats"
            );
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_read_returns_what_was_pushed_per_tenant() -> Result<()> {
    let mut strata = Strata::spawn("strata", &["--ring.replication-factor=1".into()])?;
    strata.wait_ready().await?;
    let t0 = (now_ms() - 360_000) / 1000 * 1000;
    let a = team_a(t0);
    let b = team_b(t0);
    push(&strata, "team-a", &a).await?;
    push(&strata, "team-b", &b).await?;
    let end = t0 + 300_000;

    let queries = || {
        vec![
            query(
                t0,
                end,
                vec![matcher(Type::Eq, "__name__", "rr_requests_total")],
            ),
            // Both ends included; anchored regexes ("i" matches no instance).
            query(
                t0 + 10_000,
                t0 + 130_007,
                vec![
                    matcher(Type::Re, "__name__", "rr_.+"),
                    matcher(Type::Nre, "instance", "i"),
                    matcher(Type::Neq, "job", "web"),
                ],
            ),
            query(t0, end, vec![matcher(Type::Eq, "job", "nothing")]),
            query(
                t0,
                end,
                vec![
                    matcher(Type::Eq, "__name__", "rr_temperature"),
                    matcher(Type::Eq, "instance", ""),
                ],
            ),
        ]
    };
    let want_a = vec![
        expected(&a, |s| s.labels[0].1 == "rr_requests_total", t0, end),
        expected(&a, |_| true, t0 + 10_000, t0 + 130_007),
        Series::new(),
        expected(&a, |s| s.labels[0].1 == "rr_temperature", t0, end),
    ];
    ensure!(want_a[0].values().map(Vec::len).sum::<usize>() == 350);
    ensure!(want_a[1].len() == 3 && want_a[3].len() == 1);
    for path in ["/api/v1/read", "/prometheus/api/v1/read"] {
        let url = strata.url(path);
        let got = read_samples(&url, "team-a", queries()).await?;
        ensure!(got == want_a, "{path} SAMPLES: {}", diff(&got, &want_a));
        let got = read_streamed(&url, "team-a", queries()).await?;
        ensure!(got == want_a, "{path} STREAMED: {}", diff(&got, &want_a));
    }

    // team-b sees its own series, none of team-a's, in both response types.
    let url = strata.url("/api/v1/read");
    let everything = || {
        vec![query(
            0,
            i64::MAX,
            vec![matcher(Type::Re, "__name__", ".+")],
        )]
    };
    let want_b = vec![expected(&b, |_| true, 0, i64::MAX)];
    let want_a_all = vec![expected(&a, |_| true, 0, i64::MAX)];
    for (tenant, want) in [("team-b", &want_b), ("team-a", &want_a_all)] {
        let got = read_samples(&url, tenant, everything()).await?;
        ensure!(&got == want, "{tenant} SAMPLES: {}", diff(&got, want));
        let got = read_streamed(&url, tenant, everything()).await?;
        ensure!(&got == want, "{tenant} STREAMED: {}", diff(&got, want));
    }
    ensure!(
        read_samples(&url, "team-c", everything()).await? == vec![Series::new()],
        "an unknown tenant has nothing"
    );

    // Refusals: no tenant 401; bad snappy, bad protobuf, bad regex and no
    // supported response type 400, as plain text.
    let response = post_read(&url, None, everything(), vec![]).await?;
    ensure!(response.status() == 401, "{}", response.status());
    for (what, body) in [
        ("not snappy", b"\xff\xff\xff\xff\xff\xff".to_vec()),
        (
            "not protobuf",
            snap::raw::Encoder::new().compress_vec(b"\x0a\xff\xff\xff")?,
        ),
    ] {
        let response = http()
            .post(&url)
            .header("X-Scope-OrgID", "team-a")
            .body(body)
            .send()
            .await?;
        ensure!(response.status() == 400, "{what}: {}", response.status());
        let text = response.text().await?;
        ensure!(
            text.contains("prometheus.ReadRequest") || text.contains("snappy"),
            "{what}: {text}"
        );
    }
    let bad_regex = vec![query(0, 1, vec![matcher(Type::Re, "job", "(")])];
    let response = post_read(&url, Some("team-a"), bad_regex, vec![]).await?;
    ensure!(response.status() == 400, "{}", response.status());
    ensure!(
        response
            .text()
            .await?
            .contains("invalid regular expression")
    );
    let request = pb::ReadRequest {
        queries: everything(),
        accepted_response_types: vec![5],
    };
    let response = http()
        .post(&url)
        .header("X-Scope-OrgID", "team-a")
        .body(snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())?)
        .send()
        .await?;
    ensure!(response.status() == 400, "{}", response.status());
    Ok(())
}

/// `data.result` of an API answer, by metric: timestamps as numbers, values
/// as the API's strings.
fn by_metric(answer: &Json) -> Result<Points> {
    ensure!(answer["status"] == "success", "{answer}");
    let mut out = BTreeMap::new();
    for item in answer["data"]["result"].as_array().context("result")? {
        let point = |p: &Json| -> Result<(f64, String)> {
            Ok((
                p[0].as_f64().context("timestamp")?,
                p[1].as_str().context("value")?.to_string(),
            ))
        };
        let points = if let Some(values) = item["values"].as_array() {
            values.iter().map(point).collect::<Result<Vec<_>>>()?
        } else {
            vec![point(&item["value"])?]
        };
        if out.insert(item["metric"].to_string(), points).is_some() {
            bail!("metric repeated: {item}");
        }
    }
    Ok(out)
}

type Points = BTreeMap<String, Vec<(f64, String)>>;

/// The first difference between two API results, briefly.
fn map_diff(a: &Points, b: &Points) -> String {
    let (ak, bk): (Vec<_>, Vec<_>) = (a.keys().collect(), b.keys().collect());
    if ak != bk {
        return format!("series {ak:?} vs {bk:?}");
    }
    for (metric, points) in a {
        let other = &b[metric];
        if points != other {
            let at = points.iter().zip(other).position(|(x, y)| x != y);
            return format!(
                "{metric}: {} points vs {}; first difference at {at:?}: {:?} vs {:?}",
                points.len(),
                other.len(),
                at.map(|k| &points[k]),
                at.map(|k| &other[k]),
            );
        }
    }
    "none".to_string()
}

async fn api(url: &str, params: &[(&str, String)], tenant: Option<&str>) -> Result<Json> {
    let mut request = http().get(url).query(params);
    if let Some(tenant) = tenant {
        request = request.header("X-Scope-OrgID", tenant);
    }
    Ok(request.send().await?.json().await?)
}

fn seconds(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_answers_promql_from_strata_over_remote_read() -> Result<()> {
    let mut strata = Strata::spawn(
        "strata",
        &[
            "--ring.replication-factor=1".into(),
            "--auth.basic-auth-tenant=true".into(),
        ],
    )?;
    strata.wait_ready().await?;
    let t0 = (now_ms() - 360_000) / 1000 * 1000;
    let a = team_a(t0);
    push(&strata, "team-a", &a).await?;
    push(&strata, "team-b", &team_b(t0)).await?;

    // Prometheus with no data of its own: everything it answers comes from
    // Strata, as tenant team-a (Debian's 2.42 sends no custom headers).
    let port = common::free_port();
    let config = format!(
        "remote_read:\n  - url: {}\n    read_recent: true\n    basic_auth: {{username: team-a, password: x}}\n",
        strata.url("/api/v1/read")
    );
    let prometheus = Sender::prometheus("prometheus", port, &config).await?;
    let prom = |path: &str| format!("http://127.0.0.1:{port}{path}");

    // Evaluation times off the sample grid: Prometheus 2.42's ranges are
    // closed, ours left-open, and they agree there.
    let at = t0 + 299_500;
    let instant = |expr: &str| vec![("query", expr.to_string()), ("time", seconds(at))];
    let raw = eventually(
        "Prometheus reads Strata",
        Duration::from_secs(20),
        || async {
            let answer = api(
                &prom("/api/v1/query"),
                &instant("rr_requests_total[5m]"),
                None,
            )
            .await?;
            let got = by_metric(&answer)?;
            Ok((!got.is_empty()).then_some(got))
        },
    )
    .await
    .with_context(|| prometheus.guard.log_text())?;

    // The raw samples are exactly team-a's (team-b has the same labels with
    // other values).
    let mut want = BTreeMap::new();
    for s in a.iter().filter(|s| s.labels[0].1 == "rr_requests_total") {
        let metric: serde_json::Map<String, Json> = s
            .labels
            .iter()
            .map(|(n, v)| (n.to_string(), Json::String(v.to_string())))
            .collect();
        let points: Vec<(f64, String)> = s
            .samples
            .iter()
            .filter(|(t, _)| *t > at - 300_000 && *t <= at)
            .map(|(t, v)| (*t as f64 / 1000.0, format!("{v}")))
            .collect();
        want.insert(Json::Object(metric).to_string(), points);
    }
    ensure!(
        raw == want,
        "Prometheus vs pushed: {}",
        map_diff(&raw, &want)
    );
    ensure!(raw.values().map(Vec::len).sum::<usize>() == 300 + 50);

    // PromQL over the remote data equals Strata's own answers.
    for expr in [
        "rr_requests_total",
        "rr_temperature",
        "sum by (job) (rr_requests_total)",
        "rate(rr_requests_total[1m])",
        "max_over_time(rr_requests_total{instance=~\"i.\"}[90s])",
        "count({__name__=~\"rr_.*\"})",
    ] {
        let theirs = by_metric(&api(&prom("/api/v1/query"), &instant(expr), None).await?)?;
        let ours = by_metric(
            &api(
                &strata.url("/prometheus/api/v1/query"),
                &instant(expr),
                Some("team-a"),
            )
            .await?,
        )?;
        ensure!(!ours.is_empty(), "{expr}: no result");
        ensure!(
            theirs == ours,
            "{expr}: Prometheus vs Strata: {}",
            map_diff(&theirs, &ours)
        );
    }
    for expr in ["rr_requests_total", "irate(rr_requests_total[30s])"] {
        let params = vec![
            ("query", expr.to_string()),
            ("start", seconds(t0 + 10_500)),
            ("end", seconds(t0 + 290_500)),
            ("step", "7".to_string()),
        ];
        let theirs = by_metric(&api(&prom("/api/v1/query_range"), &params, None).await?)?;
        let ours = by_metric(
            &api(
                &strata.url("/prometheus/api/v1/query_range"),
                &params,
                Some("team-a"),
            )
            .await?,
        )?;
        ensure!(!ours.is_empty(), "{expr}: no result");
        ensure!(
            theirs == ours,
            "{expr}: Prometheus vs Strata: {}",
            map_diff(&theirs, &ours)
        );
    }
    Ok(())
}
