//! Real remote-write senders, each scraping itself and writing to Strata:
//! vmagent with `X-Scope-OrgID`, and Debian's Prometheus 2.42 — which drops
//! custom headers — with its tenant as the basic-auth user. Each sender's
//! series arrive for its tenant and nowhere else. Then an HA pair of two
//! Prometheus servers: one replica is stored, the other dropped, and the
//! other takes over when the elected one stops.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, ensure};
use common::rw::{self, query_ingester};
use common::{Sender, Strata, eventually, http};

async fn names(strata: &Strata, tenant: &str, job: &str) -> Result<BTreeSet<String>> {
    Ok(query_ingester(
        strata.grpc_port,
        tenant,
        vec![rw::eq("job", job)],
        0,
        i64::MAX,
    )
    .await?
    .into_iter()
    .filter_map(|(labels, _)| {
        labels
            .into_iter()
            .find(|(n, _)| n == "__name__")
            .map(|(_, v)| v)
    })
    .collect())
}

fn prometheus_config(job: &str, port: u16, push_url: &str, user: &str, external: &str) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  external_labels: {{{external}}}\n\
         scrape_configs:\n  - job_name: {job}\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n\
         remote_write:\n  - url: {push_url}\n    basic_auth: {{username: {user}, password: pw-{user}}}\n\
         \x20   queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmagent_and_prometheus_write_to_their_own_tenants() -> Result<()> {
    let mut strata = Strata::spawn(
        "strata",
        &[
            "--ring.replication-factor=1".into(),
            "--auth.basic-auth-tenant=true".into(),
        ],
    )?;
    strata.wait_ready().await?;
    let push = strata.url("/api/v1/push");

    // vmagent scrapes itself, team-a by header.
    let vm_port = common::free_port();
    let vm_scrape = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: vmagent\n    static_configs: [{{targets: ['127.0.0.1:{vm_port}']}}]\n"
    );
    let _vmagent = Sender::vmagent(
        "vmagent",
        vm_port,
        &vm_scrape,
        &push,
        &["-remoteWrite.headers=X-Scope-OrgID:team-a".to_string()],
    )
    .await?;

    // Prometheus 2.42 scrapes itself, team-b by basic auth.
    let prom_port = common::free_port();
    let prometheus = Sender::prometheus(
        "prometheus",
        prom_port,
        &prometheus_config("prometheus", prom_port, &push, "team-b", ""),
    )
    .await?;

    // Every metric vmagent scraped of itself arrives for team-a.
    eventually(
        "vmagent's series at team-a",
        Duration::from_secs(60),
        || async {
            let got = names(&strata, "team-a", "vmagent").await?;
            Ok((got.contains("up") && got.iter().any(|n| n.starts_with("vm_"))).then_some(()))
        },
    )
    .await?;

    // Every metric name in Prometheus's own TSDB arrives for team-b.
    let sender_names = eventually(
        "Prometheus has scraped itself",
        Duration::from_secs(60),
        || async {
            let url = format!(
                "http://127.0.0.1:{}/api/v1/label/__name__/values",
                prometheus.port
            );
            let body: serde_json::Value = http().get(&url).send().await?.json().await?;
            let names: BTreeSet<String> = body["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            Ok((names.len() > 50).then_some(names))
        },
    )
    .await?;
    eventually(
        "all of Prometheus's series at team-b",
        Duration::from_secs(60),
        || async {
            let got = names(&strata, "team-b", "prometheus").await?;
            let missing: Vec<_> = sender_names.difference(&got).collect();
            Ok(missing.is_empty().then_some(()))
        },
    )
    .await?;

    // Nowhere else.
    ensure!(
        names(&strata, "team-a", "prometheus").await?.is_empty(),
        "team-a has none of team-b's series"
    );
    ensure!(
        names(&strata, "team-b", "vmagent").await?.is_empty(),
        "team-b has none of team-a's series"
    );
    ensure!(names(&strata, "anonymous", "prometheus").await?.is_empty());
    drop(prometheus);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_pair_is_deduplicated_and_fails_over() -> Result<()> {
    let mut strata = Strata::spawn(
        "strata",
        &[
            "--ring.replication-factor=1".into(),
            "--auth.basic-auth-tenant=true".into(),
            "--distributor.ha-tracker.enabled=true".into(),
            "--distributor.ha-tracker.update-timeout=1s".into(),
            "--distributor.ha-tracker.failover-timeout=4s".into(),
            "--limits.accept-ha-samples=true".into(),
        ],
    )?;
    strata.wait_ready().await?;
    let push = strata.url("/api/v1/push");
    let target = strata.http_port;
    let config = |replica: &str| {
        prometheus_config(
            "strata",
            target,
            &push,
            "team-ha",
            &format!("cluster: ha, __replica__: {replica}"),
        )
    };
    // p1 starts first and is elected.
    let mut p1 = Sender::prometheus("p1", common::free_port(), &config("p1")).await?;
    let latest = |strata: &Strata| {
        let port = strata.grpc_port;
        async move {
            let series =
                query_ingester(port, "team-ha", vec![rw::eq("__name__", "up")], 0, i64::MAX)
                    .await?;
            Ok::<_, anyhow::Error>(series)
        }
    };
    eventually("p1's samples stored", Duration::from_secs(60), || async {
        Ok((!latest(&strata).await?.is_empty()).then_some(()))
    })
    .await?;
    let p2 = Sender::prometheus("p2", common::free_port(), &config("p2")).await?;
    eventually("p2's samples dropped", Duration::from_secs(60), || async {
        let text = http().get(strata.url("/metrics")).send().await?.text().await?;
        let dropped = text
            .lines()
            .find_map(|l| l.strip_prefix("strata_discarded_samples_total{reason=\"ha_replica_dropped\",tenant=\"team-ha\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        Ok((dropped > 0.0).then_some(()))
    })
    .await?;
    // One series: the replica label is gone, the cluster label stays.
    let series = latest(&strata).await?;
    ensure!(series.len() == 1, "the pair is stored once: {series:?}");
    ensure!(
        series[0].0.iter().all(|(n, _)| n != "__replica__"),
        "{:?}",
        series[0].0
    );
    ensure!(
        series[0]
            .0
            .contains(&("cluster".to_string(), "ha".to_string()))
    );

    // p1 stops: after the failover timeout p2's samples are stored.
    let stopped_at = rw::now_ms();
    p1.guard.kill9();
    eventually("p2 took over", Duration::from_secs(60), || async {
        let series = latest(&strata).await?;
        let newest = series
            .iter()
            .flat_map(|(_, s)| s.iter().map(|(t, _)| *t))
            .max()
            .unwrap_or(0);
        Ok((newest > stopped_at + 4_000).then_some(()))
    })
    .await?;
    drop(p2);
    Ok(())
}
