//! The remote backends of the long-term store against real servers: S3 and
//! DynamoDB against moto, index and chunks against Apache Cassandra 5.
//!
//! For each backend, the trait contract (the checks of the embedded and
//! filesystem unit tests, and paging); then the whole `Store` over each
//! pair (S3 + DynamoDB, Cassandra + Cassandra) built by `Store::new` from a
//! schema period; then outages: a server that stops answering makes
//! requests fail (not hang), and once it is back the store works again
//! with its data there. The Store tests print the requests a flush of
//! 1,000 series x 1 chunk makes, per operation.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{Cassandra, Moto};
use strata::metrics::Metrics;
use strata::model::{Labels, MatchOp, Matcher};
use strata::store::compactor::{Compactor, CompactorConfig};
use strata::store::{
    CassandraConfig, CassandraConsistency, ChunkBackend, ChunkEncoding, DynamoDbConfig,
    IndexBackend, IndexClient, IndexEntry, IndexKey, IndexQuery, ObjectClient, PeriodConfig,
    S3Config, SchemaConfig, StorageConfig, Store, StoreChunk, StoreError, TableClient, TableDesc,
};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_700_000_000_000;

fn entry(hash: &str, range: &[u8], value: &[u8]) -> IndexEntry {
    IndexEntry {
        hash: hash.to_string(),
        range: range.to_vec(),
        value: value.to_vec(),
    }
}

fn values(rows: &[strata::store::IndexRow]) -> Vec<Vec<u8>> {
    rows.iter().map(|r| r.value.clone()).collect()
}

/// The `IndexClient` contract, as the embedded index's unit test checks it,
/// plus upserts, ordering, empty values and paging.
async fn index_contract(idx: &dyn IndexClient) -> Result<()> {
    let missing = idx.write("t1", &[entry("h", b"a", b"1")]).await;
    ensure!(
        matches!(missing, Err(StoreError::NoSuchTable { .. })),
        "writing to a missing table: {missing:?}"
    );
    ensure!(
        idx.query("t1", &IndexQuery::hash("h".to_string()))
            .await?
            .is_empty(),
        "a missing table reads empty"
    );
    idx.create_table("t1", &TableDesc::default()).await?;
    idx.create_table("t1", &TableDesc::default())
        .await
        .context("creating an existing table succeeds")?;
    // Written out of order: read back sorted by range key.
    idx.write(
        "t1",
        &[
            entry("h", b"b1", b"3"),
            entry("h", b"a2", b"2"),
            entry("h", b"a1", b"1"),
            entry("hh", b"a1", b"4"),
            entry("g", b"a1", b"5"),
            entry("h", b"l", b""),
        ],
    )
    .await?;
    let q = |prefix: &[u8], start: Option<&[u8]>| IndexQuery {
        hash: "h".to_string(),
        range_prefix: prefix.to_vec(),
        range_start: start.map(<[u8]>::to_vec),
    };
    let by_prefix = idx.query("t1", &q(b"a", None)).await?;
    ensure!(
        values(&by_prefix) == vec![b"1".to_vec(), b"2".to_vec()],
        "prefix a: {by_prefix:?}"
    );
    let all = idx.query("t1", &q(b"", None)).await?;
    let ranges: Vec<&[u8]> = all.iter().map(|r| r.range.as_slice()).collect();
    ensure!(
        ranges == vec![&b"a1"[..], b"a2", b"b1", b"l"],
        "all rows sorted: {all:?}"
    );
    ensure!(all[3].value.is_empty(), "an empty value reads empty");
    let from = idx.query("t1", &q(b"", Some(b"a2"))).await?;
    ensure!(from.len() == 3, "start a2: {from:?}");
    let both = idx.query("t1", &q(b"a", Some(b"a2"))).await?;
    ensure!(
        values(&both) == vec![b"2".to_vec()],
        "prefix+start: {both:?}"
    );
    let before = idx.query("t1", &q(b"b", Some(b"a"))).await?;
    ensure!(
        values(&before) == vec![b"3".to_vec()],
        "start before prefix"
    );
    let past = idx.query("t1", &q(b"a", Some(b"b"))).await?;
    ensure!(past.is_empty(), "start past prefix: {past:?}");
    ensure!(
        idx.query("t1", &q(b"z", None)).await?.is_empty(),
        "no row with prefix z"
    );
    // Another hash key sharing a prefix is not mixed in.
    let hh = idx.query("t1", &IndexQuery::hash("hh".to_string())).await?;
    ensure!(values(&hh) == vec![b"4".to_vec()], "hash hh: {hh:?}");

    // Upserts, also of a key written twice in one call.
    idx.write(
        "t1",
        &[
            entry("h", b"a1", b"one"),
            entry("h", b"b1", b"x"),
            entry("h", b"b1", b"three"),
        ],
    )
    .await?;
    let all = idx.query("t1", &q(b"", None)).await?;
    ensure!(
        values(&all) == vec![b"one".to_vec(), b"2".to_vec(), b"three".to_vec(), vec![]],
        "upserted: {all:?}"
    );

    // Many rows in one partition: batches and pages.
    let value = vec![7u8; 500];
    let many: Vec<IndexEntry> = (0..2500u32)
        .map(|i| entry("big", &i.to_be_bytes(), &value))
        .collect();
    idx.write("t1", &many).await?;
    let read = idx
        .query("t1", &IndexQuery::hash("big".to_string()))
        .await?;
    ensure!(read.len() == 2500, "{} of 2500 rows read", read.len());
    ensure!(
        read.iter()
            .enumerate()
            .all(|(i, r)| r.range == (i as u32).to_be_bytes() && r.value == value),
        "paged rows in order with their values"
    );
    let mut tail = IndexQuery::hash("big".to_string());
    tail.range_start = Some(2400u32.to_be_bytes().to_vec());
    ensure!(
        idx.query("t1", &tail).await?.len() == 100,
        "start in a page"
    );

    ensure!(
        idx.list_tables().await?.contains(&"t1".to_string()),
        "t1 listed"
    );
    // Deleting rows: by key, missing ones too, in batches past the limits.
    let key = |h: &str, r: &[u8]| IndexKey {
        hash: h.to_string(),
        range: r.to_vec(),
    };
    idx.write("t1", &[entry("d", b"1", b""), entry("d", b"2", b"v")])
        .await?;
    idx.delete("t1", &[key("d", b"1"), key("d", b"9"), key("nope", b"1")])
        .await?;
    let left = idx.query("t1", &IndexQuery::hash("d".to_string())).await?;
    ensure!(
        left.len() == 1 && left[0].range == b"2",
        "one row deleted, one left: {left:?}"
    );
    let many: Vec<IndexEntry> = (0..300u32)
        .map(|i| entry("dd", &i.to_be_bytes(), b"x"))
        .collect();
    idx.write("t1", &many).await?;
    let keys: Vec<IndexKey> = (0..300u32)
        .filter(|i| i % 3 != 0)
        .map(|i| key("dd", &i.to_be_bytes()))
        .collect();
    idx.delete("t1", &keys).await?;
    let left = idx.query("t1", &IndexQuery::hash("dd".to_string())).await?;
    ensure!(left.len() == 100, "{} of 100 rows left", left.len());
    idx.delete("t_missing", &keys)
        .await
        .context("deleting from a missing table succeeds")?;
    idx.delete_table("t1").await?;
    ensure!(
        !idx.list_tables().await?.contains(&"t1".to_string()),
        "t1 deleted"
    );
    idx.delete_table("t1")
        .await
        .context("deleting a missing table succeeds")?;
    ensure!(
        idx.query("t1", &IndexQuery::hash("h".to_string()))
            .await?
            .is_empty(),
        "a deleted table reads empty"
    );
    Ok(())
}

