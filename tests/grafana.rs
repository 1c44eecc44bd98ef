//! The requests Grafana's Prometheus data source makes, sent to Strata and
//! to Prometheus 3.16 holding the same data, must be answered alike: HTTP
//! status, `status`, `errorType`, `warnings`, `infos` and `data`.
//!
//! Prometheus 3.16 scrapes itself and Strata every second and
//! remote-writes everything (remote write 2.0 with
//! `--enable-feature=metadata-wal-records`, so metadata travels with the
//! series) to Strata as tenant `grafana`. The requests then ask about
//! a window that ended before a cut-off both servers hold completely.
//! Grafana's calls, as its data source sends them (POST form bodies by
//! default, GET where it uses GET):
//!
//! * the health check, an instant query of `1+1`;
//! * label names and label values, with and without `match[]`, over the
//!   dashboard's time range, and with `limit`;
//! * series for a selector over the time range;
//! * metric metadata, all of it or for one metric (`limit`: the count,
//!   Prometheus picks which ones from a map);
//! * range queries with start and end aligned to the step, as Grafana
//!   aligns them, including one answering an info annotation and one
//!   answering a parse error;
//! * exemplars for a range;
//! * and the Prometheus UI's `format_query` and `parse_query`.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value as Json;

use common::promql::{Prometheus, seconds, sender_config};
use common::rw::now_ms;
use common::{Strata, http};

const TENANT: &str = "grafana";

#[derive(Clone, Copy, PartialEq)]
enum Method {
    Get,
    /// A form body, as Grafana's default `httpMethod: POST`.
    Post,
}

/// How two answers must agree.
#[derive(Clone, Copy, PartialEq)]
enum Compare {
    /// Everything.
    All,
    /// All but `data`, which must hold as many entries: with `limit`,
    /// which entries are kept is unspecified (Prometheus takes them in its
    /// index's order, Strata the first in sorted order).
    DataSize,
    /// All, `data`'s entries in any order: Prometheus answers `/series`
    /// for one selector in its index's order (series creation), Strata in
    /// label order.
    Unordered,
}

struct Call {
    name: &'static str,
    method: Method,
    path: &'static str,
    params: Vec<(&'static str, String)>,
    compare: Compare,
}

/// An answer reduced to what is compared.
#[derive(Debug, PartialEq)]
struct Answer {
    http_status: u16,
    status: Json,
    error_type: Json,
    warnings: Json,
    infos: Json,
    data: Json,
}

async fn call(base: &str, tenant: Option<&str>, c: &Call) -> Result<Answer> {
    let url = format!("{base}{}", c.path);
    let mut request = match c.method {
        Method::Get => http().get(&url).query(&c.params),
        Method::Post => http().post(&url).form(&c.params),
    };
    if let Some(tenant) = tenant {
        request = request.header("X-Scope-OrgID", tenant);
    }
    let response = request
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("{} {url}", c.name))?;
    let http_status = response.status().as_u16();
    let body: Json = response
        .json()
        .await
        .with_context(|| format!("{}: {http_status} without JSON", c.name))?;
    let field = |name: &str| body.get(name).cloned().unwrap_or(Json::Null);
    let mut data = field("data");
    if c.compare == Compare::Unordered
        && let Some(items) = data.as_array_mut()
    {
        items.sort_by_key(|item| item.to_string());
    }
    if c.compare == Compare::DataSize {
        data = Json::from(
            data.as_object()
                .map(|o| o.len())
                .or_else(|| data.as_array().map(Vec::len))
                .unwrap_or(0),
        );
    }
    Ok(Answer {
        http_status,
        status: field("status"),
        error_type: field("errorType"),
        warnings: field("warnings"),
        infos: field("infos"),
        data,
    })
}

