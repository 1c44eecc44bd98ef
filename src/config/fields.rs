//! Every configuration field: its path in the YAML file (which is also its
//! flag, `--` plus the path with dashes for underscores) and what it does.
//! A test checks that this table and [`super::Config`] name the same fields.

pub const FIELDS: &[(&str, &str)] = &[
    (
        "target",
        "Roles to run, `all` or a comma list of: all, distributor, ingester, querier, query-frontend, ruler, table-manager, compactor.",
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
        "auth.basic_auth_tenant",
        "Without an X-Scope-OrgID header, take the tenant from the HTTP basic-auth user name (for senders that cannot set headers).",
    ),
    (
        "auth.basic_auth_passwords",
        "Per-tenant basic-auth passwords (a map, config file only); when set, a basic-auth tenant must be listed with its password.",
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
        "distributor.max_recv_msg_size",
        "Largest remote-write request accepted, in bytes after snappy decompression (413 above).",
    ),
    (
        "distributor.remote_timeout",
        "How long a push to one ingester may take before it counts as failed.",
    ),
    (
        "distributor.max_errors_in_response",
        "At most this many refused series are listed in a 400 answer.",
    ),
    (
        "distributor.ha_tracker.enabled",
        "De-duplicate Prometheus HA pairs (tenants opt in with limits.accept_ha_samples); the elected replica is kept in the ring's KV store.",
    ),
    (
        "distributor.ha_tracker.update_timeout",
        "How often the elected HA replica's timestamp is written to the KV store.",
    ),
    (
        "distributor.ha_tracker.failover_timeout",
        "After this long without samples from the elected replica, the other replica takes over.",
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
    (
        "ingester.lifecycler.tokens_file_path",
        "File keeping the ingester's tokens across restarts, so it owns the same ranges again (empty: not kept).",
    ),
    (
        "ingester.wal.dir",
        "Directory of the ingester's write-ahead log.",
    ),
    (
        "ingester.wal.fsync",
        "When the WAL is fsynced: always (before acknowledging each group-committed write), interval, or never.",
    ),
    (
        "ingester.wal.fsync_interval",
        "With ingester.wal.fsync: interval, how often the WAL is fsynced.",
    ),
    (
        "ingester.wal.segment_size",
        "Largest WAL segment file in bytes (a multiple of 32768).",
    ),
    (
        "ingester.wal.checkpoint_period",
        "How often finished WAL segments are folded into a checkpoint and deleted (0s: never).",
    ),
    (
        "ingester.head.max_samples_per_chunk",
        "Samples after which a series' open chunk is cut.",
    ),
    (
        "ingester.head.max_chunk_bytes",
        "Encoded bytes after which a series' open chunk is cut.",
    ),
    (
        "ingester.head.out_of_order_capacity",
        "Out-of-order samples a series buffers before encoding them into a chunk of their own.",
    ),
    (
        "ingester.head.chunk_window",
        "Chunks never span a boundary of these epoch-aligned windows; a flush stores a window's chunks of a series as one chunk, the same on every replica.",
    ),
    (
        "ingester.max_inflight_push_requests",
        "Pushes an ingester handles at once; more get a retryable error.",
    ),
    (
        "ingester.series_idle_timeout",
        "A series without samples this long is released from memory once its data is safe (0s: never).",
    ),
    (
        "ingester.flush.period",
        "How often the ingester looks for chunks to flush to the long-term store (0s: never).",
    ),
    (
        "ingester.flush.max_chunk_idle",
        "An open chunk whose series got no sample for this long is cut and flushed.",
    ),
    (
        "ingester.flush.max_chunk_age",
        "An open chunk whose first sample is older than this is cut and flushed.",
    ),
    (
        "ingester.flush.retain_period",
        "How long a flushed chunk stays in memory after the store acknowledged it.",
    ),
    (
        "ingester.flush.batch_chunks",
        "Chunks written to the store in one batch.",
    ),
    (
        "ingester.flush.min_backoff",
        "Wait after a failed flush round, doubling per failure.",
    ),
    (
        "ingester.flush.max_backoff",
        "Longest wait between failed flush rounds.",
    ),
    (
        "ingester.flush.flush_on_shutdown",
        "Flush every chunk before the ingester stops (POST /shutdown always does).",
    ),
    (
        "ingester.flush.shutdown_timeout",
        "Longest the shutdown flush retries a failing store; what is not flushed stays in the WAL.",
    ),
    (
        "querier.engine.lookback_delta",
        "How far back a PromQL vector selector looks for a sample.",
    ),
    (
        "querier.engine.max_samples",
        "Most samples one query may hold in memory; more is an error.",
    ),
    ("querier.engine.timeout", "Longest a query may run."),
    (
        "querier.query_store_after",
        "Only data older than this is read from the long-term store (0s: the store is read for every range).",
    ),
    (
        "querier.engine.default_subquery_step",
        "Step of subqueries written without one (x[5m:]), as Prometheus's evaluation interval.",
    ),
    (
        "storage.filesystem.directory",
        "Directory of the chunk packs when a schema period stores chunks on the filesystem.",
    ),
    (
        "storage.embedded.path",
        "File of the embedded index when a schema period keeps its index embedded.",
    ),
    (
        "storage.s3.bucket",
        "S3 bucket of the chunk packs when a schema period stores chunks in S3 (it must exist); each chunk table is a key prefix in it.",
    ),
    (
        "storage.s3.endpoint",
        "S3 endpoint URL (e.g. http://127.0.0.1:9000 for an S3-compatible server); empty: AWS S3 of storage.s3.region.",
    ),
    ("storage.s3.region", "S3 region."),
    (
        "storage.s3.force_path_style",
        "Path-style S3 requests (endpoint/bucket/key) instead of virtual-hosted style, as most S3-compatible servers need.",
    ),
    (
        "storage.s3.access_key_id",
        "S3 access key id; with the secret empty too, credentials come from the AWS environment chain (environment, web identity, instance metadata).",
    ),
    (
        "storage.s3.secret_access_key",
        "S3 secret access key (masked when the config is printed).",
    ),
    (
        "storage.s3.timeout",
        "Longest one S3 operation may take, retries included; a server that is down fails requests after this.",
    ),
    (
        "storage.s3.max_retries",
        "Retries of a failed S3 request, with backoff, within storage.s3.timeout.",
    ),
    (
        "storage.dynamodb.endpoint",
        "DynamoDB endpoint URL; empty: AWS DynamoDB of storage.dynamodb.region.",
    ),
    ("storage.dynamodb.region", "DynamoDB region."),
    (
        "storage.dynamodb.access_key_id",
        "DynamoDB access key id; with the secret empty too, credentials come from the AWS environment chain.",
    ),
    (
        "storage.dynamodb.secret_access_key",
        "DynamoDB secret access key (masked when the config is printed).",
    ),
    (
        "storage.dynamodb.billing_mode",
        "Billing mode of the index tables Strata creates: on_demand or provisioned.",
    ),
    (
        "storage.dynamodb.read_capacity",
        "Read capacity units of a new index table when billing_mode is provisioned.",
    ),
    (
        "storage.dynamodb.write_capacity",
        "Write capacity units of a new index table when billing_mode is provisioned.",
    ),
    (
        "storage.dynamodb.timeout",
        "Longest one DynamoDB request may take, the SDK's retries included.",
    ),
    (
        "storage.dynamodb.max_retries",
        "Attempts of a DynamoDB request, and re-sends (with backoff) of the items a batch write left unprocessed.",
    ),
    (
        "storage.cassandra.addresses",
        "Cassandra contact points, host names or IP addresses (comma list on the command line).",
    ),
    ("storage.cassandra.port", "CQL port of the Cassandra nodes."),
    (
        "storage.cassandra.keyspace",
        "Keyspace of Strata's index and chunk tables; created on connect when missing.",
    ),
    (
        "storage.cassandra.replication_factor",
        "Replication factor (SimpleStrategy) of the keyspace when Strata creates it.",
    ),
    (
        "storage.cassandra.consistency",
        "Consistency level of every read and write: one, two, three, quorum, all, local_quorum, each_quorum or local_one.",
    ),
    (
        "storage.cassandra.username",
        "Cassandra user for password authentication; empty: none.",
    ),
    (
        "storage.cassandra.password",
        "Cassandra password (masked when the config is printed).",
    ),
    (
        "storage.cassandra.connect_timeout",
        "Longest connecting to Cassandra (and creating the keyspace) may take.",
    ),
    (
        "storage.cassandra.request_timeout",
        "Longest one Cassandra request may take.",
    ),
    (
        "storage.max_pack_bytes",
        "Largest object a flush writes: chunks are packed many to an object to save requests.",
    ),
    (
        "storage.chunk_cache_bytes",
        "Bytes of chunks the store keeps cached in memory (0: none).",
    ),
    (
        "storage.index_cache_bytes",
        "Bytes of index rows the store keeps cached in memory (0: none).",
    ),
    (
        "storage.index_cache_after",
        "Index rows are cached only for buckets that ended longer ago than this (newer ones still change).",
    ),
    (
        "storage.index_cache_ttl",
        "How long a cached index result is used before it is read again (rows a flush delayed by a store outage adds to an old bucket show within this).",
    ),
    (
        "storage.concurrency",
        "Backend requests one query or flush makes at once, at most.",
    ),
    (
        "schema.periods",
        "The schema periods (config file only), oldest first: each has from (YYYY-MM-DD), chunks (filesystem|s3|cassandra), index (embedded|cassandra|dynamodb), index_prefix, chunks_prefix, table_period and bucket.",
    ),
    (
        "table_manager.retention_deletes_enabled",
        "Let the table manager delete tables past table_manager.retention_period.",
    ),
    (
        "table_manager.retention_period",
        "Tables whose whole time range ended longer ago than this are deleted (0s: keep all); keep it at least the longest tenant retention.",
    ),
    (
        "table_manager.creation_grace_period",
        "The next period's tables are created this long before they start.",
    ),
    (
        "table_manager.poll_interval",
        "How often the table manager checks the tables.",
    ),
    (
        "compactor.interval",
        "How often the compactor looks for index buckets to compact and retired packs to delete.",
    ),
    (
        "compactor.min_age",
        "An index bucket is compacted (one chunk per series instead of one per chunk window) once it ended this long ago; keep it above the longest limits.out_of_order_time_window (a flush into a compacted day has it compacted again).",
    ),
    (
        "compactor.deletion_delay",
        "Packs whose chunks a compaction rewrote are deleted this long later; keep it above any query's duration and storage.index_cache_ttl.",
    ),
    (
        "compactor.batch_series",
        "Series a compaction rewrites at once (bounds its memory).",
    ),
    (
        "limits.ingestion_rate",
        "Samples per second a tenant may push; above it pushes get 429.",
    ),
    (
        "limits.ingestion_burst_size",
        "Samples a tenant may push at once above the rate.",
    ),
    (
        "limits.max_label_names_per_series",
        "Most labels one series may have (0: no limit).",
    ),
    (
        "limits.max_label_name_length",
        "Longest label name in bytes (0: no limit).",
    ),
    (
        "limits.max_label_value_length",
        "Longest label value in bytes (0: no limit).",
    ),
    (
        "limits.name_validation",
        "Label and metric name rules: utf8 (any non-empty UTF-8, as Prometheus 3) or legacy ([a-zA-Z_][a-zA-Z0-9_]*).",
    ),
    (
        "limits.reject_old_samples",
        "Refuse samples older than limits.reject_old_samples_max_age.",
    ),
    (
        "limits.reject_old_samples_max_age",
        "Oldest sample accepted when limits.reject_old_samples is on.",
    ),
    (
        "limits.creation_grace_period",
        "How far in the future a sample's timestamp may be.",
    ),
    (
        "limits.max_series_per_tenant",
        "Most in-memory series of a tenant in an ingester (0: no limit).",
    ),
    (
        "limits.max_series_per_metric",
        "Most in-memory series per metric name in an ingester (0: no limit).",
    ),
    (
        "limits.max_metadata_per_metric",
        "Most metadata entries kept per metric name (0: no limit).",
    ),
    (
        "limits.max_global_exemplars_per_user",
        "Exemplars of a tenant kept in memory by each ingester, newest first (0: exemplars are not stored).",
    ),
    (
        "limits.out_of_order_time_window",
        "Samples (and exemplars) at most this much older than their series' newest are accepted out of order (0s: none).",
    ),
    (
        "limits.max_native_histogram_buckets",
        "Most buckets one native histogram sample may have (0: no limit).",
    ),
    (
        "limits.reduce_native_histogram_over_max_buckets",
        "Reduce the resolution of a native histogram over limits.max_native_histogram_buckets instead of refusing it.",
    ),
    (
        "limits.accept_ha_samples",
        "De-duplicate this tenant's Prometheus HA pairs (needs distributor.ha_tracker.enabled).",
    ),
    (
        "limits.ha_cluster_label",
        "Label naming a Prometheus HA pair.",
    ),
    (
        "limits.ha_replica_label",
        "Label naming the replica within an HA pair; removed before storage.",
    ),
    (
        "limits.max_query_length",
        "Longest time range one query may cover (0s: no limit).",
    ),
    (
        "limits.max_query_lookback",
        "How far back queries may look; older parts of a query are cut off (0s: no limit).",
    ),
    (
        "limits.max_fetched_series_per_query",
        "Most series one query may fetch (0: no limit).",
    ),
    (
        "limits.retention_period",
        "How long the tenant's samples are kept: older ones are not returned, and the table manager drops tables older than the longest retention (0s: forever).",
    ),
    (
        "limits.max_samples_per_query",
        "Most samples one query may hold in memory (0: querier.engine.max_samples).",
    ),
    (
        "runtime_config.file",
        "YAML file of per-tenant limit overrides (overrides: {tenant: {limit: value}}), re-read without restart.",
    ),
    (
        "runtime_config.period",
        "How often the runtime config file is re-read.",
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
            serde_json::Value::Object(map) if !map.is_empty() => {
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