/// The `ObjectClient` contract, as the filesystem unit test checks it.
/// `tables_are_real`: a put into a table never created fails (Cassandra,
/// filesystem) rather than creating it (S3 prefixes).
async fn object_contract(objects: &dyn ObjectClient, tables_are_real: bool) -> Result<()> {
    let first = objects.put("chunks_1", "t/abc", vec![1, 2, 3]).await;
    if tables_are_real {
        ensure!(
            matches!(first, Err(StoreError::NoSuchTable { .. })),
            "put into a missing table: {first:?}"
        );
    } else {
        first.context("S3 has no tables: a put always succeeds")?;
    }
    let missing = objects.get_range("chunks_9", "t/abc", 0, 1).await;
    ensure!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "get from a missing table: {missing:?}"
    );
    objects
        .create_table("chunks_1", &TableDesc::default())
        .await?;
    objects
        .create_table("chunks_1", &TableDesc::default())
        .await
        .context("creating an existing table succeeds")?;
    objects
        .put("chunks_1", "t/abc", (0u8..100).collect())
        .await?;
    ensure!(
        objects.get_range("chunks_1", "t/abc", 10, 3).await? == vec![10, 11, 12],
        "range read"
    );
    // Replacing an object.
    objects
        .put("chunks_1", "t/abc", (100u8..200).collect())
        .await?;
    ensure!(
        objects.get_range("chunks_1", "t/abc", 0, 2).await? == vec![100, 101],
        "replaced"
    );
    // A pack of a few MiB, read at its end.
    let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    objects.put("chunks_1", "u/big", big.clone()).await?;
    let end = big.len() as u64 - 1000;
    ensure!(
        objects.get_range("chunks_1", "u/big", end, 1000).await? == big[end as usize..],
        "range at the end of a big object"
    );
    // Ranges across the 64 KiB pieces Cassandra stores a pack in.
    for (at, len) in [(65_536 - 10, 20u32), (65_536 * 2 - 1, 65_538), (0, 200_000)] {
        ensure!(
            objects.get_range("chunks_1", "u/big", at, len).await?
                == big[at as usize..at as usize + len as usize],
            "range of {len} at {at}"
        );
    }
    // Replaced by a shorter object: its own bytes, nothing of the old one.
    objects
        .put("chunks_1", "u/big", (0u8..10).collect())
        .await?;
    ensure!(objects.get_range("chunks_1", "u/big", 0, 10).await? == (0u8..10).collect::<Vec<_>>());
    ensure!(
        objects
            .get_range("chunks_1", "u/big", 65_536, 10)
            .await
            .is_err(),
        "a range past the replaced object's end"
    );
    // Sizes and deletes, of present and missing objects.
    objects.put("chunks_1", "t/del", vec![7; 70_000]).await?;
    ensure!(objects.size("chunks_1", "t/del").await? == Some(70_000));
    ensure!(objects.size("chunks_1", "u/big").await? == Some(10));
    ensure!(objects.size("chunks_1", "t/none").await?.is_none());
    ensure!(objects.size("chunks_9", "t/none").await?.is_none());
    objects.delete("chunks_1", "t/del").await?;
    ensure!(
        objects.size("chunks_1", "t/del").await?.is_none(),
        "deleted"
    );
    let deleted = objects.get_range("chunks_1", "t/del", 0, 1).await;
    ensure!(
        matches!(deleted, Err(StoreError::NotFound { .. })),
        "a deleted object: {deleted:?}"
    );
    objects
        .delete("chunks_1", "t/del")
        .await
        .context("deleting a missing object succeeds")?;
    objects
        .delete("chunks_9", "t/del")
        .await
        .context("deleting from a missing table succeeds")?;
    let none = objects.get_range("chunks_1", "t/none", 0, 1).await;
    ensure!(
        matches!(none, Err(StoreError::NotFound { .. })),
        "missing key: {none:?}"
    );
    objects
        .create_table("chunks_2", &TableDesc::default())
        .await?;
    objects.put("chunks_2", "t/abc", vec![9]).await?;
    let tables = objects.list_tables().await?;
    ensure!(
        tables.contains(&"chunks_1".to_string()) && tables.contains(&"chunks_2".to_string()),
        "tables listed: {tables:?}"
    );
    objects.delete_table("chunks_1").await?;
    let tables = objects.list_tables().await?;
    ensure!(
        !tables.contains(&"chunks_1".to_string()) && tables.contains(&"chunks_2".to_string()),
        "chunks_1 deleted, chunks_2 kept: {tables:?}"
    );
    let gone = objects.get_range("chunks_1", "t/abc", 0, 1).await;
    ensure!(
        matches!(gone, Err(StoreError::NotFound { .. })),
        "objects of a deleted table: {gone:?}"
    );
    ensure!(objects.get_range("chunks_2", "t/abc", 0, 1).await? == vec![9]);
    objects
        .delete_table("chunks_1")
        .await
        .context("deleting a missing table succeeds")?;
    Ok(())
}

