//! The PromQL compliance tester's queries (prometheus/compliance,
//! `tests/promql-compliance/promql-test-queries.yml`, Apache-2.0) against
//! Strata and a real Prometheus 3.16 holding the same samples.
//!
//! The queries expect the PromLabs demo service's metrics: three instances
//! of job `demo` scraped every 5 s for hours. That service is not available
//! here, so [`demo_data`] generates equivalent series (counters, gauges, a
//! classic histogram, a summary, an intermittent series with staleness
//! markers, a batch job's last-success timestamp), and the same remote-write
//! requests go to both servers. Every one of the 539 expanded queries runs
//! as a range query through `/prometheus/api/v1/query_range` with a tenant
//! header, once with the window on the 5 s sample grid (evaluation times
//! coincide with samples: this checks left-open ranges) and once off it.
//! The answers must agree; a query that differs fails the test unless it is
//! listed in [`KNOWN_DIFFERENCES`] with its verified reason.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde::Deserialize;

use common::http;
use common::promql::{
    Api, Lcg, Mode, STALE_NAN, Series, compare, labels, requests, seconds,
    start_strata_and_prometheus, wait_for_last_sample, write_both,
};
use common::rw::now_ms;

/// Queries whose answers differ from Prometheus 3.16 by intent, each with
/// its verified reason (none today).
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// The tenant the data is written for and read as.
const TENANT: &str = "compliance";

/// The demo service's scrape interval.
const INTERVAL_MS: i64 = 5_000;
/// Samples per series: three hours.
const POINTS: i64 = 3 * 720;

/// The tester's variant arguments: every `{{.name}}` in a query expands
/// to each of these values (as the tester's `promql/testcases/expand.go`).
const VARIANTS: &[(&str, &[&str])] = &[
    ("range", &["1s", "15s", "1m", "5m", "15m", "1h"]),
    ("offset", &["1m", "5m", "10m"]),
    (
        "simpleAggrOp",
        &["sum", "avg", "max", "min", "count", "stddev", "stdvar"],
    ),
    (
        "simpleTimeAggrOp",
        &[
            "sum", "avg", "max", "min", "count", "stddev", "stdvar", "absent", "last",
        ],
    ),
    ("topBottomOp", &["topk", "bottomk"]),
    (
        "quantile",
        &[
            "-0.5", "0.1", "0.5", "0.75", "0.95", "0.90", "0.99", "1", "1.5",
        ],
    ),
    ("arithBinOp", &["+", "-", "*", "/", "%", "^"]),
    ("compBinOp", &["==", "!=", "<", ">", "<=", ">="]),
    (
        "binOp",
        &[
            "+", "-", "*", "/", "%", "^", "==", "!=", "<", ">", "<=", ">=",
        ],
    ),
    (
        "simpleMathFunc",
        &[
            "abs", "ceil", "floor", "exp", "sqrt", "ln", "log2", "log10", "round",
        ],
    ),
    ("extrapolatedRateFunc", &["delta", "rate", "increase"]),
    ("clampFunc", &["clamp_min", "clamp_max"]),
    ("instantRateFunc", &["idelta", "irate"]),
    (
        "dateFunc",
        &[
            "day_of_month",
            "day_of_week",
            "days_in_month",
            "hour",
            "minute",
            "month",
            "year",
        ],
    ),
];

#[derive(Deserialize)]
struct QueryFile {
    test_cases: Vec<TestCase>,
}

#[derive(Deserialize)]
struct TestCase {
    query: String,
    #[serde(default)]
    variant_args: Vec<String>,
    #[serde(default)]
    should_fail: bool,
}

/// One expanded query and whether the tester expects it to fail.
struct Query {
    expr: String,
    should_fail: bool,
}

/// The 539 queries: every test case with its variant arguments expanded
/// (the cartesian product of their values).
fn expanded_queries() -> Result<Vec<Query>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/promql-compliance/promql-test-queries.yml"
    );
    let text = std::fs::read_to_string(path).with_context(|| path.to_string())?;
    let file: QueryFile = serde_saphyr::from_str(&text).context("parsing the query file")?;
    let mut out = Vec::new();
    for case in file.test_cases {
        let mut exprs = vec![case.query.clone()];
        for arg in &case.variant_args {
            let values = VARIANTS
                .iter()
                .find(|(name, _)| name == arg)
                .map(|(_, values)| *values)
                .with_context(|| format!("unknown variant argument {arg}"))?;
            let placeholder = format!("{{{{.{arg}}}}}");
            exprs = exprs
                .iter()
                .flat_map(|expr| values.iter().map(|v| expr.replace(&placeholder, v)))
                .collect();
        }
        for expr in exprs {
            ensure!(!expr.contains("{{"), "unexpanded placeholder in {expr}");
            out.push(Query {
                expr,
                should_fail: case.should_fail,
            });
        }
    }
    Ok(out)
}

