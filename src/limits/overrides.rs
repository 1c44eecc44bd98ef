//! Per-tenant overrides from a runtime file, re-read every `period`.
//!
//! The file holds `overrides: {<tenant>: {<limit>: <value>, ...}}`; a
//! tenant's limits are the config defaults with its overrides applied. A file
//! that fails to parse is reported (log and `strata_runtime_config_last_reload_successful`)
//! and the previous overrides stay in force.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

use super::Limits;
use crate::metrics::Metrics;
use crate::service::{BackgroundTask, Service, ServiceError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// YAML file with per-tenant overrides (empty: none).
    pub file: String,
    /// How often the file is re-read.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            file: String::new(),
            period: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OverridesError {
    #[error("cannot read runtime config {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("runtime config {file}: {message}")]
    Parse { file: PathBuf, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeFile {
    #[serde(default)]
    overrides: HashMap<String, serde_json::Map<String, serde_json::Value>>,
}

/// The limits of every tenant.
pub struct Overrides {
    state: Arc<State>,
    task: BackgroundTask,
}

struct State {
    defaults: Arc<Limits>,
    tenants: ArcSwap<HashMap<String, Arc<Limits>>>,
    config: RuntimeConfig,
    last_text: Mutex<Option<String>>,
    reload_ok: Gauge,
}

impl Overrides {
    pub fn new(defaults: Limits, config: RuntimeConfig, metrics: &Metrics) -> Arc<Overrides> {
        let reload_ok = Gauge::default();
        reload_ok.set(1);
        metrics.with_registry(|registry| {
            registry.register(
                "strata_runtime_config_last_reload_successful",
                "Whether the last reload of the runtime config file succeeded (1) or not (0).",
                reload_ok.clone(),
            )
        });
        Arc::new(Overrides {
            state: Arc::new(State {
                defaults: Arc::new(defaults),
                tenants: ArcSwap::from_pointee(HashMap::new()),
                config,
                last_text: Mutex::new(None),
                reload_ok,
            }),
            task: BackgroundTask::default(),
        })
    }

    /// Overrides that never change (tests, tools).
    pub fn fixed(defaults: Limits) -> Arc<Overrides> {
        Overrides::new(defaults, RuntimeConfig::default(), &Metrics::new())
    }

    /// The effective limits of `tenant`.
    pub fn get(&self, tenant: &str) -> Arc<Limits> {
        self.state
            .tenants
            .load()
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| self.state.defaults.clone())
    }

    /// Whether `tenant` has overrides (else it runs on the defaults).
    pub fn has_override(&self, tenant: &str) -> bool {
        self.state.tenants.load().contains_key(tenant)
    }

    pub fn defaults(&self) -> &Limits {
        &self.state.defaults
    }

    /// Re-reads the runtime file; returns whether anything changed.
    pub fn reload(&self) -> Result<bool, OverridesError> {
        self.state.reload()
    }

    /// Parses overrides text against `defaults`.
    pub fn parse(
        defaults: &Limits,
        text: &str,
        file: &std::path::Path,
    ) -> Result<HashMap<String, Arc<Limits>>, OverridesError> {
        let parse_err = |message: String| OverridesError::Parse {
            file: file.to_path_buf(),
            message,
        };
        let parsed: RuntimeFile = if text.trim().is_empty() {
            RuntimeFile::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| parse_err(e.to_string()))?
        };
        let base = serde_json::to_value(defaults).map_err(|e| parse_err(e.to_string()))?;
        let mut tenants = HashMap::new();
        for (tenant, fields) in parsed.overrides {
            let mut merged = base.clone();
            if let Some(map) = merged.as_object_mut() {
                for (key, value) in fields {
                    map.insert(key, value);
                }
            }
            let limits: Limits = serde_json::from_value(merged)
                .map_err(|e| parse_err(format!("overrides for tenant {tenant:?}: {e}")))?;
            tenants.insert(tenant, Arc::new(limits));
        }
        Ok(tenants)
    }
}

impl State {
    fn reload(&self) -> Result<bool, OverridesError> {
        if self.config.file.is_empty() {
            return Ok(false);
        }
        let file = PathBuf::from(&self.config.file);
        let text = std::fs::read_to_string(&file).map_err(|source| OverridesError::Read {
            file: file.clone(),
            source,
        })?;
        if self.last_text.lock().as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        let tenants = Overrides::parse(&self.defaults, &text, &file)?;
        tracing::info!(file = %file.display(), tenants = tenants.len(), "loaded runtime overrides");
        self.tenants.store(Arc::new(tenants));
        *self.last_text.lock() = Some(text);
        Ok(true)
    }

    fn reload_and_report(&self) {
        match self.reload() {
            Ok(_) => {
                self.reload_ok.set(1);
            }
            Err(err) => {
                self.reload_ok.set(0);
                tracing::error!(error = %err, "runtime config reload failed; keeping the previous overrides");
            }
        }
    }
}

#[async_trait]
impl Service for Overrides {
    fn name(&self) -> &'static str {
        "runtime-config"
    }

    async fn start(&self) -> Result<(), ServiceError> {
        // A bad file at start is a configuration error.
        self.state.reload()?;
        if self.state.config.file.is_empty() {
            return Ok(());
        }
        let state = self.state.clone();
        let period = self.state.config.period.max(Duration::from_millis(100));
        self.task.spawn_every(period, period, move || {
            state.reload_and_report();
            std::future::ready(())
        });
        Ok(())
    }

    async fn stop(&self) -> Result<(), ServiceError> {
        self.task.stop().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn overrides_apply_over_defaults() {
        let defaults = Limits::default();
        let text = "overrides:\n  team-a:\n    ingestion_rate: 100\n    max_series_per_metric: 7\n";
        let tenants = Overrides::parse(&defaults, text, Path::new("rt.yaml")).expect("parses");
        let a = &tenants["team-a"];
        assert_eq!(a.ingestion_rate, 100.0);
        assert_eq!(a.max_series_per_metric, 7);
        assert_eq!(
            a.max_label_names_per_series,
            defaults.max_label_names_per_series
        );
    }

    #[test]
    fn unknown_limit_is_an_error_naming_the_tenant() {
        let text = "overrides:\n  team-a:\n    ingestion_rat: 100\n";
        let err = Overrides::parse(&Limits::default(), text, Path::new("rt.yaml"))
            .expect_err("unknown field");
        let message = err.to_string();
        assert!(
            message.contains("team-a") && message.contains("ingestion_rat"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn reload_picks_up_changes_and_keeps_old_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("rt.yaml");
        std::fs::write(&file, "overrides:\n  t:\n    ingestion_rate: 5\n").expect("write");
        let overrides = Overrides::new(
            Limits::default(),
            RuntimeConfig {
                file: file.display().to_string(),
                period: Duration::from_millis(50),
            },
            &Metrics::new(),
        );
        overrides.start().await.expect("starts");
        assert_eq!(overrides.get("t").ingestion_rate, 5.0);
        assert_eq!(overrides.get("other").ingestion_rate, 25_000.0);
        std::fs::write(&file, "overrides:\n  t:\n    ingestion_rate: 9\n").expect("write");
        assert!(overrides.reload().expect("reloads"));
        assert_eq!(overrides.get("t").ingestion_rate, 9.0);
        std::fs::write(&file, "overrides: [not, a, map]\n").expect("write");
        assert!(overrides.reload().is_err());
        assert_eq!(
            overrides.get("t").ingestion_rate,
            9.0,
            "previous overrides stay"
        );
    }
}
