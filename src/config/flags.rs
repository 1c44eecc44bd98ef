//! The command line: a few fixed flags plus one flag per configuration field
//! (see [`super::FIELDS`]), applied on top of the file.

use std::path::PathBuf;

use clap::{Arg, ArgAction, Command};

use super::fields::{FIELDS, flag_name};
use super::{Config, ConfigError};

/// What the command line asks for.
#[derive(Debug)]
pub struct Cli {
    pub config: Config,
    pub config_file: Option<PathBuf>,
    pub print_config: bool,
}

fn command(defaults: &serde_json::Value) -> Command {
    let mut command = Command::new("strata")
        .version(crate::metrics::VERSION)
        .about(
            "Strata: durable, horizontally scalable, multi-tenant long-term storage for Prometheus.\n\
             One binary runs any role, or all of them (the default).",
        )
        .after_help(
            "Roles (--target): all, distributor, ingester, querier, query-frontend, ruler, table-manager, compactor.\n\
             Every configuration field is also a flag; flags override the config file.",
        )
        .arg(
            Arg::new("config.file")
                .long("config.file")
                .value_name("FILE")
                .help("YAML configuration file (see config/strata.yaml)."),
        )
        .arg(
            Arg::new("config.expand-env")
                .long("config.expand-env")
                .action(ArgAction::SetTrue)
                .help("Expand ${VAR} and ${VAR:default} in the config file from the environment."),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help("Print the effective configuration as YAML and exit."),
        );
    for (path, help) in FIELDS {
        let default = lookup(defaults, path)
            .map(render_default)
            .unwrap_or_default();
        let is_bool = matches!(lookup(defaults, path), Some(serde_json::Value::Bool(_)));
        let mut arg = Arg::new(path.to_string())
            .long(flag_name(path))
            .value_name(value_name(lookup(defaults, path)))
            .help(format!("{help} [default: {default}]"));
        if is_bool {
            arg = arg
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true");
        }
        command = command.arg(arg);
    }
    command
}

fn value_name(value: Option<&serde_json::Value>) -> &'static str {
    match value {
        Some(serde_json::Value::Bool(_)) => "BOOL",
        Some(serde_json::Value::Number(_)) => "N",
        Some(serde_json::Value::Array(_)) => "LIST",
        _ => "VALUE",
    }
}

fn render_default(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) if s.is_empty() => "\"\"".to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(render_default)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

fn lookup<'a>(root: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(root, |node, key| node.get(key))
}

fn lookup_mut<'a>(
    root: &'a mut serde_json::Value,
    path: &str,
) -> Option<&'a mut serde_json::Value> {
    path.split('.')
        .try_fold(root, |node, key| node.get_mut(key))
}

/// Converts a flag's text to the JSON type of the field it sets.
fn typed(current: &serde_json::Value, raw: &str) -> Result<serde_json::Value, String> {
    Ok(match current {
        serde_json::Value::Bool(_) => serde_json::Value::Bool(
            raw.parse::<bool>()
                .map_err(|_| "expected true or false".to_string())?,
        ),
        serde_json::Value::Number(_) => {
            let number: serde_json::Number =
                raw.parse().map_err(|_| "expected a number".to_string())?;
            serde_json::Value::Number(number)
        }
        serde_json::Value::Array(items) if items.iter().any(serde_json::Value::is_object) => {
            return Err("this field is a list of sections; set it in the config file".to_string());
        }
        serde_json::Value::Array(_) => serde_json::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| serde_json::Value::String(item.to_string()))
                .collect(),
        ),
        serde_json::Value::Object(_) => {
            return Err("this field is a map; set it in the config file".to_string());
        }
        _ => serde_json::Value::String(raw.to_string()),
    })
}

/// Applies one flag to `config`, keeping type errors tied to the flag.
fn apply(config: &Config, path: &str, raw: &str) -> Result<Config, ConfigError> {
    let flag_error = |message: String| ConfigError::Flag {
        flag: flag_name(path),
        value: raw.to_string(),
        message,
    };
    let mut tree = serde_json::to_value(config).map_err(|e| flag_error(e.to_string()))?;
    let slot = lookup_mut(&mut tree, path)
        .ok_or_else(|| flag_error("no such configuration field".to_string()))?;
    *slot = typed(slot, raw).map_err(flag_error)?;
    serde_json::from_value(tree).map_err(|e| flag_error(e.to_string()))
}

