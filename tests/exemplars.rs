//! Exemplars end to end in one process: what a push stores is what
//! `/api/v1/query_exemplars` answers, for its tenant only; out-of-order
//! exemplars are refused with a 400 naming the series, duplicates (retries)
//! are accepted; the tenant's buffer keeps the newest
//! `limits.max_global_exemplars_per_user`; `kill -9` and a restart give
//! every stored exemplar back from the WAL.

mod common;

use anyhow::{Result, ensure};
use common::rw::{self, labels, now_ms};
use common::{Strata, http, metric};
use serde_json::Value as Json;
use strata::proto::prometheus::{Exemplar, Sample, TimeSeries, WriteRequest};

/// A series with one sample and one exemplar (trace id, value, time).
fn with_exemplar(name: &str, t: i64, trace: &str, value: f64) -> TimeSeries {
    TimeSeries {
        labels: labels(&[("__name__", name), ("job", "api")]),
        samples: vec![Sample {
            value,
            timestamp: t,
        }],
        exemplars: vec![Exemplar {
            labels: labels(&[("trace_id", trace)]),
            value,
            timestamp: t,
        }],
        histograms: vec![],
    }
}

async fn push(strata: &Strata, tenant: &str, series: Vec<TimeSeries>) -> Result<rw::Answer> {
    let body = rw::encode(&WriteRequest {
        timeseries: series,
        metadata: vec![],
    });
    rw::post(
        &strata.url("/api/v1/push"),
        Some(tenant),
        "application/x-protobuf",
        body,
    )
    .await
}

/// `(series name, trace id, timestamp ms)` of every exemplar the tenant
/// has, in answer order.
async fn exemplars(strata: &Strata, tenant: &str) -> Result<Vec<(String, String, i64)>> {
    let body: Json = http()
        .get(strata.url("/api/v1/query_exemplars"))
        .query(&[("query", r#"{__name__=~".+"}"#)])
        .header("X-Scope-OrgID", tenant)
        .send()
        .await?
        .json()
        .await?;
    ensure!(body["status"] == "success", "{body}");
    let mut out = Vec::new();
    for series in body["data"].as_array().into_iter().flatten() {
        let name = series["seriesLabels"]["__name__"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for e in series["exemplars"].as_array().into_iter().flatten() {
            let t = (e["timestamp"].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
            let trace = e["labels"]["trace_id"].as_str().unwrap_or_default();
            out.push((name.clone(), trace.to_string(), t));
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemplars_are_stored_per_tenant_in_order_and_survive_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let args = vec![
        "--ring.replication-factor=1".to_string(),
        "--limits.max-global-exemplars-per-user=4".to_string(),
    ];
    let mut strata = Strata::spawn_in("strata", dir.path(), &args)?;
    strata.wait_ready().await?;
    let t = now_ms() - 60_000;

    let answer = push(
        &strata,
        "team-a",
        vec![
            with_exemplar("a", t, "a1", 1.0),
            with_exemplar("b", t, "b1", 2.0),
        ],
    )
    .await?;
    ensure!(answer.status == 204, "{} {}", answer.status, answer.body);
    let answer = push(&strata, "team-b", vec![with_exemplar("a", t, "other", 9.0)]).await?;
    ensure!(answer.status == 204, "{} {}", answer.status, answer.body);
    ensure!(
        exemplars(&strata, "team-a").await?
            == vec![("a".into(), "a1".into(), t), ("b".into(), "b1".into(), t)],
        "team-a's exemplars"
    );
    ensure!(
        exemplars(&strata, "team-b").await? == vec![("a".into(), "other".into(), t)],
        "team-b sees its own only"
    );

    // Older than the series' newest: refused, named; the sample is stored.
    let answer = push(
        &strata,
        "team-a",
        vec![with_exemplar("a", t - 1000, "late", 1.0)],
    )
    .await?;
    ensure!(
        answer.status == 400 && answer.body.contains("out-of-order exemplar"),
        "{} {}",
        answer.status,
        answer.body
    );
    ensure!(metric(&strata, "strata_ingester_exemplars_rejected_total").await? == 1.0);
    ensure!(metric(&strata, "strata_ingester_exemplars_appended_total").await? == 3.0);
    // The same exemplar again (a retry): accepted, stored once.
    let answer = push(&strata, "team-a", vec![with_exemplar("b", t, "b1", 2.0)]).await?;
    ensure!(answer.status == 204, "{} {}", answer.status, answer.body);
    ensure!(exemplars(&strata, "team-a").await?.len() == 2);

    // Four at most: the oldest go first, whatever their series.
    let answer = push(
        &strata,
        "team-a",
        vec![
            with_exemplar("a", t + 1000, "a2", 1.0),
            with_exemplar("b", t + 1000, "b2", 2.0),
            with_exemplar("a", t + 2000, "a3", 1.0),
        ],
    )
    .await?;
    ensure!(answer.status == 204, "{} {}", answer.status, answer.body);
    let kept = vec![
        ("a".to_string(), "a2".to_string(), t + 1000),
        ("a".to_string(), "a3".to_string(), t + 2000),
        ("b".to_string(), "b1".to_string(), t),
        ("b".to_string(), "b2".to_string(), t + 1000),
    ];
    ensure!(
        exemplars(&strata, "team-a").await? == kept,
        "the newest four"
    );
    let in_memory = r#"strata_ingester_exemplars_in_memory{tenant="team-a"}"#;
    ensure!(metric(&strata, in_memory).await? == 4.0);

    // kill -9 and restart on the same WAL: the same exemplars.
    strata.guard.kill9();
    let mut strata = Strata::spawn_in("strata", dir.path(), &args)?;
    strata.wait_ready().await?;
    ensure!(
        exemplars(&strata, "team-a").await? == kept,
        "after replay: {:?}",
        exemplars(&strata, "team-a").await?
    );
    ensure!(exemplars(&strata, "team-b").await?.len() == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_zero_turns_exemplars_off() -> Result<()> {
    let mut strata = Strata::spawn(
        "strata",
        &[
            "--ring.replication-factor=1".to_string(),
            "--limits.max-global-exemplars-per-user=0".to_string(),
        ],
    )?;
    strata.wait_ready().await?;
    let answer = push(
        &strata,
        "team-a",
        vec![with_exemplar("a", now_ms(), "a1", 1.0)],
    )
    .await?;
    // The sample is stored; the exemplar is not, and no error is raised.
    ensure!(answer.status == 204, "{} {}", answer.status, answer.body);
    ensure!(exemplars(&strata, "team-a").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_out_of_order_window_takes_older_exemplars_in_their_place() -> Result<()> {
    let mut strata = Strata::spawn(
        "strata",
        &[
            "--ring.replication-factor=1".to_string(),
            "--limits.out-of-order-time-window=10m".to_string(),
        ],
    )?;
    strata.wait_ready().await?;
    let t = now_ms() - 60_000;
    for (at, trace) in [
        (t, "new"),
        (t - 120_000, "older"),
        (t - 20 * 60_000, "too old"),
    ] {
        let answer = push(&strata, "team-a", vec![with_exemplar("a", at, trace, 1.0)]).await?;
        let refused = trace == "too old";
        ensure!(
            (answer.status == 400) == refused,
            "{trace}: {} {}",
            answer.status,
            answer.body
        );
    }
    ensure!(
        exemplars(&strata, "team-a").await?
            == vec![
                ("a".into(), "older".into(), t - 120_000),
                ("a".into(), "new".into(), t)
            ]
    );
    Ok(())
}
