//! Every configuration field: its path in the YAML file (which is also its
//! flag, `--` plus the path with dashes for underscores) and what it does.
//! A test checks that this table and [`super::Config`] name the same fields.

pub const FIELDS: &[(&str, &str)] = &[
    (
        "target",
        "Roles to run, `all` or a comma list of: all, distributor, ingester, querier, query-frontend, ruler, table-manager.",
    ),
    (
        "auth.enabled",
        "Require the X-Scope-OrgID header on tenant requests (401 without it). When false, every request belongs to auth.default_tenant.",
    ),
    (
        "auth.default_tenant",
        "Tenant used for every request when auth.enabled is false.",
    ),
    (
        "server.http_listen_address",
        "Address the HTTP server listens on.",
    ),
    ("server.http_listen_port", "HTTP server port."),
    (
        "server.grpc_listen_address",
        "Address the gRPC server listens on.",
    ),
    ("server.grpc_listen_port", "gRPC server port."),
    (
        "server.graceful_shutdown_timeout",
        "How long in-flight HTTP and gRPC requests may take to finish on shutdown.",
    ),
    (
        "log.level",
        "Only log messages at or above this level: error, warn, info, debug, trace.",
    ),
    ("log.format", "Log output format: logfmt or json."),
    (
        "ring.kvstore.store",
        "Where the ring lives: memory (single process) or etcd (a cluster).",
    ),
    (
        "ring.kvstore.prefix",
        "Prefix of every key Strata writes in the KV store.",
    ),
    (
        "ring.kvstore.etcd.endpoints",
        "etcd endpoints (comma list on the command line).",
    ),
    (
        "ring.kvstore.etcd.dial_timeout",
        "Timeout for connecting to etcd.",
    ),
    (
        "ring.kvstore.etcd.request_timeout",
        "Timeout for each etcd request.",
    ),
    (
        "ring.kvstore.etcd.username",
        "etcd user name, when etcd authentication is on.",
    ),
    (
        "ring.kvstore.etcd.password",
        "etcd password, when etcd authentication is on.",
    ),
    (
        "ring.heartbeat_timeout",
        "A ring member whose last heartbeat is older than this is unhealthy and skipped.",
    ),
    (
        "ring.forget_unhealthy_after",
        "Remove a member from the ring after this long without a heartbeat (0s: only by the forget action on /ring).",
    ),
    (
        "ring.replication_factor",
        "Number of ingesters each series is written to.",
    ),
    (
        "ring.zone_awareness_enabled",
        "Place each series' replicas in distinct zones.",
    ),
    (
        "ingester.lifecycler.id",
        "Instance id in the ring, unique per ingester (default: the host name).",
    ),
    (
        "ingester.lifecycler.addr",
        "gRPC address other components use to reach this ingester (default: derived from server.grpc_listen_address).",
    ),
    (
        "ingester.lifecycler.zone",
        "Availability zone of this ingester, for zone-aware replication.",
    ),
    (
        "ingester.lifecycler.num_tokens",
        "Number of tokens this ingester owns in the ring.",
    ),
    (
        "ingester.lifecycler.heartbeat_period",
        "How often the ingester heartbeats into the ring.",
    ),
];

/// The flag of a field path: `ring.kvstore.etcd.dial_timeout` ->
/// `ring.kvstore.etcd.dial-timeout`.
pub fn flag_name(path: &str) -> String {
    path.replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn leaf_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaf_paths(child, &path, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    #[test]
    fn every_config_field_is_documented_and_nothing_else() {
        let value = serde_json::to_value(Config::default()).expect("serializes");
        let mut paths = Vec::new();
        leaf_paths(&value, "", &mut paths);
        paths.sort();
        let mut documented: Vec<String> = FIELDS.iter().map(|(p, _)| p.to_string()).collect();
        documented.sort();
        assert_eq!(paths, documented);
    }

    #[test]
    fn shipped_default_config_mentions_every_field() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/strata.yaml");
        let text = std::fs::read_to_string(path).expect("config/strata.yaml");
        for (field, _) in FIELDS {
            let leaf = field.rsplit('.').next().expect("non-empty path");
            assert!(
                text.contains(&format!("{leaf}:")),
                "config/strata.yaml does not document {field}"
            );
        }
    }
}