fn s3_config(moto: &Moto, bucket: &str) -> S3Config {
    S3Config {
        bucket: bucket.to_string(),
        endpoint: moto.endpoint(),
        region: "us-east-1".to_string(),
        force_path_style: true,
        access_key_id: "test".to_string(),
        secret_access_key: "test".to_string(),
        timeout: Duration::from_secs(5),
        max_retries: 2,
    }
}

fn dynamodb_config(moto: &Moto) -> DynamoDbConfig {
    DynamoDbConfig {
        endpoint: moto.endpoint(),
        access_key_id: "test".to_string(),
        secret_access_key: "test".to_string(),
        timeout: Duration::from_secs(5),
        max_retries: 3,
        ..DynamoDbConfig::default()
    }
}

fn cassandra_config(port: u16, keyspace: &str) -> CassandraConfig {
    CassandraConfig {
        addresses: vec!["127.0.0.1".to_string()],
        port,
        keyspace: keyspace.to_string(),
        replication_factor: 1,
        consistency: CassandraConsistency::One,
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
        ..CassandraConfig::default()
    }
}

fn storage(
    dir: &std::path::Path,
    s3: S3Config,
    dynamodb: DynamoDbConfig,
    cassandra: CassandraConfig,
) -> StorageConfig {
    let mut config = StorageConfig {
        s3,
        dynamodb,
        cassandra,
        max_pack_bytes: 64 << 10,
        // Every read goes to the server: the tests are about the servers.
        chunk_cache_bytes: 0,
        index_cache_bytes: 0,
        ..StorageConfig::default()
    };
    config.filesystem.directory = dir.join("chunks");
    config.embedded.path = dir.join("index.redb");
    config
}

fn schema(chunks: ChunkBackend, index: IndexBackend) -> SchemaConfig {
    SchemaConfig {
        periods: vec![PeriodConfig {
            chunks,
            index,
            ..PeriodConfig::default()
        }],
    }
}

/// A store on S3 and DynamoDB, both served by `moto`.
async fn moto_store(moto: &Moto, dir: &std::path::Path) -> Result<Store> {
    moto.create_bucket("strata-chunks").await?;
    let config = storage(
        dir,
        s3_config(moto, "strata-chunks"),
        dynamodb_config(moto),
        CassandraConfig::default(),
    );
    Ok(Store::new(
        &config,
        &schema(ChunkBackend::S3, IndexBackend::Dynamodb),
        &Metrics::new(),
    )?)
}

/// A store on Cassandra alone, in `keyspace`.
fn cassandra_store(port: u16, keyspace: &str, dir: &std::path::Path) -> Result<Store> {
    let config = storage(
        dir,
        S3Config::default(),
        DynamoDbConfig::default(),
        cassandra_config(port, keyspace),
    );
    Ok(Store::new(
        &config,
        &schema(ChunkBackend::Cassandra, IndexBackend::Cassandra),
        &Metrics::new(),
    )?)
}

fn chunk(tenant: &str, pairs: &[(&str, &str)], from: i64, through: i64, fill: u8) -> StoreChunk {
    stored(
        tenant,
        pairs,
        ChunkEncoding::Xor,
        from,
        through,
        vec![fill; 100],
    )
}

fn eq(name: &str, value: &str) -> Matcher {
    Matcher::equal(name, value)
}

fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
    Matcher::new(op, name, value).expect("valid matcher")
}

