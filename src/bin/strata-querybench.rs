//! `strata-querybench`: query latency of Prometheus-compatible APIs, side by
//! side, on the same data.
//!
//! Three subcommands:
//! - `bench` runs typical dashboard queries (matching the series
//!   `strata-loadgen` writes) against one or more targets, each query as
//!   `query_range` over 1h and 6h (clipped to the data's span) at 15s and 60s
//!   steps and as an instant query, N times each, interleaving the targets;
//!   it reports median/p90 latency, the server's CPU per query (given its
//!   PID), the result's series count and checksum, and whether every target's
//!   result agrees with the reference target's.
//! - `count` asks every target for the number of series and says whether all
//!   agree (the "has everyone ingested everything" check before a bench).
//! - `tee` is a remote-write fan-out on loopback: `strata-loadgen` pushes to
//!   it once and it forwards every request body unchanged to all targets, so
//!   they hold the very same samples (the same timestamps, too). It keeps
//!   the span of the timestamps it forwarded at `GET /stats`.
//!
//! Evaluation times are multiples of the step (VictoriaMetrics aligns range
//! queries to it): when the sample timestamps are not on that grid, range
//! boundaries never coincide with samples, and Prometheus 2.42's closed
//! ranges give the same results as left-open ones.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap as AxumHeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::{Args, Parser, Subcommand};
use parking_lot::Mutex;
use prost::Message;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::Value as Json;
use strata::proto::prometheus::WriteRequest;

/// Linux's `USER_HZ`: the unit of utime/stime in `/proc/PID/stat`.
const USER_HZ: f64 = 100.0;

/// The default queries: dashboard panels over `strata-loadgen`'s series.
const DEFAULT_QUERIES: [(&str, &str); 5] = [
    (
        "rate_by_job",
        "sum by (job) (rate(http_requests_total[5m]))",
    ),
    (
        "p99_by_job",
        "histogram_quantile(0.99, sum by (le, job) (rate(http_request_duration_seconds_bucket[5m])))",
    ),
    (
        "topk_instance",
        "topk(10, sum by (instance) (rate(http_requests_total[5m])))",
    ),
    ("avg_load", "avg by (instance) (node_load1)"),
    ("count_by_job", "count by (job) (go_goroutines)"),
];

/// Range-vector windows of the default queries, checked against the sample grid.
const WINDOWS_MS: [i64; 1] = [5 * 60_000];

#[derive(Parser, Debug)]
#[command(
    name = "strata-querybench",
    version,
    about = "Query latency of Prometheus-compatible APIs side by side, on the same data."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Time dashboard queries against each target and compare their results.
    Bench(BenchArgs),
    /// Count every target's series; exit 0 when all agree (and match --expect).
    Count(CountArgs),
    /// Forward remote-write requests unchanged to several receivers.
    Tee(TeeArgs),
}

#[derive(Args, Debug, Clone)]
struct TargetArgs {
    /// A query API as NAME=BASE_URL, repeatable. The API is at BASE_URL/api/v1/...;
    /// BASE_URL's query string is added to every request. E.g.
    /// strata=http://127.0.0.1:9009/prometheus, prometheus=http://127.0.0.1:9090,
    /// 'victoriametrics=http://127.0.0.1:8428?nocache=1'.
    #[arg(long = "target", value_name = "NAME=URL", value_parser = parse_target, required = true)]
    targets: Vec<Target>,
    /// Extra request header for every target, repeatable, e.g. 'X-Scope-OrgID: bench'.
    #[arg(long = "header", value_name = "K: V", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Timeout of one request.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Allow target URLs whose host is not loopback.
    #[arg(long)]
    allow_non_loopback: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    common: TargetArgs,
    /// The target others are compared with (ratios, agreement); default: the
    /// one named prometheus, else the first.
    #[arg(long)]
    reference: Option<String>,
    /// First sample timestamp of the data, Unix milliseconds.
    #[arg(long)]
    data_start_ms: i64,
    /// Last sample timestamp of the data, Unix milliseconds.
    #[arg(long)]
    data_end_ms: i64,
    /// Scrape interval of the data: warns when evaluation times hit sample timestamps.
    #[arg(long, value_parser = humantime::parse_duration)]
    sample_interval: Option<Duration>,
    /// Timed runs of each query on each target.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Untimed runs first (their result is the one compared).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Ranges of the range queries (each clipped to the data's span).
    #[arg(long = "range", value_delimiter = ',', default_value = "1h,6h", value_parser = humantime::parse_duration)]
    ranges: Vec<Duration>,
    /// Steps of the range queries.
    #[arg(long = "step", value_delimiter = ',', default_value = "15s,60s", value_parser = humantime::parse_duration)]
    steps: Vec<Duration>,
    /// Skip the instant queries.
    #[arg(long)]
    no_instant: bool,
    /// Queries as NAME=PROMQL, repeatable (replaces the defaults).
    #[arg(long = "query", value_name = "NAME=PROMQL", value_parser = parse_named)]
    queries: Vec<(String, String)>,
    /// Only queries whose name matches this regex.
    #[arg(long)]
    only: Option<regex::Regex>,
    /// PID of a target's server as NAME=PID, repeatable: report its CPU per query.
    #[arg(long = "pid", value_name = "NAME=PID", value_parser = parse_pid)]
    pids: Vec<(String, u32)>,
    /// Relative tolerance when comparing values.
    #[arg(long, default_value_t = 1e-6)]
    tolerance: f64,
    /// Stop timing after this long (what is left is reported as skipped).
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    max_duration: Duration,
    /// Stop repeating one query on one target after this much time in it.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    max_per_query: Duration,
    /// Print the report as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct CountArgs {
    #[command(flatten)]
    common: TargetArgs,
    /// Evaluation time, Unix milliseconds (default: now).
    #[arg(long)]
    time_ms: Option<i64>,
    /// The counting query.
    #[arg(long, default_value = "count({__name__=~\".+\"})")]
    query: String,
    /// Also require this count.
    #[arg(long)]
    expect: Option<u64>,
}

