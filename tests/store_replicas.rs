//! RF=3 stores one copy: three ingesters on a real etcd hold the same
//! series (replication factor 3) and flush to one real Cassandra 5. The
//! first flush writes every chunk; the other two replicas cut the same
//! chunks and find them already stored, so they write none. A querier then
//! answers every sample, from the store and the ingesters merged.

mod common;

use anyhow::{Context, Result, ensure};
use serde_json::Value as Json;

use common::rw::{self, now_ms};
use common::{Cassandra, Etcd, Strata, http};

const TENANT: &str = "team-a";
const SERIES: usize = 30;
const STEP_MS: i64 = 15_000;

fn common_args(etcd: &Etcd, config: &std::path::Path) -> Vec<String> {
    vec![
        format!("--config.file={}", config.display()),
        "--ring.kvstore.store=etcd".into(),
        format!("--ring.kvstore.etcd.endpoints={}", etcd.endpoint()),
        "--ring.kvstore.prefix=replicas/".into(),
        "--ring.replication-factor=3".into(),
        "--ingester.lifecycler.heartbeat-period=500ms".into(),
        "--limits.reject-old-samples=false".into(),
        "--limits.ingestion-rate=1000000".into(),
        "--limits.ingestion-burst-size=1000000".into(),
        // Flushes only when asked.
        "--ingester.flush.period=0s".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_flush_one_copy() -> Result<()> {
    let etcd = Etcd::start().await?;
    let port = Cassandra::shared().await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("strata.yaml");
    std::fs::write(
        &config,
        format!(
            "storage:\n  cassandra: {{addresses: [127.0.0.1], port: {port}, keyspace: replicas, replication_factor: 1, consistency: one}}\n  max_pack_bytes: 1048576\nschema:\n  periods:\n    - {{from: \"2020-01-01\", chunks: cassandra, index: cassandra}}\n"
        ),
    )?;
    let mut ingesters = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..3 {
        let workdir = tempfile::tempdir()?;
        let mut args = common_args(&etcd, &config);
        args.extend([
            "--target=ingester".to_string(),
            format!("--ingester.lifecycler.id=ingester-{i}"),
        ]);
        ingesters.push(Strata::spawn_in(
            &format!("ingester-{i}"),
            workdir.path(),
            &args,
        )?);
        dirs.push(workdir);
    }
    for ingester in &mut ingesters {
        ingester.wait_ready().await?;
    }
    let mut args = common_args(&etcd, &config);
    args.push("--target=distributor,querier".to_string());
    let mut front = Strata::spawn("front", &args)?;
    front.wait_ready().await?;
    front.wait_active(3).await?;

    // Three hours of samples ending an hour ago: two whole 2 h windows
    // at most, identical on every replica.
    let now = now_ms() / STEP_MS * STEP_MS;
    let (from, to) = (now - 4 * 3_600_000, now - 3_600_000);
    let mut pushed = 0;
    for s in 0..SERIES {
        let points: Vec<(i64, f64)> = (from..to)
            .step_by(STEP_MS as usize)
            .map(|t| (t, (t / STEP_MS % 1000) as f64 * (s + 1) as f64))
            .collect();
        pushed += points.len();
        let answer = rw::push(
            &front.url("/api/v1/push"),
            TENANT,
            vec![rw::series(
                &[("__name__", "replicated"), ("series", &s.to_string())],
                &points,
            )],
        )
        .await?;
        ensure!(
            answer.status / 100 == 2,
            "push: {} {}",
            answer.status,
            answer.body
        );
    }

    let mut reports = Vec::new();
    for ingester in &ingesters {
        let report: Json = http()
            .post(ingester.url("/flush"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        println!("{}: {report}", ingester.guard.name);
        reports.push(report);
    }
    let count = |r: &Json, key: &str| r[key].as_u64().unwrap_or(0);
    let written: u64 = reports.iter().map(|r| count(r, "chunks")).sum();
    let skipped: u64 = reports.iter().map(|r| count(r, "already_stored")).sum();
    ensure!(count(&reports[0], "chunks") > 0, "the first replica writes");
    ensure!(
        written == count(&reports[0], "chunks") && skipped == 2 * written,
        "the other replicas find every chunk stored: written {written}, skipped {skipped}"
    );

    let body: Json = http()
        .get(front.url("/prometheus/api/v1/query"))
        .header("X-Scope-OrgID", TENANT)
        .query(&[
            ("query", "sum(count_over_time(replicated[5h]))".to_string()),
            ("time", format!("{}", now as f64 / 1000.0)),
        ])
        .send()
        .await?
        .json()
        .await?;
    let answered: f64 = body["data"]["result"][0]["value"][1]
        .as_str()
        .with_context(|| format!("query: {body}"))?
        .parse()?;
    println!(
        "pushed {pushed} samples with RF=3; {written} chunks stored once; {answered} samples answered"
    );
    ensure!(
        answered as usize == pushed,
        "{answered} of {pushed} samples answered"
    );
    drop(dirs);
    Ok(())
}