/// The Store's behaviour over a pair of backends: what the filesystem +
/// embedded unit tests check, through real servers.
async fn store_contract(s: &Store, puts: (&'static str, &'static str)) -> Result<()> {
    let up_a = [("__name__", "up"), ("job", "a")];
    let a1 = chunk("t", &up_a, T0, T0 + 1000, 1);
    let a2 = chunk("t", &up_a, T0 + 2000, T0 + DAY, 2);
    let b = chunk("t", &[("__name__", "up"), ("job", "b")], T0, T0 + 1000, 3);
    let other = chunk("t", &[("__name__", "down"), ("job", "a")], T0, T0 + 1000, 4);
    let stats = s
        .write_chunks("t", &[a1.clone(), a2.clone(), b.clone(), other.clone()])
        .await?;
    ensure!(stats.chunks == 4 && stats.already_stored == 0, "{stats:?}");

    let got = s
        .select(
            "t",
            &[eq("__name__", "up"), eq("job", "a")],
            T0,
            T0 + 2 * DAY,
        )
        .await?;
    ensure!(got.len() == 1, "{got:?}");
    ensure!(
        got[0].chunks == vec![a1.clone(), a2.clone()],
        "both chunks of up{{job=a}}"
    );
    let later = s
        .select(
            "t",
            &[eq("__name__", "up"), eq("job", "a")],
            T0 + 5000,
            T0 + 2 * DAY,
        )
        .await?;
    ensure!(later[0].chunks == vec![a2.clone()], "only a2 after T0+5s");
    let re = s
        .select(
            "t",
            &[eq("__name__", "up"), m(MatchOp::RegexMatch, "job", "a|b")],
            T0,
            T0 + 10,
        )
        .await?;
    ensure!(re.len() == 2, "regex: {re:?}");
    let neg = s
        .select(
            "t",
            &[eq("__name__", "up"), m(MatchOp::NotEqual, "job", "a")],
            T0,
            T0 + 10,
        )
        .await?;
    ensure!(
        neg.len() == 1 && neg[0].chunks == vec![b.clone()],
        "negative matcher"
    );
    let by_job = s.select("t", &[eq("job", "a")], T0, T0 + 10).await?;
    ensure!(by_job.len() == 2, "name-less selector: {by_job:?}");
    let by_name_re = s
        .select(
            "t",
            &[m(MatchOp::RegexMatch, "__name__", "do.*")],
            T0,
            T0 + 10,
        )
        .await?;
    ensure!(by_name_re.len() == 1 && by_name_re[0].chunks == vec![other.clone()]);

    // Tenants are isolated.
    ensure!(
        s.select("u", &[eq("__name__", "up")], T0, T0 + DAY)
            .await?
            .is_empty()
    );
    ensure!(s.label_names("u", &[], T0, T0 + DAY).await?.is_empty());

    ensure!(s.label_names("t", &[], T0, T0 + 10).await? == vec!["__name__", "job"]);
    ensure!(s.label_values("t", "__name__", &[], T0, T0 + 10).await? == vec!["down", "up"]);
    ensure!(
        s.label_values("t", "job", &[eq("__name__", "down")], T0, T0 + 10)
            .await?
            == vec!["a"]
    );

    // Rewriting stored chunks writes nothing.
    let (backend_puts, backend_writes) = puts;
    let before = (
        s.requests().get(backend_puts, "put"),
        s.requests().get(backend_writes, "write"),
    );
    let again = s.write_chunks("t", &[a1.clone(), b.clone()]).await?;
    ensure!(again.chunks == 0 && again.already_stored == 2, "{again:?}");
    let after = (
        s.requests().get(backend_puts, "put"),
        s.requests().get(backend_writes, "write"),
    );
    ensure!(
        before == after,
        "a rewrite made requests: {before:?} -> {after:?}"
    );
    // A new chunk of a known series writes its chunk row only.
    let next = chunk("t", &up_a, T0 + DAY + 10, T0 + DAY + 20, 5);
    let stats = s.write_chunks("t", std::slice::from_ref(&next)).await?;
    ensure!(stats.chunks == 1 && stats.index_rows == 1, "{stats:?}");
    Ok(())
}

/// Operations each backend counts.
const OPERATIONS: &[(&str, &[&str])] = &[
    (
        "s3",
        &[
            "put",
            "get_range",
            "list",
            "head",
            "delete",
            "delete_objects",
            "other",
        ],
    ),
    (
        "dynamodb",
        &[
            "write",
            "query",
            "create_table",
            "describe_table",
            "list_tables",
            "delete_table",
            "other",
        ],
    ),
    (
        "cassandra",
        &[
            "create_keyspace",
            "prepare",
            "create_table",
            "write",
            "query",
            "put",
            "get_range",
            "describe_table",
            "list_tables",
            "delete_table",
        ],
    ),
];

fn snapshot(s: &Store) -> Vec<(&'static str, &'static str, u64)> {
    OPERATIONS
        .iter()
        .flat_map(|(b, ops)| ops.iter().map(move |op| (*b, *op, s.requests().get(b, op))))
        .collect()
}

/// Writes 1,000 series x 1 chunk in one flush and prints the requests it
/// made per operation; returns them.
async fn count_flush_requests(s: &Store, pair: &str) -> Result<Vec<(String, u64)>> {
    const SERIES: usize = 1000;
    const SAMPLES_PER_CHUNK: u64 = 120;
    let chunks: Vec<StoreChunk> = (0..SERIES)
        .map(|i| {
            let instance = format!("host-{i}");
            let mut c = chunk(
                "load",
                &[
                    ("__name__", "node_cpu_seconds_total"),
                    ("instance", &instance),
                    ("job", "node"),
                ],
                T0 + 3_600_000,
                T0 + 3_600_000 + 119 * 15_000,
                (i % 251) as u8,
            );
            // A 120-sample XOR chunk is about 200 bytes.
            c.data = vec![(i % 251) as u8; 200];
            c
        })
        .collect();
    let before = snapshot(s);
    let started = Instant::now();
    let stats = s.write_chunks("load", &chunks).await?;
    let took = started.elapsed();
    let after = snapshot(s);
    let samples = SERIES as u64 * SAMPLES_PER_CHUNK;
    let mut out = Vec::new();
    println!(
        "{pair}: flush of {SERIES} series x 1 chunk ({samples} samples, {} packs, {} index rows) took {took:?}",
        stats.packs, stats.index_rows
    );
    let mut total = 0;
    for ((backend, op, b), (_, _, a)) in before.iter().zip(&after) {
        let n = a - b;
        if n > 0 {
            total += n;
            println!(
                "{pair}:   {backend} {op}: {n} requests ({:.0} per million samples)",
                n as f64 * 1e6 / samples as f64
            );
            out.push((format!("{backend} {op}"), n));
        }
    }
    println!(
        "{pair}:   total: {total} requests ({:.0} per million samples)",
        total as f64 * 1e6 / samples as f64
    );
    ensure!(stats.chunks == SERIES, "{stats:?}");
    let object_reads =
        || s.requests().get("s3", "get_range") + s.requests().get("cassandra", "get_range");
    let reads_before = object_reads();
    let started = Instant::now();
    let read = s
        .select(
            "load",
            &[eq("__name__", "node_cpu_seconds_total")],
            T0,
            T0 + DAY,
        )
        .await?;
    let reads = object_reads() - reads_before;
    println!(
        "{pair}: reading the {SERIES} chunks back took {:?} and {reads} object reads",
        started.elapsed()
    );
    // One read per span of a pack, not one per chunk.
    ensure!(
        reads as usize <= stats.packs,
        "{reads} object reads for {} packs",
        stats.packs
    );
    ensure!(
        read.len() == SERIES,
        "{} of {SERIES} series read back",
        read.len()
    );
    ensure!(
        read.iter()
            .all(|r| r.chunks.len() == 1 && r.chunks[0].data.len() == 200)
    );
    Ok(out)
}

