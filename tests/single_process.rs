//! The `strata` binary on its own: the no-argument single-process default,
//! the admin endpoints, graceful shutdown, and clear refusals.

mod common;

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use common::{Guard, Strata, eventually, http, strata_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_arguments_starts_the_single_process_default() -> Result<()> {
    // No flags at all: the defaults (HTTP 9009, gRPC 9095, in-memory ring).
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(strata_bin());
    command.current_dir(dir.path());
    let mut strata = Guard::spawn("strata", command, dir.path().join("log"))?;
    let client = http();
    eventually(
        "/ready on the default port",
        Duration::from_secs(30),
        || async {
            let response = client.get("http://127.0.0.1:9009/ready").send().await?;
            Ok((response.status() == 200).then_some(()))
        },
    )
    .await?;
    let ring: serde_json::Value = client
        .get("http://127.0.0.1:9009/ring")
        .header("Accept", "application/json")
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        ring["members"].as_array().map(Vec::len) == Some(1),
        "{ring}"
    );
    ensure!(ring["members"][0]["state"] == "ACTIVE", "{ring}");
    strata.signal(libc::SIGINT);
    let status = strata.wait_exit(Duration::from_secs(20))?;
    ensure!(
        status.success(),
        "SIGINT exits 0: {status}\n{}",
        strata.log_text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_graceful_sigterm() -> Result<()> {
    let mut strata = Strata::spawn(
        "strata",
        &[
            "--log.format=json".to_string(),
            "--auth.enabled=false".to_string(),
        ],
    )?;
    strata.wait_ready().await?;
    let client = http();

    let metrics = client
        .get(strata.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for name in [
        "strata_build_info{",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "strata_ring_members{",
        "strata_ring_heartbeats_total",
    ] {
        ensure!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    ensure!(
        metrics.contains("strata_ring_members{ring=\"ingesters\",state=\"ACTIVE\"} 1"),
        "{metrics}"
    );

    let config = client
        .get(strata.url("/config"))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        config.contains("enabled: false"),
        "/config shows the effective config: {config}"
    );
    ensure!(
        config.contains(&format!("http_listen_port: {}", strata.http_port)),
        "{config}"
    );

    let services: serde_json::Value = client
        .get(strata.url("/services"))
        .send()
        .await?
        .json()
        .await?;
    let states: Vec<(String, String)> = services
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    ensure!(
        states
            == vec![
                ("runtime-config".to_string(), "Running".to_string()),
                ("table-manager".to_string(), "Running".to_string()),
                ("compactor".to_string(), "Running".to_string()),
                ("ingester-ring".to_string(), "Running".to_string()),
                ("ingester".to_string(), "Running".to_string())
            ],
        "{services}"
    );

    strata.guard.signal(libc::SIGTERM);
    let status = strata.guard.wait_exit(Duration::from_secs(20))?;
    let log = strata.guard.log_text();
    ensure!(status.success(), "SIGTERM exits 0: {status}\n{log}");
    // JSON logs, and the ingester left the ring on the way out.
    ensure!(
        log.lines()
            .any(|l| l.starts_with('{') && l.contains("\"left the ring\"")),
        "{log}"
    );
    Ok(())
}

#[test]
fn help_lists_roles_and_flags() -> Result<()> {
    let output = Command::new(strata_bin()).arg("--help").output()?;
    ensure!(output.status.success());
    let help = String::from_utf8(output.stdout)?;
    for needle in [
        "distributor",
        "query-frontend",
        "table-manager",
        "compactor",
        "--target",
        "--config.file",
        "--config.expand-env",
        "--print-config",
        "--ring.kvstore.etcd.endpoints",
        "--ingester.lifecycler.num-tokens",
        "--log.format",
    ] {
        ensure!(help.contains(needle), "--help lacks {needle}");
    }
    Ok(())
}

#[test]
fn roles_not_built_yet_refuse_to_start() -> Result<()> {
    let output = Command::new(strata_bin())
        .args([
            "--target=ruler",
            "--server.http-listen-port=0",
            "--server.grpc-listen-port=0",
        ])
        .output()?;
    ensure!(!output.status.success(), "must not start");
    let stderr = String::from_utf8(output.stderr)?;
    ensure!(
        stderr.contains("target ruler is not available"),
        "clear message: {stderr}"
    );
    Ok(())
}

#[test]
fn bad_config_names_file_line_and_field() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "ring:\n  replication_factor: 3\n  replicaton_factor: 2\n",
    )?;
    let output = Command::new(strata_bin())
        .arg(format!("--config.file={}", file.display()))
        .output()?;
    ensure!(output.status.code() == Some(1));
    let stderr = String::from_utf8(output.stderr)?;
    ensure!(stderr.contains("bad.yaml"), "{stderr}");
    ensure!(stderr.contains("line 3"), "{stderr}");
    ensure!(stderr.contains("replicaton_factor"), "{stderr}");

    std::fs::write(&file, "ring:\n  replication_factor: 0\n")?;
    let output = Command::new(strata_bin())
        .arg(format!("--config.file={}", file.display()))
        .output()?;
    let stderr = String::from_utf8(output.stderr)?;
    ensure!(
        stderr.contains("bad.yaml: field ring.replication_factor: must be at least 1"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn print_config_shows_the_effective_config() -> Result<()> {
    let output = Command::new(strata_bin())
        .args([
            "--print-config",
            "--ring.replication-factor=5",
            "--target=ingester",
        ])
        .output()?;
    ensure!(output.status.success());
    let text = String::from_utf8(output.stdout)?;
    ensure!(text.contains("replication_factor: 5"), "{text}");
    ensure!(text.contains("target: ingester"), "{text}");
    Ok(())
}
