//! Prometheus 3.16 (built by tests/install-deps.sh) as a user of a Strata
//! cluster on etcd (an ingester, a distributor and a querier, each its own
//! process):
//!
//! * as the sender: it scrapes itself and the three Strata processes every
//!   second, native histograms included (`send_native_histograms: true`:
//!   Prometheus sends none without it), and remote-writes to the
//!   distributor with `headers: {X-Scope-OrgID: ...}`, once with
//!   remote-write 1.0 and once with `io.prometheus.write.v2.Request`. The
//!   distributor is killed (`kill -9`) for 30 s mid-run; Prometheus retries,
//!   and afterwards every sample in the sender's own TSDB up to a cut-off is
//!   in Strata for that tenant, and nothing is anyone else's;
//! * as a remote-read client: a second Prometheus 3.16 with no data of its
//!   own, `remote_read` pointed at the querier with the tenant header and
//!   `read_recent: true`, answers the same raw samples as the sender.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value as Json;

use common::promql::{Prometheus, seconds, sender_config};
use common::rw::now_ms;
use common::{Etcd, Strata, eventually, http};

fn ring_args(etcd: &Etcd, prefix: &str) -> Vec<String> {
    vec![
        "--ring.kvstore.store=etcd".into(),
        format!("--ring.kvstore.etcd.endpoints={}", etcd.endpoint()),
        format!("--ring.kvstore.prefix={prefix}/"),
        "--ring.replication-factor=1".into(),
        "--ring.heartbeat-timeout=5s".into(),
        "--ingester.lifecycler.heartbeat-period=500ms".into(),
    ]
}

/// The three roles, each its own process, on one etcd ring.
struct Cluster {
    ingester: Strata,
    distributor: Strata,
    querier: Strata,
}

impl Cluster {
    async fn start(etcd: &Etcd, prefix: &str) -> Result<Cluster> {
        let role = |target: &str, extra: &[&str]| -> Vec<String> {
            let mut args = ring_args(etcd, prefix);
            args.push(format!("--target={target}"));
            args.extend(extra.iter().map(|a| a.to_string()));
            args
        };
        let mut ingester = Strata::spawn("ingester", &role("ingester", &[]))?;
        ingester.wait_ready().await?;
        let mut distributor = Strata::spawn(
            "distributor",
            &role(
                "distributor",
                &[
                    "--limits.ingestion-rate=1000000",
                    "--limits.ingestion-burst-size=1000000",
                ],
            ),
        )?;
        let mut querier = Strata::spawn("querier", &role("querier", &[]))?;
        let (d, q) = tokio::join!(distributor.wait_ready(), querier.wait_ready());
        d?;
        q?;
        Ok(Cluster {
            ingester,
            distributor,
            querier,
        })
    }
}

/// Every series' raw samples (and native histograms) of an instant query
/// answering a matrix, keyed by its labels as JSON.
type Raw = BTreeMap<String, (Json, Json)>;

async fn raw_samples(base: &str, tenant: Option<&str>, expr: &str, at: i64) -> Result<Raw> {
    let mut request = http()
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", expr.to_string()), ("time", seconds(at))])
        .timeout(Duration::from_secs(60));
    if let Some(tenant) = tenant {
        request = request.header("X-Scope-OrgID", tenant);
    }
    let body: Json = request.send().await?.json().await?;
    ensure!(body["status"] == "success", "{base} {expr}: {body}");
    let mut out = Raw::new();
    for series in body["data"]["result"].as_array().context("matrix result")? {
        let metric: BTreeMap<String, Json> = serde_json::from_value(series["metric"].clone())?;
        out.insert(
            serde_json::to_string(&metric)?,
            (
                series.get("values").cloned().unwrap_or(Json::Null),
                series.get("histograms").cloned().unwrap_or(Json::Null),
            ),
        );
    }
    Ok(out)
}

/// Points in an answer's `values` and `histograms`.
fn points(raw: &Raw) -> usize {
    let len = |j: &Json| j.as_array().map_or(0, Vec::len);
    raw.values().map(|(v, h)| len(v) + len(h)).sum()
}

