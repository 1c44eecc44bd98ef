//! PromQL engine: per-query time over 10k in-memory series holding 1h of
//! 15s samples. `sum by (job) (rate(x[5m]))` and the histogram quantile run
//! as range queries over the hour at a 15s step; `topk(5, x)` is instant.

use std::hint::black_box;

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use strata::model::{Labels, Matcher, Sample};
use strata::promql::{Engine, EngineConfig, Queryable, SeriesSamples};

const SERIES: usize = 10_000;
const STEP_MS: i64 = 15_000;
const HOUR_MS: i64 = 3_600_000;
const LE: [&str; 10] = [
    "0.005", "0.01", "0.05", "0.1", "0.5", "1", "2.5", "5", "10", "+Inf",
];

struct Memory(Vec<SeriesSamples>);

#[async_trait]
impl Queryable for Memory {
    async fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, String> {
        Ok(self
            .0
            .iter()
            .filter(|s| {
                matchers
                    .iter()
                    .all(|m| m.matches(s.labels.get(&m.name).unwrap_or("")))
            })
            .map(|s| {
                let lo = s.samples.partition_point(|p| p.t < mint);
                let hi = s.samples.partition_point(|p| p.t <= maxt);
                SeriesSamples {
                    histograms: Vec::new(),
                    labels: s.labels.clone(),
                    samples: s.samples[lo..hi].to_vec(),
                }
            })
            .collect())
    }
}

fn counter(seed: usize, per_step: f64) -> Vec<Sample> {
    (0..=HOUR_MS / STEP_MS)
        .map(|i| Sample {
            t: i * STEP_MS,
            v: (i as f64) * per_step * (1.0 + (seed % 7) as f64),
        })
        .collect()
}

fn data() -> Memory {
    let mut all = Vec::with_capacity(2 * SERIES);
    for i in 0..SERIES {
        let job = format!("job{}", i % 10);
        let instance = format!("i{i}");
        all.push(SeriesSamples {
            histograms: Vec::new(),
            labels: Labels::from_pairs([
                ("__name__", "x"),
                ("job", job.as_str()),
                ("instance", instance.as_str()),
            ]),
            samples: counter(i, 1.0),
        });
    }
    // 1k histograms of 10 buckets: 10k bucket series.
    for h in 0..SERIES / LE.len() {
        let instance = format!("i{h}");
        for (b, le) in LE.iter().enumerate() {
            all.push(SeriesSamples {
                histograms: Vec::new(),
                labels: Labels::from_pairs([
                    ("__name__", "b"),
                    ("instance", instance.as_str()),
                    ("le", *le),
                ]),
                samples: counter(h, (b + 1) as f64),
            });
        }
    }
    Memory(all)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let q = data();
    let engine = Engine::new(EngineConfig::default());
    let mut group = c.benchmark_group("promql");
    group.sample_size(10);
    for (name, expr) in [
        ("sum_rate_range_1h_15s", "sum by (job) (rate(x[5m]))"),
        (
            "histogram_quantile_range_1h_15s",
            "histogram_quantile(0.9, sum by (le) (rate(b[5m])))",
        ),
    ] {
        group.bench_function(name, |bench| {
            bench.iter(|| {
                let r = rt.block_on(engine.range(&q, expr, 0, HOUR_MS, STEP_MS));
                black_box(r.expect("query succeeds"))
            })
        });
    }
    group.bench_function("topk_instant", |bench| {
        bench.iter(|| {
            let r = rt.block_on(engine.instant(&q, "topk(5, x)", HOUR_MS));
            black_box(r.expect("query succeeds"))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