/// The first few characters of a JSON value, for messages.
fn brief(j: &Json) -> String {
    let text = j.to_string();
    match text.char_indices().nth(600) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// Grafana's calls over the window `[start, end]` (milliseconds).
fn calls(start: i64, end: i64) -> Vec<Call> {
    let (s, e) = (seconds(start), seconds(end));
    let range = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        let mut p = vec![("start", s.clone()), ("end", e.clone())];
        p.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        p
    };
    // Grafana aligns a range query's start and end down to its step.
    let step = 15_000;
    let aligned = |extra: &str| -> Vec<(&'static str, String)> {
        vec![
            ("query", extra.to_string()),
            ("start", seconds(start / step * step)),
            ("end", seconds(end / step * step)),
            ("step", (step / 1000).to_string()),
        ]
    };
    let job = "{job=\"prometheus\"}";
    let call = |name, method, path, params| Call {
        name,
        method,
        path,
        params,
        compare: Compare::All,
    };
    vec![
        call(
            "health check",
            Method::Post,
            "/query",
            vec![("query", "1+1".into()), ("time", e.clone())],
        ),
        call(
            "health check (GET)",
            Method::Get,
            "/query",
            vec![("query", "1+1".into()), ("time", e.clone())],
        ),
        call("label names", Method::Post, "/labels", range(&[])),
        call(
            "label names for a selector",
            Method::Post,
            "/labels",
            range(&[("match[]", job)]),
        ),
        call(
            "label names, limit",
            Method::Get,
            "/labels",
            range(&[("limit", "3")]),
        ),
        call(
            "metric names",
            Method::Get,
            "/label/__name__/values",
            range(&[]),
        ),
        call(
            "metric names for a selector",
            Method::Get,
            "/label/__name__/values",
            range(&[("match[]", "{__name__=~\"prometheus_http.*\"}")]),
        ),
        Call {
            name: "label values, limit",
            method: Method::Get,
            path: "/label/__name__/values",
            params: range(&[("limit", "10")]),
            compare: Compare::DataSize,
        },
        call(
            "label values of job",
            Method::Get,
            "/label/job/values",
            range(&[]),
        ),
        call(
            "label values of a missing label",
            Method::Get,
            "/label/nonexistent/values",
            range(&[]),
        ),
        Call {
            name: "series",
            method: Method::Post,
            path: "/series",
            params: range(&[("match[]", "up")]),
            compare: Compare::Unordered,
        },
        call(
            "series of two selectors",
            Method::Post,
            "/series",
            range(&[
                ("match[]", "prometheus_http_requests_total"),
                ("match[]", "{__name__=~\"scrape_.*\",job=\"strata\"}"),
            ]),
        ),
        Call {
            name: "series, limit",
            method: Method::Get,
            path: "/series",
            params: range(&[("match[]", "{job=\"prometheus\"}"), ("limit", "7")]),
            compare: Compare::DataSize,
        },
        call(
            "series without a selector",
            Method::Get,
            "/series",
            range(&[]),
        ),
        call(
            "metadata of a metric",
            Method::Get,
            "/metadata",
            vec![("metric", "prometheus_http_requests_total".into())],
        ),
        call(
            "metadata of a missing metric",
            Method::Get,
            "/metadata",
            vec![("metric", "nonexistent_total".into())],
        ),
        Call {
            name: "metadata, limit",
            method: Method::Get,
            path: "/metadata",
            params: vec![("limit", "5".into())],
            compare: Compare::DataSize,
        },
        call(
            "range query",
            Method::Post,
            "/query_range",
            aligned("sum by (job) (rate(prometheus_http_requests_total[1m]))"),
        ),
        call(
            "range query of up",
            Method::Post,
            "/query_range",
            aligned("up"),
        ),
        call(
            "range query with an info annotation",
            Method::Post,
            "/query_range",
            aligned("rate(prometheus_tsdb_head_series[1m])"),
        ),
        call(
            "range query of a native histogram",
            Method::Post,
            "/query_range",
            aligned(
                "histogram_quantile(0.9, sum(rate(prometheus_http_request_duration_seconds[1m])))",
            ),
        ),
        call(
            "range query with a parse error",
            Method::Post,
            "/query_range",
            aligned("sum(rate(up[1m])"),
        ),
        call(
            "range query with too many points",
            Method::Post,
            "/query_range",
            vec![
                ("query", "up".into()),
                ("start", s.clone()),
                ("end", e.clone()),
                ("step", "0.001".into()),
            ],
        ),
        // The Prometheus UI's, beside Grafana's.
        call(
            "format_query",
            Method::Post,
            "/format_query",
            vec![(
                "query",
                "sum by(job)(rate(http_requests_total{code=~\"5..\"}[5m] offset 1m))/ignoring(code) group_left sum(up)".into(),
            )],
        ),
        call(
            "format_query of a bad query",
            Method::Get,
            "/format_query",
            vec![("query", "sum(".into())],
        ),
        call(
            "parse_query",
            Method::Post,
            "/parse_query",
            vec![(
                "query",
                "topk(3, sum without (instance) (rate(a{b=\"c\",d!~\"e.*\"}[5m] @ 1700000000 offset -1m))) > bool on (job) group_right (x) -(b + 1) and c[10m:1m] or vector(2) unless count_values(\"v\", up @ end())".into(),
            )],
        ),
        call(
            "parse_query of a subquery",
            Method::Get,
            "/parse_query",
            vec![(
                "query",
                "max_over_time(deriv(rate(x[1m])[5m:30s] offset 2m)[1h:]) / scalar(y) + 2 ^ 3 == bool 1".into(),
            )],
        ),
        call(
            "exemplars",
            Method::Post,
            "/query_exemplars",
            vec![
                ("query", "prometheus_http_requests_total".into()),
                ("start", s.clone()),
                ("end", e.clone()),
            ],
        ),
    ]
}