#[tokio::test]
async fn dynamodb_index_contract_against_moto() -> Result<()> {
    let moto = Moto::start().await?;
    let requests = strata::store::RequestCounter::default();
    let idx = strata::store::backend::dynamodb::DynamoDbIndex::new(
        &dynamodb_config(&moto),
        4,
        requests.clone(),
    );
    index_contract(&idx).await?;
    // 2,500 rows in batches of 25: at least 100 BatchWriteItem requests.
    ensure!(requests.get("dynamodb", "write") >= 100, "batches counted");
    Ok(())
}

#[tokio::test]
async fn s3_objects_contract_against_moto() -> Result<()> {
    let moto = Moto::start().await?;
    moto.create_bucket("chunks").await?;
    let requests = strata::store::RequestCounter::default();
    let objects =
        strata::store::backend::s3::S3Objects::new(&s3_config(&moto, "chunks"), requests.clone())?;
    object_contract(&objects, false).await?;
    ensure!(requests.get("s3", "put") >= 5, "puts counted");
    Ok(())
}

#[tokio::test]
async fn cassandra_index_contract() -> Result<()> {
    let port = Cassandra::shared().await?;
    let c = strata::store::backend::cassandra::Cassandra::new(
        &cassandra_config(port, "index_contract"),
        4,
        strata::store::RequestCounter::default(),
    )?;
    index_contract(&strata::store::backend::cassandra::CassandraIndex(
        c.clone(),
    ))
    .await?;
    // The index client lists index tables only.
    let objects = strata::store::backend::cassandra::CassandraObjects(c.clone());
    objects
        .create_table("chunks_7", &TableDesc::default())
        .await?;
    let index = strata::store::backend::cassandra::CassandraIndex(c);
    index.create_table("index_7", &TableDesc::default()).await?;
    ensure!(index.list_tables().await? == vec!["index_7".to_string()]);
    ensure!(objects.list_tables().await? == vec!["chunks_7".to_string()]);
    Ok(())
}

#[tokio::test]
async fn cassandra_objects_contract() -> Result<()> {
    let port = Cassandra::shared().await?;
    let c = strata::store::backend::cassandra::Cassandra::new(
        &cassandra_config(port, "objects_contract"),
        4,
        strata::store::RequestCounter::default(),
    )?;
    let objects = strata::store::backend::cassandra::CassandraObjects(c);
    object_contract(&objects, true).await?;
    // A chunk table of the first layout, one blob per pack, is still read
    // and written.
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_node(format!("127.0.0.1:{port}"))
        .build()
        .await?;
    session
        .query_unpaged(
            "CREATE TABLE objects_contract.chunks_old (k text PRIMARY KEY, v blob)",
            &[],
        )
        .await?;
    let pack: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    objects.put("chunks_old", "t/p", pack.clone()).await?;
    ensure!(objects.get_range("chunks_old", "t/p", 70_000, 100).await? == pack[70_000..70_100]);
    let rows = session
        .query_unpaged("SELECT k FROM objects_contract.chunks_old", &[])
        .await?
        .into_rows_result()?
        .rows_num();
    ensure!(rows == 1, "one row per pack in the first layout: {rows}");
    Ok(())
}

#[tokio::test]
async fn store_over_s3_and_dynamodb() -> Result<()> {
    let moto = Moto::start().await?;
    let dir = tempfile::tempdir()?;
    let s = moto_store(&moto, dir.path()).await?;
    store_contract(&s, ("s3", "dynamodb")).await?;
    let counts = count_flush_requests(&s, "s3+dynamodb").await?;
    ensure!(!counts.is_empty());
    Ok(())
}

#[tokio::test]
async fn store_over_cassandra() -> Result<()> {
    let port = Cassandra::shared().await?;
    let dir = tempfile::tempdir()?;
    let s = cassandra_store(port, "store_pair", dir.path())?;
    store_contract(&s, ("cassandra", "cassandra")).await?;
    let counts = count_flush_requests(&s, "cassandra").await?;
    ensure!(!counts.is_empty());
    Ok(())
}

/// A request to a server that is down ends in an error; the generous limit
/// only tells a hang from an error.
async fn fails_without_hanging<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<()> {
    let started = Instant::now();
    let result = tokio::time::timeout(limit, f)
        .await
        .with_context(|| format!("{what}: no answer within {limit:?}: the store hangs"))?;
    ensure!(
        result.is_err(),
        "{what}: succeeded with the server down: {result:?}"
    );
    println!(
        "{what}: failed after {:?}: {}",
        started.elapsed(),
        result.err().map(|e| e.to_string()).unwrap_or_default()
    );
    Ok(())
}

