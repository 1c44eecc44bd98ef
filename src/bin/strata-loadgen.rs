//! `strata-loadgen`: an end-to-end remote-write 1.0 load generator.
//!
//! It builds traffic that looks like a Prometheus server scraping a fleet of
//! targets (counters, gauges and classic histograms over `job`/`instance`),
//! pre-encodes every request body (protobuf + snappy) before the clock
//! starts, then pushes the rounds in order to any remote-write URL and
//! reports throughput, status codes, latency and, given the receiver's PID,
//! its CPU seconds per million samples and RSS bytes per active series.
//!
//! Invariants the receiver can rely on, as with a real Prometheus: label sets
//! are sorted by name (`__name__` first) and unique; every series gets one
//! sample per round, rounds are sent one after the other, so timestamps of a
//! series arrive strictly increasing; counters and histogram buckets never
//! decrease and buckets are cumulative (`+Inf` equals `_count`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use prost::Message;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use strata::proto::prometheus::metric_metadata::MetricType;
use strata::proto::prometheus::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};

/// Linux's `USER_HZ`: the unit of utime/stime in `/proc/PID/stat`.
const USER_HZ: f64 = 100.0;

#[derive(Parser, Debug)]
#[command(
    name = "strata-loadgen",
    version,
    about = "Push realistic Prometheus remote-write traffic to a receiver and measure it.",
    after_help = "Example: strata-loadgen --url http://127.0.0.1:9009/api/v1/push \
                  --header 'X-Scope-OrgID: bench' --series 100000 --rounds 10 --pid 1234"
)]
struct Args {
    /// Remote-write URL, e.g. http://127.0.0.1:9009/api/v1/push (Strata) or
    /// http://127.0.0.1:9090/api/v1/write (Prometheus, VictoriaMetrics).
    #[arg(long)]
    url: Url,
    /// Active series (one sample each per round).
    #[arg(long, default_value_t = 100_000)]
    series: usize,
    /// Scrape rounds; round r is at start + r * interval, the last ~1m ago.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Scrape interval between rounds' timestamps.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Series per request (Prometheus's max_samples_per_send).
    #[arg(long, default_value_t = 2000)]
    batch_series: usize,
    /// Requests in flight within a round.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Scrape targets (distinct `instance` labels) the series are spread over.
    #[arg(long, default_value_t = 100)]
    instances: usize,
    /// Extra request header, repeatable, e.g. 'X-Scope-OrgID: bench'.
    #[arg(long = "header", value_name = "K: V", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Stop pushing after this long (remaining requests count as aborted).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    max_duration: Duration,
    /// Refuse to run a plan with more requests than this.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: usize,
    /// Timeout of one request.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// PID of the receiver: report its CPU per million samples and RSS per series.
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds to wait after the push before reading the receiver's RSS.
    #[arg(long, default_value_t = 0.0)]
    settle: f64,
    /// Also print the report as one JSON line on stdout (the text goes to stderr).
    #[arg(long)]
    json: bool,
    /// Name of the receiver in the report (e.g. prometheus).
    #[arg(long)]
    target_name: Option<String>,
    /// Seed of the traffic (same seed, same series and values).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not send metric metadata (otherwise sent once, in the first request).
    #[arg(long)]
    no_metadata: bool,
    /// Allow a URL whose host is not loopback (127.0.0.0/8, ::1, localhost).
    #[arg(long)]
    allow_non_loopback: bool,
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

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

// ---------------------------------------------------------------------------
// Traffic: the series of a fleet of scrape targets and how their values move.

const JOBS: [&str; 4] = ["api", "checkout", "catalog", "auth"];
const HANDLERS: [&str; 10] = [
    "/",
    "/api/v1/items",
    "/api/v1/items/:id",
    "/api/v1/cart",
    "/api/v1/checkout",
    "/api/v1/login",
    "/api/v1/search",
    "/api/v1/users/:id",
    "/healthz",
    "/metrics",
];
/// `http_requests_total` label values and the largest per-scrape increase.
const REQUEST_KINDS: [(&str, &str, u32); 6] = [
    ("GET", "200", 40),
    ("GET", "304", 8),
    ("GET", "404", 3),
    ("GET", "500", 1),
    ("POST", "201", 10),
    ("POST", "400", 2),
];
/// Prometheus client libraries' default histogram buckets.
const LE_BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const LE: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
/// Bucket series, then `_sum`, then `_count`.
const HISTOGRAM_SERIES: usize = LE.len() + 2;
/// A handler's series: its request counters and its latency histogram.
const HANDLER_GROUP: usize = REQUEST_KINDS.len() + HISTOGRAM_SERIES;
/// Most observations a histogram gets per scrape.
const MAX_OBSERVATIONS: u32 = 30;

/// How one series (or, for a histogram, a contiguous run of series) evolves.
#[derive(Debug, Clone, PartialEq)]
enum Family {
    /// Increases by an integer in `0..=max_step` per round.
    Counter { index: usize, max_step: u32 },
    /// Random walk by at most `step`, rounded to 2 decimals, floored at `min`.
    Gauge { index: usize, step: f64, min: f64 },
    /// `LE.len()` cumulative buckets from `first`, then `_sum`, then `_count`.
    Histogram { first: usize },
}

/// The series of the whole fleet and their current values.
struct Traffic {
    /// Label sets, sorted by name (`__name__` first).
    series: Vec<Vec<Label>>,
    values: Vec<f64>,
    families: Vec<Family>,
    rng: StdRng,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl Traffic {
    /// `series` series over `min(instances, series)` targets, deterministic in `seed`.
    fn new(series: usize, instances: usize, seed: u64) -> Traffic {
        let mut traffic = Traffic {
            series: Vec::with_capacity(series),
            values: Vec::with_capacity(series),
            families: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
        };
        let instances = instances.clamp(1, series.max(1));
        for i in 0..instances {
            let quota = series / instances + usize::from(i < series % instances);
            traffic.add_instance(i, quota);
        }
        debug_assert_eq!(traffic.series.len(), series);
        traffic
    }

    fn add_instance(&mut self, i: usize, quota: usize) {
        let job = JOBS[i % JOBS.len()];
        let target = Target {
            job,
            instance: format!("{job}-{i:03}:8080"),
        };
        let end = self.series.len() + quota;
        let left = |t: &Traffic| end - t.series.len();
        // Process and host metrics every target exposes.
        let base: [(&str, f64, f64, f64); 7] = [
            ("process_resident_memory_bytes", 3e8, 2e5, 1e6),
            ("go_goroutines", 200.0, 3.0, 1.0),
            ("node_memory_MemTotal_bytes", 16e9, 0.0, 0.0),
            ("node_memory_MemAvailable_bytes", 8e9, 5e6, 1e8),
            ("node_memory_MemFree_bytes", 2e9, 5e6, 1e7),
            ("node_memory_Cached_bytes", 4e9, 2e6, 1e7),
            ("node_load1", 1.0, 0.05, 0.0),
        ];
        if left(self) > 0 {
            let initial = self.rng.random_range(0..100_000) as f64;
            let index = self.add_series(&target, "process_cpu_seconds_total", &[], initial);
            self.families.push(Family::Counter { index, max_step: 2 });
        }
        for (name, typical, step, min) in base {
            if left(self) == 0 {
                return;
            }
            let initial = round2(typical * self.rng.random_range(0.5..1.5));
            let initial = if step == 0.0 { typical } else { initial };
            let index = self.add_series(&target, name, &[], initial);
            self.families.push(Family::Gauge { index, step, min });
        }
        // Per handler: request counters and a latency histogram.
        let mut handler = 0;
        while left(self) >= HANDLER_GROUP {
            let path = match HANDLERS.get(handler) {
                Some(path) => (*path).to_string(),
                None => format!("/api/v2/resource{}", handler - HANDLERS.len()),
            };
            handler += 1;
            for (method, status, max_step) in REQUEST_KINDS {
                let initial = self.rng.random_range(0..1_000_000) as f64;
                let labels = [
                    ("handler", path.as_str()),
                    ("method", method),
                    ("status", status),
                ];
                let index = self.add_series(&target, "http_requests_total", &labels, initial);
                self.families.push(Family::Counter { index, max_step });
            }
            self.add_histogram(&target, &path);
        }
        // Fill the quota exactly with filesystem gauges.
        let mut disk = 0;
        while left(self) > 0 {
            let device = format!("/dev/vd{disk}");
            let mountpoint = format!("/data{disk}");
            disk += 1;
            let labels = [
                ("device", device.as_str()),
                ("fstype", "ext4"),
                ("mountpoint", mountpoint.as_str()),
            ];
            let initial = round2(self.rng.random_range(1e9..1e11));
            let index = self.add_series(&target, "node_filesystem_avail_bytes", &labels, initial);
            self.families.push(Family::Gauge {
                index,
                step: 1e6,
                min: 0.0,
            });
        }
    }

    fn add_histogram(&mut self, target: &Target, handler: &str) {
        // A target that has been up a while: some observations already.
        let mut cumulative = 0u64;
        let mut sum = 0.0;
        let mut first = None;
        for (b, le) in LE.iter().enumerate() {
            let observed = self.rng.random_range(0..1000u64) >> b.min(8);
            cumulative += observed;
            let upper = LE_BOUNDS.get(b).copied().unwrap_or(20.0);
            sum += observed as f64 * upper * 0.75;
            let labels = [("handler", handler), ("le", *le)];
            let name = "http_request_duration_seconds_bucket";
            let index = self.add_series(target, name, &labels, cumulative as f64);
            first.get_or_insert(index);
        }
        let labels = [("handler", handler)];
        self.add_series(target, "http_request_duration_seconds_sum", &labels, sum);
        self.add_series(
            target,
            "http_request_duration_seconds_count",
            &labels,
            cumulative as f64,
        );
        let first = first.expect("LE is not empty");
        self.families.push(Family::Histogram { first });
    }

    fn add_series(
        &mut self,
        target: &Target,
        name: &str,
        extra: &[(&str, &str)],
        value: f64,
    ) -> usize {
        let label = |name: &str, value: &str| Label {
            name: name.to_string(),
            value: value.to_string(),
        };
        let mut labels = vec![
            label("__name__", name),
            label("instance", &target.instance),
            label("job", target.job),
        ];
        labels.extend(extra.iter().map(|(n, v)| label(n, v)));
        // Byte order puts `__name__` first: every other name here is lower case.
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        self.series.push(labels);
        self.values.push(value);
        self.series.len() - 1
    }

    /// Moves every value one scrape forward.
    fn advance(&mut self) {
        let Traffic {
            values,
            families,
            rng,
            ..
        } = self;
        for family in families.iter() {
            match *family {
                Family::Counter { index, max_step } => {
                    values[index] += f64::from(rng.random_range(0..=max_step));
                }
                Family::Gauge { index, step, min } => {
                    if step > 0.0 {
                        let next = values[index] + rng.random_range(-step..=step);
                        values[index] = round2(next.max(min));
                    }
                }
                Family::Histogram { first } => {
                    let mut per_bucket = [0u64; LE.len()];
                    let n = rng.random_range(0..=MAX_OBSERVATIONS);
                    let mut sum = 0.0;
                    for _ in 0..n {
                        // Exponential latencies, mean 80ms.
                        let seconds = -(1.0 - rng.random::<f64>()).ln() * 0.08;
                        sum += seconds;
                        let bucket = LE_BOUNDS
                            .iter()
                            .position(|&le| seconds <= le)
                            .unwrap_or(LE_BOUNDS.len());
                        per_bucket[bucket] += 1;
                    }
                    let mut cumulative = 0;
                    for (b, count) in per_bucket.iter().enumerate() {
                        cumulative += count;
                        values[first + b] += cumulative as f64;
                    }
                    values[first + LE.len()] += (sum * 1e6).round() / 1e6;
                    values[first + LE.len() + 1] += f64::from(n);
                }
            }
        }
    }
}

struct Target {
    job: &'static str,
    instance: String,
}

fn metadata() -> Vec<MetricMetadata> {
    let families = [
        (
            "process_cpu_seconds_total",
            MetricType::Counter,
            "Total user and system CPU time spent in seconds.",
            "seconds",
        ),
        (
            "process_resident_memory_bytes",
            MetricType::Gauge,
            "Resident memory size in bytes.",
            "bytes",
        ),
        (
            "go_goroutines",
            MetricType::Gauge,
            "Number of goroutines that currently exist.",
            "",
        ),
        (
            "node_memory_MemTotal_bytes",
            MetricType::Gauge,
            "Memory information field MemTotal_bytes.",
            "bytes",
        ),
        (
            "node_memory_MemAvailable_bytes",
            MetricType::Gauge,
            "Memory information field MemAvailable_bytes.",
            "bytes",
        ),
        (
            "node_memory_MemFree_bytes",
            MetricType::Gauge,
            "Memory information field MemFree_bytes.",
            "bytes",
        ),
        (
            "node_memory_Cached_bytes",
            MetricType::Gauge,
            "Memory information field Cached_bytes.",
            "bytes",
        ),
        ("node_load1", MetricType::Gauge, "1m load average.", ""),
        (
            "http_requests_total",
            MetricType::Counter,
            "Total HTTP requests by handler, method and status.",
            "",
        ),
        (
            "http_request_duration_seconds",
            MetricType::Histogram,
            "HTTP request latencies in seconds.",
            "seconds",
        ),
        (
            "node_filesystem_avail_bytes",
            MetricType::Gauge,
            "Filesystem space available to non-root users in bytes.",
            "bytes",
        ),
    ];
    families
        .into_iter()
        .map(|(name, kind, help, unit)| MetricMetadata {
            r#type: kind as i32,
            metric_family_name: name.to_string(),
            help: help.to_string(),
            unit: unit.to_string(),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Pre-encoding: every request body, before the clock starts.

/// What to send: rounds of batches.
struct Plan {
    rounds: usize,
    batch_series: usize,
    start_ms: i64,
    interval_ms: i64,
    metadata: bool,
}

/// One snappy-compressed remote-write request.
struct Body {
    /// Which batch of series (the same series in every round).
    batch: usize,
    samples: usize,
    data: Vec<u8>,
}

struct Encoded {
    rounds: Vec<Vec<Body>>,
    /// Series per batch.
    batch_sizes: Vec<usize>,
    raw_bytes: usize,
    compressed_bytes: usize,
}

/// Encodes all rounds; batches mix targets in a seeded shuffled order, as
/// Prometheus's shards (by series hash) do.
fn encode(traffic: &mut Traffic, plan: &Plan) -> Result<Encoded> {
    let mut order: Vec<usize> = (0..traffic.series.len()).collect();
    order.shuffle(&mut traffic.rng);
    let batches: Vec<&[usize]> = order.chunks(plan.batch_series.max(1)).collect();
    let mut templates: Vec<WriteRequest> = batches
        .iter()
        .map(|ids| WriteRequest {
            timeseries: ids
                .iter()
                .map(|&id| TimeSeries {
                    labels: traffic.series[id].clone(),
                    samples: vec![Sample::default()],
                    ..TimeSeries::default()
                })
                .collect(),
            metadata: Vec::new(),
        })
        .collect();
    let mut encoder = snap::raw::Encoder::new();
    let mut raw = Vec::new();
    let mut encoded = Encoded {
        rounds: Vec::with_capacity(plan.rounds),
        batch_sizes: batches.iter().map(|ids| ids.len()).collect(),
        raw_bytes: 0,
        compressed_bytes: 0,
    };
    for round in 0..plan.rounds {
        if round > 0 {
            traffic.advance();
        }
        let timestamp = plan.start_ms + round as i64 * plan.interval_ms;
        let mut bodies = Vec::with_capacity(templates.len());
        for (batch, (request, ids)) in templates.iter_mut().zip(&batches).enumerate() {
            for (series, &id) in request.timeseries.iter_mut().zip(ids.iter()) {
                series.samples[0] = Sample {
                    value: traffic.values[id],
                    timestamp,
                };
            }
            let with_metadata = plan.metadata && round == 0 && batch == 0;
            if with_metadata {
                request.metadata = metadata();
            }
            raw.clear();
            request.encode(&mut raw).context("protobuf encoding")?;
            request.metadata.clear();
            let data = encoder.compress_vec(&raw).context("snappy compression")?;
            encoded.raw_bytes += raw.len();
            encoded.compressed_bytes += data.len();
            bodies.push(Body {
                batch,
                samples: ids.len(),
                data,
            });
        }
        encoded.rounds.push(bodies);
    }
    Ok(encoded)
}

// ---------------------------------------------------------------------------
// Pushing.

#[derive(Debug, Clone, PartialEq)]
enum Response {
    /// The receiver answered; `body` is kept (shortened) for non-2xx only.
    Status {
        code: u16,
        body: String,
    },
    Network(String),
    /// Not sent, or cut off, because `--max-duration` passed.
    Aborted,
}

#[derive(Debug, Clone)]
struct Outcome {
    batch: usize,
    samples: usize,
    latency: Duration,
    response: Response,
}

fn client(args: &Args) -> Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    let fixed = [
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "snappy"),
        ("x-prometheus-remote-write-version", "0.1.0"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    for (name, value) in &args.headers {
        headers.insert(name.clone(), value.clone());
    }
    reqwest::Client::builder()
        .user_agent(concat!("strata-loadgen/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .no_proxy()
        .timeout(args.timeout)
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .context("building the HTTP client")
}

async fn send(
    client: &reqwest::Client,
    url: &Url,
    body: Body,
    deadline: tokio::time::Instant,
) -> Outcome {
    let mut outcome = Outcome {
        batch: body.batch,
        samples: body.samples,
        latency: Duration::ZERO,
        response: Response::Aborted,
    };
    if tokio::time::Instant::now() >= deadline {
        return outcome;
    }
    let started = Instant::now();
    let request = async {
        let response = client.post(url.clone()).body(body.data).send().await?;
        let code = response.status().as_u16();
        let text = response.bytes().await?;
        Ok::<_, reqwest::Error>((code, text))
    };
    outcome.response = match tokio::time::timeout_at(deadline, request).await {
        Err(_) => Response::Aborted,
        // The source chain says why (refused, reset, timed out).
        Ok(Err(err)) => Response::Network(format!("{:#}", anyhow::Error::new(err))),
        Ok(Ok((code, text))) => {
            let body = if (200..300).contains(&code) {
                String::new()
            } else {
                String::from_utf8_lossy(&text[..text.len().min(300)])
                    .trim()
                    .to_string()
            };
            Response::Status { code, body }
        }
    };
    outcome.latency = started.elapsed();
    outcome
}

/// Sends the rounds in order, each round's requests `concurrency` at a time.
async fn push(
    client: &reqwest::Client,
    url: &Url,
    rounds: Vec<Vec<Body>>,
    concurrency: usize,
    deadline: tokio::time::Instant,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for round in rounds {
        let done: Vec<Outcome> = futures::stream::iter(round)
            .map(|body| send(client, url, body, deadline))
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        outcomes.extend(done);
    }
    outcomes
}

// ---------------------------------------------------------------------------
// Measuring the receiver and reporting.

/// utime + stime in clock ticks, from the text of `/proc/PID/stat`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in bytes, from the text of `/proc/PID/status`.
fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_cpu_ticks(&stat).with_context(|| format!("parsing {path}"))?;
    Ok(ticks as f64 / USER_HZ)
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_rss_bytes(&status).with_context(|| format!("no VmRSS in {path}"))
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[derive(Debug, Serialize)]
struct Report {
    target: Option<String>,
    url: String,
    series: usize,
    rounds: usize,
    requests: usize,
    samples_total: usize,
    samples_acked: usize,
    active_series: usize,
    encode_seconds: f64,
    raw_bytes: usize,
    compressed_bytes: usize,
    push_seconds: f64,
    samples_per_second: f64,
    /// Requests by HTTP status code.
    status: BTreeMap<u16, usize>,
    network_errors: usize,
    aborted: usize,
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    latency_max_ms: Option<f64>,
    pid: Option<u32>,
    cpu_seconds: Option<f64>,
    cpu_seconds_per_million_samples: Option<f64>,
    rss_bytes_before: Option<u64>,
    rss_bytes: Option<u64>,
    rss_bytes_per_active_series: Option<f64>,
    ok: bool,
    failures: Vec<String>,
}

/// Counts, latency and pass/fail of a push (the receiver's figures are added by the caller).
fn summarize(
    outcomes: &[Outcome],
    batch_sizes: &[usize],
    samples_total: usize,
    push: Duration,
) -> Report {
    let mut status = BTreeMap::new();
    let mut first_body: BTreeMap<u16, &str> = BTreeMap::new();
    let (mut network_errors, mut aborted, mut acked) = (0, 0, 0);
    let mut first_network_error = None;
    let mut batch_acked = vec![false; batch_sizes.len()];
    let mut latencies = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match &outcome.response {
            Response::Status { code, body } => {
                *status.entry(*code).or_insert(0) += 1;
                latencies.push(outcome.latency);
                if (200..300).contains(code) {
                    acked += outcome.samples;
                    batch_acked[outcome.batch] = true;
                } else {
                    first_body.entry(*code).or_insert(body.as_str());
                }
            }
            Response::Network(err) => {
                network_errors += 1;
                first_network_error.get_or_insert(err.as_str());
            }
            Response::Aborted => aborted += 1,
        }
    }
    latencies.sort_unstable();
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let mut failures = Vec::new();
    if let Some(err) = first_network_error {
        failures.push(format!(
            "{network_errors} requests failed with a network error, first: {err}"
        ));
    }
    for (code, body) in &first_body {
        let count = status[code];
        let kind = if *code >= 500 {
            "server error"
        } else {
            "refused"
        };
        failures.push(format!(
            "{count} requests {kind} with HTTP {code}, first: {body}"
        ));
    }
    if aborted > 0 {
        failures.push(format!(
            "{aborted} requests not completed within --max-duration"
        ));
    }
    if acked < samples_total {
        failures.push(format!(
            "only {acked} of {samples_total} samples were acknowledged with 2xx"
        ));
    }
    let ok =
        network_errors == 0 && !status.keys().any(|&code| code >= 500) && acked == samples_total;
    let seconds = push.as_secs_f64();
    Report {
        target: None,
        url: String::new(),
        series: batch_sizes.iter().sum(),
        rounds: 0,
        requests: outcomes.len(),
        samples_total,
        samples_acked: acked,
        active_series: batch_sizes
            .iter()
            .zip(&batch_acked)
            .filter(|(_, acked)| **acked)
            .map(|(n, _)| n)
            .sum(),
        encode_seconds: 0.0,
        raw_bytes: 0,
        compressed_bytes: 0,
        push_seconds: seconds,
        samples_per_second: if seconds > 0.0 {
            acked as f64 / seconds
        } else {
            0.0
        },
        status,
        network_errors,
        aborted,
        latency_p50_ms: ms(percentile(&latencies, 50.0)),
        latency_p99_ms: ms(percentile(&latencies, 99.0)),
        latency_max_ms: ms(latencies.last().copied()),
        pid: None,
        cpu_seconds: None,
        cpu_seconds_per_million_samples: None,
        rss_bytes_before: None,
        rss_bytes: None,
        rss_bytes_per_active_series: None,
        ok,
        failures,
    }
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

fn render(report: &Report) -> String {
    let mut out = String::new();
    let name = report.target.as_deref().unwrap_or("target");
    let statuses: Vec<String> = report
        .status
        .iter()
        .map(|(code, n)| format!("{code}: {n}"))
        .collect();
    let _ = writeln!(out, "{name} <- {}", report.url);
    let _ = writeln!(
        out,
        "  pushed {} of {} samples ({} series x {} rounds) in {:.2}s: {:.0} samples/s",
        report.samples_acked,
        report.samples_total,
        report.series,
        report.rounds,
        report.push_seconds,
        report.samples_per_second
    );
    let _ = writeln!(
        out,
        "  requests: {} ({}; network errors: {}, aborted: {})",
        report.requests,
        if statuses.is_empty() {
            "no answers".to_string()
        } else {
            statuses.join(", ")
        },
        report.network_errors,
        report.aborted
    );
    if let (Some(p50), Some(p99)) = (report.latency_p50_ms, report.latency_p99_ms) {
        let _ = writeln!(out, "  latency: p50 {p50:.1}ms, p99 {p99:.1}ms");
    }
    if let (Some(pid), Some(cpu)) = (report.pid, report.cpu_seconds) {
        let per_million = report
            .cpu_seconds_per_million_samples
            .map_or("n/a".into(), |v| format!("{v:.2}"));
        let _ = writeln!(
            out,
            "  receiver pid {pid}: {cpu:.2} CPU s during the push = {per_million} CPU s per 1M samples"
        );
    }
    if let Some(rss) = report.rss_bytes {
        let per_series = report
            .rss_bytes_per_active_series
            .map_or("n/a".into(), |v| format!("{v:.0}"));
        let before = report
            .rss_bytes_before
            .map_or("n/a".into(), |b| format!("{:.1} MB", b as f64 / 1e6));
        let _ = writeln!(
            out,
            "  receiver RSS: {:.1} MB after (before: {before}) = {per_series} bytes per active series ({})",
            rss as f64 / 1e6,
            report.active_series
        );
    }
    for failure in &report.failures {
        let _ = writeln!(out, "  FAILED: {failure}");
    }
    out
}

fn run(args: Args) -> Result<bool> {
    if args.series == 0 || args.rounds == 0 || args.batch_series == 0 || args.concurrency == 0 {
        bail!("--series, --rounds, --batch-series and --concurrency must be at least 1");
    }
    if !args.allow_non_loopback && !is_loopback(&args.url) {
        bail!(
            "{} is not a loopback address; pass --allow-non-loopback to push there",
            args.url
        );
    }
    let batches = args.series.div_ceil(args.batch_series);
    let requests = batches.saturating_mul(args.rounds);
    if requests > args.max_requests {
        bail!(
            "the plan has {requests} requests, more than --max-requests {}",
            args.max_requests
        );
    }
    if let Some(pid) = args.pid {
        cpu_seconds(pid).with_context(|| format!("--pid {pid}"))?;
    }

    let started = Instant::now();
    let mut traffic = Traffic::new(args.series, args.instances, args.seed);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_millis() as i64;
    let interval_ms = args.interval.as_millis() as i64;
    let plan = Plan {
        rounds: args.rounds,
        batch_series: args.batch_series,
        start_ms: now_ms - 60_000 - (args.rounds as i64 - 1) * interval_ms,
        interval_ms,
        metadata: !args.no_metadata,
    };
    let encoded = encode(&mut traffic, &plan)?;
    drop(traffic);
    let encode_time = started.elapsed();
    let samples_total = args.series * args.rounds;
    eprintln!(
        "strata-loadgen: pre-encoded {requests} requests ({samples_total} samples) in {:.2}s: {:.1} MB protobuf, {:.1} MB snappy",
        encode_time.as_secs_f64(),
        mb(encoded.raw_bytes),
        mb(encoded.compressed_bytes)
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    let client = client(&args)?;
    let Encoded {
        rounds,
        batch_sizes,
        raw_bytes,
        compressed_bytes,
    } = encoded;
    let rss_before = args.pid.map(rss_bytes).transpose()?;
    let cpu_before = args.pid.map(cpu_seconds).transpose()?;
    let push_started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.max_duration;
    let outcomes = runtime.block_on(push(&client, &args.url, rounds, args.concurrency, deadline));
    let push_time = push_started.elapsed();
    let cpu_after = args.pid.map(cpu_seconds).transpose()?;
    if args.pid.is_some() && args.settle > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(args.settle));
    }
    let rss_after = args.pid.map(rss_bytes).transpose()?;

    let mut report = summarize(&outcomes, &batch_sizes, samples_total, push_time);
    report.target = args.target_name.clone();
    report.url = args.url.to_string();
    report.rounds = args.rounds;
    report.encode_seconds = encode_time.as_secs_f64();
    report.raw_bytes = raw_bytes;
    report.compressed_bytes = compressed_bytes;
    report.pid = args.pid;
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        report.cpu_seconds = Some(after - before);
        if report.samples_acked > 0 {
            report.cpu_seconds_per_million_samples =
                Some((after - before) / report.samples_acked as f64 * 1e6);
        }
    }
    report.rss_bytes_before = rss_before;
    report.rss_bytes = rss_after;
    if let Some(rss) = rss_after.filter(|_| report.active_series > 0) {
        report.rss_bytes_per_active_series = Some(rss as f64 / report.active_series as f64);
    }

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
    Ok(report.ok)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("strata-loadgen: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn plan(rounds: usize, batch_series: usize) -> Plan {
        Plan {
            rounds,
            batch_series,
            start_ms: 1_700_000_000_000,
            interval_ms: 15_000,
            metadata: true,
        }
    }

    fn decode(body: &Body) -> WriteRequest {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body.data)
            .expect("valid snappy");
        WriteRequest::decode(raw.as_slice()).expect("valid protobuf")
    }

    fn label<'a>(labels: &'a [Label], name: &str) -> Option<&'a str> {
        labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    #[test]
    fn label_sets_are_sorted_unique_and_exactly_as_many_as_asked() {
        for (series, instances) in [(1, 100), (7, 100), (100, 3), (5_000, 100), (12_345, 17)] {
            let traffic = Traffic::new(series, instances, 7);
            assert_eq!(traffic.series.len(), series);
            assert_eq!(traffic.values.len(), series);
            let mut seen = HashSet::new();
            for labels in &traffic.series {
                assert_eq!(labels[0].name, "__name__");
                assert!(
                    labels.windows(2).all(|w| w[0].name < w[1].name),
                    "{labels:?}"
                );
                assert!(labels.iter().all(|l| !l.value.is_empty()));
                assert!(label(labels, "job").is_some() && label(labels, "instance").is_some());
                let key: Vec<(String, String)> = labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                assert!(seen.insert(key), "duplicate series {labels:?}");
            }
            let instances_seen: HashSet<&str> = traffic
                .series
                .iter()
                .filter_map(|l| label(l, "instance"))
                .collect();
            assert_eq!(instances_seen.len(), instances.min(series));
        }
    }

    #[test]
    fn traffic_has_counters_gauges_and_histograms() {
        let traffic = Traffic::new(10_000, 100, 1);
        let names: HashSet<&str> = traffic.series.iter().map(|l| l[0].value.as_str()).collect();
        for name in [
            "http_requests_total",
            "http_request_duration_seconds_bucket",
            "http_request_duration_seconds_sum",
            "http_request_duration_seconds_count",
            "process_resident_memory_bytes",
            "node_memory_MemAvailable_bytes",
        ] {
            assert!(names.contains(name), "{name} missing");
        }
        let histograms = traffic
            .families
            .iter()
            .filter(|f| matches!(f, Family::Histogram { .. }))
            .count();
        assert!(histograms >= 100, "{histograms} histograms");
        // Same seed, same traffic.
        assert_eq!(Traffic::new(10_000, 100, 1).values, traffic.values);
    }

    #[test]
    fn counters_increase_by_small_integers_and_gauges_keep_two_decimals() {
        let mut traffic = Traffic::new(3_000, 10, 3);
        let mut previous = traffic.values.clone();
        let mut moved = 0;
        for _ in 0..20 {
            traffic.advance();
            for family in &traffic.families {
                match *family {
                    Family::Counter { index, max_step } => {
                        let step = traffic.values[index] - previous[index];
                        assert!(
                            step >= 0.0 && step <= f64::from(max_step) && step.fract() == 0.0,
                            "{step}"
                        );
                        moved += usize::from(step > 0.0);
                    }
                    Family::Gauge { index, min, .. } => {
                        let v = traffic.values[index];
                        assert!(v >= min);
                        assert!((v * 100.0 - (v * 100.0).round()).abs() < 1e-3, "{v}");
                    }
                    Family::Histogram { .. } => {}
                }
            }
            previous = traffic.values.clone();
        }
        assert!(moved > 0, "counters never moved");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_monotonic() {
        let mut traffic = Traffic::new(2_000, 5, 11);
        let mut previous = traffic.values.clone();
        for round in 0..30 {
            if round > 0 {
                traffic.advance();
            }
            for family in &traffic.families {
                let Family::Histogram { first } = *family else {
                    continue;
                };
                let buckets = &traffic.values[first..first + LE.len()];
                let count = traffic.values[first + LE.len() + 1];
                assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
                assert_eq!(buckets[LE.len() - 1], count, "+Inf is _count");
                for (i, le) in LE.iter().enumerate() {
                    assert_eq!(label(&traffic.series[first + i], "le"), Some(*le));
                }
                let range = first..first + HISTOGRAM_SERIES;
                let now = &traffic.values[range.clone()];
                assert!(
                    now.iter()
                        .zip(&previous[range])
                        .all(|(now, before)| now >= before),
                    "histogram at {first} decreased"
                );
            }
            previous = traffic.values.clone();
        }
    }

    #[test]
    fn batches_cover_every_series_once_per_round_with_increasing_timestamps() {
        let mut traffic = Traffic::new(4_500, 30, 5);
        let all: HashSet<Vec<Label>> = traffic.series.iter().cloned().collect();
        let encoded = encode(&mut traffic, &plan(3, 1_000)).expect("encodes");
        assert_eq!(encoded.batch_sizes, vec![1_000, 1_000, 1_000, 1_000, 500]);
        assert_eq!(encoded.rounds.len(), 3);
        let mut last: std::collections::HashMap<Vec<Label>, (i64, f64)> = Default::default();
        for (round, bodies) in encoded.rounds.iter().enumerate() {
            assert_eq!(bodies.len(), 5);
            let mut seen = HashSet::new();
            for (batch, body) in bodies.iter().enumerate() {
                let request = decode(body);
                assert_eq!(body.batch, batch);
                assert_eq!(body.samples, encoded.batch_sizes[batch]);
                assert_eq!(request.timeseries.len(), body.samples);
                assert_eq!(!request.metadata.is_empty(), round == 0 && batch == 0);
                for series in request.timeseries {
                    assert_eq!(series.samples.len(), 1);
                    let sample = series.samples[0];
                    assert_eq!(sample.timestamp, 1_700_000_000_000 + round as i64 * 15_000);
                    if let Some((t, v)) = last.get(&series.labels) {
                        assert!(sample.timestamp > *t);
                        if series.labels[0].value.ends_with("_total") {
                            assert!(sample.value >= *v, "counter went down");
                        }
                    }
                    last.insert(series.labels.clone(), (sample.timestamp, sample.value));
                    assert!(seen.insert(series.labels));
                }
            }
            assert_eq!(seen, all);
        }
        assert!(encoded.compressed_bytes < encoded.raw_bytes);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let values: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&values, 50.0), Some(ms(50)));
        assert_eq!(percentile(&values, 99.0), Some(ms(99)));
        assert_eq!(percentile(&values, 100.0), Some(ms(100)));
        assert_eq!(percentile(&values, 0.0), Some(ms(1)));
        assert_eq!(percentile(&[ms(7)], 99.0), Some(ms(7)));
        assert_eq!(percentile(&[ms(1), ms(2), ms(3)], 50.0), Some(ms(2)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_counts_statuses_and_fails_on_5xx_network_errors_and_missing_acks() {
        let outcome = |batch, code: Option<u16>| Outcome {
            batch,
            samples: 10,
            latency: Duration::from_millis(5),
            response: match code {
                Some(code) => Response::Status {
                    code,
                    body: if code == 204 {
                        String::new()
                    } else {
                        "why".into()
                    },
                },
                None => Response::Network("connection refused".into()),
            },
        };
        let good = summarize(
            &[outcome(0, Some(204)), outcome(1, Some(204))],
            &[10, 10],
            20,
            Duration::from_secs(1),
        );
        assert!(good.ok, "{:?}", good.failures);
        assert_eq!(good.samples_per_second, 20.0);
        assert_eq!(good.active_series, 20);
        assert_eq!(good.status, BTreeMap::from([(204, 2)]));

        let refused = summarize(
            &[outcome(0, Some(204)), outcome(1, Some(400))],
            &[10, 10],
            20,
            Duration::from_secs(1),
        );
        assert!(!refused.ok);
        assert_eq!(refused.active_series, 10);
        assert!(
            refused
                .failures
                .iter()
                .any(|f| f.contains("HTTP 400, first: why")),
            "{:?}",
            refused.failures
        );

        let broken = summarize(
            &[outcome(0, Some(503)), outcome(1, None)],
            &[10, 10],
            20,
            Duration::from_secs(1),
        );
        assert!(!broken.ok);
        assert_eq!(broken.network_errors, 1);
        assert_eq!(broken.samples_acked, 0);
        assert_eq!(broken.failures.len(), 3, "{:?}", broken.failures);
    }

    #[test]
    fn proc_files_parse() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 1000000 5000";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let status = "Name:\tstrata\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        assert_eq!(parse_rss_bytes(status), Some(12345 * 1024));
        let me = std::process::id();
        assert!(cpu_seconds(me).expect("own stat") >= 0.0);
        assert!(rss_bytes(me).expect("own status") > 0);
    }

    #[test]
    fn headers_and_urls_are_checked() {
        let (name, value) = parse_header("X-Scope-OrgID: bench").expect("parses");
        assert_eq!(name.as_str(), "x-scope-orgid");
        assert_eq!(value, "bench");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: v").is_err());
        for url in [
            "http://127.0.0.1:9090/api/v1/write",
            "http://localhost/x",
            "http://[::1]:1/x",
            "http://127.1.2.3/",
        ] {
            assert!(is_loopback(&url.parse().expect("url")), "{url}");
        }
        for url in [
            "http://192.168.1.1/x",
            "http://example.com/x",
            "http://10.0.0.1/",
        ] {
            assert!(!is_loopback(&url.parse().expect("url")), "{url}");
        }
    }

    #[test]
    fn cli_defaults_match_the_documented_ones() {
        let args =
            Args::try_parse_from(["strata-loadgen", "--url", "http://127.0.0.1:1/api/v1/push"])
                .expect("parses");
        assert_eq!(args.series, 100_000);
        assert_eq!(args.rounds, 10);
        assert_eq!(args.interval, Duration::from_secs(15));
        assert_eq!(args.batch_series, 2000);
        assert_eq!(args.concurrency, 8);
        assert_eq!(args.max_duration, Duration::from_secs(600));
    }
}
