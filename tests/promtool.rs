//! Debian's `promtool` 2.42 as a user of Strata's Prometheus API: `query
//! series`, `query labels`, `query instant` and `query range` against Strata
//! (tenant team-a) and against a Debian Prometheus holding the same samples
//! (pushed identically to its remote-write receiver) print the same.
//!
//! 2.42's promtool has no `--http.config.file`, and only `query range` takes
//! `--header`; every command honours basic auth in the server URL
//! (`http://team-a:x@host/prometheus`), so Strata runs with
//! `--auth.basic-auth-tenant=true`. Evaluation times sit off the sample grid:
//! Prometheus 2.42's ranges are closed, ours left-open, and they agree there.
//!
//! The same commands run with Prometheus 3.16's promtool against Strata and
//! a Prometheus 3.16, the tenant set by `--http.config.file` (a file with
//! `http_headers: {X-Scope-OrgID: {values: [team-a]}}`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::rw::{self, now_ms};
use common::{Guard, Strata, eventually, http};
use strata::proto::prometheus::TimeSeries;

/// A Prometheus that only receives remote writes (no scrape configs).
async fn reference_prometheus(dir: &Path, binary: &Path) -> Result<(Guard, u16)> {
    let port = common::free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n")?;
    let mut command = Command::new(binary);
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver");
    let guard = Guard::spawn("prometheus", command, dir.join("prometheus.log"))
        .context("prometheus must be installed (tests/install-deps.sh installs it)")?;
    let ready = format!("http://127.0.0.1:{port}/-/ready");
    eventually("Prometheus ready", Duration::from_secs(30), || async {
        Ok((http().get(&ready).send().await?.status() == 200).then_some(()))
    })
    .await
    .with_context(|| guard.log_text())?;
    Ok((guard, port))
}

/// team-a's samples, every 15 s for 10 minutes: counters (one with a
/// reset, one with jittered timestamps) and a gauge.
fn team_a(t0: i64) -> Vec<TimeSeries> {
    let counter = |i: i64| if i < 20 { i * 10 } else { (i - 20) * 10 + 3 } as f64;
    let samples = |offset: i64, value: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> {
        (0..40)
            .map(|i| (t0 + i * 15_000 + offset, value(i)))
            .collect()
    };
    vec![
        rw::series(
            &[
                ("__name__", "pt_http_requests_total"),
                ("code", "200"),
                ("instance", "i1"),
                ("job", "api"),
            ],
            &samples(0, &counter),
        ),
        rw::series(
            &[
                ("__name__", "pt_http_requests_total"),
                ("code", "500"),
                ("instance", "i2"),
                ("job", "api"),
            ],
            &samples(3_000, &|i| (i * i) as f64 * 0.25),
        ),
        rw::series(
            &[
                ("__name__", "pt_http_requests_total"),
                ("code", "200"),
                ("instance", "i3"),
                ("job", "web"),
            ],
            &samples(0, &|i| i as f64 * 1.1),
        ),
        rw::series(
            &[
                ("__name__", "pt_queue_depth"),
                ("instance", "i1"),
                ("job", "api"),
            ],
            &samples(7_000, &|i| ((i * 7) % 11) as f64 / 4.0),
        ),
    ]
}

/// team-b's, in Strata only: team-a's answers must not show them.
fn team_b(t0: i64) -> Vec<TimeSeries> {
    let samples: Vec<(i64, f64)> = (0..40).map(|i| (t0 + i * 15_000, 1e6)).collect();
    vec![
        rw::series(
            &[
                ("__name__", "pt_http_requests_total"),
                ("code", "200"),
                ("instance", "b1"),
                ("job", "secret"),
            ],
            &samples,
        ),
        rw::series(
            &[("__name__", "pt_team_b_only"), ("job", "secret")],
            &samples,
        ),
    ]
}

