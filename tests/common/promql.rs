//! Comparing PromQL answers of Strata and a real Prometheus 3.16: a
//! Prometheus remote-write receiver, deterministic data, the answers parsed
//! and normalised, and the first difference between two answers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::Value as Json;
use strata::model::histogram::Histogram;
use strata::proto::histogram::int_to_proto;
use strata::proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

use super::rw;
use super::{Guard, Strata, free_port, http};

/// The staleness marker Prometheus writes when a series disappears.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// A small deterministic generator (Knuth's MMIX LCG).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A whole number in `0..n`.
    pub fn below(&mut self, n: u32) -> f64 {
        (self.unit() * f64::from(n)).floor()
    }
}

pub struct Series {
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(i64, f64)>,
}

pub fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    labels.sort();
    labels
}

/// A classic histogram: `{name}_bucket` series per bound in `bounds` (the
/// last `+Inf`), `{name}_sum` and `{name}_count`, all with the labels
/// `base`, sampled at `times`. At each time `arrivals(lcg, b)` observations
/// land in bucket `b`, each of about `typical[b]` (times 0.5 to 1.5).
pub fn classic_histogram(
    lcg: &mut Lcg,
    name: &str,
    base: &[(&str, &str)],
    bounds: &[&str],
    typical: &[f64],
    times: &[i64],
    mut arrivals: impl FnMut(&mut Lcg, usize) -> f64,
) -> Vec<Series> {
    let mut buckets = vec![0.0; bounds.len()];
    let mut sum = 0.0;
    let mut series: Vec<Vec<(i64, f64)>> = vec![Vec::new(); bounds.len() + 2];
    for &t in times {
        let mut cumulative = 0.0;
        for (b, bucket) in buckets.iter_mut().enumerate() {
            let new = arrivals(lcg, b);
            sum += new * typical[b] * (0.5 + lcg.unit());
            cumulative += new;
            *bucket += cumulative;
        }
        for (b, bucket) in buckets.iter().enumerate() {
            series[b].push((t, *bucket));
        }
        series[bounds.len()].push((t, sum));
        // The count is the `+Inf` bucket.
        series[bounds.len() + 1].push((t, buckets.last().copied().unwrap_or(0.0)));
    }
    let named = |suffix: &str, le: Option<&str>| {
        let name = format!("{name}{suffix}");
        let mut pairs: Vec<(&str, &str)> = vec![("__name__", &name)];
        pairs.extend_from_slice(base);
        if let Some(le) = le {
            pairs.push(("le", le));
        }
        labels(&pairs)
    };
    series
        .into_iter()
        .enumerate()
        .map(|(b, samples)| Series {
            labels: match b {
                _ if b < bounds.len() => named("_bucket", Some(bounds[b])),
                _ if b == bounds.len() => named("_sum", None),
                _ => named("_count", None),
            },
            samples,
        })
        .collect()
}

/// A native-histogram series: at each time a histogram, or `None` for a
/// staleness marker (a float sample, as Prometheus writes it when a
/// histogram series disappears).
#[derive(Clone)]
pub struct HistogramSeries {
    pub labels: Vec<(String, String)>,
    pub points: Vec<(i64, Option<Histogram>)>,
}

/// Remote-write requests, oldest first, each holding `rounds` consecutive
/// sample times of every series that has samples then (one time series
/// entry per series, its samples in order).
pub fn requests(data: &[Series], rounds: usize) -> Vec<Vec<u8>> {
    requests_with_histograms(data, &[], rounds)
}