#[tokio::test]
async fn s3_and_dynamodb_outages_fail_fast_and_recover() -> Result<()> {
    let mut moto = Moto::start().await?;
    moto.create_bucket("strata-chunks").await?;
    let dir = tempfile::tempdir()?;
    let mut s3 = s3_config(&moto, "strata-chunks");
    s3.timeout = Duration::from_secs(2);
    let mut dynamodb = dynamodb_config(&moto);
    dynamodb.timeout = Duration::from_secs(2);
    let config = storage(dir.path(), s3, dynamodb, CassandraConfig::default());
    let schema = schema(ChunkBackend::S3, IndexBackend::Dynamodb);
    let s = Store::new(&config, &schema, &Metrics::new())?;
    let a = chunk("t", &[("__name__", "up"), ("job", "a")], T0, T0 + 1000, 1);
    s.write_chunks("t", std::slice::from_ref(&a)).await?;
    let up = [eq("__name__", "up")];
    let select = || s.select("t", &up, T0, T0 + 1000);

    // A server that stops answering (SIGSTOP): requests time out.
    moto.guard.signal(libc::SIGSTOP);
    let limit = Duration::from_secs(60);
    fails_without_hanging("moto paused: select", limit, select()).await?;
    let b = chunk("t", &[("__name__", "up"), ("job", "b")], T0, T0 + 1000, 2);
    fails_without_hanging(
        "moto paused: write",
        limit,
        s.write_chunks("t", std::slice::from_ref(&b)),
    )
    .await?;
    // Back: the same store works, with its data.
    moto.guard.signal(libc::SIGCONT);
    let got = select().await?;
    ensure!(
        got.len() == 1 && got[0].chunks == vec![a.clone()],
        "{got:?}"
    );
    s.write_chunks("t", std::slice::from_ref(&b)).await?;

    // A server that is gone (connection refused); moto keeps no state, so
    // after its restart the store works on an empty server.
    moto.kill();
    fails_without_hanging("moto down: select", limit, select()).await?;
    moto.restart().await?;
    moto.create_bucket("strata-chunks").await?;
    s.write_chunks("t", std::slice::from_ref(&a)).await?;
    let got = select().await?;
    ensure!(got.len() == 1 && got[0].chunks == vec![a], "{got:?}");

    // A store created while the server is down does not block, and works
    // once the server is back.
    moto.kill();
    let late = Store::new(&config, &schema, &Metrics::new())?;
    fails_without_hanging(
        "moto down: new store",
        limit,
        late.label_names("t", &[], T0, T0 + 1000),
    )
    .await?;
    moto.restart().await?;
    ensure!(late.label_names("t", &[], T0, T0 + 1000).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn cassandra_outage_fails_fast_and_restart_keeps_the_data() -> Result<()> {
    // A Cassandra of this test's own: the shared one keeps serving the
    // other tests.
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("cassandra");
    let (storage_port, native_port) = (common::free_port(), common::free_port());
    let mut cassandra = Cassandra::start_in(&dir, storage_port, native_port, false).await?;
    let mut cql = cassandra_config(native_port, "outage");
    cql.connect_timeout = Duration::from_secs(3);
    cql.request_timeout = Duration::from_secs(3);
    let config = storage(
        tmp.path(),
        S3Config::default(),
        DynamoDbConfig::default(),
        cql,
    );
    let schema = schema(ChunkBackend::Cassandra, IndexBackend::Cassandra);
    let s = Store::new(&config, &schema, &Metrics::new())?;
    let a = chunk("t", &[("__name__", "up"), ("job", "a")], T0, T0 + 1000, 1);
    s.write_chunks("t", std::slice::from_ref(&a)).await?;

    cassandra.stop()?;
    let limit = Duration::from_secs(60);
    fails_without_hanging(
        "cassandra down: select",
        limit,
        s.select("t", &[eq("__name__", "up")], T0, T0 + 1000),
    )
    .await?;
    let b = chunk("t", &[("__name__", "up"), ("job", "b")], T0, T0 + 1000, 2);
    fails_without_hanging(
        "cassandra down: write",
        limit,
        s.write_chunks("t", std::slice::from_ref(&b)),
    )
    .await?;
    // A store created while Cassandra is down does not block on it.
    let late = Store::new(&config, &schema, &Metrics::new())?;
    fails_without_hanging(
        "cassandra down: new store",
        limit,
        late.label_names("t", &[], T0, T0 + 1000),
    )
    .await?;

    // Restarted on the same data: both stores work and find the chunk.
    let _cassandra = Cassandra::start_in(&dir, storage_port, native_port, false).await?;
    for (name, store) in [("running store", &s), ("late store", &late)] {
        let got = common::eventually(name, Duration::from_secs(120), || async {
            match store
                .select("t", &[eq("__name__", "up")], T0, T0 + 1000)
                .await
            {
                Ok(got) => Ok(Some(got)),
                Err(e) => Err(anyhow::anyhow!("{e}")),
            }
        })
        .await?;
        ensure!(
            got.len() == 1 && got[0].chunks == vec![a.clone()],
            "{name}: {got:?}"
        );
    }
    s.write_chunks("t", std::slice::from_ref(&b)).await?;
    ensure!(
        late.label_values("t", "job", &[], T0, T0 + 1000).await? == vec!["a", "b"],
        "a write after the restart is read by the other store"
    );
    Ok(())
}

/// The local backends (filesystem objects, embedded index) against the
/// same contracts as the servers.
#[tokio::test]
async fn local_backends_contract() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let requests = strata::store::RequestCounter::default();
    let idx = strata::store::backend::embedded::EmbeddedIndex::open(
        &dir.path().join("index.redb"),
        requests.clone(),
    )?;
    index_contract(&idx).await?;
    let objects = strata::store::backend::filesystem::FilesystemObjects::new(
        dir.path().join("chunks"),
        requests,
    );
    object_contract(&objects, true).await
}

const HOUR: i64 = 3_600_000;

fn xor_bytes(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut c = strata::chunk::XorChunk::new();
    let mut app = c.appender();
    for &(t, v) in samples {
        app.append(t, v).expect("samples fit one chunk");
    }
    c.into_bytes()
}

fn histogram_bytes(samples: &[(i64, u64)]) -> Vec<u8> {
    use strata::model::histogram::{Histogram, Span};
    let mut c = strata::chunk::histogram::HistogramChunk::new();
    let mut app = c.appender();
    for &(t, n) in samples {
        let h = Histogram {
            schema: 1,
            zero_threshold: 1e-128,
            count: 3 * n,
            sum: 1.5 * n as f64,
            positive_spans: vec![Span {
                offset: 0,
                length: 2,
            }],
            positive_buckets: vec![n as i64, n as i64],
            zero_count: n,
            ..Histogram::default()
        };
        app.append(t, &h).expect("histogram appends");
    }
    c.into_bytes()
}

fn stored(
    tenant: &str,
    pairs: &[(&str, &str)],
    encoding: ChunkEncoding,
    from: i64,
    through: i64,
    data: Vec<u8>,
) -> StoreChunk {
    let labels = Labels::from_pairs(pairs.iter().copied());
    StoreChunk {
        fingerprint: strata::model::fingerprint(tenant, labels.as_slice()),
        labels,
        from,
        through,
        encoding,
        data,
    }
}

/// Every series of a tenant in `[mint, maxt]`, decoded as a query decodes
/// them: labels, float samples (as bits, so NaN compares) and histograms.
type Decoded = Vec<(Labels, Vec<(i64, u64)>, Vec<strata::model::HPoint>)>;

async fn decoded(s: &Store, tenant: &str, mint: i64, maxt: i64) -> Result<Decoded> {
    let all = [m(MatchOp::RegexMatch, "__name__", ".+")];
    let mut out = Vec::new();
    for series in s.select(tenant, &all, mint, maxt).await? {
        let (floats, histograms) =
            strata::querier::store::decode_chunks(&series.labels, series.chunks, mint, maxt)
                .map_err(anyhow::Error::msg)?;
        let floats = floats.iter().map(|s| (s.t, s.v.to_bits())).collect();
        out.push((series.labels, floats, histograms));
    }
    Ok(out)
}

/// Both tenants read back as `before` (t's series, then u's).
async fn reads_as_before(
    s: &Store,
    before: &[Decoded; 2],
    (mint, maxt): (i64, i64),
    when: &str,
) -> Result<()> {
    for (tenant, want) in ["t", "u"].into_iter().zip(before) {
        ensure!(
            &decoded(s, tenant, mint, maxt).await? == want,
            "{tenant} reads as before {when}"
        );
    }
    Ok(())
}

/// Chunks of a tenant's series of `metric` in `[mint, maxt]`, per series.
async fn chunk_counts(
    s: &Store,
    tenant: &str,
    metric: &str,
    mint: i64,
    maxt: i64,
) -> Result<Vec<usize>> {
    Ok(s.select_refs(tenant, &[eq("__name__", metric)], mint, maxt)
        .await?
        .iter()
        .map(|(_, chunks)| chunks.len())
        .collect())
}

/// The compactor over a pair of backends. Tenant `t` flushes a day of 8
/// float series in 12 two-hour windows (one series also has a replica's
/// overlapping chunk), a native histogram series, a chunk spanning
/// midnight and a chunk of the next day; tenant `u` a series of the same
/// labels. After compaction every series reads back sample for sample as
/// before, each float series has one chunk for the day, each flush's pack
/// is retired and, after the deletion delay, deleted, and nothing of one
/// tenant shows in the other. A rerun (as after a crash before its last
/// step) rewrites the same packs and retires none of them.
async fn compaction_scenario(s: Arc<Store>) -> Result<()> {
    const STEP: i64 = 15_000;
    let d0 = (T0.div_euclid(DAY) + 1) * DAY;
    let (mint, maxt) = (d0 - DAY, d0 + 2 * DAY);
    let mut old_packs = Vec::new();
    for w in 0..12i64 {
        let (start, end) = (d0 + w * 2 * HOUR, d0 + (w + 1) * 2 * HOUR);
        let mut batch = Vec::new();
        for i in 0..8i64 {
            let instance = format!("i{i}");
            let samples: Vec<(i64, f64)> = (start + i * 1000..end)
                .step_by(STEP as usize)
                .map(|t| (t, ((t - d0) / STEP * (i + 1)) as f64 * 0.25))
                .collect();
            let pairs = [
                ("__name__", "requests_total"),
                ("instance", instance.as_str()),
            ];
            batch.push(stored(
                "t",
                &pairs,
                ChunkEncoding::Xor,
                samples[0].0,
                samples[samples.len() - 1].0,
                xor_bytes(&samples),
            ));
            if i == 0 && w == 5 {
                // A replica that cut the window at another sample.
                let tail = &samples[100..];
                batch.push(stored(
                    "t",
                    &pairs,
                    ChunkEncoding::Xor,
                    tail[0].0,
                    tail[tail.len() - 1].0,
                    xor_bytes(tail),
                ));
            }
        }
        let h: Vec<(i64, u64)> = (0..4)
            .map(|k| (start + k * 60_000, (w * 4 + k) as u64))
            .collect();
        batch.push(stored(
            "t",
            &[("__name__", "latency")],
            ChunkEncoding::Histogram,
            h[0].0,
            h[3].0,
            histogram_bytes(&h),
        ));
        if w == 11 {
            let span: Vec<(i64, f64)> = (0..8)
                .map(|k| (d0 + 23 * HOUR + k * 900_000, k as f64))
                .collect();
            batch.push(stored(
                "t",
                &[("__name__", "span")],
                ChunkEncoding::Xor,
                span[0].0,
                span[7].0,
                xor_bytes(&span),
            ));
            let next: Vec<(i64, f64)> = (0..8).map(|k| (d0 + DAY + k * 60_000, 1.0)).collect();
            batch.push(stored(
                "t",
                &[("__name__", "requests_total"), ("instance", "i0")],
                ChunkEncoding::Xor,
                next[0].0,
                next[7].0,
                xor_bytes(&next),
            ));
        }
        if w < 4 {
            let samples: Vec<(i64, f64)> =
                (start..end).step_by(60_000).map(|t| (t, -1.0)).collect();
            let u = stored(
                "u",
                &[("__name__", "requests_total"), ("instance", "i0")],
                ChunkEncoding::Xor,
                samples[0].0,
                samples[samples.len() - 1].0,
                xor_bytes(&samples),
            );
            s.write_chunks("u", &[u]).await?;
        }
        s.write_chunks("t", &batch).await?;
    }
    for (_, chunks) in s
        .select_refs("t", &[eq("__name__", "requests_total")], d0, d0 + DAY - 1)
        .await?
    {
        old_packs.extend(
            chunks
                .into_iter()
                .filter(|(c, _)| c.through < d0 + DAY)
                .map(|(_, loc)| (loc.table, loc.key)),
        );
    }
    old_packs.sort();
    old_packs.dedup();
    ensure!(
        old_packs.len() == 12,
        "one pack per flush: {}",
        old_packs.len()
    );
    let before = [
        decoded(&s, "t", mint, maxt).await?,
        decoded(&s, "u", mint, maxt).await?,
    ];
    ensure!(before[0].len() == 10 && before[1].len() == 1);
    ensure!(
        chunk_counts(&s, "t", "requests_total", d0, d0 + DAY - 1)
            .await?
            .iter()
            .sum::<usize>()
            == 8 * 12 + 1
    );

    let metrics = Metrics::new();
    let compactor = Compactor::new(
        CompactorConfig {
            deletion_delay: Duration::from_secs(3600),
            batch_series: 3,
            ..CompactorConfig::default()
        },
        s.clone(),
        &metrics,
    );
    // The day ended 7 h ago (min_age 6 h); the next one has not.
    let now = d0 + DAY + 7 * HOUR;
    let r = compactor.run(now).await?;
    ensure!(r.buckets == 2 && r.failed == 0, "{r:?}");
    // t: 8 float series, 12 histogram chunks copied; u: 1 series.
    ensure!(r.chunks_written == 8 + 12 + 1, "{r:?}");
    ensure!(r.chunks_read == 8 * 12 + 1 + 12 + 4, "{r:?}");
    ensure!(
        r.packs_retired == 12 + 4,
        "every flush's pack retired: {r:?}"
    );
    ensure!(r.bytes_written < r.bytes_read, "{r:?}");
    reads_as_before(&s, &before, (mint, maxt), "after compaction").await?;
    let counts = chunk_counts(&s, "t", "requests_total", d0, d0 + DAY - 1).await?;
    ensure!(
        counts == vec![1; 8],
        "one chunk a series for the day: {counts:?}"
    );
    ensure!(
        chunk_counts(&s, "t", "requests_total", d0 + DAY, d0 + 2 * DAY).await? == vec![1],
        "the next day's chunk stays"
    );
    ensure!(
        chunk_counts(&s, "t", "span", d0, d0 + DAY).await? == vec![1],
        "the spanning chunk stays"
    );
    let objects = s.table_clients()[0].objects.clone();
    for (table, key) in &old_packs {
        ensure!(
            objects.size(table, key).await?.is_some(),
            "kept until the delay is over"
        );
    }

    // Nothing more to do until the delay is over.
    let again = compactor.run(now + 60_000).await?;
    ensure!(again.buckets == 0 && again.packs_deleted == 0, "{again:?}");

    // A rerun of t's bucket, as after a crash before its `compacted` row.
    let index = s.table_clients()[0].index.clone();
    let table = s.schema().period(d0).index_table(d0);
    index
        .delete(
            &table,
            &[IndexKey {
                hash: strata::store::index::bucket_key(d0 / DAY),
                range: strata::store::index::compacted_range("t"),
            }],
        )
        .await?;
    let rerun = compactor.run(now + 120_000).await?;
    ensure!(
        rerun.buckets == 1 && rerun.packs_retired == 0,
        "the run's own packs are kept: {rerun:?}"
    );
    reads_as_before(&s, &before, (mint, maxt), "after the rerun").await?;

    let late = compactor.run(now + 2 * 3_600_000).await?;
    ensure!(late.packs_deleted == 12 + 4, "{late:?}");
    for (table, key) in &old_packs {
        ensure!(objects.size(table, key).await?.is_none(), "{key} deleted");
    }
    reads_as_before(&s, &before, (mint, maxt), "after the deletes").await?;
    let done = compactor.run(now + 3 * 3_600_000).await?;
    ensure!(
        done == strata::store::compactor::CompactionReport::default(),
        "{done:?}"
    );

    // A late flush into the compacted day (an ingester back after an
    // outage): the day is compacted again, with it.
    let i0 = [("__name__", "requests_total"), ("instance", "i0")];
    let late: Vec<(i64, f64)> = (0..4)
        .map(|k| (d0 + 12 * HOUR + 7_000 + k * STEP, 42.0))
        .collect();
    s.write_chunks(
        "t",
        &[stored(
            "t",
            &i0,
            ChunkEncoding::Xor,
            late[0].0,
            late[3].0,
            xor_bytes(&late),
        )],
    )
    .await?;
    let mut want = before.clone();
    for (labels, floats, _) in &mut want[0] {
        if labels == &Labels::from_pairs(i0) {
            floats.extend(late.iter().map(|&(t, v)| (t, v.to_bits())));
            floats.sort_unstable();
        }
    }
    let again = compactor.run(now + 4 * 3_600_000).await?;
    ensure!(
        again.buckets == 1 && again.packs_retired >= 1,
        "t's day compacted again: {again:?}"
    );
    reads_as_before(&s, &want, (mint, maxt), "with the late chunk").await?;
    ensure!(
        chunk_counts(&s, "t", "requests_total", d0, d0 + DAY - 1).await? == vec![1; 8],
        "one chunk a series again"
    );
    Ok(())
}

#[tokio::test]
async fn compaction_over_local_files_and_embedded_index() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = storage(
        dir.path(),
        S3Config::default(),
        DynamoDbConfig::default(),
        CassandraConfig::default(),
    );
    let s = Store::new(&config, &SchemaConfig::default(), &Metrics::new())?;
    compaction_scenario(Arc::new(s)).await
}

#[tokio::test]
async fn compaction_over_s3_and_dynamodb() -> Result<()> {
    let moto = Moto::start().await?;
    let dir = tempfile::tempdir()?;
    let s = moto_store(&moto, dir.path()).await?;
    compaction_scenario(Arc::new(s)).await
}

#[tokio::test]
async fn compaction_over_cassandra() -> Result<()> {
    let port = Cassandra::shared().await?;
    let dir = tempfile::tempdir()?;
    let s = cassandra_store(port, "compaction", dir.path())?;
    compaction_scenario(Arc::new(s)).await
}