/// Runs promtool; fails unless it exits 0.
async fn promtool(binary: &Path, args: &[String]) -> Result<String> {
    let run = tokio::process::Command::new(binary)
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .with_context(|| format!("promtool {args:?} timed out"))?
        .context("promtool must be installed (it comes with the prometheus package)")?;
    let stdout = String::from_utf8(output.stdout)?;
    if !output.status.success() {
        bail!(
            "promtool {args:?}: {}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// promtool's `promql` output in an order-free form: a vector's lines
/// sorted, a matrix's series blocks (`metric =>` and its points) sorted.
fn canonical(output: &str) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    for line in output.lines().filter(|l| !l.is_empty()) {
        match blocks.last_mut() {
            Some(block) if !line.contains(" => ") && !line.ends_with(" =>") => {
                block.push('\n');
                block.push_str(line);
            }
            _ => blocks.push(line.to_string()),
        }
    }
    blocks.sort();
    blocks
}

fn seconds(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_sees_strata_as_it_sees_prometheus() -> Result<()> {
    let debian = Path::new("/usr/bin");
    promtool_round(&debian.join("promtool"), &debian.join("prometheus"), false).await
}

/// Prometheus 3.16's promtool, the tenant in an HTTP config file's
/// `http_headers`, against Strata and against Prometheus 3.16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_3_sees_strata_as_it_sees_prometheus_3() -> Result<()> {
    let prometheus = common::prometheus3();
    let promtool = prometheus.with_file_name("promtool");
    promtool_round(&promtool, &prometheus, true).await
}

/// Debian's 2.42 reaches Strata with the tenant as the basic-auth user;
/// 3.16 (`header_config`) with `--http.config.file` setting `X-Scope-OrgID`.
async fn promtool_round(
    promtool_bin: &Path,
    prometheus_bin: &Path,
    header_config: bool,
) -> Result<()> {
    let mut strata = Strata::spawn(
        "strata",
        &[
            "--ring.replication-factor=1".into(),
            "--auth.basic-auth-tenant=true".into(),
        ],
    )?;
    let dir = tempfile::tempdir()?;
    let (prometheus, port) = reference_prometheus(dir.path(), prometheus_bin).await?;
    strata.wait_ready().await?;

    let t0 = (now_ms() - 600_000) / 15_000 * 15_000;
    for (url, tenant, series) in [
        (strata.url("/api/v1/push"), "team-a", team_a(t0)),
        (strata.url("/api/v1/push"), "team-b", team_b(t0)),
        (
            format!("http://127.0.0.1:{port}/api/v1/write"),
            "team-a",
            team_a(t0),
        ),
    ] {
        let answer = rw::push(&url, tenant, series).await?;
        ensure!(
            answer.status / 100 == 2,
            "push to {url}: {} {}",
            answer.status,
            answer.body
        );
    }

    let http_config = dir.path().join("http.yml");
    std::fs::write(
        &http_config,
        "http_headers:\n  X-Scope-OrgID:\n    values: [team-a]\n",
    )?;
    let ours = if header_config {
        format!("http://127.0.0.1:{}/prometheus", strata.http_port)
    } else {
        format!("http://team-a:x@127.0.0.1:{}/prometheus", strata.http_port)
    };
    let theirs = format!("http://127.0.0.1:{port}");
    // `promtool <flags...> <server> <tail...>` against both servers.
    let both = async |flags: &[String], tail: &[&str]| -> Result<(String, String)> {
        let mut outputs = Vec::new();
        for server in [&ours, &theirs] {
            let mut args = flags.to_vec();
            if header_config {
                args.push(format!("--http.config.file={}", http_config.display()));
            }
            args.push(server.clone());
            args.extend(tail.iter().map(|s| s.to_string()));
            outputs.push(promtool(promtool_bin, &args).await?);
        }
        let want = outputs.pop().context("two outputs")?;
        let got = outputs.pop().context("two outputs")?;
        ensure!(
            !want.trim().is_empty(),
            "{flags:?} {tail:?}: Prometheus printed nothing"
        );
        Ok((got, want))
    };
    let strings = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (start, end) = (seconds(t0 - 60_000), seconds(t0 + 660_000));

    // Series and label values: exactly the same output.
    let mut checked = 0;
    for (flags, tail) in [
        (
            vec![
                "query".to_string(),
                "series".into(),
                "--match=pt_http_requests_total".into(),
                "--match={__name__=~\"pt_.*\",job=\"api\"}".into(),
                format!("--start={start}"),
                format!("--end={end}"),
            ],
            vec![],
        ),
        (
            strings(&["query", "series", "--match={instance=~\"i[12]\"}"]),
            vec![],
        ),
        (strings(&["query", "labels"]), vec!["job"]),
        (strings(&["query", "labels"]), vec!["__name__"]),
        (
            strings(&["query", "labels", "--match=pt_queue_depth"]),
            vec!["instance"],
        ),
    ] {
        let (got, want) = both(&flags, &tail).await?;
        ensure!(
            got == want,
            "{flags:?} {tail:?}:\nStrata:\n{got}\nPrometheus:\n{want}"
        );
        ensure!(
            !got.contains("secret") && !got.contains("b1"),
            "team-b leaked: {got}"
        );
        checked += 1;
    }

    // Instant queries at off-grid times.
    let exprs = [
        "pt_http_requests_total",
        "pt_queue_depth",
        "sum by (job) (pt_http_requests_total)",
        "rate(pt_http_requests_total[2m])",
        "increase(pt_http_requests_total{job=\"api\"}[5m])",
        "irate(pt_http_requests_total[1m])",
        "avg_over_time(pt_queue_depth[3m])",
        "topk(2, pt_http_requests_total)",
        "pt_http_requests_total / ignoring(code) group_left pt_queue_depth",
        "count by (code) ({__name__=~\"pt_.*\"})",
        "pt_queue_depth[1m]",
        "resets(pt_http_requests_total[10m])",
    ];
    for at in [t0 + 299_300, t0 + 587_700] {
        let flags = strings(&["query", "instant", &format!("--time={}", seconds(at))]);
        for expr in exprs {
            let (got, want) = both(&flags, &[expr]).await?;
            ensure!(
                canonical(&got) == canonical(&want),
                "{expr} at {at}:\nStrata:\n{got}\nPrometheus:\n{want}"
            );
            checked += 1;
        }
    }

    // Range queries; also with the tenant as a header (2.42's `--header`
    // exists for `query range` only).
    let flags = strings(&[
        "query",
        "range",
        &format!("--start={}", seconds(t0 + 64_300)),
        &format!("--end={}", seconds(t0 + 584_300)),
        "--step=30s",
    ]);
    for expr in [
        "pt_http_requests_total",
        "rate(pt_http_requests_total[2m])",
        "sum(pt_queue_depth) by (job)",
        "max_over_time(pt_queue_depth[90s]) - min_over_time(pt_queue_depth[90s])",
    ] {
        let (got, want) = both(&flags, &[expr]).await?;
        ensure!(
            want.lines().count() > 10,
            "{expr}: Prometheus printed {want}"
        );
        ensure!(
            canonical(&got) == canonical(&want),
            "{expr}:\nStrata:\n{got}\nPrometheus:\n{want}"
        );
        if !header_config {
            let mut args = flags.clone();
            args.push("--header=X-Scope-OrgID:team-a".into());
            args.push(format!("http://127.0.0.1:{}/prometheus", strata.http_port));
            args.push(expr.into());
            let header = promtool(promtool_bin, &args).await?;
            ensure!(header == got, "{expr}: with the header:\n{header}");
        }
        checked += 1;
    }
    ensure!(checked == 5 + 2 * exprs.len() + 4);
    println!(
        "{}: {checked} promtool commands print the same",
        promtool_bin.display()
    );
    drop(prometheus);
    Ok(())
}
