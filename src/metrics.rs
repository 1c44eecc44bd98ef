//! The process's metrics registry, build info and process metrics.
//!
//! Components register their metrics (named `strata_<component>_<what>`)
//! into the [`Registry`] handed to them at construction; `/metrics` encodes
//! it in the Prometheus text format.

use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// The version this binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision this binary was built from, when known at build time.
pub const REVISION: &str = match option_env!("STRATA_GIT_REVISION") {
    Some(revision) => revision,
    None => "unknown",
};

/// A registry shared by every component of the process.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with build info and process metrics already in it.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let build_info = Family::<Vec<(String, String)>, Gauge>::default();
        build_info
            .get_or_create(&vec![
                ("version".to_string(), VERSION.to_string()),
                ("revision".to_string(), REVISION.to_string()),
                ("branch".to_string(), String::new()),
                ("goversion".to_string(), format!("rust-{}", rustc_version())),
            ])
            .set(1);
        registry.register(
            "strata_build_info",
            "A metric with a constant '1' value labeled by version, revision and branch from which Strata was built.",
            build_info,
        );
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
        }
    }

    /// Runs `f` with the registry, to register metrics at construction.
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock())
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        out
    }
}

fn rustc_version() -> &'static str {
    option_env!("STRATA_RUSTC_VERSION").unwrap_or("unknown")
}

/// `process_*` metrics from `/proc/self`, as the Prometheus client libraries export them.
#[derive(Debug)]
struct ProcessCollector;

struct ProcessStats {
    cpu_seconds: f64,
    virtual_bytes: f64,
    resident_bytes: f64,
    start_time_seconds: f64,
    open_fds: f64,
    max_fds: f64,
}

fn read_process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field numbers from proc(5), minus 3 for pid, comm and the split.
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let start_ticks: f64 = fields.get(19)?.parse().ok()?;
    let vsize: f64 = fields.get(20)?.parse().ok()?;
    let rss_pages: f64 = fields.get(21)?.parse().ok()?;
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    Some(ProcessStats {
        cpu_seconds: (utime + stime) / ticks,
        virtual_bytes: vsize,
        resident_bytes: rss_pages * 4096.0,
        start_time_seconds: boot_time + start_ticks / ticks,
        open_fds,
        max_fds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = read_process_stats() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                stats.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stats.virtual_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                stats.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                stats.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                stats.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_build_info_and_process_metrics() {
        let text = Metrics::new().encode();
        assert!(text.contains("strata_build_info{version=\""), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse().ok())
            .expect("rss value");
        assert!(rss > 1e6, "a test process uses more than 1 MB: {rss}");
    }
}
