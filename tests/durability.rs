//! Nothing acknowledged is ever lost: three ingesters on a real etcd, RF=3,
//! a distributor, and a continuous write load. `kill -9` one ingester mid
//! load: every acknowledged sample is still readable from the other two; it
//! restarts and its WAL gives back everything it held. `kill -9` all three,
//! tear the tail of one WAL, restart: every acknowledged sample is back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::rw::{self, now_ms, query_ingester, series};
use common::{Etcd, Strata};
use parking_lot::Mutex;

const SERIES: usize = 40;

fn ring_args(etcd: &Etcd) -> Vec<String> {
    vec![
        "--ring.kvstore.store=etcd".into(),
        format!("--ring.kvstore.etcd.endpoints={}", etcd.endpoint()),
        "--ring.kvstore.prefix=durability/".into(),
        "--ring.replication-factor=3".into(),
        "--ring.heartbeat-timeout=3s".into(),
        "--ring.forget-unhealthy-after=0s".into(),
        "--ingester.lifecycler.heartbeat-period=500ms".into(),
    ]
}

fn ingester_args(etcd: &Etcd, id: &str) -> Vec<String> {
    let mut args = ring_args(etcd);
    args.extend([
        "--target=ingester".to_string(),
        format!("--ingester.lifecycler.id={id}"),
        "--ingester.wal.segment-size=65536".to_string(),
    ]);
    args
}

fn distributor_args(etcd: &Etcd) -> Vec<String> {
    let mut args = ring_args(etcd);
    args.extend([
        "--target=distributor".to_string(),
        "--distributor.remote-timeout=2s".to_string(),
        "--limits.ingestion-rate=1000000".to_string(),
        "--limits.ingestion-burst-size=1000000".to_string(),
    ]);
    args
}

fn querier_args(etcd: &Etcd) -> Vec<String> {
    let mut args = ring_args(etcd);
    args.push("--target=querier".to_string());
    args
}

type Acked = Arc<Mutex<BTreeMap<String, Vec<(i64, f64)>>>>;

/// Pushes batches of one sample per series until `stop`, recording what was
/// acknowledged with 204.
async fn write_load(url: String, stop: Arc<AtomicBool>, acked: Acked) -> Result<(u64, u64)> {
    let base = now_ms() - 600_000;
    let (mut ok, mut failed) = (0u64, 0u64);
    for step in 0..20_000i64 {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let t = base + step * 10;
        let batch: Vec<_> = (0..SERIES)
            .map(|i| {
                series(
                    &[("__name__", "load"), ("series", &format!("s{i:03}"))],
                    &[(t, step as f64)],
                )
            })
            .collect();
        match rw::push(&url, "tenant-d", batch).await {
            Ok(answer) if answer.status == 204 => {
                ok += 1;
                let mut acked = acked.lock();
                for i in 0..SERIES {
                    acked
                        .entry(format!("s{i:03}"))
                        .or_default()
                        .push((t, step as f64));
                }
            }
            Ok(_) | Err(_) => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((ok, failed))
}

/// Every sample of `load` held by the given ingesters, by series label.
async fn held(ports: &[u16]) -> Result<BTreeMap<String, BTreeSet<i64>>> {
    let mut out: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for port in ports {
        for (labels, samples) in query_ingester(
            *port,
            "tenant-d",
            vec![rw::eq("__name__", "load")],
            0,
            i64::MAX,
        )
        .await?
        {
            let name = labels
                .iter()
                .find(|(n, _)| n == "series")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            out.entry(name)
                .or_default()
                .extend(samples.iter().map(|(t, _)| *t));
        }
    }
    Ok(out)
}

fn missing(
    acked: &BTreeMap<String, Vec<(i64, f64)>>,
    held: &BTreeMap<String, BTreeSet<i64>>,
) -> usize {
    acked
        .iter()
        .map(|(name, samples)| {
            let have = held.get(name);
            samples
                .iter()
                .filter(|(t, _)| !have.is_some_and(|h| h.contains(t)))
                .count()
        })
        .sum()
}

/// Appends half a record to the newest WAL segment, as a crash mid-write leaves it.
fn tear_wal_tail(workdir: &Path) -> Result<()> {
    let wal = workdir.join("data/wal");
    let newest = std::fs::read_dir(&wal)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
        })
        .max()
        .context("a WAL segment exists")?;
    let mut bytes = std::fs::read(&newest)?;
    // A FULL fragment header announcing 1000 bytes, followed by only 20.
    bytes.extend_from_slice(&[1, 0x03, 0xe8, 0xde, 0xad, 0xbe, 0xef]);
    bytes.extend_from_slice(&[0x55; 20]);
    std::fs::write(&newest, bytes)?;
    Ok(())
}