/// Demo-service-like series for three instances, sample `i` at
/// `end - (POINTS - 1 - i) * INTERVAL_MS`.
fn demo_data(end: i64) -> Vec<Series> {
    let time = |i: i64| end - (POINTS - 1 - i) * INTERVAL_MS;
    let mut lcg = Lcg(20_201_006);
    let mut out = Vec::new();
    let instances = [
        "demo.promlabs.com:10000",
        "demo.promlabs.com:10001",
        "demo.promlabs.com:10002",
    ];
    let demo = |name: &str, instance: &str, extra: &[(&str, &str)]| {
        let mut pairs = vec![("__name__", name), ("job", "demo"), ("instance", instance)];
        pairs.extend_from_slice(extra);
        labels(&pairs)
    };
    for (n, instance) in instances.iter().enumerate() {
        let cpus = [4.0, 6.0, 8.0][n];
        out.push(Series {
            labels: demo("up", instance, &[]),
            samples: (0..POINTS).map(|i| (time(i), 1.0)).collect(),
        });
        out.push(Series {
            labels: demo("demo_num_cpus", instance, &[]),
            samples: (0..POINTS).map(|i| (time(i), cpus)).collect(),
        });

        // CPU seconds per mode; the counters restart (a process restart)
        // once, two hours in, on the second instance.
        for (mode, share) in [("idle", 0.7), ("user", 0.2), ("system", 0.1)] {
            let mut value = lcg.unit() * 1e4;
            let samples = (0..POINTS)
                .map(|i| {
                    value += cpus * share * 5.0 * (0.8 + 0.4 * lcg.unit());
                    if n == 1 && i == 1440 {
                        value = lcg.unit() * 5.0;
                    }
                    (time(i), value)
                })
                .collect();
            out.push(Series {
                labels: demo("demo_cpu_usage_seconds_total", instance, &[("mode", mode)]),
                samples,
            });
        }

        // Memory by type: random walks around a few GiB.
        for (kind, base) in [
            ("free", 2e9),
            ("buffers", 3e8),
            ("cached", 1.5e9),
            ("used", 4e9),
        ] {
            let mut value = base * (0.9 + 0.2 * lcg.unit());
            let samples = (0..POINTS)
                .map(|i| {
                    value = (value + base * 0.01 * (lcg.unit() - 0.5)).max(base * 0.5);
                    (time(i), value.round())
                })
                .collect();
            out.push(Series {
                labels: demo("demo_memory_usage_bytes", instance, &[("type", kind)]),
                samples,
            });
        }

        // Disk usage grows and is cleaned up every 40 minutes.
        let mut disk = 1e10 * (1.0 + lcg.unit());
        let samples = (0..POINTS)
            .map(|i| {
                disk += 2e5 * (1.0 + lcg.unit());
                if i % 480 == 479 {
                    disk *= 0.6;
                }
                (time(i), disk.round())
            })
            .collect();
        out.push(Series {
            labels: demo("demo_disk_usage_bytes", instance, &[]),
            samples,
        });
        out.push(Series {
            labels: demo("demo_disk_total_bytes", instance, &[]),
            samples: (0..POINTS).map(|i| (time(i), 1e11)).collect(),
        });

        // A batch job succeeding every 5 minutes (phase per instance).
        let mut last = (time(0) / 1000 - 300) as f64;
        let samples = (0..POINTS)
            .map(|i| {
                if (i + 20 * n as i64) % 60 == 0 {
                    last = (time(i) / 1000) as f64;
                }
                (time(i), last)
            })
            .collect();
        out.push(Series {
            labels: demo("demo_batch_last_success_timestamp_seconds", instance, &[]),
            samples,
        });

        // Present for 5 minutes, gone for 5 (marked stale when it goes).
        let mut samples = Vec::new();
        for i in 0..POINTS {
            let phase = (i + 17 * n as i64) % 120;
            if phase < 60 {
                samples.push((time(i), lcg.below(100)));
            } else if phase == 60 {
                samples.push((time(i), f64::from_bits(STALE_NAN)));
            }
        }
        out.push(Series {
            labels: demo("demo_intermittent_metric", instance, &[]),
            samples,
        });

        // API request durations: a classic histogram per method, path and
        // status; errors are rare and slow.
        let bounds = [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "+Inf",
        ];
        let typical = [0.003, 0.008, 0.02, 0.04, 0.08, 0.2, 0.4, 0.8, 2.0];
        let times: Vec<i64> = (0..POINTS).map(time).collect();
        for method in ["GET", "POST"] {
            for path in ["/api/bar", "/api/foo"] {
                for status in ["200", "500"] {
                    let rate = if status == "200" { 12 } else { 2 };
                    out.extend(common::promql::classic_histogram(
                        &mut lcg,
                        "demo_api_request_duration_seconds",
                        &[
                            ("job", "demo"),
                            ("instance", instance),
                            ("method", method),
                            ("path", path),
                            ("status", status),
                        ],
                        &bounds,
                        &typical,
                        &times,
                        |lcg, b| {
                            let weight = if status == "200" { 9 - b } else { b + 1 };
                            lcg.below(rate * weight as u32 / 4 + 1)
                        },
                    ));
                }
            }
        }

        // A summary: the batch job's run durations, with quantiles.
        let mut count = 0.0;
        let mut sum = 0.0;
        let mut quantiles: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 3];
        let mut counts = Vec::new();
        let mut sums = Vec::new();
        for i in 0..POINTS {
            count += lcg.below(3);
            sum += lcg.unit() * 10.0;
            let median = 2.0 + lcg.unit();
            for (q, factor) in [1.0, 1.8, 3.0].iter().enumerate() {
                quantiles[q].push((time(i), median * factor));
            }
            counts.push((time(i), count));
            sums.push((time(i), sum));
        }
        for (q, samples) in quantiles.into_iter().enumerate() {
            let quantile = ["0.5", "0.9", "0.99"][q];
            out.push(Series {
                labels: demo(
                    "demo_batch_run_duration_seconds",
                    instance,
                    &[("quantile", quantile)],
                ),
                samples,
            });
        }
        out.push(Series {
            labels: demo("demo_batch_run_duration_seconds_count", instance, &[]),
            samples: counts,
        });
        out.push(Series {
            labels: demo("demo_batch_run_duration_seconds_sum", instance, &[]),
            samples: sums,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_queries_match_prometheus() -> Result<()> {
    let started = Instant::now();
    let queries = expanded_queries()?;
    ensure!(
        queries.len() == 539,
        "the query file expands to 539 queries, not {}",
        queries.len()
    );
    let workdir = tempfile::tempdir()?;
    let (strata, prometheus) = start_strata_and_prometheus(workdir.path(), &[]).await?;

    // The last sample a few minutes ago, on a 5 s grid of whole seconds.
    let end = (now_ms() - 3 * 60_000) / INTERVAL_MS * INTERVAL_MS;
    let data = demo_data(end);
    let strata_push = strata.url("/api/v1/push");
    let prometheus_write = prometheus.url("/api/v1/write");
    // A minute of samples per request, as a remote-write queue batches them.
    write_both(
        &strata_push,
        Some(TENANT),
        &prometheus_write,
        requests(&data, 12),
    )
    .await?;
    let client = http();
    let reference = Api {
        base: prometheus.url("/api/v1"),
        tenant: None,
    };
    let strata_api = Api {
        base: strata.url("/prometheus/api/v1"),
        tenant: Some(TENANT),
    };
    let last = "demo_num_cpus{instance=\"demo.promlabs.com:10000\"}";
    wait_for_last_sample(&client, &strata_api, last, end).await?;
    wait_for_last_sample(&client, &reference, last, end).await?;
    let samples: usize = data.iter().map(|s| s.samples.len()).sum();
    println!(
        "{} series, {samples} samples loaded in {:?}",
        data.len(),
        started.elapsed()
    );

    // Another tenant sees none of it.
    let other = Api {
        base: strata.url("/prometheus/api/v1"),
        tenant: Some("someone-else"),
    };
    let probe = Mode {
        name: "probe".into(),
        path: "/query",
        params: vec![("time", seconds(end))],
    };
    let (answer, body) = common::promql::run(&client, &other, &probe, "count(up)").await?;
    ensure!(
        common::promql::is_empty(&answer),
        "another tenant sees the data: {body}"
    );

    // One hour, ten minutes before the last sample; on the grid and off it.
    let window_end = end - 10 * 60_000;
    let modes: Vec<Mode> = [("on the sample grid", 0), ("off the grid", 2_345)]
        .into_iter()
        .map(|(name, shift)| Mode {
            name: format!("range {name}"),
            path: "/query_range",
            params: vec![
                ("start", seconds(window_end - 60 * 60_000 + shift)),
                ("end", seconds(window_end + shift)),
                ("step", "10".into()),
            ],
        })
        .collect();
    let exprs: Vec<String> = queries.iter().map(|q| q.expr.clone()).collect();
    let compared = Instant::now();
    let outcomes = compare(&client, &reference, &strata_api, &exprs, &modes, 4).await;

    // Answer times side by side (a debug build of Strata against a release
    // Prometheus: a figure to watch, never a threshold).
    let total = |f: fn(&(std::time::Duration, std::time::Duration)) -> std::time::Duration| {
        outcomes
            .iter()
            .map(|o| f(&o.took))
            .sum::<std::time::Duration>()
    };
    println!(
        "summed answer times: Prometheus {:?}, Strata {:?}",
        total(|t| t.0),
        total(|t| t.1)
    );
    let mut slowest: Vec<&common::promql::Outcome> = outcomes.iter().collect();
    slowest.sort_by_key(|o| std::cmp::Reverse(o.took.1));
    for o in slowest.iter().take(5) {
        println!(
            "  slow in Strata: {:?} (Prometheus {:?}) {} {}",
            o.took.1, o.took.0, modes[o.mode].name, exprs[o.query]
        );
    }

    let mut differing: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut empty = vec![0; exprs.len()];
    let mut agreeing = 0;
    for outcome in outcomes {
        match outcome.compared {
            Ok((report, was_empty)) => {
                empty[outcome.query] += usize::from(was_empty);
                match report {
                    None => agreeing += 1,
                    Some(report) => differing.entry(outcome.query).or_default().push(report),
                }
            }
            Err(err) => differing.entry(outcome.query).or_default().push(format!(
                "  {}: request failed: {err:#}",
                modes[outcome.mode].name
            )),
        }
    }
    let known = |expr: &str| KNOWN_DIFFERENCES.iter().any(|(q, _)| *q == expr);
    let mut unexpected = Vec::new();
    for (q, reports) in &differing {
        let expr = &exprs[*q];
        let label = if known(expr) {
            "known difference"
        } else {
            unexpected.push(expr.clone());
            "DIFFERS"
        };
        let mut reports = reports.clone();
        reports.sort();
        println!("{label}: {expr}\n{}", reports.join("\n"));
    }
    for (expr, _) in KNOWN_DIFFERENCES {
        if !exprs
            .iter()
            .enumerate()
            .any(|(q, e)| e == expr && differing.contains_key(&q))
        {
            println!("note: listed query agrees or is gone, remove it: {expr}");
        }
    }

    // The tester's should_fail queries: which fail in Prometheus 3.16 too.
    let mut should_fail = Vec::new();
    for query in queries.iter().filter(|q| q.should_fail) {
        let (answer, _) = common::promql::run(&client, &reference, &modes[0], &query.expr).await?;
        let fails = matches!(answer, common::promql::Answer::Error { .. });
        should_fail.push(format!(
            "{} ({})",
            query.expr,
            if fails {
                "fails in both"
            } else {
                "Prometheus 3 accepts it"
            }
        ));
    }
    let always_empty: Vec<&str> = (0..exprs.len())
        .filter(|q| empty[*q] == modes.len())
        .map(|q| exprs[q].as_str())
        .collect();
    println!(
        "should_fail queries (compared like the others): {}",
        should_fail.join("; ")
    );
    println!(
        "{} queries empty in Prometheus in both windows: {always_empty:?}",
        always_empty.len()
    );
    println!(
        "{} of {} queries agree with Prometheus 3.16 ({agreeing} of {} query × window \
         evaluations); {} known differences, {} unexpected; compared in {:?}, {:?} in all",
        exprs.len() - differing.len(),
        exprs.len(),
        exprs.len() * modes.len(),
        differing.keys().filter(|q| known(&exprs[**q])).count(),
        unexpected.len(),
        compared.elapsed(),
        started.elapsed()
    );
    // Comparing empty answers proves little: the data must feed nearly all.
    // 48 are empty by their nature (nonexistent metrics, comparisons no
    // sample meets, absent_over_time of a present series, 1 s ranges
    // holding one sample).
    ensure!(
        always_empty.len() <= 50,
        "too many queries answer nothing: {always_empty:?}"
    );
    ensure!(
        unexpected.is_empty(),
        "{} queries differ from Prometheus 3.16 and are not in KNOWN_DIFFERENCES:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    Ok(())
}

#[test]
fn the_query_file_expands_to_the_testers_539_queries() -> Result<()> {
    let queries = expanded_queries()?;
    assert_eq!(queries.len(), 539);
    assert_eq!(queries.iter().filter(|q| q.should_fail).count(), 5);
    let distinct: std::collections::BTreeSet<&str> =
        queries.iter().map(|q| q.expr.as_str()).collect();
    assert_eq!(distinct.len(), 539);
    assert!(
        queries
            .iter()
            .any(|q| q.expr == "quantile_over_time(0.99, demo_memory_usage_bytes[1h])")
    );
    Ok(())
}
