//! The process configuration: one YAML file (`--config.file`), every field
//! overridable by a flag named after its path (`ring.kvstore.store` is
//! `--ring.kvstore.store`, underscores become dashes), optional `${ENV}`
//! expansion, and validation at load with the file, line and field named.
//!
//! Precedence: built-in defaults < YAML file < flags.

mod env;
mod fields;
mod flags;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use fields::FIELDS;
pub use flags::{Cli, CliError, parse_cli};

use crate::app::Targets;
use crate::distributor::DistributorConfig;
use crate::ingester::IngesterConfig;
use crate::limits::{Limits, RuntimeConfig};
use crate::logging::LogConfig;
use crate::querier::QuerierConfig;
use crate::ring::{KvBackend, RingConfig};
use crate::server::ServerConfig;
use crate::store::compactor::CompactorConfig;
use crate::store::table_manager::TableManagerConfig;
use crate::store::{SchemaConfig, StorageConfig};
use crate::tenant::AuthConfig;

/// Every component's configuration, one field each.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Roles this process runs: `all` or a comma list.
    pub target: Targets,
    pub auth: AuthConfig,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub ring: RingConfig,
    pub distributor: DistributorConfig,
    pub ingester: IngesterConfig,
    pub querier: QuerierConfig,
    /// The long-term store's backends.
    pub storage: StorageConfig,
    /// Which backends hold which dates.
    pub schema: SchemaConfig,
    /// Creating and deleting the store's periodic tables.
    pub table_manager: TableManagerConfig,
    /// Compacting finished index buckets into one chunk per series.
    pub compactor: CompactorConfig,
    /// Per-tenant limits: the defaults for every tenant.
    pub limits: Limits,
    /// Per-tenant overrides of `limits`, re-read without restart.
    pub runtime_config: RuntimeConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error(
        "config file {file}, line {line}: environment variable {var} is not set and has no default (write ${{{var}:default}})"
    )]
    MissingEnv {
        file: PathBuf,
        line: usize,
        var: String,
    },
    #[error("flag --{flag}={value}: {message}")]
    Flag {
        flag: String,
        value: String,
        message: String,
    },
    #[error("{source_name}: field {field}: {message}")]
    Invalid {
        source_name: String,
        field: &'static str,
        message: String,
    },
}

