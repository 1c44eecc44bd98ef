//! The long-term store down while an ingester flushes: a real Strata
//! flushing to a real Cassandra 5, which is stopped and started again on
//! the same data. No sample is lost; flushes fail loudly (metrics, the
//! `/flush` answer) while it is down and resume by themselves when it is
//! back; after a restart of Strata without its WAL, the store alone answers
//! every sample.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value as Json;

use common::rw::{self, now_ms};
use common::{Cassandra, Strata, http, metric};

const TENANT: &str = "team-a";
const SERIES: usize = 20;
const STEP_MS: i64 = 15_000;

/// Pushes samples `[from, to)` every 15 s of every series.
async fn push(strata: &Strata, from: i64, to: i64) -> Result<usize> {
    let mut series = Vec::new();
    let mut samples = 0;
    for s in 0..SERIES {
        let name = format!("s{s}");
        let points: Vec<(i64, f64)> = (from..to)
            .step_by(STEP_MS as usize)
            .map(|t| (t, (t / STEP_MS) as f64 + s as f64))
            .collect();
        samples += points.len();
        series.push(rw::series(
            &[("__name__", "outage_test"), ("series", &name)],
            &points,
        ));
    }
    let answer = rw::push(&strata.url("/api/v1/push"), TENANT, series).await?;
    ensure!(
        answer.status / 100 == 2,
        "push: {} {}",
        answer.status,
        answer.body
    );
    Ok(samples)
}

