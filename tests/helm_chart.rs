//! The Helm chart lints, renders valid Kubernetes objects in both modes
//! (checked by kubeconform against the Kubernetes 1.37 schemas), and the
//! Strata config it renders is one `strata` accepts.

mod common;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};

fn tools() -> PathBuf {
    std::env::var_os("STRATA_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/strata-tools")))
        .expect("HOME or STRATA_TOOLS is set")
}

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("helm/strata")
}

fn run(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?} (tests/install-deps.sh installs it)"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn render(mode: &str) -> Result<String> {
    run(Command::new(tools().join("bin/helm"))
        .arg("template")
        .arg("strata")
        .arg(chart())
        .arg(format!("--set=mode={mode}")))
}

#[test]
fn chart_lints_and_renders_valid_objects() -> Result<()> {
    run(Command::new(tools().join("bin/helm"))
        .arg("lint")
        .arg(chart()))?;
    for mode in ["single", "microservices"] {
        let rendered = render(mode)?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("rendered.yaml");
        std::fs::write(&file, &rendered)?;
        let schemas = tools().join("k8s-schemas-1.37");
        let summary = run(Command::new(tools().join("bin/kubeconform"))
            .arg("-strict")
            .arg("-summary")
            .arg("-schema-location")
            .arg(format!(
                "{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
                schemas.display()
            ))
            .arg(&file))?;
        ensure!(
            summary.contains("Invalid: 0, Errors: 0"),
            "{mode}: {summary}"
        );
        // single: config, service, statefulset. microservices: config, the
        // ingesters' statefulset, headless service and disruption budget,
        // and a deployment each for distributors, queriers, the table
        // manager and the compactor, with services for the first two.
        let objects = if mode == "single" { 3 } else { 10 };
        ensure!(
            summary.contains(&format!("Valid: {objects},")),
            "{mode}: {objects} objects: {summary}"
        );
        if mode == "microservices" {
            for role in [
                "ingester",
                "distributor",
                "querier",
                "table-manager",
                "compactor",
            ] {
                ensure!(
                    rendered.contains(&format!("- --target={role}\n")),
                    "a workload runs {role}: {rendered}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn rendered_strata_config_is_accepted_by_strata() -> Result<()> {
    for (mode, target, store) in [
        ("single", "all", "memory"),
        ("microservices", "ingester", "etcd"),
        ("microservices", "distributor", "etcd"),
        ("microservices", "querier", "etcd"),
        ("microservices", "table-manager", "etcd"),
        ("microservices", "compactor", "etcd"),
    ] {
        let rendered = render(mode)?;
        // The ConfigMap's strata.yaml block, unindented.
        let mut config = String::new();
        let mut inside = false;
        for line in rendered.lines() {
            if line.trim_start().starts_with("strata.yaml: |") {
                inside = true;
                continue;
            }
            if inside {
                if let Some(rest) = line.strip_prefix("    ") {
                    config.push_str(rest);
                    config.push('\n');
                } else {
                    break;
                }
            }
        }
        ensure!(!config.is_empty(), "{mode}: no strata.yaml in:\n{rendered}");
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("strata.yaml");
        std::fs::write(&file, &config)?;
        let mut command = Command::new(common::strata_bin());
        command
            .env("POD_NAME", "strata-ingester-0")
            .env("POD_NAMESPACE", "monitoring")
            .arg(format!("--config.file={}", file.display()))
            .arg("--config.expand-env")
            .arg("--print-config");
        if mode == "microservices" {
            // As the workload's args pass it.
            command.arg(format!("--target={target}"));
        }
        let printed = run(&mut command)?;
        ensure!(
            printed.contains(&format!("target: {target}")),
            "{mode}: {printed}"
        );
        ensure!(
            printed.contains(&format!("store: {store}")),
            "{mode}: {printed}"
        );
        if mode == "microservices" {
            ensure!(printed.contains("id: strata-ingester-0"), "{printed}");
            // Every role shares the chart's long-term store.
            ensure!(printed.contains("keyspace: strata"), "{printed}");
            ensure!(printed.contains("chunks: cassandra"), "{printed}");
        }
    }
    Ok(())
}
