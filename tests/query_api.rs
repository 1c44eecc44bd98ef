//! The Prometheus HTTP API over the ingesters, in one process: the JSON
//! shapes of every endpoint, tenant isolation, and Prometheus's error format.

mod common;

use anyhow::{Result, ensure};
use common::rw::{self, now_ms, series};
use common::{Strata, http};
use serde_json::Value;

async fn get(
    strata: &Strata,
    tenant: &str,
    path: &str,
    params: &[(&str, String)],
) -> Result<(u16, Value)> {
    let response = http()
        .get(strata.url(path))
        .header("X-Scope-OrgID", tenant)
        .query(params)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_api_answers_like_prometheus() -> Result<()> {
    let mut strata = Strata::spawn("strata", &["--ring.replication-factor=1".into()])?;
    strata.wait_ready().await?;
    let t0 = (now_ms() / 60_000) * 60_000 - 600_000;
    let push = strata.url("/api/v1/push");
    for (tenant, value) in [("team-a", 1.0), ("team-b", 100.0)] {
        let batch = (0..3)
            .map(|i| {
                let samples: Vec<(i64, f64)> = (0..40)
                    .map(|k| (t0 + k * 15_000, value * (k as f64 + i as f64)))
                    .collect();
                series(
                    &[
                        ("__name__", "req_total"),
                        ("instance", &format!("i{i}")),
                        ("job", "api"),
                    ],
                    &samples,
                )
            })
            .collect();
        ensure!(rw::push(&push, tenant, batch).await?.status == 204);
    }
    let at = t0 + 10 * 60_000 - 7_500;

    // Instant vector.
    let (status, body) = get(
        &strata,
        "team-a",
        "/prometheus/api/v1/query",
        &[
            ("query", "sum(req_total)".into()),
            ("time", format!("{}", at as f64 / 1000.0)),
        ],
    )
    .await?;
    ensure!(status == 200 && body["status"] == "success", "{body}");
    ensure!(body["data"]["resultType"] == "vector");
    let result = &body["data"]["result"][0];
    ensure!(result["metric"] == serde_json::json!({}), "{result}");
    // Last samples before `at` are at k=39: 39+40+41.
    ensure!(result["value"][1] == "120", "{result}");
    ensure!(result["value"][0].as_f64() == Some(at as f64 / 1000.0));

    // Range matrix, POST form.
    let response = http()
        .post(strata.url("/api/v1/query_range"))
        .header("X-Scope-OrgID", "team-a")
        .form(&[
            ("query", "rate(req_total{instance=\"i0\"}[1m])".to_string()),
            (
                "start",
                format!("{}", (t0 + 120_000 - 7_500) as f64 / 1000.0),
            ),
            ("end", format!("{}", (t0 + 300_000 - 7_500) as f64 / 1000.0)),
            ("step", "60".to_string()),
        ])
        .send()
        .await?;
    ensure!(response.status() == 200);
    let body: Value = response.json().await?;
    ensure!(body["data"]["resultType"] == "matrix", "{body}");
    let values = body["data"]["result"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(values.len() == 4, "{body}");
    // A counter growing 1 per 15 s: rate is 1/15.
    for point in &values {
        let v: f64 = point[1].as_str().unwrap_or("x").parse()?;
        ensure!((v - 1.0 / 15.0).abs() < 1e-9, "rate {v}");
    }
    ensure!(
        body["data"]["result"][0]["metric"] == serde_json::json!({"instance": "i0", "job": "api"})
    );

    // series, labels, label values.
    let (_, body) = get(
        &strata,
        "team-a",
        "/api/v1/series",
        &[("match[]", "req_total".into())],
    )
    .await?;
    ensure!(body["data"].as_array().map(Vec::len) == Some(3), "{body}");
    let (_, body) = get(&strata, "team-a", "/api/v1/labels", &[]).await?;
    ensure!(
        body["data"] == serde_json::json!(["__name__", "instance", "job"]),
        "{body}"
    );
    let (_, body) = get(
        &strata,
        "team-a",
        "/api/v1/label/instance/values",
        &[("limit", "2".into())],
    )
    .await?;
    ensure!(body["data"] == serde_json::json!(["i0", "i1"]), "{body}");
    ensure!(
        body["warnings"][0] == "results truncated due to limit",
        "{body}"
    );

    // Tenants never see each other.
    let (_, body) = get(
        &strata,
        "team-b",
        "/api/v1/query",
        &[
            ("query", "max(req_total)".into()),
            ("time", format!("{}", at as f64 / 1000.0)),
        ],
    )
    .await?;
    ensure!(
        body["data"]["result"][0]["value"][1] == "4100",
        "team-b's own data: {body}"
    );
    let (_, body) = get(
        &strata,
        "team-c",
        "/api/v1/query",
        &[("query", "req_total".into())],
    )
    .await?;
    ensure!(body["data"]["result"] == serde_json::json!([]), "{body}");

    // Errors in Prometheus's shape.
    let (status, body) = get(
        &strata,
        "team-a",
        "/api/v1/query",
        &[("query", "sum(".into())],
    )
    .await?;
    ensure!(
        status == 400 && body["status"] == "error" && body["errorType"] == "bad_data",
        "{body}"
    );
    let (status, body) = get(
        &strata,
        "team-a",
        "/api/v1/query_range",
        &[
            ("query", "up".into()),
            ("start", "10".into()),
            ("end", "5".into()),
            ("step", "1".into()),
        ],
    )
    .await?;
    ensure!(status == 400 && body["errorType"] == "bad_data", "{body}");
    let missing = http()
        .get(strata.url("/api/v1/query"))
        .query(&[("query", "up")])
        .send()
        .await?;
    ensure!(missing.status() == 401, "no tenant: {}", missing.status());

    let (_, body) = get(&strata, "team-a", "/api/v1/status/buildinfo", &[]).await?;
    ensure!(body["data"]["version"] == env!("CARGO_PKG_VERSION"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tenant_query_limits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let runtime = dir.path().join("runtime.yaml");
    std::fs::write(
        &runtime,
        "overrides:\n  limited:\n    max_fetched_series_per_query: 2\n    max_query_length: 1h\n",
    )?;
    let mut strata = Strata::spawn(
        "strata",
        &[
            "--ring.replication-factor=1".into(),
            format!("--runtime-config.file={}", runtime.display()),
        ],
    )?;
    strata.wait_ready().await?;
    let t = now_ms() - 60_000;
    for tenant in ["limited", "free"] {
        let batch = (0..3)
            .map(|i| series(&[("__name__", "m"), ("i", &i.to_string())], &[(t, 1.0)]))
            .collect();
        ensure!(
            rw::push(&strata.url("/api/v1/push"), tenant, batch)
                .await?
                .status
                == 204
        );
    }
    let (status, body) = get(
        &strata,
        "limited",
        "/api/v1/query",
        &[("query", "m".into())],
    )
    .await?;
    ensure!(
        status == 422 && body["errorType"] == "execution",
        "{status} {body}"
    );
    ensure!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("limits.max_fetched_series_per_query"),
        "{body}"
    );
    let (status, _) = get(&strata, "free", "/api/v1/query", &[("query", "m".into())]).await?;
    ensure!(status == 200, "another tenant is not limited");
    let now = now_ms() as f64 / 1000.0;
    let (status, body) = get(
        &strata,
        "limited",
        "/api/v1/query_range",
        &[
            ("query", "count(m)".into()),
            ("start", format!("{}", now - 7200.0)),
            ("end", format!("{now}")),
            ("step", "60".into()),
        ],
    )
    .await?;
    ensure!(
        status == 400
            && body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("limits.max_query_length"),
        "{body}"
    );
    Ok(())
}