/// [`requests`] with native-histogram series as well. A time series entry
/// holds its floats before its histograms, so with a histogram series'
/// staleness markers among them keep `rounds` at 1.
pub fn requests_with_histograms(
    data: &[Series],
    histograms: &[HistogramSeries],
    rounds: usize,
) -> Vec<Vec<u8>> {
    enum Point<'a> {
        Float(f64),
        Histogram(&'a Histogram),
    }
    let labels: Vec<&Vec<(String, String)>> = data
        .iter()
        .map(|s| &s.labels)
        .chain(histograms.iter().map(|h| &h.labels))
        .collect();
    let mut times: BTreeMap<i64, Vec<(usize, Point<'_>)>> = BTreeMap::new();
    for (s, series) in data.iter().enumerate() {
        for &(timestamp, value) in &series.samples {
            times
                .entry(timestamp)
                .or_default()
                .push((s, Point::Float(value)));
        }
    }
    for (h, series) in histograms.iter().enumerate() {
        for (timestamp, point) in &series.points {
            let point = match point {
                Some(histogram) => Point::Histogram(histogram),
                None => Point::Float(f64::from_bits(STALE_NAN)),
            };
            times
                .entry(*timestamp)
                .or_default()
                .push((data.len() + h, point));
        }
    }
    let times: Vec<(i64, Vec<(usize, Point<'_>)>)> = times.into_iter().collect();
    times
        .chunks(rounds.max(1))
        .map(|group| {
            let mut per_series: BTreeMap<usize, TimeSeries> = BTreeMap::new();
            for (timestamp, points) in group {
                for (s, point) in points {
                    let entry = per_series.entry(*s).or_insert_with(|| TimeSeries {
                        labels: labels[*s]
                            .iter()
                            .map(|(name, value)| Label {
                                name: name.clone(),
                                value: value.clone(),
                            })
                            .collect(),
                        ..Default::default()
                    });
                    match point {
                        Point::Float(value) => entry.samples.push(Sample {
                            timestamp: *timestamp,
                            value: *value,
                        }),
                        Point::Histogram(h) => entry.histograms.push(int_to_proto(*timestamp, h)),
                    }
                }
            }
            rw::encode(&WriteRequest {
                timeseries: per_series.into_values().collect(),
                metadata: vec![],
            })
        })
        .collect()
}

/// Sends each request to Strata's push endpoint (as `tenant`, if any) and
/// to Prometheus's remote-write receiver, in order; both must accept all.
pub async fn write_both(
    strata_push: &str,
    tenant: Option<&str>,
    prometheus_write: &str,
    bodies: Vec<Vec<u8>>,
) -> Result<()> {
    let protobuf = "application/x-protobuf";
    for body in bodies {
        let (a, b) = tokio::join!(
            rw::post(strata_push, tenant, protobuf, body.clone()),
            rw::post(prometheus_write, None, protobuf, body),
        );
        let (a, b) = (a?, b?);
        anyhow::ensure!(a.status / 100 == 2, "Strata push: {} {}", a.status, a.body);
        anyhow::ensure!(
            b.status / 100 == 2,
            "Prometheus write: {} {}",
            b.status,
            b.body
        );
    }
    Ok(())
}

/// Prometheus 3.16 as a remote-write receiver with no scrape jobs.
pub struct Prometheus {
    pub guard: Guard,
    port: u16,
    _dir: tempfile::TempDir,
}

/// A Prometheus config scraping itself (on `port`) and `targets` (a YAML
/// list) every second, native histograms included, and remote-writing to
/// `push` for `tenant`; `remote_write_extra` adds lines to the remote-write
/// entry (each `    key: value\n`).
pub fn sender_config(
    port: u16,
    targets: &str,
    push: &str,
    tenant: &str,
    remote_write_extra: &str,
) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_native_histograms: true\n\
         scrape_configs:\n\
         \x20 - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n\
         \x20 - job_name: strata\n    static_configs: [{{targets: {targets}}}]\n\
         remote_write:\n\
         \x20 - url: {push}\n    headers: {{X-Scope-OrgID: {tenant}}}\n{remote_write_extra}"
    )
}

/// A `strata` in `workdir` that takes a test's bulk-loaded history (one
/// replica, no age or rate limits), with `extra` flags, and a Prometheus
/// 3.16 receiving remote writes, started side by side.
pub async fn start_strata_and_prometheus(
    workdir: &std::path::Path,
    extra: &[String],
) -> Result<(Strata, Prometheus)> {
    let mut args: Vec<String> = vec![
        "--ring.replication-factor=1".into(),
        "--limits.reject-old-samples=false".into(),
        "--limits.ingestion-rate=100000000".into(),
        "--limits.ingestion-burst-size=100000000".into(),
    ];
    args.extend_from_slice(extra);
    let mut strata = Strata::spawn_in("strata", workdir, &args)?;
    let (ready, prometheus) = tokio::join!(
        strata.wait_ready(),
        Prometheus::start(&["--web.enable-remote-write-receiver"])
    );
    ready?;
    Ok((strata, prometheus?))
}
impl Prometheus {
    /// Prometheus 3.16 with no scrape jobs and the flags `extra` (e.g.
    /// `--web.enable-remote-write-receiver`).
    pub async fn start(extra: &[&str]) -> Result<Prometheus> {
        Prometheus::start_with(
            "prometheus-3",
            |_| "global:\n  scrape_interval: 15s\n  evaluation_interval: 1m\n".to_string(),
            extra,
        )
        .await
    }

    /// Prometheus 3.16 with the config `config(port)` (given the port it
    /// listens on, e.g. to scrape itself) and extra flags.
    pub async fn start_with(
        name: &str,
        config: impl Fn(u16) -> String,
        args: &[&str],
    ) -> Result<Prometheus> {
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir()?;
            let port = free_port();
            let file = dir.path().join("prometheus.yml");
            std::fs::write(&file, config(port))?;
            let mut command = Command::new(super::prometheus3());
            command
                .arg(format!("--config.file={}", file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .args(args);
            let log = dir.path().join("prometheus.log");
            let mut guard = Guard::spawn(name, command, log)
                .context("prometheus must be installed (tests/install-deps.sh installs it)")?;
            if wait_ready(&mut guard, port).await? {
                return Ok(Prometheus {
                    guard,
                    port,
                    _dir: dir,
                });
            }
            last = guard.log_text();
        }
        bail!("{name} did not start; last log:\n{last}")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Whether Prometheus became ready (false: it exited, e.g. its port was taken).
pub async fn wait_ready(guard: &mut Guard, port: u16) -> Result<bool> {
    let client = http();
    let url = format!("http://127.0.0.1:{port}/-/ready");
    let start = Instant::now();
    loop {
        if guard.exited().is_some() {
            return Ok(false);
        }
        if let Ok(response) = client.get(&url).send().await
            && response.status() == 200
        {
            return Ok(true);
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("prometheus not ready within 30 s:\n{}", guard.log_text());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Milliseconds as the API's seconds parameter.
pub fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// One way of running a query.
#[derive(Clone)]
pub struct Mode {
    pub name: String,
    pub path: &'static str,
    pub params: Vec<(&'static str, String)>,
}

/// A Prometheus HTTP API to query: its `/api/v1` base URL and the tenant
/// header to send, if any.
pub struct Api {
    pub base: String,
    pub tenant: Option<&'static str>,
}

/// A query's answer, normalised: labels sorted, times in milliseconds.
#[derive(Debug)]
pub enum Answer {
    Error { error_type: String, error: String },
    Scalar(i64, f64),
    String(i64, String),
    Vector(Vec<(Metric, i64, PointValue)>),
    Matrix(Vec<(Metric, Vec<(i64, PointValue)>)>),
}

/// A vector's or matrix's value at a time: a float, or a native histogram
/// as the API writes it.
#[derive(Debug, Clone)]
pub enum PointValue {
    Float(f64),
    Histogram(Json),
}

impl std::fmt::Display for PointValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointValue::Float(v) => write!(f, "{v}"),
            PointValue::Histogram(h) => write!(f, "{h}"),
        }
    }
}

/// Floats as [`same_value`]; histograms field by field, their numbers
/// (written as strings) as [`same_value`].
pub fn same_point(a: &PointValue, b: &PointValue) -> bool {
    first_point_difference(a, b).is_none()
}

/// Where two points first differ (for histograms, the JSON path and both
/// values there), if they do.
pub fn first_point_difference(a: &PointValue, b: &PointValue) -> Option<String> {
    fn first(a: &Json, b: &Json, path: &str) -> Option<String> {
        let here = || Some(format!("at {path}: {a} vs {b}"));
        match (a, b) {
            (Json::String(x), Json::String(y)) => match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(x), Ok(y)) if same_value(x, y) => None,
                _ if x == y => None,
                _ => here(),
            },
            (Json::Array(x), Json::Array(y)) => {
                if x.len() != y.len() {
                    return Some(format!("at {path}: {} vs {} elements", x.len(), y.len()));
                }
                x.iter()
                    .zip(y)
                    .enumerate()
                    .find_map(|(i, (x, y))| first(x, y, &format!("{path}[{i}]")))
            }
            (Json::Object(x), Json::Object(y)) => {
                if x.len() != y.len() {
                    return here();
                }
                x.iter().find_map(|(k, v)| match y.get(k) {
                    Some(w) => first(v, w, &format!("{path}.{k}")),
                    None => here(),
                })
            }
            _ if a == b => None,
            _ => here(),
        }
    }
    match (a, b) {
        (PointValue::Float(x), PointValue::Float(y)) if same_value(*x, *y) => None,
        (PointValue::Histogram(x), PointValue::Histogram(y)) => first(x, y, ""),
        _ => Some(format!("{a} vs {b}")),
    }
}

/// A series' labels, `__name__` included.
pub type Metric = BTreeMap<String, String>;

/// One query run one way on both servers.
pub struct Outcome {
    pub query: usize,
    pub mode: usize,
    /// The difference (with both answers), if any, and whether
    /// Prometheus's answer was empty.
    pub compared: Result<(Option<String>, bool)>,
    /// How long Prometheus and Strata took to answer.
    pub took: (Duration, Duration),
}

pub fn parse_value(value: &Json) -> Result<f64> {
    let text = value.as_str().context("sample value is not a string")?;
    Ok(match text {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text
            .parse()
            .with_context(|| format!("sample value {text:?}"))?,
    })
}

pub fn parse_time(value: &Json) -> Result<i64> {
    let seconds = value.as_f64().context("sample time is not a number")?;
    Ok((seconds * 1000.0).round() as i64)
}

pub fn parse_point(point: &Json) -> Result<(i64, f64)> {
    Ok((parse_time(&point[0])?, parse_value(&point[1])?))
}

/// A `[time, value]` or `[time, histogram]` pair.
fn parse_point_value(point: &Json, histogram: bool) -> Result<(i64, PointValue)> {
    let t = parse_time(&point[0])?;
    Ok(if histogram {
        (t, PointValue::Histogram(point[1].clone()))
    } else {
        (t, PointValue::Float(parse_value(&point[1])?))
    })
}

pub fn parse_metric(metric: &Json) -> Result<Metric> {
    metric
        .as_object()
        .context("metric is not an object")?
        .iter()
        .map(|(name, value)| {
            Ok((
                name.clone(),
                value.as_str().context("label value")?.to_string(),
            ))
        })
        .collect()
}

pub fn parse_answer(body: &Json) -> Result<Answer> {
    if body["status"] != "success" {
        return Ok(Answer::Error {
            error_type: body["errorType"].as_str().unwrap_or("").to_string(),
            error: body["error"].as_str().unwrap_or("").to_string(),
        });
    }
    let data = &body["data"];
    let result = &data["result"];
    Ok(match data["resultType"].as_str() {
        Some("scalar") => {
            let (t, v) = parse_point(result)?;
            Answer::Scalar(t, v)
        }
        Some("string") => Answer::String(
            parse_time(&result[0])?,
            result[1].as_str().unwrap_or("").to_string(),
        ),
        Some("vector") => Answer::Vector(
            result
                .as_array()
                .context("vector result is not an array")?
                .iter()
                .map(|sample| {
                    let (t, v) = match sample.get("histogram") {
                        Some(h) => parse_point_value(h, true)?,
                        None => parse_point_value(&sample["value"], false)?,
                    };
                    Ok((parse_metric(&sample["metric"])?, t, v))
                })
                .collect::<Result<_>>()?,
        ),
        Some("matrix") => Answer::Matrix(
            result
                .as_array()
                .context("matrix result is not an array")?
                .iter()
                .map(|series| {
                    let mut points = Vec::new();
                    for (field, histogram) in [("values", false), ("histograms", true)] {
                        if let Some(list) = series.get(field).and_then(Json::as_array) {
                            for point in list {
                                points.push(parse_point_value(point, histogram)?);
                            }
                        }
                    }
                    points.sort_by_key(|(t, _)| *t);
                    Ok((parse_metric(&series["metric"])?, points))
                })
                .collect::<Result<_>>()?,
        ),
        other => bail!("unknown resultType {other:?}"),
    })
}

/// Equal within 1e-9 relative; NaN equals NaN; infinities exactly.
pub fn same_value(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

pub fn show_labels(labels: &Metric) -> String {
    let name = labels.get("__name__").cloned().unwrap_or_default();
    let rest: Vec<String> = labels
        .iter()
        .filter(|(n, _)| *n != "__name__")
        .map(|(n, v)| format!("{n}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

pub fn show(answer: &Answer) -> String {
    let mut out = String::new();
    match answer {
        Answer::Error { error_type, error } => {
            let _ = write!(out, "error {error_type}: {error}");
        }
        Answer::Scalar(t, v) => {
            let _ = write!(out, "scalar {v} @{t}");
        }
        Answer::String(t, s) => {
            let _ = write!(out, "string {s:?} @{t}");
        }
        Answer::Vector(samples) => {
            let _ = write!(out, "vector ({} samples)", samples.len());
            for (labels, t, v) in samples {
                let _ = write!(out, "\n      {} {v} @{t}", show_labels(labels));
            }
        }
        Answer::Matrix(series) => {
            let _ = write!(out, "matrix ({} series)", series.len());
            for (labels, points) in series {
                let _ = write!(out, "\n      {} [", show_labels(labels));
                for (i, (t, v)) in points.iter().enumerate() {
                    if i == 8 {
                        let _ = write!(out, " ... {} points", points.len());
                        break;
                    }
                    let _ = write!(out, " {v}@{t}");
                }
                out.push_str(" ]");
            }
        }
    }
    if out.len() > 3000 {
        let mut cut = 3000;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("\n      ...");
    }
    out
}

/// The first difference between two answers, if any. `ordered`: vectors
/// must list their samples in the same order.
pub fn difference(reference: &Answer, strata: &Answer, ordered: bool) -> Option<String> {
    match (reference, strata) {
        (Answer::Error { error_type: a, .. }, Answer::Error { error_type: b, .. }) => {
            (a != b).then(|| format!("errorType {a:?} vs {b:?}"))
        }
        (Answer::Scalar(ta, va), Answer::Scalar(tb, vb)) => {
            (ta != tb || !same_value(*va, *vb)).then(|| format!("scalar {va}@{ta} vs {vb}@{tb}"))
        }
        (Answer::String(ta, a), Answer::String(tb, b)) => {
            (ta != tb || a != b).then(|| format!("string {a:?}@{ta} vs {b:?}@{tb}"))
        }
        (Answer::Vector(a), Answer::Vector(b)) => {
            let (mut a, mut b) = (a.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
            if !ordered {
                a.sort_by(|x, y| x.0.cmp(&y.0));
                b.sort_by(|x, y| x.0.cmp(&y.0));
            }
            if a.len() != b.len() {
                return Some(format!("{} samples vs {}", a.len(), b.len()));
            }
            for ((la, ta, va), (lb, tb, vb)) in a.iter().zip(&b) {
                if la != lb {
                    return Some(format!(
                        "series {} vs {}{}",
                        show_labels(la),
                        show_labels(lb),
                        if ordered { " (ordered)" } else { "" }
                    ));
                }
                if ta != tb {
                    return Some(format!("{}: {va}@{ta} vs {vb}@{tb}", show_labels(la)));
                }
                if let Some(diff) = first_point_difference(va, vb) {
                    return Some(format!("{} @{ta}: {diff}", show_labels(la)));
                }
            }
            None
        }
        (Answer::Matrix(a), Answer::Matrix(b)) => {
            let a: BTreeMap<_, _> = a.iter().map(|(l, p)| (l, p)).collect();
            let b: BTreeMap<_, _> = b.iter().map(|(l, p)| (l, p)).collect();
            if let Some(only) = a.keys().find(|l| !b.contains_key(*l)) {
                return Some(format!("series {} only in Prometheus", show_labels(only)));
            }
            if let Some(only) = b.keys().find(|l| !a.contains_key(*l)) {
                return Some(format!("series {} only in Strata", show_labels(only)));
            }
            for (labels, pa) in &a {
                let pb = b[labels];
                for (i, ((ta, va), (tb, vb))) in pa.iter().zip(pb.iter()).enumerate() {
                    if ta != tb || !same_point(va, vb) {
                        return Some(format!(
                            "{} point {i}: {va}@{ta} vs {vb}@{tb}",
                            show_labels(labels)
                        ));
                    }
                }
                if pa.len() != pb.len() {
                    return Some(format!(
                        "{}: {} points vs {}",
                        show_labels(labels),
                        pa.len(),
                        pb.len()
                    ));
                }
            }
            None
        }
        (a, b) => Some(format!("result kinds differ: {} vs {}", kind(a), kind(b))),
    }
}

/// A vector or matrix without series (errors, scalars and strings are not empty).
pub fn is_empty(answer: &Answer) -> bool {
    match answer {
        Answer::Vector(samples) => samples.is_empty(),
        Answer::Matrix(series) => series.is_empty(),
        _ => false,
    }
}

pub fn kind(answer: &Answer) -> &'static str {
    match answer {
        Answer::Error { .. } => "error",
        Answer::Scalar(..) => "scalar",
        Answer::String(..) => "string",
        Answer::Vector(_) => "vector",
        Answer::Matrix(_) => "matrix",
    }
}

/// Whether an instant query's result order is part of its meaning.
pub fn ordered(expr: &str) -> bool {
    let expr = expr.trim();
    expr.starts_with("sort(")
        || expr.starts_with("sort_desc(")
        || expr.starts_with("topk(")
        || expr.starts_with("bottomk(")
}

pub async fn run(
    client: &reqwest::Client,
    api: &Api,
    mode: &Mode,
    expr: &str,
) -> Result<(Answer, Json)> {
    let base = &api.base;
    let mut params = mode.params.clone();
    params.push(("query", expr.to_string()));
    // Beyond the client's default: a debug build answers the largest
    // queries (tens of thousands of output series) in seconds.
    let mut request = client
        .get(format!("{base}{}", mode.path))
        .query(&params)
        .timeout(Duration::from_secs(120));
    if let Some(tenant) = api.tenant {
        request = request.header("X-Scope-OrgID", tenant);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{base}{} {expr}", mode.path))?;
    let status = response.status();
    let body: Json = response
        .json()
        .await
        .with_context(|| format!("{base}{} {expr}: {status} without JSON", mode.path))?;
    let answer = parse_answer(&body).with_context(|| format!("{expr}: {body}"))?;
    Ok((answer, body))
}

/// Runs every query in every mode on both APIs, `concurrency` at a time.
pub async fn compare<'a>(
    client: &'a reqwest::Client,
    reference: &'a Api,
    strata: &'a Api,
    queries: &'a [String],
    modes: &'a [Mode],
    concurrency: usize,
) -> Vec<Outcome> {
    let jobs: Vec<(usize, usize)> = (0..queries.len())
        .flat_map(|q| (0..modes.len()).map(move |m| (q, m)))
        .collect();
    futures::stream::iter(jobs)
        .map(|(q, m)| async move {
            let (expr, mode) = (&queries[q], &modes[m]);
            let timed = |api: &'a Api| async move {
                let started = Instant::now();
                let answer = run(client, api, mode, expr).await;
                (answer, started.elapsed())
            };
            let ((expected, reference_took), (got, strata_took)) =
                tokio::join!(timed(reference), timed(strata));
            let compared = async {
                let (expected, got) = (expected?, got?);
                let is_ordered = mode.path == "/query" && ordered(expr);
                let report = difference(&expected.0, &got.0, is_ordered).map(|diff| {
                    format!(
                        "  {}: {diff}\n    Prometheus: {}\n    Strata:     {}",
                        mode.name,
                        show(&expected.0),
                        show(&got.0)
                    )
                });
                Ok((report, is_empty(&expected.0)))
            }
            .await;
            Outcome {
                query: q,
                mode: m,
                compared,
                took: (reference_took, strata_took),
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Waits until `api` answers `timestamp(selector)` (one series) with `end`.
pub async fn wait_for_last_sample(
    client: &reqwest::Client,
    api: &Api,
    selector: &str,
    end: i64,
) -> Result<()> {
    let mode = Mode {
        name: "check".into(),
        path: "/query",
        params: vec![("time", seconds(end + 1_000))],
    };
    let expr = format!("timestamp({selector})");
    super::eventually(
        &format!("{} has the last sample", api.base),
        Duration::from_secs(30),
        || async {
            let (answer, _) = run(client, api, &mode, &expr).await?;
            Ok(match answer {
                Answer::Vector(samples) if samples.len() == 1 => {
                    let at_end =
                        matches!(samples[0].2, PointValue::Float(v) if v == end as f64 / 1000.0);
                    at_end.then_some(())
                }
                _ => None,
            })
        },
    )
    .await
}
