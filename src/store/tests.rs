use super::*;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_700_000_000_000;

fn store(dir: &std::path::Path) -> Store {
    store_with(dir, 300)
}

fn store_with(dir: &std::path::Path, max_pack_bytes: usize) -> Store {
    let config = StorageConfig {
        max_pack_bytes,
        ..StorageConfig::in_dir(dir)
    };
    Store::new(&config, &SchemaConfig::default(), &Metrics::new()).expect("store opens")
}

fn chunk(pairs: &[(&str, &str)], from: i64, through: i64, fill: u8) -> StoreChunk {
    let labels = Labels::from_pairs(pairs.iter().copied());
    StoreChunk {
        fingerprint: crate::model::fingerprint("t", labels.as_slice()),
        labels,
        from,
        through,
        encoding: ChunkEncoding::Xor,
        data: vec![fill; 100],
    }
}

fn eq(name: &str, value: &str) -> Matcher {
    Matcher::equal(name, value)
}

fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
    Matcher::new(op, name, value).expect("valid matcher")
}

#[tokio::test]
async fn chunks_written_are_found_by_matchers_and_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path());
    let a1 = chunk(&[("__name__", "up"), ("job", "a")], T0, T0 + 1000, 1);
    let a2 = chunk(&[("__name__", "up"), ("job", "a")], T0 + 2000, T0 + DAY, 2);
    let b = chunk(&[("__name__", "up"), ("job", "b")], T0, T0 + 1000, 3);
    let other = chunk(&[("__name__", "down"), ("job", "a")], T0, T0 + 1000, 4);
    let stats = s
        .write_chunks("t", &[a1.clone(), a2.clone(), b.clone(), other.clone()])
        .await
        .expect("write");
    assert_eq!(stats.chunks, 4);
    assert_eq!(stats.already_stored, 0);
    assert!(
        stats.packs >= 2,
        "300-byte packs hold two records: {stats:?}"
    );

    let got = s
        .select(
            "t",
            &[eq("__name__", "up"), eq("job", "a")],
            T0,
            T0 + 2 * DAY,
        )
        .await
        .expect("select");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].chunks, vec![a1.clone(), a2.clone()]);

    // Time: only a2 overlaps the second day.
    let later = s
        .select(
            "t",
            &[eq("__name__", "up"), eq("job", "a")],
            T0 + 5000,
            T0 + 2 * DAY,
        )
        .await
        .expect("select");
    assert_eq!(later[0].chunks, vec![a2.clone()]);

    // Regex, negative and name-less selectors.
    let re = s
        .select(
            "t",
            &[eq("__name__", "up"), m(MatchOp::RegexMatch, "job", "a|b")],
            T0,
            T0 + 10,
        )
        .await
        .expect("select");
    assert_eq!(re.len(), 2);
    let neg = s
        .select(
            "t",
            &[eq("__name__", "up"), m(MatchOp::NotEqual, "job", "a")],
            T0,
            T0 + 10,
        )
        .await
        .expect("select");
    assert_eq!(neg.len(), 1);
    assert_eq!(neg[0].chunks, vec![b.clone()]);
    let by_job = s
        .select("t", &[eq("job", "a")], T0, T0 + 10)
        .await
        .expect("select");
    assert_eq!(by_job.len(), 2);
    let by_name_re = s
        .select(
            "t",
            &[m(MatchOp::RegexMatch, "__name__", "do.*")],
            T0,
            T0 + 10,
        )
        .await
        .expect("select");
    assert_eq!(by_name_re.len(), 1);
    assert_eq!(by_name_re[0].chunks, vec![other.clone()]);
    assert!(
        s.select("t", &[m(MatchOp::RegexMatch, "job", ".*")], T0, T0 + 10)
            .await
            .is_err(),
        "a selector matching everything is refused, as Prometheus does"
    );

    // Other tenants see nothing.
    assert!(
        s.select("u", &[eq("__name__", "up")], T0, T0 + DAY)
            .await
            .expect("select")
            .is_empty()
    );
    assert!(
        s.label_names("u", &[], T0, T0 + DAY)
            .await
            .expect("names")
            .is_empty()
    );

    assert_eq!(
        s.label_names("t", &[], T0, T0 + 10).await.expect("names"),
        vec!["__name__", "job"]
    );
    assert_eq!(
        s.label_values("t", "__name__", &[], T0, T0 + 10)
            .await
            .expect("values"),
        vec!["down", "up"]
    );
    assert_eq!(
        s.label_values("t", "job", &[eq("__name__", "down")], T0, T0 + 10)
            .await
            .expect("values"),
        vec!["a"]
    );
}

