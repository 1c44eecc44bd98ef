//! Three `strata --target=ingester` processes on one real etcd: they form
//! one ring; SIGTERM removes a member; `kill -9` leaves it unhealthy after
//! the heartbeat timeout, and the forget action removes it.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{Etcd, Strata, eventually, http};

fn ingester_args(etcd: &Etcd, id: &str) -> Vec<String> {
    vec![
        "--target=ingester".into(),
        "--ring.kvstore.store=etcd".into(),
        format!("--ring.kvstore.etcd.endpoints={}", etcd.endpoint()),
        "--ring.kvstore.prefix=test-ring/".into(),
        "--ring.heartbeat-timeout=3s".into(),
        // Long enough that only the explicit forget removes the dead member.
        "--ring.forget-unhealthy-after=10m".into(),
        "--ingester.lifecycler.heartbeat-period=500ms".into(),
        format!("--ingester.lifecycler.id={id}"),
        "--server.graceful-shutdown-timeout=5s".into(),
    ]
}

fn members(ring: &serde_json::Value) -> Vec<(String, String, String)> {
    ring["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .map(|m| {
                    (
                        m["id"].as_str().unwrap_or_default().to_string(),
                        m["state"].as_str().unwrap_or_default().to_string(),
                        m["health"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ingesters_share_one_ring_on_etcd() -> Result<()> {
    let etcd = Etcd::start().await?;
    let mut ingesters = Vec::new();
    for id in ["ingester-1", "ingester-2", "ingester-3"] {
        ingesters.push(Strata::spawn(id, &ingester_args(&etcd, id))?);
    }
    for ingester in &mut ingesters {
        ingester.wait_ready().await?;
    }

    // Every process sees the same three ACTIVE, healthy members.
    for ingester in &ingesters {
        eventually("three ACTIVE members", Duration::from_secs(15), || async {
            let ring = ingester.ring().await?;
            let seen = members(&ring);
            let all_active = seen.len() == 3
                && seen
                    .iter()
                    .all(|(_, state, health)| state == "ACTIVE" && health == "Healthy");
            Ok(all_active.then_some(ring))
        })
        .await?;
    }
    let ring = ingesters[0].ring().await?;
    let total: f64 = ring["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["ownership_percent"].as_f64())
                .sum()
        })
        .unwrap_or(0.0);
    ensure!(
        (total - 100.0).abs() < 1e-6,
        "ownership sums to 100%: {total}"
    );
    for member in ring["members"].as_array().into_iter().flatten() {
        ensure!(
            member["tokens"] == 128,
            "each member owns 128 tokens: {member}"
        );
    }

    // The HTML page lists the members too.
    let page = http()
        .get(ingesters[0].url("/ring"))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        page.contains("ingester-2") && page.contains("ACTIVE"),
        "{page}"
    );

    // SIGTERM: ingester-3 leaves the ring and exits 0.
    let mut leaving = ingesters.pop().expect("three ingesters");
    leaving.guard.signal(libc::SIGTERM);
    let status = leaving.guard.wait_exit(Duration::from_secs(20))?;
    ensure!(
        status.success(),
        "graceful shutdown exits 0, got {status}: {}",
        leaving.guard.log_text()
    );
    eventually("ingester-3 gone", Duration::from_secs(10), || async {
        let seen = members(&ingesters[0].ring().await?);
        Ok((seen.len() == 2 && seen.iter().all(|(id, _, _)| id != "ingester-3")).then_some(()))
    })
    .await?;

    // kill -9: ingester-2 stays in the ring, unhealthy after the heartbeat timeout.
    let mut crashed = ingesters.pop().expect("two ingesters");
    crashed.guard.kill9();
    let survivor = &ingesters[0];
    eventually("ingester-2 unhealthy", Duration::from_secs(15), || async {
        let seen = members(&survivor.ring().await?);
        Ok(seen
            .iter()
            .any(|(id, state, health)| {
                id == "ingester-2" && state == "ACTIVE" && health == "Unhealthy"
            })
            .then_some(()))
    })
    .await?;

    // A healthy member cannot be forgotten.
    let refused = http()
        .post(survivor.url("/ring"))
        .form(&[("forget", "ingester-1")])
        .send()
        .await?;
    ensure!(
        refused.status() == 400,
        "forgetting a healthy member: {}",
        refused.status()
    );

    // The forget action removes the dead one, from every member's view.
    let forgotten = http()
        .post(survivor.url("/ring"))
        .form(&[("forget", "ingester-2")])
        .send()
        .await?;
    ensure!(
        forgotten.status() == 303,
        "forget redirects back to /ring: {}",
        forgotten.status()
    );
    eventually("ingester-2 forgotten", Duration::from_secs(10), || async {
        let seen = members(&survivor.ring().await?);
        Ok((seen.len() == 1 && seen[0].0 == "ingester-1").then_some(()))
    })
    .await?;

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_ingester_keeps_its_tokens_and_etcd_outage_keeps_the_ring() -> Result<()> {
    let etcd = Etcd::start().await?;
    let mut first = Strata::spawn("ingester-a", &ingester_args(&etcd, "ingester-a"))?;
    first.wait_ready().await?;
    let tokens_before = http()
        .get(first.url("/ring"))
        .header("Accept", "application/json")
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?;
    ensure!(members(&tokens_before).len() == 1);
    let ownership_before = tokens_before["members"][0]["ownership_percent"].clone();

    // Crash and restart with the same id: it rejoins with the same tokens.
    first.guard.kill9();
    let mut second = Strata::spawn("ingester-a", &ingester_args(&etcd, "ingester-a"))?;
    second.wait_ready().await?;
    let log = second.guard.log_text();
    ensure!(
        log.contains("rejoining the ring with the tokens of the previous run"),
        "restart reuses tokens: {log}"
    );
    let after = second.ring().await?;
    ensure!(after["members"][0]["ownership_percent"] == ownership_before);

    // etcd goes away: the member keeps serving the last ring it saw and
    // counts its failed heartbeats.
    let mut etcd = etcd;
    etcd.guard.kill9();
    eventually(
        "heartbeat failures counted",
        Duration::from_secs(30),
        || async {
            let failures = second
                .metric_sum("strata_ring_heartbeat_failures_total", "")
                .await?;
            Ok((failures >= 1.0).then_some(()))
        },
    )
    .await?;
    let ring = second.ring().await?;
    ensure!(
        members(&ring).len() == 1,
        "the last ring stays in service: {ring}"
    );
    Ok(())
}
