//! The official remote-write receiver compliance suite
//! (prometheus/compliance `remotewrite/receiver`, built by
//! tests/install-deps.sh) against a Strata distributor with a tenant
//! header: in one process, and in a cluster of three ingesters on etcd
//! (RF=3) behind a distributor. Every case is sent with the same body to a
//! Prometheus 3.16 too (the reference receiver, exemplar storage on).
//!
//! Every case tagged MUST or SHOULD passes for Strata; each case's status
//! is Prometheus's but for the documented [`STATUS_DIFFERENCES`] (the suite
//! itself takes any 4xx where it hopes for 204); and what both stored reads
//! back identically through the HTTP API: exemplars, series, float and
//! native histogram samples. The counts are printed so that they can be
//! quoted (`cargo test --test rw_compliance -- --nocapture`).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Etcd, Prometheus3, Strata, http, tools_dir};
use serde_json::Value as Json;

const TENANT: &str = "compliance";

/// Cases where Strata answers another status than Prometheus 3.16, on
/// purpose.
const STATUS_DIFFERENCES: &[(&str, &str)] = &[
    (
        "TestBadContentTypes/",
        "the spec says 415 Unsupported Media Type; Prometheus answers 400",
    ),
    (
        "TestEdgeCaseCombinations/metadata_without_data",
        "metadata without samples is stored, as Cortex and Mimir do and the suite expects; Prometheus refuses the series",
    ),
];

/// The suite's test binary, built by tests/install-deps.sh.
fn suite_binary() -> PathBuf {
    tools_dir().join("rw-compliance/rw-receiver-compliance.test")
}

/// A remote-write endpoint the suite sends every case to.
struct Receiver {
    /// The `remote_write` entry's name: the last element of each case's
    /// test name.
    name: String,
    url: String,
    tenant: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    Skip,
}

/// One case of the suite for one receiver: a leaf test.
#[derive(Debug)]
struct Case {
    /// The test name without the receiver, e.g. `TestExemplars/basic_exemplar`.
    name: String,
    receiver: String,
    /// MUST, SHOULD or MAY (from the `rfcLevel` attribute of the test or
    /// its nearest ancestor); `None` when untagged.
    level: Option<String>,
    outcome: Outcome,
    /// What the suite logged for the case (status, assertion messages).
    log: Vec<String>,
    /// The HTTP status the receiver answered.
    status: Option<u16>,
}

/// Parses `go test -test.v` output: `=== ATTR name key value` lines tag
/// tests, `--- PASS|FAIL|SKIP: name (...)` lines give results, and the
/// cases are the tests no other test is nested in. Log lines belong to the
/// test that ran last (the suite runs its tests one at a time).
fn parse_suite_output(text: &str) -> Vec<Case> {
    let mut levels: HashMap<String, String> = HashMap::new();
    let mut results: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut logs: HashMap<String, Vec<String>> = HashMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("=== RUN ") {
            current = rest.trim().to_string();
        } else if let Some(rest) = trimmed.strip_prefix("=== ATTR ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some("rfcLevel"), Some(level)) =
                (parts.next(), parts.next(), parts.next())
            {
                levels.insert(name.to_string(), level.to_string());
            }
        } else if let Some((outcome, rest)) = [
            ("--- PASS: ", Outcome::Pass),
            ("--- FAIL: ", Outcome::Fail),
            ("--- SKIP: ", Outcome::Skip),
        ]
        .iter()
        .find_map(|(prefix, outcome)| trimmed.strip_prefix(prefix).map(|r| (*outcome, r)))
        {
            if let Some(name) = rest.split_whitespace().next() {
                results.insert(name.to_string(), outcome);
            }
        } else if line.starts_with("    ") && !current.is_empty() {
            let message = trimmed.trim();
            if message.starts_with("main_test.go:170")
                || message.starts_with("main_test.go:172")
                || message.starts_with("Error:")
                || message.starts_with("Messages:")
                || message.starts_with("expected")
                || message.starts_with("actual")
            {
                logs.entry(current.clone())
                    .or_default()
                    .push(message.to_string());
            }
        }
    }
    let names: Vec<&String> = results.keys().collect();
    let mut cases = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let prefix = format!("{name}/");
        // Sorted names: a test's subtests follow it directly.
        let is_leaf = names
            .get(i + 1)
            .is_none_or(|next| !next.starts_with(&prefix));
        if !is_leaf {
            continue;
        }
        let mut level = None;
        let mut ancestor: &str = name;
        loop {
            if let Some(l) = levels.get(ancestor) {
                level = Some(l.clone());
                break;
            }
            match ancestor.rsplit_once('/') {
                Some((parent, _)) => ancestor = parent,
                None => break,
            }
        }
        let (case, receiver) = name
            .rsplit_once('/')
            .map_or((name.as_str(), ""), |(c, r)| (c, r));
        let log = logs.remove(*name).unwrap_or_default();
        let status = log.iter().find_map(|line| {
            line.strip_prefix("main_test.go:170: Response code from ")
                .and_then(|rest| rest.rsplit(' ').next())
                .and_then(|code| code.parse().ok())
        });
        cases.push(Case {
            name: case.to_string(),
            receiver: receiver.to_string(),
            level,
            outcome: results[*name],
            log,
            status,
        });
    }
    cases
}