/// Three ingesters (each in its own working directory, for its WAL) and a
/// distributor on `etcd`, all ready, with three ACTIVE members in the ring.
async fn cluster(
    etcd: &Etcd,
    ids: &[&str; 3],
) -> Result<(Vec<tempfile::TempDir>, Vec<Strata>, Strata)> {
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let mut ingesters = Vec::new();
    for (id, dir) in ids.iter().zip(&dirs) {
        ingesters.push(Strata::spawn_in(id, dir.path(), &ingester_args(etcd, id))?);
    }
    for ingester in &mut ingesters {
        ingester.wait_ready().await?;
    }
    let mut distributor = Strata::spawn("distributor", &distributor_args(etcd))?;
    distributor.wait_ready().await?;
    distributor.wait_active(3).await?;
    Ok((dirs, ingesters, distributor))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_sample_is_lost() -> Result<()> {
    let etcd = Etcd::start().await?;
    let ids = ["ingester-1", "ingester-2", "ingester-3"];
    let (dirs, mut ingesters, distributor) = cluster(&etcd, &ids).await?;

    // Phase 1: load, then kill -9 ingester-2 in the middle of it.
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_load(
        distributor.url("/api/v1/push"),
        stop.clone(),
        acked.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Whatever ingester-2 holds now is in its WAL (log, then apply).
    let before_kill = held(&[ingesters[1].grpc_port]).await?;
    ensure!(!before_kill.is_empty(), "ingester-2 received writes");
    ingesters[1].guard.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Release);
    let (ok, failed) = load.await??;
    ensure!(
        ok > 50,
        "the load kept going through the crash: {ok} acknowledged, {failed} failed"
    );
    let survivors = held(&[ingesters[0].grpc_port, ingesters[2].grpc_port]).await?;
    let acked_now = acked.lock().clone();
    let lost = missing(&acked_now, &survivors);
    ensure!(
        lost == 0,
        "{lost} acknowledged samples missing from the two survivors"
    );

    // A querier reads through the crash (one of three ingesters down is
    // tolerated) and merges the replicas' copies sample-exact: each series
    // counts its acknowledged samples once, not once per replica.
    let mut querier = Strata::spawn("querier", &querier_args(&etcd))?;
    querier.wait_ready().await?;
    let answer: serde_json::Value = common::http()
        .get(querier.url("/prometheus/api/v1/query"))
        .header("X-Scope-OrgID", "tenant-d")
        .query(&[("query", "count_over_time(load[1h])")])
        .send()
        .await?
        .json()
        .await?;
    let result = answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(result.len() == SERIES, "every series answers: {answer}");
    for item in &result {
        let name = item["metric"]["series"].as_str().unwrap_or_default();
        let counted: usize = item["value"][1].as_str().unwrap_or("0").parse()?;
        let acknowledged = acked_now.get(name).map(Vec::len).unwrap_or(0);
        ensure!(
            counted >= acknowledged && (failed > 0 || counted == acknowledged),
            "{name}: the querier counts {counted} samples, {acknowledged} were acknowledged"
        );
    }

    // Phase 2: ingester-2 restarts on its WAL and holds everything it held.
    let mut restarted = Strata::spawn_in(
        "ingester-2",
        dirs[1].path(),
        &ingester_args(&etcd, "ingester-2"),
    )?;
    restarted.wait_ready().await?;
    let replayed = held(&[restarted.grpc_port]).await?;
    for (name, samples) in &before_kill {
        let have = replayed.get(name).cloned().unwrap_or_default();
        let gone: Vec<_> = samples.difference(&have).collect();
        ensure!(
            gone.is_empty(),
            "ingester-2 lost {} samples of {name} across kill -9: WAL replay incomplete",
            gone.len()
        );
    }
    ingesters[1] = restarted;

    // Phase 3: more load, kill -9 all three, tear one WAL's tail, restart all.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_load(
        distributor.url("/api/v1/push"),
        stop.clone(),
        acked.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ingester in &mut ingesters {
        ingester.guard.kill9();
    }
    stop.store(true, Ordering::Release);
    load.await??;
    tear_wal_tail(dirs[0].path())?;
    let mut restarted = Vec::new();
    for (id, dir) in ids.iter().zip(&dirs) {
        restarted.push(Strata::spawn_in(id, dir.path(), &ingester_args(&etcd, id))?);
    }
    for ingester in &mut restarted {
        ingester.wait_ready().await?;
    }
    let log = restarted[0].guard.log_text();
    ensure!(
        log.contains("torn record"),
        "the torn tail was noticed and cut: {log}"
    );
    let metrics = common::http()
        .get(restarted[0].url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        metrics.contains("strata_ingester_wal_torn_tails_total 1"),
        "the torn tail is counted"
    );
    let all = held(&restarted.iter().map(|s| s.grpc_port).collect::<Vec<_>>()).await?;
    let acked_all = acked.lock().clone();
    let total: usize = acked_all.values().map(Vec::len).sum();
    let lost = missing(&acked_all, &all);
    ensure!(
        lost == 0,
        "{lost} of {total} acknowledged samples missing after kill -9 of every ingester"
    );

    // Two of three replicas gone: no quorum, 503 so the sender retries.
    restarted[1].guard.kill9();
    restarted[2].guard.kill9();
    let answer = rw::push(
        &distributor.url("/api/v1/push"),
        "tenant-d",
        vec![series(
            &[("__name__", "load"), ("series", "s000")],
            &[(now_ms(), 1.0)],
        )],
    )
    .await?;
    ensure!(
        answer.status == 503,
        "without a quorum the push must be retried: {} {}",
        answer.status,
        answer.body
    );
    drop(distributor);
    Ok(())
}

/// A rolling restart under load (SIGTERM, wait, start again, next): no
/// write fails, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_under_load_causes_no_write_error() -> Result<()> {
    let etcd = Etcd::start().await?;
    let ids = ["ingester-a", "ingester-b", "ingester-c"];
    let (dirs, mut ingesters, distributor) = cluster(&etcd, &ids).await?;

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_load(
        distributor.url("/api/v1/push"),
        stop.clone(),
        acked.clone(),
    ));
    for (i, id) in ids.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(700)).await;
        ingesters[i].guard.signal(libc::SIGTERM);
        let status = ingesters[i].guard.wait_exit(Duration::from_secs(30))?;
        ensure!(status.success(), "{id} exits 0 on SIGTERM");
        let mut back = Strata::spawn_in(id, dirs[i].path(), &ingester_args(&etcd, id))?;
        back.wait_ready().await?;
        distributor.wait_active(3).await?;
        ingesters[i] = back;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Release);
    let (ok, failed) = load.await??;
    ensure!(
        failed == 0,
        "{failed} of {} pushes failed during the rolling restart",
        ok + failed
    );
    let all = held(&ingesters.iter().map(|s| s.grpc_port).collect::<Vec<_>>()).await?;
    let acked_all = acked.lock().clone();
    let lost = missing(&acked_all, &all);
    ensure!(
        lost == 0,
        "{lost} acknowledged samples missing after the rolling restart"
    );
    Ok(())
}