#[tokio::test]
async fn rewriting_stored_chunks_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path());
    let a = chunk(&[("__name__", "up"), ("job", "a")], T0, T0 + DAY + 5, 1);
    s.write_chunks("t", std::slice::from_ref(&a))
        .await
        .expect("write");
    let puts = s.requests().get("filesystem", "put");
    let writes = s.requests().get("embedded", "write");
    let again = s
        .write_chunks("t", std::slice::from_ref(&a))
        .await
        .expect("write again");
    assert_eq!(again.chunks, 0);
    assert_eq!(again.already_stored, 1);
    assert_eq!(s.requests().get("filesystem", "put"), puts);
    assert_eq!(s.requests().get("embedded", "write"), writes);
    // A new chunk of a known series writes its chunk rows only.
    let next = chunk(
        &[("__name__", "up"), ("job", "a")],
        T0 + DAY + 10,
        T0 + DAY + 20,
        2,
    );
    let stats = s.write_chunks("t", &[next]).await.expect("write");
    assert_eq!(stats.chunks, 1);
    assert_eq!(stats.index_rows, 1);
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = chunk(&[("__name__", "up"), ("job", "a")], T0, T0 + 1000, 1);
    {
        let s = store(dir.path());
        s.write_chunks("t", std::slice::from_ref(&a))
            .await
            .expect("write");
    }
    let s = store(dir.path());
    let got = s
        .select("t", &[eq("__name__", "up")], T0, T0 + 1000)
        .await
        .expect("select");
    assert_eq!(got[0].chunks, vec![a]);
}

#[tokio::test]
async fn a_corrupt_object_is_an_error_not_wrong_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path());
    let a = chunk(&[("__name__", "up"), ("job", "a")], T0, T0 + 1000, 1);
    s.write_chunks("t", std::slice::from_ref(&a))
        .await
        .expect("write");
    let refs = s
        .select_refs("t", &[eq("__name__", "up")], T0, T0 + 1000)
        .await
        .expect("refs");
    let loc = &refs[0].1[0].1;
    let path = dir.path().join("chunks").join(&loc.table).join(&loc.key);
    let mut bytes = std::fs::read(&path).expect("pack file");
    let at = loc.offset as usize + 40;
    bytes[at] ^= 0xff;
    std::fs::write(&path, bytes).expect("write pack");
    drop(s);
    let fresh = store(dir.path());
    let err = fresh
        .select("t", &[eq("__name__", "up")], T0, T0 + 1000)
        .await
        .expect_err("corruption is detected");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
}

#[tokio::test]
async fn a_query_reads_a_pack_once_per_span_of_wanted_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store_with(dir.path(), 64 << 20);
    let mut chunks: Vec<StoreChunk> = (0..50)
        .map(|i| {
            chunk(
                &[("__name__", "up"), ("job", &format!("j{i:02}"))],
                T0,
                T0 + 1000,
                i as u8,
            )
        })
        .collect();
    // A big chunk between two small ones of another metric.
    let mut big = chunk(&[("__name__", "big"), ("job", "b")], T0, T0 + 1000, 9);
    big.data = vec![9; 400 << 10];
    chunks.push(chunk(
        &[("__name__", "edge"), ("job", "a")],
        T0,
        T0 + 1000,
        7,
    ));
    chunks.push(big);
    chunks.push(chunk(
        &[("__name__", "edge"), ("job", "c")],
        T0,
        T0 + 1000,
        8,
    ));
    let stats = s.write_chunks("t", &chunks).await.expect("write");
    assert_eq!(stats.packs, 1);
    let reads = || s.requests().get("filesystem", "get_range");

    let got = s
        .select("t", &[eq("__name__", "up")], T0, T0 + 1000)
        .await
        .expect("select");
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|g| g.chunks.len() == 1));
    assert_eq!(reads(), 1, "50 records of one pack, one read");
    // Cached now.
    s.select("t", &[eq("__name__", "up")], T0, T0 + 1000)
        .await
        .expect("select");
    assert_eq!(reads(), 1);

    // Two records 400 KiB apart: two reads, not the big chunk between them.
    let edges = s
        .select("t", &[eq("__name__", "edge")], T0, T0 + 1000)
        .await
        .expect("select");
    assert_eq!(edges.len(), 2);
    assert_eq!(edges[0].chunks[0].data, vec![7; 100]);
    assert_eq!(edges[1].chunks[0].data, vec![8; 100]);
    assert_eq!(reads(), 3);
}