/// Runs the whole suite against `receivers` (each case goes to every
/// receiver with the same body) and returns its cases.
async fn run_suite(receivers: &[Receiver]) -> Result<(Vec<Case>, Duration)> {
    let binary = suite_binary();
    ensure!(
        binary.is_file(),
        "{} missing (tests/install-deps.sh builds it)",
        binary.display()
    );
    let dir = tempfile::tempdir()?;
    let mut config = String::from("remote_write:\n");
    for receiver in receivers {
        config.push_str(&format!(
            "  - name: {}\n    url: {}\n    headers: {{X-Scope-OrgID: {}}}\n",
            receiver.name, receiver.url, receiver.tenant
        ));
    }
    let config_file = dir.path().join("rw.yml");
    std::fs::write(&config_file, config)?;
    let workdir = dir.path().to_path_buf();
    let start = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&binary)
            .current_dir(&workdir)
            .env("PROMETHEUS_RW2_COMPLIANCE_CONFIG_FILE", &config_file)
            .args(["-test.v", "-test.timeout=5m"])
            .output()
    })
    .await?
    .context("run the compliance suite")?;
    let elapsed = start.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let cases = parse_suite_output(&text);
    if cases.is_empty() {
        bail!("the suite reported no cases ({}):\n{text}", output.status);
    }
    Ok((cases, elapsed))
}

/// Counts by level for one receiver, e.g. "205 cases: 203 passed, 2
/// failed (MUST 0/120 failed, SHOULD 0/80, MAY 2/5)".
fn summary(cases: &[Case], receiver: &str) -> String {
    let mine: Vec<&Case> = cases.iter().filter(|c| c.receiver == receiver).collect();
    let passed = mine.iter().filter(|c| c.outcome == Outcome::Pass).count();
    let failed = mine.iter().filter(|c| c.outcome == Outcome::Fail).count();
    let skipped = mine.len() - passed - failed;
    let mut levels = Vec::new();
    for level in ["MUST", "SHOULD", "MAY"] {
        let of_level: Vec<&&Case> = mine
            .iter()
            .filter(|c| c.level.as_deref() == Some(level))
            .collect();
        let level_failed = of_level
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .count();
        levels.push(format!(
            "{level} {level_failed} failed of {}",
            of_level.len()
        ));
    }
    let untagged = mine.iter().filter(|c| c.level.is_none()).count();
    if untagged > 0 {
        levels.push(format!("{untagged} untagged"));
    }
    format!(
        "{receiver}: {} cases: {passed} passed, {failed} failed, {skipped} skipped ({})",
        mine.len(),
        levels.join(", ")
    )
}

