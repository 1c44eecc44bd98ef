//! The write path in one process (distributor + ingester, RF=1): what is
//! acknowledged is stored for its tenant only, and every kind of bad input
//! gets the status the remote-write spec prescribes, a message naming the
//! series and the rule, and a discard count — without losing good data.

mod common;

use anyhow::{Result, ensure};
use common::Strata;
use common::rw::{self, eq, now_ms, query_ingester, series};
use prost::Message;
use strata::proto::prometheus::{MetricMetadata, WriteRequest};
use strata::proto::write_v2;

fn single(extra: &[&str]) -> Result<Strata> {
    let mut args: Vec<String> = vec![
        "--ring.replication-factor=1".into(),
        "--ingester.lifecycler.heartbeat-period=1s".into(),
        "--ring.heartbeat-timeout=10s".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Strata::spawn("strata", &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_samples_are_stored_for_their_tenant_only() -> Result<()> {
    let mut strata = single(&[])?;
    strata.wait_ready().await?;
    let url = strata.url("/api/v1/push");
    let t0 = now_ms() - 60_000;
    let samples: Vec<(i64, f64)> = (0..300).map(|i| (t0 + i * 100, i as f64 * 1.5)).collect();
    let answer = rw::push(
        &url,
        "team-a",
        vec![
            series(&[("__name__", "requests_total"), ("job", "api")], &samples),
            series(&[("__name__", "up"), ("job", "api")], &[(t0, 1.0)]),
        ],
    )
    .await?;
    ensure!(answer.status == 204, "{} {}", answer.status, answer.body);

    let stored = query_ingester(
        strata.grpc_port,
        "team-a",
        vec![eq("__name__", "requests_total")],
        0,
        i64::MAX,
    )
    .await?;
    ensure!(stored.len() == 1, "{stored:?}");
    ensure!(stored[0].1 == samples, "every sample back, exactly");
    ensure!(
        stored[0].0
            == vec![
                ("__name__".to_string(), "requests_total".to_string()),
                ("job".to_string(), "api".to_string())
            ]
    );

    // Another tenant sees nothing of team-a's.
    let other = query_ingester(
        strata.grpc_port,
        "team-b",
        vec![eq("job", "api")],
        0,
        i64::MAX,
    )
    .await?;
    ensure!(other.is_empty(), "tenant isolation: {other:?}");
    let _ = rw::push(
        &url,
        "team-b",
        vec![series(&[("__name__", "up"), ("job", "api")], &[(t0, 0.0)])],
    )
    .await?;
    let a = query_ingester(
        strata.grpc_port,
        "team-a",
        vec![eq("__name__", "up")],
        0,
        i64::MAX,
    )
    .await?;
    let b = query_ingester(
        strata.grpc_port,
        "team-b",
        vec![eq("__name__", "up")],
        0,
        i64::MAX,
    )
    .await?;
    ensure!(
        a[0].1 == vec![(t0, 1.0)] && b[0].1 == vec![(t0, 0.0)],
        "{a:?} {b:?}"
    );

    // /api/v1/write is the same endpoint.
    let answer = rw::push(
        &strata.url("/api/v1/write"),
        "team-a",
        vec![series(
            &[("__name__", "up"), ("job", "api")],
            &[(t0 + 1000, 1.0)],
        )],
    )
    .await?;
    ensure!(answer.status == 204);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_2_is_accepted_with_written_headers() -> Result<()> {
    let mut strata = single(&[])?;
    strata.wait_ready().await?;
    let t = now_ms() - 1000;
    let request = write_v2::Request {
        symbols: vec![
            "".into(),
            "__name__".into(),
            "jobs_total".into(),
            "job".into(),
            "batch".into(),
            "Jobs run.".into(),
        ],
        timeseries: vec![write_v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![
                write_v2::Sample {
                    value: 3.0,
                    timestamp: t,
                },
                write_v2::Sample {
                    value: 4.0,
                    timestamp: t + 1,
                },
            ],
            metadata: Some(write_v2::Metadata {
                r#type: 1,
                help_ref: 5,
                unit_ref: 0,
            }),
            ..Default::default()
        }],
    };
    let body = snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())?;
    let answer = rw::post(
        &strata.url("/api/v1/write"),
        Some("team-a"),
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        body,
    )
    .await?;
    ensure!(answer.status == 204, "{} {}", answer.status, answer.body);
    ensure!(answer.headers["X-Prometheus-Remote-Write-Samples-Written"] == "2");
    ensure!(answer.headers["X-Prometheus-Remote-Write-Histograms-Written"] == "0");
    let stored = query_ingester(
        strata.grpc_port,
        "team-a",
        vec![eq("__name__", "jobs_total")],
        0,
        i64::MAX,
    )
    .await?;
    ensure!(
        stored.len() == 1 && stored[0].1 == vec![(t, 3.0), (t + 1, 4.0)],
        "{stored:?}"
    );

    // A reference past the symbol table: 400, nothing written.
    let bad = write_v2::Request {
        symbols: vec!["".into()],
        timeseries: vec![write_v2::TimeSeries {
            labels_refs: vec![1, 2],
            ..Default::default()
        }],
    };
    let answer = rw::post(
        &strata.url("/api/v1/write"),
        Some("team-a"),
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        snap::raw::Encoder::new().compress_vec(&bad.encode_to_vec())?,
    )
    .await?;
    ensure!(answer.status == 400, "{}", answer.status);
    ensure!(answer.headers["X-Prometheus-Remote-Write-Samples-Written"] == "0");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_spec_status_and_lose_nothing() -> Result<()> {
    let mut strata = single(&[
        "--distributor.max-recv-msg-size=100000",
        "--limits.max-series-per-metric=2",
        "--limits.max-label-names-per-series=5",
    ])?;
    strata.wait_ready().await?;
    let url = strata.url("/api/v1/push");
    let t = now_ms() - 5000;

    // Transport-level problems.
    let good = WriteRequest {
        timeseries: vec![series(&[("__name__", "up")], &[(t, 1.0)])],
        metadata: vec![],
    };
    let missing_tenant = rw::post(&url, None, "application/x-protobuf", rw::encode(&good)).await?;
    ensure!(
        missing_tenant.status == 401,
        "missing tenant: {}",
        missing_tenant.status
    );
    let bad_tenant = rw::post(
        &url,
        Some("a/b"),
        "application/x-protobuf",
        rw::encode(&good),
    )
    .await?;
    ensure!(bad_tenant.status == 401);
    let not_snappy = rw::post(
        &url,
        Some("t"),
        "application/x-protobuf",
        b"definitely not snappy".to_vec(),
    )
    .await?;
    ensure!(
        not_snappy.status == 400 && not_snappy.body.contains("snappy"),
        "{} {}",
        not_snappy.status,
        not_snappy.body
    );
    let not_protobuf = rw::post(
        &url,
        Some("t"),
        "application/x-protobuf",
        snap::raw::Encoder::new().compress_vec(b"\x0a\xff\xff\xff")?,
    )
    .await?;
    ensure!(
        not_protobuf.status == 400 && not_protobuf.body.contains("protobuf"),
        "{}",
        not_protobuf.body
    );
    let wrong_type = rw::post(&url, Some("t"), "application/json", rw::encode(&good)).await?;
    ensure!(
        wrong_type.status == 415,
        "wrong content type: {}",
        wrong_type.status
    );
    let wrong_proto = rw::post(
        &url,
        Some("t"),
        "application/x-protobuf;proto=foo.Bar",
        rw::encode(&good),
    )
    .await?;
    ensure!(wrong_proto.status == 415);
    let huge = WriteRequest {
        timeseries: (0..3000)
            .map(|i| series(&[("__name__", "big"), ("i", &i.to_string())], &[(t, 1.0)]))
            .collect(),
        metadata: vec![],
    };
    let too_large = rw::post(&url, Some("t"), "application/x-protobuf", rw::encode(&huge)).await?;
    ensure!(
        too_large.status == 413,
        "too large: {} {}",
        too_large.status,
        too_large.body
    );

    // Bad series next to good ones: 400 naming them; the good ones are stored.
    let answer = rw::push(
        &url,
        "t",
        vec![
            series(&[("__name__", "good"), ("job", "a")], &[(t, 1.0)]),
            series(&[("job", "nameless")], &[(t, 1.0)]),
            series(
                &[("__name__", "unsorted"), ("z", "1"), ("a", "2")],
                &[(t, 1.0)],
            ),
            series(&[("__name__", "old")], &[(t - 30 * 86_400_000, 1.0)]),
            series(
                &[
                    ("__name__", "wide"),
                    ("a", "1"),
                    ("b", "1"),
                    ("c", "1"),
                    ("d", "1"),
                    ("e", "1"),
                ],
                &[(t, 1.0)],
            ),
            series(&[("__name__", "also_good")], &[(t, 2.0)]),
        ],
    )
    .await?;
    ensure!(answer.status == 400, "{} {}", answer.status, answer.body);
    for needle in [
        "series {job=\"nameless\"} has no metric name",
        "too old",
        "limits.reject_old_samples_max_age",
        "limits.max_label_names_per_series",
    ] {
        ensure!(
            answer.body.contains(needle),
            "400 body lacks {needle:?}: {}",
            answer.body
        );
    }
    // Unsorted labels are sorted, as Prometheus 3 does, not refused.
    for name in ["good", "also_good", "unsorted"] {
        let stored = query_ingester(
            strata.grpc_port,
            "t",
            vec![eq("__name__", name)],
            0,
            i64::MAX,
        )
        .await?;
        ensure!(
            stored.len() == 1,
            "{name} stored despite its bad neighbours"
        );
    }
    ensure!(strata.discarded("missing_metric_name", "t").await? == 1.0);
    ensure!(strata.discarded("greater_than_max_sample_age", "t").await? == 1.0);

    // Refused by the ingester: out of order, duplicate with another value, series limit.
    let answer = rw::push(
        &url,
        "t",
        vec![series(
            &[("__name__", "good"), ("job", "a")],
            &[(t - 1000, 5.0)],
        )],
    )
    .await?;
    ensure!(
        answer.status == 400 && answer.body.contains("limits.out_of_order_time_window"),
        "{} {}",
        answer.status,
        answer.body
    );
    let answer = rw::push(
        &url,
        "t",
        vec![series(&[("__name__", "good"), ("job", "a")], &[(t, 9.0)])],
    )
    .await?;
    ensure!(
        answer.status == 400,
        "duplicate timestamp, new value: {} {}",
        answer.status,
        answer.body
    );
    let same = rw::push(
        &url,
        "t",
        vec![series(&[("__name__", "good"), ("job", "a")], &[(t, 1.0)])],
    )
    .await?;
    ensure!(
        same.status == 204,
        "an identical resend is fine: {} {}",
        same.status,
        same.body
    );
    let answer = rw::push(
        &url,
        "t",
        vec![
            series(&[("__name__", "limited"), ("i", "1")], &[(t, 1.0)]),
            series(&[("__name__", "limited"), ("i", "2")], &[(t, 1.0)]),
            series(&[("__name__", "limited"), ("i", "3")], &[(t, 1.0)]),
        ],
    )
    .await?;
    ensure!(
        answer.status == 400 && answer.body.contains("limits.max_series_per_metric"),
        "{}",
        answer.body
    );
    let limited = query_ingester(
        strata.grpc_port,
        "t",
        vec![eq("__name__", "limited")],
        0,
        i64::MAX,
    )
    .await?;
    ensure!(
        limited.len() == 2,
        "the two series within the limit are stored"
    );
    ensure!(strata.discarded("sample_out_of_order", "t").await? == 1.0);
    ensure!(strata.discarded("per_metric_series_limit", "t").await? == 1.0);

    // The first sample is still the only one of `good`.
    let stored = query_ingester(
        strata.grpc_port,
        "t",
        vec![eq("__name__", "good")],
        0,
        i64::MAX,
    )
    .await?;
    ensure!(stored[0].1 == vec![(t, 1.0)], "{stored:?}");

    // Metadata is accepted.
    let with_metadata = WriteRequest {
        timeseries: vec![],
        metadata: vec![MetricMetadata {
            r#type: 1,
            metric_family_name: "good".into(),
            help: "Good things.".into(),
            unit: String::new(),
        }],
    };
    let answer = rw::post(
        &url,
        Some("t"),
        "application/x-protobuf",
        rw::encode(&with_metadata),
    )
    .await?;
    ensure!(answer.status == 204, "{}", answer.status);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() -> Result<()> {
    let mut strata = single(&[
        "--limits.ingestion-rate=10",
        "--limits.ingestion-burst-size=20",
    ])?;
    strata.wait_ready().await?;
    let url = strata.url("/api/v1/push");
    let t = now_ms() - 1000;
    let batch = |offset: i64| -> Vec<_> {
        (0..15)
            .map(|i| {
                series(
                    &[("__name__", "r"), ("i", &i.to_string())],
                    &[(t + offset, 1.0)],
                )
            })
            .collect()
    };
    let first = rw::push(&url, "t", batch(0)).await?;
    ensure!(first.status == 204);
    let second = rw::push(&url, "t", batch(1)).await?;
    ensure!(second.status == 429, "{} {}", second.status, second.body);
    ensure!(second.headers.contains_key("retry-after"));
    ensure!(second.body.contains("limits.ingestion_rate"));
    let too_big = rw::push(
        &url,
        "t",
        (0..25)
            .map(|i| series(&[("__name__", "r2"), ("i", &i.to_string())], &[(t, 1.0)]))
            .collect(),
    )
    .await?;
    ensure!(
        too_big.status == 400,
        "a request larger than the burst can never pass: {}",
        too_big.status
    );
    ensure!(strata.discarded("rate_limited", "t").await? == 40.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_checkpoints_let_old_segments_go_and_replay_from_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let args: Vec<String> = vec![
        "--ring.replication-factor=1".into(),
        "--ingester.wal.segment-size=65536".into(),
        "--ingester.wal.checkpoint-period=1s".into(),
    ];
    let mut strata = Strata::spawn_in("strata", dir.path(), &args)?;
    strata.wait_ready().await?;
    let url = strata.url("/api/v1/push");
    let t0 = now_ms() - 3_600_000;
    let mut expected = 0usize;
    for round in 0..40i64 {
        let batch: Vec<_> = (0..200)
            .map(|i| {
                let samples: Vec<(i64, f64)> = (0..5)
                    .map(|k| (t0 + round * 5000 + k * 1000, (round * 5 + k) as f64))
                    .collect();
                series(&[("__name__", "ckpt"), ("i", &format!("{i:03}"))], &samples)
            })
            .collect();
        expected += 200 * 5;
        let answer = rw::push(&url, "t", batch).await?;
        ensure!(answer.status == 204, "{} {}", answer.status, answer.body);
    }
    let wal = dir.path().join("data/wal");
    let checkpointed = common::eventually(
        "a checkpoint replaced old segments",
        std::time::Duration::from_secs(30),
        || {
            let wal = wal.clone();
            async move {
                let names: Vec<String> = std::fs::read_dir(&wal)?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect();
                let has_checkpoint = names
                    .iter()
                    .any(|n| n.starts_with("checkpoint.") && !n.ends_with(".tmp"));
                let first_segment_gone = !names.iter().any(|n| n == "00000000");
                Ok((has_checkpoint && first_segment_gone).then_some(names))
            }
        },
    )
    .await?;
    ensure!(!checkpointed.is_empty());

    // Restart on the same directory: everything comes back from checkpoint + segments.
    strata.guard.signal(libc::SIGTERM);
    ensure!(
        strata
            .guard
            .wait_exit(std::time::Duration::from_secs(20))?
            .success()
    );
    let mut again = Strata::spawn_in("strata", dir.path(), &args)?;
    again.wait_ready().await?;
    let stored = query_ingester(
        again.grpc_port,
        "t",
        vec![eq("__name__", "ckpt")],
        0,
        i64::MAX,
    )
    .await?;
    let total: usize = stored.iter().map(|(_, s)| s.len()).sum();
    ensure!(
        stored.len() == 200 && total == expected,
        "{} series, {total} of {expected} samples after replaying the checkpoint",
        stored.len()
    );
    Ok(())
}
