//! WAL throughput: appending batches of 1000 samples (one encoded Samples
//! record each) under `FsyncPolicy::Never` and `Always`, alone and with 16
//! concurrent appenders (group commit), and replaying records.
//!
//! Run: `cargo bench --bench wal -- --warm-up-time 1 --measurement-time 3`

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata::ingester::wal::records::{SampleRecord, decode_samples_into, encode_samples};
use strata::ingester::wal::{FsyncPolicy, Reader, Wal, WalOptions};
use tokio::runtime::Runtime;

const SAMPLES_PER_BATCH: usize = 1000;
const CONCURRENT_APPENDERS: usize = 16;

/// One scrape's worth of samples: 1000 series, one sample each.
fn samples_record(batch: u64) -> Vec<u8> {
    let samples: Vec<SampleRecord> = (0..SAMPLES_PER_BATCH as u64)
        .map(|i| SampleRecord {
            series_ref: 10_000 + i,
            t: 1_700_000_000_000 + (batch * 15_000) as i64 + (i % 7) as i64,
            v: ((batch * 31 + i * 17) % 1000) as f64 * 0.25,
        })
        .collect();
    let mut buf = Vec::new();
    encode_samples(&samples, &mut buf);
    buf
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Deletes finished segments so that long runs do not fill the disk.
fn delete_finished_segments(dir: &Path, active: u32) {
    for segment in 0..active {
        let _ = std::fs::remove_file(dir.join(format!("{segment:08}")));
    }
}

/// Times `iters` rounds of `appenders` concurrent appends of `rec` to a
/// fresh WAL.
fn time_appends(
    rt: &Runtime,
    policy: FsyncPolicy,
    rec: &[u8],
    appenders: usize,
    iters: u64,
) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(
        dir.path(),
        WalOptions {
            fsync: policy,
            ..WalOptions::default()
        },
    )
    .expect("open");
    let mut total = Duration::ZERO;
    rt.block_on(async {
        let mut done = 0;
        while done < iters {
            let chunk = (iters - done).min(1000);
            let start = Instant::now();
            for _ in 0..chunk {
                let appends = (0..appenders).map(|_| wal.append(vec![rec.to_vec()]));
                for result in futures::future::join_all(appends).await {
                    result.expect("append");
                }
            }
            total += start.elapsed();
            done += chunk;
            delete_finished_segments(dir.path(), wal.active_segment());
        }
    });
    rt.block_on(wal.close()).expect("close");
    total
}

fn append(c: &mut Criterion) {
    let rt = runtime();
    let rec = samples_record(1);
    let mut group = c.benchmark_group("wal_append_1000_samples");
    for (name, policy, appenders) in [
        ("fsync_never", FsyncPolicy::Never, 1),
        ("fsync_always", FsyncPolicy::Always, 1),
        (
            "fsync_always_16_concurrent",
            FsyncPolicy::Always,
            CONCURRENT_APPENDERS,
        ),
    ] {
        group.throughput(Throughput::ElementsAndBytes {
            elements: (SAMPLES_PER_BATCH * appenders) as u64,
            bytes: (rec.len() * appenders) as u64,
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| time_appends(&rt, policy, &rec, appenders, iters))
        });
    }
    group.finish();
}

fn replay(c: &mut Criterion) {
    const RECORDS: u64 = 2000;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(
        dir.path(),
        WalOptions {
            segment_size: 16 * 1024 * 1024,
            fsync: FsyncPolicy::Never,
        },
    )
    .expect("open");
    let mut bytes = 0;
    rt.block_on(async {
        for batch in 0..RECORDS {
            let rec = samples_record(batch);
            bytes += rec.len() as u64;
            wal.append(vec![rec]).await.expect("append");
        }
    });
    rt.block_on(wal.close()).expect("close");

    let mut group = c.benchmark_group("wal_replay");
    group.throughput(Throughput::ElementsAndBytes {
        elements: RECORDS,
        bytes,
    });
    group.bench_function("read_records", |b| {
        b.iter(|| {
            let mut reader = Reader::open(dir.path()).expect("reader");
            let mut n = 0;
            while let Some(rec) = reader.next_record().expect("record") {
                n += rec.len();
            }
            n
        })
    });
    group.bench_function("read_and_decode_samples", |b| {
        let mut samples = Vec::with_capacity(SAMPLES_PER_BATCH);
        b.iter(|| {
            let mut reader = Reader::open(dir.path()).expect("reader");
            let mut n = 0;
            while let Some(rec) = reader.next_record().expect("record") {
                samples.clear();
                decode_samples_into(rec, &mut samples).expect("decode");
                n += samples.len();
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, append, replay);
criterion_main!(benches);