/// Samples Strata answers for the test metric over `[from, to]`: every
/// sample is the one sample of exactly one 15 s step's window.
async fn stored_samples(strata: &Strata, from: i64, to: i64) -> Result<usize> {
    let body: Json = http()
        .get(strata.url("/prometheus/api/v1/query_range"))
        .header("X-Scope-OrgID", TENANT)
        .query(&[
            ("query", "count_over_time(outage_test[15s])".to_string()),
            ("start", format!("{}", from as f64 / 1000.0)),
            ("end", format!("{}", to as f64 / 1000.0)),
            ("step", "15".to_string()),
        ])
        .send()
        .await?
        .json()
        .await?;
    let result = body["data"]["result"]
        .as_array()
        .with_context(|| format!("query_range: {body}"))?;
    Ok(result
        .iter()
        .map(|s| s["values"].as_array().map_or(0, Vec::len))
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_survive_a_store_outage() -> Result<()> {
    let mut cassandra = Cassandra::start().await?;
    let (dir, storage_port, native_port) = (
        cassandra.dir.clone(),
        cassandra.storage_port,
        cassandra.native_port,
    );
    let workdir = tempfile::tempdir()?;
    let config = workdir.path().join("strata.yaml");
    std::fs::write(
        &config,
        format!(
            "storage:\n  cassandra: {{addresses: [127.0.0.1], port: {native_port}, keyspace: outage, replication_factor: 1, consistency: one, request_timeout: 2s, connect_timeout: 2s}}\n  max_pack_bytes: 1048576\nschema:\n  periods:\n    - {{from: \"2020-01-01\", chunks: cassandra, index: cassandra}}\n"
        ),
    )?;
    let args: Vec<String> = vec![
        format!("--config.file={}", config.display()),
        "--ring.replication-factor=1".into(),
        "--limits.reject-old-samples=false".into(),
        // Chunks older than a minute flush at once, every second, and
        // leave memory when flushed: reads then come from the store.
        "--ingester.flush.period=1s".into(),
        "--ingester.flush.max-chunk-age=1m".into(),
        "--ingester.flush.retain-period=0s".into(),
        "--ingester.flush.min-backoff=200ms".into(),
        "--ingester.flush.max-backoff=1s".into(),
        "--limits.out-of-order-time-window=2h".into(),
    ];
    let mut strata = Strata::spawn_in("strata", workdir.path(), &args)?;
    strata.wait_ready().await?;

    // Data an hour old flushes while the store is up.
    let now = now_ms() / STEP_MS * STEP_MS;
    let mut pushed = push(&strata, now - 60 * 60_000, now - 40 * 60_000).await?;
    common::eventually("the first flush", Duration::from_secs(60), || async {
        Ok((metric(&strata, "strata_ingester_flushed_chunks_total").await? > 0.0).then_some(()))
    })
    .await?;

    // The store goes down; more data arrives and cannot be flushed.
    cassandra.stop()?;
    pushed += push(&strata, now - 40 * 60_000, now - 20 * 60_000).await?;
    common::eventually("failed flushes", Duration::from_secs(60), || async {
        Ok((metric(&strata, "strata_ingester_flush_failures_total").await? >= 2.0).then_some(()))
    })
    .await?;
    let answer = http().post(strata.url("/flush")).send().await?;
    ensure!(
        answer.status() == 503,
        "/flush with the store down answers 503, not {}",
        answer.status()
    );
    // Nothing is lost meanwhile: the ingester still holds what it could
    // not flush, the store what it flushed before.
    let during = stored_samples(&strata, now - 61 * 60_000, now).await;
    println!("samples answered while the store is down: {during:?} (reads of the store fail)");
    let flushed_before = metric(&strata, "strata_ingester_flushed_chunks_total").await?;

    // The store comes back on the same data: flushes resume by themselves.
    let _cassandra = Cassandra::start_in(&dir, storage_port, native_port, false).await?;
    common::eventually("flushes resume", Duration::from_secs(120), || async {
        Ok(
            (metric(&strata, "strata_ingester_flushed_chunks_total").await? > flushed_before)
                .then_some(()),
        )
    })
    .await?;
    let log = strata.guard.log_text();
    ensure!(
        log.contains("flushing chunks to the long-term store failed"),
        "the failed flushes are logged"
    );
    ensure!(
        stored_samples(&strata, now - 61 * 60_000, now).await? == pushed,
        "every sample answers once the store is back"
    );

    // Stop (flushing the rest), lose the WAL, start again: the store
    // alone holds every sample.
    strata.guard.signal(libc::SIGTERM);
    strata.guard.wait_exit(Duration::from_secs(120))?;
    std::fs::remove_dir_all(workdir.path().join("data/wal"))?;
    let mut strata = Strata::spawn_in("strata-restarted", workdir.path(), &args)?;
    strata.wait_ready().await?;
    let after = stored_samples(&strata, now - 61 * 60_000, now).await?;
    println!(
        "pushed {pushed} samples; {after} answered from the store after a restart without the WAL"
    );
    ensure!(
        after == pushed,
        "{after} of {pushed} samples after the restart"
    );
    Ok(())
}

/// `POST /shutdown`: the ingester flushes everything, leaves the ring and
/// the process exits 0, even with `flush_on_shutdown` off; started again
/// without its WAL, it answers every sample from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_endpoint_flushes_then_exits() -> Result<()> {
    let workdir = tempfile::tempdir()?;
    let args: Vec<String> = vec![
        "--ring.replication-factor=1".into(),
        "--limits.reject-old-samples=false".into(),
        "--ingester.flush.period=0s".into(),
        "--ingester.flush.flush-on-shutdown=false".into(),
    ];
    let mut strata = Strata::spawn_in("strata", workdir.path(), &args)?;
    strata.wait_ready().await?;
    let now = now_ms() / STEP_MS * STEP_MS;
    let pushed = push(&strata, now - 30 * 60_000, now - 60_000).await?;
    let answer = http().post(strata.url("/shutdown")).send().await?;
    ensure!(
        answer.status() == 202,
        "/shutdown answers {}",
        answer.status()
    );
    let status = strata.guard.wait_exit(Duration::from_secs(60))?;
    ensure!(status.success(), "exits 0 after /shutdown: {status}");
    ensure!(
        flushed_before_stopping(&strata.guard.log_text()),
        "the log says everything was flushed"
    );
    std::fs::remove_dir_all(workdir.path().join("data/wal"))?;
    let mut strata = Strata::spawn_in("strata-restarted", workdir.path(), &args)?;
    strata.wait_ready().await?;
    let after = stored_samples(&strata, now - 31 * 60_000, now).await?;
    ensure!(
        after == pushed,
        "{after} of {pushed} samples after /shutdown and a restart"
    );
    Ok(())
}

fn flushed_before_stopping(log: &str) -> bool {
    log.contains("flushed every chunk before stopping")
}