impl Config {
    /// Parses YAML text; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Config, ConfigError> {
        serde_saphyr::from_str::<Config>(text).map_err(|err| ConfigError::Parse {
            file: file.to_path_buf(),
            message: err.to_string(),
        })
    }

    /// Reads a config file, expanding `${VAR}` / `${VAR:default}` first when asked.
    pub fn load_file(file: &Path, expand_env: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let text = if expand_env {
            env::expand(&text, |name| std::env::var(name).ok()).map_err(|missing| {
                ConfigError::MissingEnv {
                    file: file.to_path_buf(),
                    line: missing.line,
                    var: missing.var,
                }
            })?
        } else {
            text
        };
        Config::from_yaml(&text, file)
    }

    /// The effective configuration as YAML, secrets masked.
    pub fn to_yaml(&self, mask_secrets: bool) -> String {
        let mut shown = self.clone();
        if mask_secrets {
            let storage = &mut shown.storage;
            for secret in [
                &mut shown.ring.kvstore.etcd.password,
                &mut storage.s3.secret_access_key,
                &mut storage.dynamodb.secret_access_key,
                &mut storage.cassandra.password,
            ] {
                if !secret.is_empty() {
                    *secret = "********".to_string();
                }
            }
        }
        serde_saphyr::to_string(&shown)
            .unwrap_or_else(|err| format!("# cannot render the config: {err}\n"))
    }

    /// Checks what the types alone cannot; `source_name` is the file or
    /// "flags" for the error message.
    pub fn validate(&self, source_name: &str) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, message: String| ConfigError::Invalid {
            source_name: source_name.to_string(),
            field,
            message,
        };
        if let Err(err) = self.auth.validate() {
            return Err(invalid("auth.default_tenant", err.to_string()));
        }
        if self.server.http_listen_port != 0
            && self.server.http_listen_port == self.server.grpc_listen_port
        {
            return Err(invalid(
                "server.grpc_listen_port",
                format!(
                    "must differ from server.http_listen_port ({})",
                    self.server.http_listen_port
                ),
            ));
        }
        if self.limits.ingestion_rate < 0.0 {
            return Err(invalid(
                "limits.ingestion_rate",
                "must not be negative".into(),
            ));
        }
        if self.distributor.max_recv_msg_size == 0 {
            return Err(invalid(
                "distributor.max_recv_msg_size",
                "must be at least 1".into(),
            ));
        }
        if self.distributor.ha_tracker.failover_timeout
            <= self.distributor.ha_tracker.update_timeout
        {
            return Err(invalid(
                "distributor.ha_tracker.failover_timeout",
                "must be longer than distributor.ha_tracker.update_timeout".into(),
            ));
        }
        if self.ring.replication_factor == 0 {
            return Err(invalid(
                "ring.replication_factor",
                "must be at least 1".into(),
            ));
        }
        if self.ring.kvstore.store == KvBackend::Etcd && self.ring.kvstore.etcd.endpoints.is_empty()
        {
            return Err(invalid(
                "ring.kvstore.etcd.endpoints",
                "needs at least one endpoint when ring.kvstore.store is etcd".into(),
            ));
        }
        if let Err(message) = self.ingester.validate() {
            return Err(invalid("ingester", message));
        }
        let lifecycler = &self.ingester.lifecycler;
        if lifecycler.id.trim().is_empty() {
            return Err(invalid(
                "ingester.lifecycler.id",
                "must not be empty".into(),
            ));
        }
        if lifecycler.num_tokens == 0 {
            return Err(invalid(
                "ingester.lifecycler.num_tokens",
                "must be at least 1".into(),
            ));
        }
        if lifecycler.heartbeat_period.is_zero() {
            return Err(invalid(
                "ingester.lifecycler.heartbeat_period",
                "must be greater than 0s".into(),
            ));
        }
        if self.ring.heartbeat_timeout <= lifecycler.heartbeat_period {
            return Err(invalid(
                "ring.heartbeat_timeout",
                format!(
                    "must be longer than ingester.lifecycler.heartbeat_period ({})",
                    humantime::format_duration(lifecycler.heartbeat_period)
                ),
            ));
        }
        if !self.ring.forget_unhealthy_after.is_zero()
            && self.ring.forget_unhealthy_after <= self.ring.heartbeat_timeout
        {
            return Err(invalid(
                "ring.forget_unhealthy_after",
                format!(
                    "must be 0s (never) or longer than ring.heartbeat_timeout ({})",
                    humantime::format_duration(self.ring.heartbeat_timeout)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_config_loads_to_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/strata.yaml");
        let loaded = Config::load_file(&path, false).expect("config/strata.yaml loads");
        let mut expected = Config::default();
        // The file cannot know the host name; it leaves the id to the default.
        expected.ingester.lifecycler.id = loaded.ingester.lifecycler.id.clone();
        assert_eq!(loaded, expected);
        loaded.validate("config/strata.yaml").expect("valid");
    }

    #[test]
    fn microservice_examples_load_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/microservices");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("config/microservices exists") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let config = Config::load_file(&path, true).expect("loads");
            config.validate(&path.display().to_string()).expect("valid");
            assert_eq!(
                config.ring.kvstore.store,
                KvBackend::Etcd,
                "{}",
                path.display()
            );
            count += 1;
        }
        assert!(count >= 1, "at least one example per available role");
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = "server:\n  http_listen_port: 9009\n  http_listen_prot: 1\n";
        let err = Config::from_yaml(text, Path::new("my.yaml")).expect_err("unknown field");
        let message = err.to_string();
        assert!(message.contains("my.yaml"), "{message}");
        assert!(message.contains("http_listen_prot"), "{message}");
        assert!(message.contains('3'), "line 3 must be named: {message}");
    }

    #[test]
    fn bad_value_names_line_and_field() {
        let text = "log:\n  level: loud\n";
        let message = Config::from_yaml(text, Path::new("x.yaml"))
            .expect_err("bad level")
            .to_string();
        assert!(message.contains("loud"), "{message}");
        assert!(message.contains('2'), "{message}");
        let text = "ring:\n  heartbeat_timeout: soon\n";
        let message = Config::from_yaml(text, Path::new("x.yaml"))
            .expect_err("bad duration")
            .to_string();
        assert!(
            message.contains("x.yaml") && message.contains('2'),
            "{message}"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut config = Config::default();
        config.ring.replication_factor = 0;
        let message = config.validate("f.yaml").expect_err("rf 0").to_string();
        assert_eq!(
            message,
            "f.yaml: field ring.replication_factor: must be at least 1"
        );
        let mut config = Config::default();
        config.ring.heartbeat_timeout = std::time::Duration::from_secs(1);
        let message = config.validate("f.yaml").expect_err("timeout").to_string();
        assert!(message.contains("ring.heartbeat_timeout"), "{message}");
    }

    #[test]
    fn yaml_round_trips() {
        let config = Config::default();
        let text = config.to_yaml(false);
        let back = Config::from_yaml(&text, Path::new("printed")).expect("round trip");
        assert_eq!(back, config);
    }

    #[test]
    fn secrets_are_masked() {
        let mut config = Config::default();
        config.ring.kvstore.etcd.password = "hunter2".into();
        config.storage.s3.secret_access_key = "s3-hunter3".into();
        config.storage.dynamodb.secret_access_key = "ddb-hunter4".into();
        config.storage.cassandra.password = "cql-hunter5".into();
        let masked = config.to_yaml(true);
        let plain = config.to_yaml(false);
        for secret in ["hunter2", "s3-hunter3", "ddb-hunter4", "cql-hunter5"] {
            assert!(!masked.contains(secret), "{secret} shown: {masked}");
            assert!(plain.contains(secret));
        }
    }
}