#[derive(Args, Debug)]
struct TeeArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the port listened on to this file once listening.
    #[arg(long)]
    port_file: Option<std::path::PathBuf>,
    /// A remote-write receiver as NAME=URL, repeatable.
    #[arg(long = "target", value_name = "NAME=URL", value_parser = parse_target, required = true)]
    targets: Vec<Target>,
    /// Timeout of one forwarded request.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Exit after this long whatever happens.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    max_lifetime: Duration,
    /// Allow addresses that are not loopback.
    #[arg(long)]
    allow_non_loopback: bool,
}

#[derive(Debug, Clone)]
struct Target {
    name: String,
    url: Url,
}

fn parse_named(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{s:?}: empty name"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

fn parse_target(s: &str) -> Result<Target, String> {
    let (name, url) = parse_named(s)?;
    let url = Url::parse(&url).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{url}: not http(s)"));
    }
    Ok(Target { name, url })
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = parse_named(s)?;
    let pid = pid.parse().map_err(|e| format!("pid {pid:?}: {e}"))?;
    Ok((name, pid))
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("header {s:?} is not 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|e| format!("header name {:?}: {e}", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|e| format!("header value {:?}: {e}", value.trim()))?;
    Ok((name, value))
}

fn is_loopback_host(host: Option<&str>) -> bool {
    match host {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

fn check_loopback(targets: &[Target], allow: bool) -> Result<()> {
    if allow {
        return Ok(());
    }
    for target in targets {
        if !is_loopback_host(target.url.host_str()) {
            bail!(
                "{} ({}) is not a loopback address; pass --allow-non-loopback",
                target.name,
                target.url
            );
        }
    }
    Ok(())
}

/// BASE/api/v1/ENDPOINT with the base's query string kept and `params` added.
fn api_url(base: &Url, endpoint: &str, params: &[(&str, String)]) -> Url {
    let mut url = base.clone();
    let path = format!("{}/api/v1/{endpoint}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in params {
            pairs.append_pair(name, value);
        }
    }
    url
}

fn client(common: &TargetArgs) -> Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    for (name, value) in &common.headers {
        headers.insert(name.clone(), value.clone());
    }
    reqwest::Client::builder()
        .user_agent(concat!("strata-querybench/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .no_proxy()
        .timeout(common.timeout)
        .build()
        .context("building the HTTP client")
}

// ---------------------------------------------------------------------------
// Results: parsed, normalized and compared.

/// A query result as sorted series of (ms, value) points; NaN points are
/// dropped (VictoriaMetrics leaves them out, Prometheus writes them).
#[derive(Debug, Clone, Default, PartialEq)]
struct Normalized {
    series: BTreeMap<String, Vec<(i64, f64)>>,
    nan_points: usize,
}

impl Normalized {
    fn points(&self) -> usize {
        self.series.values().map(Vec::len).sum()
    }

    /// Sum of all values: a checksum that tolerates float noise.
    fn value_sum(&self) -> f64 {
        self.series.values().flatten().map(|(_, v)| v).sum()
    }

    /// Exact digest of labels, timestamps and value bits (run-to-run stability).
    fn digest(&self) -> u64 {
        let mut bytes = Vec::new();
        for (labels, points) in &self.series {
            bytes.extend_from_slice(labels.as_bytes());
            bytes.push(0);
            for (t, v) in points {
                bytes.extend_from_slice(&t.to_le_bytes());
                bytes.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }
}

fn parse_value(v: &Json) -> Result<f64> {
    let s = v.as_str().context("sample value is not a string")?;
    Ok(match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other
            .parse()
            .with_context(|| format!("sample value {other:?}"))?,
    })
}

fn parse_point(p: &Json) -> Result<(i64, f64)> {
    let pair = p.as_array().context("sample is not [t, v]")?;
    if pair.len() != 2 {
        bail!("sample is not [t, v]");
    }
    let t = pair[0].as_f64().context("sample time is not a number")?;
    Ok(((t * 1000.0).round() as i64, parse_value(&pair[1])?))
}

/// Labels as one sorted `{a="b", ...}` string.
fn labels_key(metric: Option<&Json>) -> String {
    let mut pairs: Vec<(&str, &str)> = metric
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort_unstable();
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Parses a Prometheus API query response body.
fn normalize(body: &Json) -> Result<Normalized> {
    if body.get("status").and_then(Json::as_str) != Some("success") {
        let kind = body.get("errorType").and_then(Json::as_str).unwrap_or("?");
        let error = body.get("error").and_then(Json::as_str).unwrap_or("?");
        bail!("{kind}: {error}");
    }
    let data = body.get("data").context("no data")?;
    let kind = data
        .get("resultType")
        .and_then(Json::as_str)
        .context("no resultType")?;
    let result = data.get("result").context("no result")?;
    let mut out = Normalized::default();
    let mut add = |key: String, points: Vec<(i64, f64)>| -> Result<()> {
        let entry = out.series.entry(key.clone()).or_default();
        if !entry.is_empty() {
            bail!("series {key} appears twice in the result");
        }
        for (t, v) in points {
            if v.is_nan() {
                out.nan_points += 1;
            } else {
                entry.push((t, v));
            }
        }
        entry.sort_by_key(|(t, _)| *t);
        Ok(())
    };
    match kind {
        "matrix" | "vector" => {
            for series in result.as_array().context("result is not an array")? {
                let key = labels_key(series.get("metric"));
                let points = if kind == "matrix" {
                    series
                        .get("values")
                        .and_then(Json::as_array)
                        .map(|ps| ps.iter().map(parse_point).collect::<Result<Vec<_>>>())
                        .transpose()?
                        .unwrap_or_default()
                } else {
                    vec![parse_point(series.get("value").context("no value")?)?]
                };
                add(key, points)?;
            }
        }
        "scalar" => add("{}".to_string(), vec![parse_point(result)?])?,
        other => bail!("result type {other} is not compared"),
    }
    // A series whose points were all NaN is not a series of the result.
    out.series.retain(|_, points| !points.is_empty());
    Ok(out)
}

fn rel_diff(a: f64, b: f64) -> f64 {
    if a == b {
        return 0.0;
    }
    if !a.is_finite() || !b.is_finite() {
        return f64::INFINITY;
    }
    (a - b).abs() / a.abs().max(b.abs())
}

/// How a result differs from the reference's; `None` when it agrees.
fn compare(reference: &Normalized, other: &Normalized, tolerance: f64) -> Option<String> {
    let ref_keys: BTreeSet<&String> = reference.series.keys().collect();
    let other_keys: BTreeSet<&String> = other.series.keys().collect();
    let missing: Vec<&&String> = ref_keys.difference(&other_keys).collect();
    let extra: Vec<&&String> = other_keys.difference(&ref_keys).collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "{} series missing (e.g. {})",
            missing.len(),
            missing[0]
        ));
    }
    if !extra.is_empty() {
        problems.push(format!("{} extra series (e.g. {})", extra.len(), extra[0]));
    }
    let (mut only_ref, mut only_other, mut differing, mut compared) = (0, 0, 0, 0);
    let mut worst: Option<(f64, String, i64, f64, f64)> = None;
    for (key, ref_points) in &reference.series {
        let Some(other_points) = other.series.get(key) else {
            continue;
        };
        let theirs: BTreeMap<i64, f64> = other_points.iter().copied().collect();
        let ours: BTreeMap<i64, f64> = ref_points.iter().copied().collect();
        only_other += theirs.keys().filter(|t| !ours.contains_key(t)).count();
        for (t, a) in &ours {
            let Some(b) = theirs.get(t) else {
                only_ref += 1;
                continue;
            };
            compared += 1;
            let d = rel_diff(*a, *b);
            if d > tolerance {
                differing += 1;
                if worst.as_ref().is_none_or(|w| d > w.0) {
                    worst = Some((d, key.clone(), *t, *a, *b));
                }
            }
        }
    }
    if only_ref > 0 {
        problems.push(format!("{only_ref} points missing"));
    }
    if only_other > 0 {
        problems.push(format!("{only_other} extra points"));
    }
    if let Some((d, key, t, a, b)) = worst {
        problems.push(format!(
            "{differing} of {compared} points differ, worst rel {d:.2e} at {key} t={:.3}: {a} vs {b}",
            t as f64 / 1000.0
        ));
    }
    if problems.is_empty() {
        None
    } else {
        Some(problems.join("; "))
    }
}

/// Sorted values at each timestamp, whatever series they belong to.
fn values_by_time(result: &Normalized) -> BTreeMap<i64, Vec<f64>> {
    let mut out: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (t, v) in result.series.values().flatten() {
        out.entry(*t).or_default().push(*v);
    }
    for values in out.values_mut() {
        values.sort_by(f64::total_cmp);
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Agreement {
    Same,
    /// Different series, but the same values at every timestamp: `topk`
    /// and friends picked different members of a tie.
    SameUpToTies(String),
    Differs(String),
}

fn agreement(reference: &Normalized, other: &Normalized, tolerance: f64) -> Agreement {
    let Some(diff) = compare(reference, other, tolerance) else {
        return Agreement::Same;
    };
    let (a, b) = (values_by_time(reference), values_by_time(other));
    let same_values = a.len() == b.len()
        && a.iter().zip(&b).all(|((ta, va), (tb, vb))| {
            ta == tb
                && va.len() == vb.len()
                && va
                    .iter()
                    .zip(vb)
                    .all(|(x, y)| rel_diff(*x, *y) <= tolerance)
        });
    if same_values {
        Agreement::SameUpToTies(diff)
    } else {
        Agreement::Differs(diff)
    }
}

// ---------------------------------------------------------------------------
// Query plan.

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Shape {
    Range {
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    },
    Instant {
        time_ms: i64,
    },
}

#[derive(Debug, Clone, Serialize)]
struct Case {
    name: String,
    query: String,
    label: String,
    shape: Shape,
}

fn short_duration(ms: i64) -> String {
    let s = ms / 1000;
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Ranges clipped to the data's span (rounded up to a minute), without duplicates.
fn effective_ranges(ranges: &[Duration], span_ms: i64) -> Vec<i64> {
    let span_ms = (span_ms.max(60_000) + 59_999) / 60_000 * 60_000;
    let mut out: Vec<i64> = Vec::new();
    for range in ranges {
        let ms = (range.as_millis() as i64).min(span_ms);
        if ms > 0 && !out.contains(&ms) {
            out.push(ms);
        }
    }
    out
}

fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

fn plan(
    queries: &[(String, String)],
    ranges_ms: &[i64],
    steps_ms: &[i64],
    instant: bool,
    data_end_ms: i64,
) -> Vec<Case> {
    let smallest_step = steps_ms.iter().copied().min().unwrap_or(15_000);
    let mut cases = Vec::new();
    for (name, query) in queries {
        for &range in ranges_ms {
            for &step in steps_ms {
                let end = floor_to(data_end_ms, step);
                cases.push(Case {
                    name: name.clone(),
                    query: query.clone(),
                    label: format!("{} @{}", short_duration(range), short_duration(step)),
                    shape: Shape::Range {
                        start_ms: end - range,
                        end_ms: end,
                        step_ms: step,
                    },
                });
            }
        }
        if instant {
            cases.push(Case {
                name: name.clone(),
                query: query.clone(),
                label: "instant".to_string(),
                shape: Shape::Instant {
                    time_ms: floor_to(data_end_ms, smallest_step),
                },
            });
        }
    }
    cases
}

/// Evaluation times (and window starts) that hit a sample timestamp.
fn grid_collisions(
    cases: &[Case],
    data_start_ms: i64,
    data_end_ms: i64,
    interval_ms: i64,
) -> usize {
    if interval_ms <= 0 {
        return 0;
    }
    let samples: HashSet<i64> = (0..)
        .map(|k| data_start_ms + k * interval_ms)
        .take_while(|t| *t <= data_end_ms)
        .take(1_000_000)
        .collect();
    let hits = |t: i64| {
        std::iter::once(0)
            .chain(WINDOWS_MS)
            .filter(|w| samples.contains(&(t - w)))
            .count()
    };
    cases
        .iter()
        .map(|case| match case.shape {
            Shape::Instant { time_ms } => hits(time_ms),
            Shape::Range {
                start_ms,
                end_ms,
                step_ms,
            } => (0..)
                .map(|k| start_ms + k * step_ms)
                .take_while(|t| *t <= end_ms)
                .map(hits)
                .sum(),
        })
        .sum()
}

// ---------------------------------------------------------------------------
// Running queries.

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

struct Answer {
    latency: Duration,
    cpu: Option<f64>,
    result: Result<Normalized>,
}

async fn run_query(
    client: &reqwest::Client,
    target: &Target,
    case: &Case,
    pid: Option<u32>,
) -> Answer {
    let url = match &case.shape {
        Shape::Range {
            start_ms,
            end_ms,
            step_ms,
        } => api_url(
            &target.url,
            "query_range",
            &[
                ("query", case.query.clone()),
                ("start", format!("{:.3}", *start_ms as f64 / 1000.0)),
                ("end", format!("{:.3}", *end_ms as f64 / 1000.0)),
                ("step", format!("{}", *step_ms as f64 / 1000.0)),
            ],
        ),
        Shape::Instant { time_ms } => api_url(
            &target.url,
            "query",
            &[
                ("query", case.query.clone()),
                ("time", format!("{:.3}", *time_ms as f64 / 1000.0)),
            ],
        ),
    };
    let cpu_before = pid.and_then(cpu_seconds);
    let started = Instant::now();
    let response = async {
        let response = client.get(url).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    }
    .await;
    let latency = started.elapsed();
    let cpu = match (cpu_before, pid.and_then(cpu_seconds)) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let result = match response {
        Err(err) => Err(anyhow::Error::new(err).context("request failed")),
        Ok((status, body)) => match serde_json::from_slice::<Json>(&body) {
            Ok(json) => normalize(&json).with_context(|| format!("HTTP {status}")),
            Err(_) => Err(anyhow::anyhow!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)]).trim()
            )),
        },
    };
    Answer {
        latency,
        cpu,
        result,
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median: the mean of the middle two for an even count.
fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[derive(Debug, Default, Serialize)]
struct Measurement {
    target: String,
    runs: usize,
    latencies_ms: Vec<f64>,
    median_ms: Option<f64>,
    p90_ms: Option<f64>,
    /// Server CPU (utime+stime) per query, median, when its PID was given.
    cpu_ms_median: Option<f64>,
    series: Option<usize>,
    points: Option<usize>,
    nan_points: Option<usize>,
    value_sum: Option<f64>,
    digest: Option<String>,
    /// How a later run's result differed from the first's (beyond ties).
    unstable: Option<String>,
    error: Option<String>,
    /// Disagreement with the reference target's result (None: agrees or is the reference).
    disagreement: Option<String>,
    /// The same values as the reference's at every timestamp, from other
    /// series: how the label sets differ.
    ties: Option<String>,
    agrees: Option<bool>,
    skipped: bool,
}

#[derive(Debug, Serialize)]
struct CaseReport {
    #[serde(flatten)]
    case: Case,
    measurements: Vec<Measurement>,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    reference: String,
    targets: Vec<String>,
    data_start_ms: i64,
    data_end_ms: i64,
    runs: usize,
    warmup: usize,
    tolerance: f64,
    grid_collisions: Option<usize>,
    cases: Vec<CaseReport>,
    seconds: f64,
}

async fn bench(args: &BenchArgs) -> Result<BenchReport> {
    let common = &args.common;
    check_loopback(&common.targets, common.allow_non_loopback)?;
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if args.data_end_ms <= args.data_start_ms {
        bail!("--data-end-ms must be after --data-start-ms");
    }
    let names: Vec<String> = common.targets.iter().map(|t| t.name.clone()).collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    if unique.len() != names.len() {
        bail!("target names must be unique");
    }
    let reference = match &args.reference {
        Some(name) if names.contains(name) => name.clone(),
        Some(name) => bail!("--reference {name} is not a target"),
        None if names.iter().any(|n| n == "prometheus") => "prometheus".to_string(),
        None => names[0].clone(),
    };
    for (name, _) in &args.pids {
        if !names.contains(name) {
            bail!("--pid {name}=...: no such target");
        }
    }
    let pid_of = |name: &str| {
        args.pids
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, pid)| *pid)
    };

    let queries: Vec<(String, String)> = if args.queries.is_empty() {
        DEFAULT_QUERIES
            .iter()
            .map(|(n, q)| (n.to_string(), q.to_string()))
            .collect()
    } else {
        args.queries.clone()
    };
    let queries: Vec<(String, String)> = queries
        .into_iter()
        .filter(|(name, _)| args.only.as_ref().is_none_or(|re| re.is_match(name)))
        .collect();
    if queries.is_empty() {
        bail!("no query left to run");
    }
    let steps: Vec<i64> = args.steps.iter().map(|s| s.as_millis() as i64).collect();
    if steps.iter().any(|s| *s <= 0) {
        bail!("steps must be positive");
    }
    let ranges = effective_ranges(&args.ranges, args.data_end_ms - args.data_start_ms);
    let cases = plan(
        &queries,
        &ranges,
        &steps,
        !args.no_instant,
        args.data_end_ms,
    );
    let collisions = args.sample_interval.map(|interval| {
        grid_collisions(
            &cases,
            args.data_start_ms,
            args.data_end_ms,
            interval.as_millis() as i64,
        )
    });
    if let Some(n) = collisions.filter(|n| *n > 0) {
        eprintln!(
            "strata-querybench: warning: {n} evaluation times or window starts coincide with sample \
             timestamps; Prometheus 2.42's closed ranges will differ from left-open ones there"
        );
    }

    let client = client(common)?;
    let started = Instant::now();
    let deadline = started + args.max_duration;
    let mut reports = Vec::with_capacity(cases.len());
    for case in cases {
        let mut measurements: Vec<Measurement> = common
            .targets
            .iter()
            .map(|t| Measurement {
                target: t.name.clone(),
                ..Measurement::default()
            })
            .collect();
        let mut results: Vec<Option<Normalized>> = vec![None; common.targets.len()];
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); common.targets.len()];
        let mut spent = vec![Duration::ZERO; common.targets.len()];
        eprintln!("strata-querybench: {} {}", case.name, case.label);
        // Interleave the targets run by run: background work hits them alike.
        for run in 0..args.warmup + args.runs {
            for (i, target) in common.targets.iter().enumerate() {
                let m = &mut measurements[i];
                if m.error.is_some() || spent[i] >= args.max_per_query {
                    continue;
                }
                if Instant::now() >= deadline {
                    m.skipped = true;
                    continue;
                }
                let answer = run_query(&client, target, &case, pid_of(&target.name)).await;
                spent[i] += answer.latency;
                let result = match answer.result {
                    Ok(result) => result,
                    Err(err) => {
                        m.error = Some(format!("{err:#}"));
                        continue;
                    }
                };
                match &results[i] {
                    None => {
                        m.series = Some(result.series.len());
                        m.points = Some(result.points());
                        m.nan_points = Some(result.nan_points);
                        m.value_sum = Some(result.value_sum());
                        m.digest = Some(format!("{:016x}", result.digest()));
                        results[i] = Some(result);
                    }
                    Some(first) => {
                        if m.unstable.is_none()
                            && let Agreement::Differs(diff) =
                                agreement(first, &result, args.tolerance)
                        {
                            m.unstable = Some(diff);
                        }
                    }
                }
                if run >= args.warmup {
                    m.runs += 1;
                    m.latencies_ms.push(answer.latency.as_secs_f64() * 1e3);
                    if let Some(c) = answer.cpu {
                        cpu[i].push(c * 1e3);
                    }
                }
            }
        }
        let ref_index = names.iter().position(|n| *n == reference).unwrap_or(0);
        for (i, m) in measurements.iter_mut().enumerate() {
            let mut sorted = m.latencies_ms.clone();
            sorted.sort_by(f64::total_cmp);
            m.median_ms = median(&sorted);
            m.p90_ms = percentile(&sorted, 90.0);
            cpu[i].sort_by(f64::total_cmp);
            m.cpu_ms_median = median(&cpu[i]);
            if m.runs == 0 && m.error.is_none() {
                m.skipped = true;
            }
            if i != ref_index
                && let (Some(ours), Some(theirs)) = (&results[ref_index], &results[i])
            {
                match agreement(ours, theirs, args.tolerance) {
                    Agreement::Same => m.agrees = Some(true),
                    Agreement::SameUpToTies(diff) => {
                        m.agrees = Some(true);
                        m.ties = Some(diff);
                    }
                    Agreement::Differs(diff) => {
                        m.agrees = Some(false);
                        m.disagreement = Some(diff);
                    }
                }
            }
        }
        reports.push(CaseReport { case, measurements });
    }
    Ok(BenchReport {
        reference,
        targets: names,
        data_start_ms: args.data_start_ms,
        data_end_ms: args.data_end_ms,
        runs: args.runs,
        warmup: args.warmup,
        tolerance: args.tolerance,
        grid_collisions: collisions,
        cases: reports,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn fmt_ms(v: Option<f64>) -> String {
    match v {
        None => "-".to_string(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn render(report: &BenchReport) -> String {
    let mut out = String::new();
    let reference = &report.reference;
    let others: Vec<&String> = report.targets.iter().filter(|t| *t != reference).collect();
    let mut header = format!("{:<14} {:<10}", "query", "range");
    for t in &report.targets {
        let _ = write!(header, " {:>10}", format!("{} ms", abbrev(t)));
    }
    for t in &others {
        let _ = write!(
            header,
            " {:>7}",
            format!("{}/{}", abbrev(t), abbrev(reference))
        );
    }
    let _ = write!(header, " {:>7}", "series");
    for t in &others {
        let _ = write!(
            header,
            " {:>7}",
            format!("{}={}", abbrev(t), abbrev(reference))
        );
    }
    let _ = writeln!(out, "{header}");
    let mut notes = Vec::new();
    for case in &report.cases {
        let get = |name: &str| case.measurements.iter().find(|m| m.target == name);
        let mut line = format!("{:<14} {:<10}", case.case.name, case.case.label);
        for t in &report.targets {
            let m = get(t);
            let cell = match m {
                Some(m) if m.error.is_some() => "error".to_string(),
                Some(m) if m.skipped && m.runs == 0 => "skipped".to_string(),
                Some(m) => fmt_ms(m.median_ms),
                None => "-".to_string(),
            };
            let _ = write!(line, " {cell:>10}");
        }
        let ref_median = get(reference).and_then(|m| m.median_ms);
        for t in &others {
            let ratio = match (get(t).and_then(|m| m.median_ms), ref_median) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".to_string(),
            };
            let _ = write!(line, " {ratio:>7}");
        }
        let series = get(reference)
            .and_then(|m| m.series)
            .map_or("-".to_string(), |n| n.to_string());
        let _ = write!(line, " {series:>7}");
        for t in &others {
            let cell = match get(t) {
                Some(m) if m.agrees == Some(true) && m.ties.is_some() => {
                    notes.push(format!(
                        "[{}] {} {} {} vs {reference}: the same values at every timestamp, \
                         ties resolved to other series ({})",
                        notes.len() + 1,
                        case.case.name,
                        case.case.label,
                        t,
                        m.ties.as_deref().unwrap_or("")
                    ));
                    format!("ties[{}]", notes.len())
                }
                Some(m) if m.agrees == Some(true) => "yes".to_string(),
                Some(m) if m.agrees == Some(false) => {
                    notes.push(format!(
                        "[{}] {} {} {} vs {reference}: {}",
                        notes.len() + 1,
                        case.case.name,
                        case.case.label,
                        t,
                        m.disagreement.as_deref().unwrap_or("")
                    ));
                    format!("NO[{}]", notes.len())
                }
                _ => "-".to_string(),
            };
            let _ = write!(line, " {cell:>7}");
        }
        let _ = writeln!(out, "{line}");
        for m in &case.measurements {
            if let Some(err) = &m.error {
                notes.push(format!(
                    "[{}] {} {} {}: ERROR {err}",
                    notes.len() + 1,
                    case.case.name,
                    case.case.label,
                    m.target
                ));
            }
            if let Some(diff) = &m.unstable {
                notes.push(format!(
                    "[{}] {} {} {}: the result changed between runs: {diff}",
                    notes.len() + 1,
                    case.case.name,
                    case.case.label,
                    m.target
                ));
            }
        }
    }
    let _ = writeln!(
        out,
        "(median of {} runs after {} warm-up; ratios: target / {reference}; agreement: same series, \
         same timestamps, values within {:e} relative, NaN points ignored)",
        report.runs, report.warmup, report.tolerance
    );
    let legend: Vec<String> = report
        .targets
        .iter()
        .map(|t| format!("{} = {t}", abbrev(t)))
        .collect();
    let _ = writeln!(out, "({})", legend.join(", "));
    if !notes.is_empty() {
        let _ = writeln!(out);
        for note in notes {
            let _ = writeln!(out, "{note}");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<14} {:<10} {:<16} {:>9} {:>9} {:>9} {:>5} {:>8} {:>14}",
        "query", "range", "target", "p50 ms", "p90 ms", "CPU ms", "runs", "points", "value sum"
    );
    for case in &report.cases {
        for m in &case.measurements {
            let _ = writeln!(
                out,
                "{:<14} {:<10} {:<16} {:>9} {:>9} {:>9} {:>5} {:>8} {:>14}",
                case.case.name,
                case.case.label,
                m.target,
                fmt_ms(m.median_ms),
                fmt_ms(m.p90_ms),
                fmt_ms(m.cpu_ms_median),
                m.runs,
                m.points.map_or("-".into(), |p| p.to_string()),
                m.value_sum.map_or("-".into(), |s| format!("{s:.6e}")),
            );
        }
    }
    out
}

/// A short column name for a target.
fn abbrev(name: &str) -> String {
    match name {
        "strata" => "S".to_string(),
        "prometheus" => "P".to_string(),
        "victoriametrics" => "V".to_string(),
        other => other.chars().take(6).collect(),
    }
}

// ---------------------------------------------------------------------------
// count

async fn count(args: &CountArgs) -> Result<bool> {
    check_loopback(&args.common.targets, args.common.allow_non_loopback)?;
    let client = client(&args.common)?;
    let mut counts = Vec::new();
    let mut ok = true;
    for target in &args.common.targets {
        let mut params = vec![("query", args.query.clone())];
        if let Some(t) = args.time_ms {
            params.push(("time", format!("{:.3}", t as f64 / 1000.0)));
        }
        let url = api_url(&target.url, "query", &params);
        let answer = async {
            let response = client.get(url).send().await?;
            let status = response.status();
            let json: Json = response
                .json()
                .await
                .with_context(|| format!("HTTP {status}: not JSON"))?;
            let result = normalize(&json)?;
            let total: f64 = result.series.values().flatten().map(|(_, v)| v).sum();
            Ok::<_, anyhow::Error>(total as u64)
        }
        .await;
        match answer {
            Ok(n) => {
                println!("{}={n}", target.name);
                counts.push(n);
            }
            Err(err) => {
                println!("{}=error ({err:#})", target.name);
                ok = false;
            }
        }
    }
    let same = counts.windows(2).all(|w| w[0] == w[1]);
    let expected = args.expect.is_none_or(|e| counts.iter().all(|n| *n == e));
    Ok(ok && same && expected && counts.first().is_some_and(|n| *n > 0))
}

// ---------------------------------------------------------------------------
// tee

#[derive(Debug, Default, Serialize)]
struct TargetStats {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct TeeStats {
    requests: u64,
    undecodable: u64,
    series: u64,
    samples: u64,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    /// Distinct sample timestamps seen (bounded).
    timestamps: usize,
    /// Smallest gap between distinct timestamps: the scrape interval.
    interval_ms: Option<i64>,
    targets: BTreeMap<String, TargetStats>,
    #[serde(skip)]
    distinct: BTreeSet<i64>,
}

struct Tee {
    client: reqwest::Client,
    targets: Vec<Target>,
    stats: Mutex<TeeStats>,
}

const FORWARDED_HEADERS: [&str; 6] = [
    "content-type",
    "content-encoding",
    "x-prometheus-remote-write-version",
    "x-scope-orgid",
    "authorization",
    "user-agent",
];

fn record_samples(stats: &mut TeeStats, body: &[u8]) {
    let decoded = snap::raw::Decoder::new()
        .decompress_vec(body)
        .ok()
        .and_then(|raw| WriteRequest::decode(raw.as_slice()).ok());
    let Some(request) = decoded else {
        stats.undecodable += 1;
        return;
    };
    for series in &request.timeseries {
        stats.series += 1;
        for sample in &series.samples {
            stats.samples += 1;
            let t = sample.timestamp;
            stats.first_ms = Some(stats.first_ms.map_or(t, |f| f.min(t)));
            stats.last_ms = Some(stats.last_ms.map_or(t, |l| l.max(t)));
            if stats.distinct.len() < 100_000 {
                stats.distinct.insert(t);
            }
        }
    }
}

async fn tee_forward(
    State(tee): State<Arc<Tee>>,
    uri: axum::http::Uri,
    headers: AxumHeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() == "/stats" {
        let mut stats = tee.stats.lock();
        stats.timestamps = stats.distinct.len();
        stats.interval_ms = stats
            .distinct
            .iter()
            .zip(stats.distinct.iter().skip(1))
            .map(|(a, b)| b - a)
            .min();
        return axum::Json(serde_json::to_value(&*stats).unwrap_or_default()).into_response();
    }
    record_samples(&mut tee.stats.lock(), &body);
    let mut forwarded = HeaderMap::new();
    for name in FORWARDED_HEADERS {
        if let Some(value) = headers.get(name)
            && let Ok(value) = HeaderValue::from_bytes(value.as_bytes())
        {
            forwarded.insert(HeaderName::from_static(name), value);
        }
    }
    let sends = tee.targets.iter().map(|target| {
        let request = tee
            .client
            .post(target.url.clone())
            .headers(forwarded.clone())
            .body(body.clone());
        async move {
            match request.send().await {
                Err(err) => Err((
                    StatusCode::BAD_GATEWAY,
                    format!("{}: {:#}", target.name, anyhow::Error::new(err)),
                )),
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    if status.is_success() {
                        Ok(())
                    } else {
                        let code = StatusCode::from_u16(status.as_u16())
                            .unwrap_or(StatusCode::BAD_GATEWAY);
                        let text = text.trim();
                        Err((
                            code,
                            format!(
                                "{}: HTTP {status}: {}",
                                target.name,
                                &text[..text.len().min(300)]
                            ),
                        ))
                    }
                }
            }
        }
    });
    let outcomes = futures::future::join_all(sends).await;
    let mut first_failure = None;
    {
        let mut stats = tee.stats.lock();
        stats.requests += 1;
        for (target, outcome) in tee.targets.iter().zip(&outcomes) {
            let entry = stats.targets.entry(target.name.clone()).or_default();
            match outcome {
                Ok(()) => entry.ok += 1,
                Err((_, message)) => {
                    entry.failed += 1;
                    entry.first_error.get_or_insert_with(|| message.clone());
                }
            }
        }
    }
    for outcome in outcomes {
        if let Err(failure) = outcome {
            // A server error wins over a refusal: it is what the sender must see.
            let replace = first_failure
                .as_ref()
                .is_none_or(|(code, _): &(StatusCode, String)| {
                    !code.is_server_error() && failure.0.is_server_error()
                });
            if replace {
                first_failure = Some(failure);
            }
        }
    }
    match first_failure {
        None => StatusCode::NO_CONTENT.into_response(),
        Some((code, message)) => (code, message).into_response(),
    }
}

async fn tee(args: &TeeArgs) -> Result<()> {
    check_loopback(&args.targets, args.allow_non_loopback)?;
    if !args.allow_non_loopback && !args.listen.ip().is_loopback() {
        bail!("--listen {} is not loopback", args.listen);
    }
    let client = reqwest::Client::builder()
        .user_agent(concat!("strata-querybench-tee/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .timeout(args.timeout)
        .build()
        .context("building the HTTP client")?;
    let state = Arc::new(Tee {
        client,
        targets: args.targets.clone(),
        stats: Mutex::new(TeeStats::default()),
    });
    let app = Router::new()
        .route("/stats", get(tee_forward))
        .fallback(tee_forward)
        .layer(DefaultBodyLimit::max(256 << 20))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let port = listener.local_addr()?.port();
    if let Some(path) = &args.port_file {
        // Write then rename: a reader never sees a partial file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{port}\n"))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "strata-querybench tee: listening on {}:{port}, forwarding to {}",
        args.listen.ip(),
        args.targets
            .iter()
            .map(|t| format!("{}={}", t.name, t.url))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let lifetime = args.max_lifetime;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::time::sleep(lifetime) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
        .context("serving")
}

// ---------------------------------------------------------------------------

fn run(cli: Cli) -> Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting tokio")?;
    match cli.command {
        Command::Bench(args) => {
            let report = runtime.block_on(bench(&args))?;
            let text = render(&report);
            if args.json {
                eprint!("{text}");
                println!(
                    "{}",
                    serde_json::to_string(&report).context("serializing the report")?
                );
            } else {
                print!("{text}");
            }
            Ok(report
                .cases
                .iter()
                .flat_map(|c| &c.measurements)
                .all(|m| m.error.is_none()))
        }
        Command::Count(args) => runtime.block_on(count(&args)),
        Command::Tee(args) => runtime.block_on(tee(&args)).map(|()| true),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("strata-querybench: {err:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A series for [`matrix`]: its labels and its (seconds, value) points.
    type TestSeries<'a> = (&'a [(&'a str, &'a str)], &'a [(f64, &'a str)]);

    fn matrix(series: &[TestSeries<'_>]) -> Json {
        let result: Vec<Json> = series
            .iter()
            .map(|(labels, points)| {
                let metric: serde_json::Map<String, Json> = labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
                let values: Vec<Json> = points.iter().map(|(t, v)| json!([t, v])).collect();
                json!({"metric": metric, "values": values})
            })
            .collect();
        json!({"status": "success", "data": {"resultType": "matrix", "result": result}})
    }

    #[test]
    fn normalizes_matrices_vectors_and_scalars() {
        let body = matrix(&[
            (&[("job", "b"), ("a", "x")], &[(2.0, "1.5"), (1.0, "NaN")]),
            (&[("job", "a")], &[(1.0, "+Inf"), (2.5, "2")]),
            (&[("job", "c")], &[(1.0, "NaN")]),
        ]);
        let n = normalize(&body).expect("parses");
        assert_eq!(n.series.len(), 2, "{n:?}");
        assert_eq!(n.series["{a=\"x\", job=\"b\"}"], vec![(2000, 1.5)]);
        assert_eq!(
            n.series["{job=\"a\"}"],
            vec![(1000, f64::INFINITY), (2500, 2.0)]
        );
        assert_eq!(n.nan_points, 2);
        assert_eq!(n.points(), 3);

        let vector = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [1700000000.123, "42"]}]}});
        let n = normalize(&vector).expect("parses");
        assert_eq!(n.series["{}"], vec![(1_700_000_000_123, 42.0)]);

        let scalar =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}});
        assert_eq!(
            normalize(&scalar).expect("parses").series["{}"],
            vec![(1000, 3.0)]
        );

        let error = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        let err = normalize(&error).expect_err("an error");
        assert!(format!("{err:#}").contains("bad_data: parse error"));
    }

    #[test]
    fn comparison_reports_missing_series_points_and_values() {
        let a = normalize(&matrix(&[
            (&[("job", "a")], &[(1.0, "1"), (2.0, "2")]),
            (&[("job", "b")], &[(1.0, "10")]),
        ]))
        .expect("parses");
        assert_eq!(compare(&a, &a, 1e-6), None);
        let close = normalize(&matrix(&[
            (&[("job", "a")], &[(1.0, "1.0000000001"), (2.0, "2")]),
            (&[("job", "b")], &[(1.0, "10")]),
        ]))
        .expect("parses");
        assert_eq!(compare(&a, &close, 1e-6), None);
        let off = normalize(&matrix(&[
            (&[("job", "a")], &[(1.0, "1.1"), (3.0, "2")]),
            (&[("job", "c")], &[(1.0, "10")]),
        ]))
        .expect("parses");
        let diff = compare(&a, &off, 1e-6).expect("differs");
        assert!(diff.contains("1 series missing"), "{diff}");
        assert!(diff.contains("1 extra series"), "{diff}");
        assert!(diff.contains("1 points missing"), "{diff}");
        assert!(diff.contains("1 extra points"), "{diff}");
        assert!(diff.contains("1 of 1 points differ"), "{diff}");
        // topk picking the other member of a tie.
        let tie_a = normalize(&matrix(&[
            (&[("i", "a")], &[(1.0, "5")]),
            (&[("i", "b")], &[(1.0, "7")]),
        ]))
        .expect("parses");
        let tie_b = normalize(&matrix(&[
            (&[("i", "c")], &[(1.0, "5")]),
            (&[("i", "b")], &[(1.0, "7")]),
        ]))
        .expect("parses");
        assert!(matches!(
            agreement(&tie_a, &tie_b, 1e-6),
            Agreement::SameUpToTies(_)
        ));
        assert!(matches!(agreement(&a, &off, 1e-6), Agreement::Differs(_)));
        assert_eq!(agreement(&a, &close, 1e-6), Agreement::Same);
        assert_eq!(rel_diff(0.0, 0.0), 0.0);
        assert_eq!(rel_diff(f64::INFINITY, f64::INFINITY), 0.0);
        assert!(rel_diff(f64::INFINITY, 1.0).is_infinite());
    }

    #[test]
    fn digest_and_sum_follow_the_values() {
        let a =
            normalize(&matrix(&[(&[("job", "a")], &[(1.0, "1"), (2.0, "2")])])).expect("parses");
        let b =
            normalize(&matrix(&[(&[("job", "a")], &[(1.0, "1"), (2.0, "2.5")])])).expect("parses");
        assert_eq!(a.value_sum(), 3.0);
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), a.clone().digest());
    }

    #[test]
    fn ranges_are_clipped_to_the_data_and_deduplicated() {
        let h = Duration::from_secs(3600);
        assert_eq!(
            effective_ranges(&[h, 6 * h], 6 * 3_600_000),
            vec![3_600_000, 21_600_000]
        );
        assert_eq!(effective_ranges(&[h, 6 * h], 3_600_000), vec![3_600_000]);
        // 59 minutes of data: the largest span available.
        assert_eq!(
            effective_ranges(&[h, 6 * h], 59 * 60_000),
            vec![59 * 60_000]
        );
        assert_eq!(
            effective_ranges(&[h, 6 * h], 2 * 3_600_000 + 1),
            vec![3_600_000, 2 * 3_600_000 + 60_000]
        );
    }

    #[test]
    fn plans_align_to_the_step_and_detect_grid_collisions() {
        let queries = vec![("q".to_string(), "up".to_string())];
        let end = 1_700_000_012_345;
        let cases = plan(&queries, &[3_600_000], &[15_000, 60_000], true, end);
        assert_eq!(cases.len(), 3);
        for case in &cases {
            match case.shape {
                Shape::Range {
                    start_ms,
                    end_ms,
                    step_ms,
                } => {
                    assert_eq!(end_ms % step_ms, 0);
                    assert_eq!(start_ms % step_ms, 0);
                    assert!(end_ms <= end && end - end_ms < step_ms);
                    assert_eq!(end_ms - start_ms, 3_600_000);
                }
                Shape::Instant { time_ms } => assert_eq!(time_ms % 15_000, 0),
            }
        }
        assert_eq!(cases[0].label, "1h @15s");
        assert_eq!(cases[1].label, "1h @1m");
        // Samples off the 15s grid never collide; samples on it do.
        let start = end - 3_600_000;
        assert_eq!(grid_collisions(&cases, start, end, 60_000), 0);
        let on_grid = floor_to(start, 60_000);
        assert!(grid_collisions(&cases, on_grid, end, 60_000) > 0);
    }

    #[test]
    fn urls_keep_the_base_path_and_query() {
        let base = Url::parse("http://127.0.0.1:9/prometheus/").expect("url");
        let url = api_url(&base, "query", &[("query", "sum(x)".to_string())]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/prometheus/api/v1/query?query=sum%28x%29"
        );
        let vm = Url::parse("http://127.0.0.1:9?nocache=1").expect("url");
        let url = api_url(&vm, "query_range", &[("step", "15".to_string())]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/api/v1/query_range?nocache=1&step=15"
        );
    }

    #[test]
    fn cli_parses_targets_and_defaults() {
        let cli = Cli::try_parse_from([
            "strata-querybench",
            "bench",
            "--target",
            "strata=http://127.0.0.1:1/prometheus",
            "--target",
            "prometheus=http://127.0.0.1:2",
            "--data-start-ms",
            "1",
            "--data-end-ms",
            "2",
            "--pid",
            "strata=42",
        ])
        .expect("parses");
        let Command::Bench(args) = cli.command else {
            panic!("not bench");
        };
        assert_eq!(args.runs, 7);
        assert_eq!(args.common.targets.len(), 2);
        assert_eq!(args.common.targets[0].name, "strata");
        assert_eq!(
            args.ranges,
            vec![Duration::from_secs(3600), Duration::from_secs(6 * 3600)]
        );
        assert_eq!(
            args.steps,
            vec![Duration::from_secs(15), Duration::from_secs(60)]
        );
        assert_eq!(args.pids, vec![("strata".to_string(), 42)]);
        assert!(parse_target("nourl").is_err());
        assert!(parse_target("x=ftp://127.0.0.1/").is_err());
        let remote = vec![parse_target("x=http://10.0.0.1:1").expect("parses")];
        assert!(check_loopback(&remote, false).is_err());
        assert!(check_loopback(&remote, true).is_ok());
    }

    #[test]
    fn tee_records_the_span_of_forwarded_samples() {
        use strata::proto::prometheus::{Label, Sample, TimeSeries};
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "x".into(),
                }],
                samples: vec![
                    Sample {
                        value: 1.0,
                        timestamp: 60_000,
                    },
                    Sample {
                        value: 2.0,
                        timestamp: 0,
                    },
                ],
                ..TimeSeries::default()
            }],
            metadata: Vec::new(),
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .expect("compresses");
        let mut stats = TeeStats::default();
        record_samples(&mut stats, &body);
        record_samples(&mut stats, b"not snappy");
        assert_eq!(stats.samples, 2);
        assert_eq!(stats.undecodable, 1);
        assert_eq!((stats.first_ms, stats.last_ms), (Some(0), Some(60_000)));
        assert_eq!(stats.distinct.len(), 2);
    }

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[1.0, 2.0, 3.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&values, 90.0), Some(9.0));
    }
}