/// Parses `args` (with the program name first), loads the config file if
/// one is named, applies every flag and validates the result.
pub fn parse_cli<I, T>(args: I) -> Result<Cli, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let defaults = serde_json::to_value(Config::default()).map_err(|e| {
        CliError::Config(ConfigError::Parse {
            file: PathBuf::from("<defaults>"),
            message: e.to_string(),
        })
    })?;
    let matches = command(&defaults)
        .try_get_matches_from(args)
        .map_err(CliError::Usage)?;
    let config_file = matches.get_one::<String>("config.file").map(PathBuf::from);
    let expand_env = matches.get_flag("config.expand-env");
    let mut config = match &config_file {
        Some(file) => Config::load_file(file, expand_env)?,
        None => Config::default(),
    };
    for (path, _) in FIELDS {
        if let Some(raw) = matches.get_one::<String>(path) {
            config = apply(&config, path, raw)?;
        }
    }
    let source = config_file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "flags".to_string());
    config.validate(&source)?;
    Ok(Cli {
        config,
        config_file,
        print_config: matches.get_flag("print-config"),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Help, version or a usage error; clap renders it.
    #[error("{0}")]
    Usage(clap::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Role;
    use crate::ring::KvBackend;
    use std::time::Duration;

    #[test]
    fn flags_override_defaults() {
        let cli = parse_cli([
            "strata",
            "--target=ingester",
            "--ring.kvstore.store=etcd",
            "--ring.kvstore.etcd.endpoints=127.0.0.1:1,127.0.0.1:2",
            "--ring.heartbeat-timeout=3s",
            "--ingester.lifecycler.heartbeat-period=500ms",
            "--ingester.lifecycler.num-tokens=64",
            "--auth.enabled=false",
            "--server.http-listen-port=1234",
        ])
        .expect("parses");
        let config = cli.config;
        assert_eq!(config.target.roles(), &[Role::Ingester]);
        assert_eq!(config.ring.kvstore.store, KvBackend::Etcd);
        assert_eq!(
            config.ring.kvstore.etcd.endpoints,
            vec!["127.0.0.1:1", "127.0.0.1:2"]
        );
        assert_eq!(config.ring.heartbeat_timeout, Duration::from_secs(3));
        assert_eq!(config.ingester.lifecycler.num_tokens, 64);
        assert!(!config.auth.enabled);
        assert_eq!(config.server.http_listen_port, 1234);
    }

    #[test]
    fn bare_bool_flag_means_true() {
        let cli = parse_cli(["strata", "--ring.zone-awareness-enabled"]).expect("parses");
        assert!(cli.config.ring.zone_awareness_enabled);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("s.yaml");
        std::fs::write(
            &file,
            "server:\n  http_listen_port: 7000\n  grpc_listen_port: 7001\n",
        )
        .expect("write");
        let cli = parse_cli([
            "strata".to_string(),
            format!("--config.file={}", file.display()),
            "--server.grpc-listen-port=7002".to_string(),
        ])
        .expect("parses");
        assert_eq!(cli.config.server.http_listen_port, 7000);
        assert_eq!(cli.config.server.grpc_listen_port, 7002);
        assert_eq!(cli.config_file.as_deref(), Some(file.as_path()));
    }

    #[test]
    fn bad_flag_value_names_the_flag() {
        let err = parse_cli(["strata", "--ingester.lifecycler.num-tokens=many"])
            .expect_err("not a number");
        assert_eq!(
            err.to_string(),
            "flag --ingester.lifecycler.num-tokens=many: expected a number"
        );
        let err = parse_cli(["strata", "--log.level=loud"]).expect_err("bad level");
        assert!(
            err.to_string().starts_with("flag --log.level=loud:"),
            "{err}"
        );
        let err = parse_cli(["strata", "--ring.heartbeat-timeout=soon"]).expect_err("bad duration");
        assert!(
            err.to_string().contains("--ring.heartbeat-timeout"),
            "{err}"
        );
    }

    #[test]
    fn help_lists_every_role_and_flag() {
        let defaults = serde_json::to_value(Config::default()).expect("defaults");
        let help = command(&defaults).render_long_help().to_string();
        for role in [
            "all",
            "distributor",
            "ingester",
            "querier",
            "query-frontend",
            "ruler",
            "table-manager",
            "compactor",
        ] {
            assert!(help.contains(role), "help must list role {role}");
        }
        for (path, _) in FIELDS {
            assert!(
                help.contains(&format!("--{}", flag_name(path))),
                "help must list --{}",
                flag_name(path)
            );
        }
        assert!(help.contains("--config.file") && help.contains("--print-config"));
    }

    #[test]
    fn env_expansion_only_on_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("s.yaml");
        std::fs::write(
            &file,
            "auth:\n  default_tenant: ${STRATA_TEST_UNSET_VAR:team-x}\n",
        )
        .expect("write");
        let expanded = parse_cli([
            "strata".to_string(),
            format!("--config.file={}", file.display()),
            "--config.expand-env".to_string(),
        ])
        .expect("expands");
        assert_eq!(expanded.config.auth.default_tenant, "team-x");
        let literal = parse_cli([
            "strata".to_string(),
            format!("--config.file={}", file.display()),
        ]);
        // Without expansion the text stays, and "${...}" is not a valid tenant id.
        let err = literal.expect_err("literal ${...} is not a valid tenant");
        assert!(err.to_string().contains("auth.default_tenant"), "{err}");
    }
}