/// Prints the counts and every failing case; fails if a MUST or SHOULD
/// case (or an untagged one) failed for `receiver`.
fn check(mode: &str, cases: &[Case], receiver: &str) -> Result<()> {
    println!("rw-compliance [{mode}] {}", summary(cases, receiver));
    let failing: Vec<&Case> = cases
        .iter()
        .filter(|c| c.receiver == receiver && c.outcome == Outcome::Fail)
        .collect();
    for case in &failing {
        println!(
            "  FAIL [{}] {}: {}",
            case.level.as_deref().unwrap_or("untagged"),
            case.name,
            case.log.join(" | ")
        );
    }
    let required: Vec<&&Case> = failing
        .iter()
        .filter(|c| c.level.as_deref() != Some("MAY"))
        .collect();
    ensure!(
        required.is_empty(),
        "[{mode}] {} MUST/SHOULD cases failed: {}",
        required.len(),
        required
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

#[test]
fn suite_output_is_parsed_into_tagged_cases() {
    let text = "\
=== RUN   TestA
=== ATTR  TestA rfcLevel MUST
=== RUN   TestA/one
=== RUN   TestA/one/strata
    main_test.go:170: Response code from \"strata\": 204
--- FAIL: TestA (0.01s)
    --- FAIL: TestA/one (0.01s)
        --- FAIL: TestA/one/strata (0.00s)
=== RUN   TestB
=== RUN   TestB/x_returns_204
=== ATTR  TestB/x_returns_204 rfcLevel SHOULD
=== RUN   TestB/x_returns_204/strata
--- PASS: TestB (0.01s)
    --- PASS: TestB/x_returns_204 (0.01s)
        --- PASS: TestB/x_returns_204/strata (0.00s)
";
    let cases = parse_suite_output(text);
    assert_eq!(cases.len(), 2, "{cases:?}");
    assert_eq!(cases[0].name, "TestA/one");
    assert_eq!(cases[0].receiver, "strata");
    assert_eq!(cases[0].level.as_deref(), Some("MUST"));
    assert_eq!(cases[0].outcome, Outcome::Fail);
    assert_eq!(cases[0].log.len(), 1);
    assert_eq!(cases[0].status, Some(204));
    assert_eq!(cases[1].name, "TestB/x_returns_204");
    assert_eq!(cases[1].level.as_deref(), Some("SHOULD"));
    assert_eq!(cases[1].outcome, Outcome::Pass);
    assert!(check("parse", &cases, "strata").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_process_passes_every_must_and_should() -> Result<()> {
    let mut strata = Strata::spawn("strata", &["--ring.replication-factor=1".to_string()])?;
    strata.wait_ready().await?;
    suite_beside_prometheus("single process", &strata).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ingesters_on_etcd_pass_every_must_and_should() -> Result<()> {
    let etcd = Etcd::start().await?;
    let ring = |target: &str| -> Vec<String> {
        vec![
            format!("--target={target}"),
            "--ring.kvstore.store=etcd".into(),
            format!("--ring.kvstore.etcd.endpoints={}", etcd.endpoint()),
            "--ring.kvstore.prefix=rw-compliance/".into(),
            "--ring.replication-factor=3".into(),
            "--ingester.lifecycler.heartbeat-period=500ms".into(),
        ]
    };
    let mut ingesters = Vec::new();
    for i in 0..3 {
        let mut args = ring("ingester");
        args.push(format!("--ingester.lifecycler.id=ingester-{i}"));
        ingesters.push(Strata::spawn(&format!("ingester-{i}"), &args)?);
    }
    for ingester in &mut ingesters {
        ingester.wait_ready().await?;
    }
    let mut front = Strata::spawn("front", &ring("distributor,querier"))?;
    front.wait_ready().await?;
    front.wait_active(3).await?;
    // Every exemplar and sample is on three ingesters: the querier must
    // answer each once, as Prometheus does.
    suite_beside_prometheus("3 ingesters, RF=3, etcd", &front).await
}

/// `GET url` with the tenant header; the `data` of a success answer.
async fn api_data(url: &str, params: &[(&str, String)]) -> Result<Json> {
    let response = http()
        .get(url)
        .query(params)
        .header("X-Scope-OrgID", TENANT)
        .send()
        .await?;
    let status = response.status();
    let body: Json = response.json().await?;
    ensure!(
        status == 200 && body["status"] == "success",
        "{url}: {status} {body}"
    );
    Ok(body["data"].clone())
}

/// Numbers as their f64 text, recursively, so that `1.5` and `1.50`
/// compare equal.
fn normalise(v: &Json) -> Json {
    match v {
        Json::Number(n) => Json::String(format!("{}", n.as_f64().unwrap_or(f64::NAN))),
        Json::Array(items) => Json::Array(items.iter().map(normalise).collect()),
        Json::Object(map) => {
            Json::Object(map.iter().map(|(k, v)| (k.clone(), normalise(v))).collect())
        }
        other => other.clone(),
    }
}

/// Where two values first differ, as `path: a != b`.
fn first_difference(path: &str, a: &Json, b: &Json) -> Option<String> {
    match (a, b) {
        (Json::Array(x), Json::Array(y)) => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                if let Some(d) = first_difference(&format!("{path}[{i}]"), x, y) {
                    return Some(d);
                }
            }
            (x.len() != y.len()).then(|| format!("{path}: {} != {} items", x.len(), y.len()))
        }
        (Json::Object(x), Json::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => {
                        if let Some(d) = first_difference(&format!("{path}.{k}"), v, w) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{path}.{k}: only in Prometheus")),
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}.{k}: only in Strata"))
        }
        _ => (a != b).then(|| format!("{path}: Prometheus {a} != Strata {b}")),
    }
}

/// Differences between two answers, as readable lines (empty: equal):
/// items (series) are paired by `key` (their labels) and the first
/// difference of each pair is named.
fn differences(what: &str, key: &str, prometheus: &Json, strata: &Json) -> Vec<String> {
    let by_key = |v: &Json| -> BTreeMap<String, Json> {
        let items = match v {
            Json::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        items
            .iter()
            .map(|item| {
                let k = if key.is_empty() { item } else { &item[key] };
                (k.to_string(), normalise(item))
            })
            .collect()
    };
    let (p, s) = (by_key(prometheus), by_key(strata));
    let mut out = Vec::new();
    for (k, item) in &p {
        match s.get(k) {
            None => out.push(format!("{what} {k}: only in Prometheus")),
            Some(other) => {
                if let Some(d) = first_difference("", item, other) {
                    out.push(format!("{what} {k}: {d}"));
                }
            }
        }
    }
    for k in s.keys().filter(|k| !p.contains_key(*k)) {
        out.push(format!("{what} {k}: only in Strata"));
    }
    out
}

/// Runs the suite against `strata` and a Prometheus 3.16 (exemplar storage
/// on) side by side, each case with the same body to both; fails if a MUST
/// or SHOULD case fails for Strata, if a status differs from Prometheus's
/// but for [`STATUS_DIFFERENCES`], or if reading back through the HTTP API
/// answers other exemplars, series, samples or native histograms than
/// Prometheus does (metadata, which Prometheus serves only when scraped, is
/// checked against what the suite sent).
async fn suite_beside_prometheus(mode: &str, strata: &Strata) -> Result<()> {
    let prometheus = Prometheus3::start(&[
        "--enable-feature=exemplar-storage",
        "--web.enable-remote-write-receiver",
    ])
    .await?;
    let before = common::rw::now_ms();
    let (cases, elapsed) = run_suite(&[
        Receiver {
            name: "strata".into(),
            url: strata.url("/api/v1/push"),
            tenant: TENANT.into(),
        },
        Receiver {
            name: "prometheus".into(),
            url: prometheus.url("/api/v1/write"),
            tenant: TENANT.into(),
        },
    ])
    .await?;
    println!("rw-compliance [{mode}] suite ran in {elapsed:.1?}");
    println!(
        "rw-compliance [{mode}] reference {}",
        summary(&cases, "prometheus")
    );
    check(mode, &cases, "strata")?;
    // The suite takes any 4xx where it hopes for 204: the statuses are
    // compared with the reference's too.
    let mut statuses = Vec::new();
    let mut unexplained = Vec::new();
    for case in cases.iter().filter(|c| c.receiver == "strata") {
        let reference = cases
            .iter()
            .find(|c| c.receiver == "prometheus" && c.name == case.name)
            .and_then(|c| c.status);
        if case.status != reference {
            let why = STATUS_DIFFERENCES
                .iter()
                .find(|(prefix, _)| case.name.starts_with(prefix))
                .map(|(_, why)| *why);
            let line = format!(
                "{}: Strata {:?}, Prometheus {:?} ({})",
                case.name,
                case.status,
                reference,
                why.unwrap_or("unexplained")
            );
            if why.is_none() {
                unexplained.push(line.clone());
            }
            statuses.push(line);
        }
    }
    println!(
        "rw-compliance [{mode}] statuses differing from Prometheus 3.16: {}",
        statuses.len()
    );
    for line in &statuses {
        println!("  {line}");
    }
    ensure!(
        unexplained.is_empty(),
        "statuses differ from Prometheus 3.16: {unexplained:#?}"
    );

    let after = common::rw::now_ms();
    // The suite's timestamps reach two hours back (created timestamps) and
    // a few seconds ahead.
    let (start, end) = (before - 3 * 3_600_000, after + 60_000);
    let seconds = |ms: i64| format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
    let all = r#"{__name__=~".+"}"#.to_string();
    let mut diffs = Vec::new();
    let mut compared = Vec::new();
    // (what, the key pairing items, path, parameters)
    type Query<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, String)>);
    let queries: Vec<Query> = vec![
        (
            "exemplars",
            "seriesLabels",
            "/api/v1/query_exemplars",
            vec![
                ("query", all.clone()),
                ("start", seconds(start)),
                ("end", seconds(end)),
            ],
        ),
        (
            "exemplars of an expression",
            "seriesLabels",
            "/api/v1/query_exemplars",
            vec![
                (
                    "query",
                    r#"sum(rate(http_requests_total{job="api"}[5m])) / on() count(latency_hist) + test_metric"#
                        .to_string(),
                ),
                ("start", seconds(start)),
                ("end", seconds(end)),
            ],
        ),
        (
            "exemplars in a window",
            "seriesLabels",
            "/api/v1/query_exemplars",
            vec![
                ("query", all.clone()),
                ("start", seconds(before - 2 * 3_600_000)),
                ("end", seconds(before - 5 * 60_000)),
            ],
        ),
        (
            "series",
            "",
            "/api/v1/series",
            vec![
                ("match[]", all.clone()),
                ("start", seconds(start)),
                ("end", seconds(end)),
            ],
        ),
        (
            "samples and histograms",
            "metric",
            "/api/v1/query",
            vec![("query", format!("{all}[4h]")), ("time", seconds(end))],
        ),
    ];
    for (what, key, path, params) in &queries {
        let p = api_data(&prometheus.url(path), params).await?;
        let s = api_data(&strata.url(path), params).await?;
        let count = |v: &Json| match v {
            Json::Array(a) => a.len(),
            Json::Object(o) => o
                .get("result")
                .and_then(Json::as_array)
                .map_or(o.len(), Vec::len),
            _ => 0,
        };
        compared.push(format!(
            "{what}: {} (Prometheus) / {} (Strata)",
            count(&p),
            count(&s)
        ));
        let (p, s) = if *what == "samples and histograms" {
            (p["result"].clone(), s["result"].clone())
        } else {
            (p, s)
        };
        diffs.extend(differences(what, key, &p, &s));
    }
    // A bad range is refused alike.
    for url in [
        prometheus.url("/api/v1/query_exemplars"),
        strata.url("/api/v1/query_exemplars"),
    ] {
        let response = http()
            .get(&url)
            .query(&[
                ("query", all.clone()),
                ("start", "20".into()),
                ("end", "10".into()),
            ])
            .header("X-Scope-OrgID", TENANT)
            .send()
            .await?;
        let status = response.status();
        let body: Json = response.json().await?;
        if status != 400 || body["errorType"] != "bad_data" {
            diffs.push(format!("{url} with end before start: {status} {body}"));
        }
    }
    // Prometheus serves only scraped metadata from /api/v1/metadata, not
    // remote-written: Strata's is checked against what the suite sent
    // (TestManySamples' fifty counter families).
    let metadata = api_data(&strata.url("/api/v1/metadata"), &[]).await?;
    for i in 0..50 {
        let want = serde_json::json!([{
            "type": "counter",
            "help": format!("Counter metric number {i}"),
            "unit": "count",
        }]);
        let got = &metadata[format!("counter_metric_{i}")];
        if *got != want {
            diffs.push(format!("metadata counter_metric_{i}: {got} != sent {want}"));
        }
    }
    compared.push(format!(
        "metadata: {} families (Strata)",
        metadata.as_object().map_or(0, |m| m.len())
    ));
    println!("rw-compliance [{mode}] read back: {}", compared.join(", "));
    for diff in &diffs {
        println!("  {diff}");
    }
    ensure!(
        diffs.is_empty(),
        "{} differences between Strata and Prometheus 3.16",
        diffs.len()
    );
    Ok(())
}
