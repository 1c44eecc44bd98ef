//! Ring lookups: replication sets on a 100-instance × 128-token ring, and
//! building the view the lookups run on.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata::ring::desc::{InstanceDesc, InstanceState};
use strata::ring::read::{Operation, ReplicationSet, RingView};
use strata::ring::token::generate_tokens;

const INSTANCES: usize = 100;
const TOKENS: usize = 128;
const KEYS: usize = 4096;
const NOW_MS: i64 = 1_700_000_000_000;
const HEARTBEAT_TIMEOUT_MS: i64 = 60_000;

/// 100 ACTIVE, healthy instances in three zones, joined one at a time.
fn instances(rng: &mut StdRng) -> Vec<InstanceDesc> {
    let mut ring: Vec<(u32, u32)> = Vec::with_capacity(INSTANCES * TOKENS);
    (0..INSTANCES)
        .map(|i| {
            let tokens = generate_tokens(TOKENS, &ring, rng);
            ring.extend(tokens.iter().map(|&t| (t, i as u32)));
            ring.sort_unstable();
            InstanceDesc {
                id: format!("ingester-{i:03}"),
                addr: format!("10.0.{}.{}:9095", i / 250, i % 250),
                http_addr: String::new(),
                zone: format!("zone-{}", i % 3),
                state: InstanceState::Active,
                tokens,
                heartbeat_ms: NOW_MS,
                registered_ms: NOW_MS,
            }
        })
        .collect()
}

fn ring(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(42);
    let instances = instances(&mut rng);
    let view = RingView::new(instances.clone(), HEARTBEAT_TIMEOUT_MS);
    let keys: Vec<u32> = (0..KEYS).map(|_| rng.random()).collect();

    let mut group = c.benchmark_group("replication_set");
    group.throughput(Throughput::Elements(KEYS as u64));
    for (name, zone_aware) in [("rf3", false), ("rf3_zone_aware", true)] {
        let mut set = ReplicationSet::with_capacity(3);
        group.bench_function(name, |b| {
            b.iter(|| {
                for &key in &keys {
                    view.replication_set(
                        black_box(key),
                        Operation::Write,
                        3,
                        zone_aware,
                        NOW_MS,
                        &mut set,
                    )
                    .expect("all instances are healthy");
                    black_box(set.instances());
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("ring_view");
    group.throughput(Throughput::Elements(1));
    group.bench_function("new_100x128", |b| {
        b.iter_batched(
            || instances.clone(),
            |instances| RingView::new(instances, HEARTBEAT_TIMEOUT_MS),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