/// The differences between two answers, at most a few, for the message.
fn differences(want: &Raw, got: &Raw) -> Vec<String> {
    let mut out = Vec::new();
    for (metric, expected) in want {
        match got.get(metric) {
            None => out.push(format!("missing {metric}")),
            Some(found) if found != expected => {
                let len = |j: &Json| j.as_array().map_or(0, Vec::len);
                let first = |a: &Json, b: &Json| -> String {
                    let (a, b) = (a.as_array(), b.as_array());
                    let (Some(a), Some(b)) = (a, b) else {
                        return String::new();
                    };
                    a.iter()
                        .zip(b)
                        .find(|(x, y)| x != y)
                        .map(|(x, y)| format!("\n    first difference: {x} want {y}"))
                        .unwrap_or_default()
                };
                out.push(format!(
                    "{metric}: {} values and {} histograms, want {} and {}{}{}",
                    len(&found.0),
                    len(&found.1),
                    len(&expected.0),
                    len(&expected.1),
                    first(&found.0, &expected.0),
                    first(&found.1, &expected.1),
                ));
            }
            Some(_) => {}
        }
    }
    out.extend(
        got.keys()
            .filter(|m| !want.contains_key(*m))
            .map(|m| format!("unexpected {m}")),
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus3_remote_write_1_0_survives_a_distributor_outage() -> Result<()> {
    sender_and_reader("rw1", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus3_remote_write_2_0_survives_a_distributor_outage() -> Result<()> {
    sender_and_reader("rw2", Some("io.prometheus.write.v2.Request")).await
}

async fn sender_and_reader(tenant: &'static str, protobuf_message: Option<&str>) -> Result<()> {
    let started = now_ms();
    let etcd = Etcd::start().await?;
    let mut cluster = Cluster::start(&etcd, tenant).await?;
    let push = cluster.distributor.url("/api/v1/push");
    let targets = format!(
        "['127.0.0.1:{}', '127.0.0.1:{}', '127.0.0.1:{}']",
        cluster.ingester.http_port, cluster.distributor.http_port, cluster.querier.http_port
    );
    let message = protobuf_message
        .map(|m| format!("    protobuf_message: {m}\n"))
        .unwrap_or_default();
    let sender = Prometheus::start_with(
        "sender",
        |port| {
            sender_config(
                port,
                &targets,
                &push,
                tenant,
                &format!(
                    "{message}    send_native_histograms: true\n    \
                     queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}}\n"
                ),
            )
        },
        &[],
    )
    .await?;
    let prometheus_base = sender.url("");
    let querier_base = cluster.querier.url("/prometheus");

    // Samples arrive for the tenant.
    eventually(
        "the first samples in Strata",
        Duration::from_secs(60),
        || async {
            let got = raw_samples(&querier_base, Some(tenant), "up[1m]", now_ms()).await?;
            Ok((got.len() >= 4).then_some(()))
        },
    )
    .await
    .with_context(|| sender.guard.log_text())?;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The distributor is gone for 30 s; Prometheus keeps scraping.
    cluster.distributor.guard.kill9();
    let killed = now_ms();
    tokio::time::sleep(Duration::from_secs(30)).await;
    cluster.distributor.respawn()?;
    cluster.distributor.wait_ready().await?;
    println!("distributor down {} ms", now_ms() - killed);
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Every sample the sender holds up to a cut-off after the outage is in
    // Strata once the sender's queue has caught up.
    let cut = now_ms() - 2_000;
    let window = format!("{}s", (cut - started) / 1000 + 60);
    let all = format!("{{__name__=~\".+\"}}[{window}]");
    let want = raw_samples(&prometheus_base, None, &all, cut).await?;
    ensure!(
        want.len() > 300,
        "the sender holds {} series only",
        want.len()
    );
    let got = eventually(
        "Strata holds every sample of the sender",
        Duration::from_secs(90),
        || async {
            let got = raw_samples(&querier_base, Some(tenant), &all, cut).await?;
            Ok((got == want).then_some(got))
        },
    )
    .await;
    let got = match got {
        Ok(got) => got,
        Err(err) => {
            let got = raw_samples(&querier_base, Some(tenant), &all, cut).await?;
            let diff = differences(&want, &got);
            bail!(
                "{err:#}: {} of {} series differ:\n{}",
                diff.len(),
                want.len(),
                diff.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
            );
        }
    };
    let histograms = got.values().filter(|(_, h)| !h.is_null()).count();
    println!(
        "{tenant}: {} series, {} points (native histograms in {histograms} series), all in Strata",
        got.len(),
        points(&got)
    );
    ensure!(histograms > 0, "the sender scraped native histograms");
    let received = cluster
        .distributor
        .metric_sum("strata_distributor_received_samples_total", "")
        .await?;
    println!("the restarted distributor received {received} samples");

    // Another tenant sees none of it.
    let other = raw_samples(&querier_base, Some("someone-else"), &all, cut).await?;
    ensure!(
        other.is_empty(),
        "another tenant sees {} series",
        other.len()
    );

    // A second Prometheus reads it all back through remote read.
    let read_url = cluster.querier.url("/api/v1/read");
    let reader = Prometheus::start_with(
        "reader",
        |_| {
            format!(
                "global:\n  scrape_interval: 1m\n\
                 remote_read:\n\
                 \x20 - url: {read_url}\n    read_recent: true\n    headers: {{X-Scope-OrgID: {tenant}}}\n"
            )
        },
        &[],
    )
    .await?;
    let read = raw_samples(&reader.url(""), None, &all, cut).await?;
    let diff = differences(&want, &read);
    let streamed = cluster
        .querier
        .metric_sum(
            "strata_querier_remote_read_requests_total",
            "streamed_xor_chunks",
        )
        .await?;
    let sampled = cluster
        .querier
        .metric_sum(
            "strata_querier_remote_read_requests_total",
            "response_type=\"samples\"",
        )
        .await?;
    println!(
        "remote read: {} streamed-chunk answers, {} sample answers",
        streamed, sampled
    );
    ensure!(
        streamed >= 1.0,
        "Prometheus 3.16 reads streamed chunks (histograms as float-histogram chunks)"
    );
    ensure!(
        diff.is_empty(),
        "remote read through Prometheus 3.16: {} of {} series differ:\n{}",
        diff.len(),
        want.len(),
        diff.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    Ok(())
}