/// The calls whose answers differ, each with a report.
async fn differences(
    reference: &str,
    ours: &str,
    calls: &[Call],
) -> Result<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    for c in calls {
        let (want, got) = tokio::try_join!(call(reference, None, c), call(ours, Some(TENANT), c))?;
        if want == got {
            continue;
        }
        let mut report = format!("DIFFERS: {}", c.name);
        for (what, a, b) in [
            (
                "HTTP status",
                Json::from(want.http_status),
                Json::from(got.http_status),
            ),
            ("status", want.status, got.status),
            ("errorType", want.error_type, got.error_type),
            ("warnings", want.warnings, got.warnings),
            ("infos", want.infos, got.infos),
            ("data", want.data, got.data),
        ] {
            if a != b {
                report.push_str(&format!(
                    "\n  {what}:\n    Prometheus: {}\n    Strata:     {}",
                    brief(&a),
                    brief(&b)
                ));
            }
        }
        out.push((c.name, report));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_calls_answer_as_prometheus_does() -> Result<()> {
    let started = now_ms();
    let mut strata = Strata::spawn("strata", &["--ring.replication-factor=1".into()])?;
    strata.wait_ready().await?;
    let push = strata.url("/api/v1/push");
    let target = format!("127.0.0.1:{}", strata.http_port);
    let prometheus = Prometheus::start_with(
        "prometheus",
        |port| {
            sender_config(
                port,
                &format!("['{target}']"),
                &push,
                TENANT,
                "    protobuf_message: io.prometheus.write.v2.Request\n    \
                 send_native_histograms: true\n    \
                 queue_config: {batch_send_deadline: 1s}\n",
            )
        },
        // Remote write 2.0 carries metadata only with this.
        &["--enable-feature=metadata-wal-records"],
    )
    .await?;
    let reference = prometheus.url("/api/v1");
    let ours = strata.url("/prometheus/api/v1");

    // Let both gather some minutes' worth of scrapes (at one per second),
    // then ask about a window ending at a cut-off a little in the past.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let end = now_ms() - 3_000;
    let start = started - 30_000;
    let calls = calls(start, end);

    // Strata lags the sender by its remote-write queue: compare until all
    // agree, for at most 30 s, then report the last differences.
    let mut reports = Vec::new();
    for _ in 0..15 {
        reports = differences(&reference, &ours, &calls).await?;
        if reports.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for c in &calls {
        if !reports.iter().any(|(name, _)| name == &c.name) {
            println!("agrees: {}", c.name);
        }
    }
    for (_, report) in &reports {
        println!("{report}");
    }
    let differing: Vec<&str> = reports.iter().map(|(name, _)| *name).collect();
    println!(
        "{} of {} Grafana calls answer as Prometheus 3.16 does",
        calls.len() - differing.len(),
        calls.len()
    );
    ensure!(
        differing.is_empty(),
        "calls answered differently: {differing:?}"
    );
    Ok(())
}
