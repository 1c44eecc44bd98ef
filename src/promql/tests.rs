//! Engine tests over an in-memory [`Queryable`]: lookback and staleness,
//! offset and `@`, rate extrapolation, binary matching, aggregations and
//! subquery alignment.

use async_trait::async_trait;

use super::*;
use crate::model::{Labels, Matcher, STALE_NAN_BITS, Sample};

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
            .map(|s| SeriesSamples {
                histograms: Vec::new(),
                labels: s.labels.clone(),
                samples: s
                    .samples
                    .iter()
                    .filter(|p| p.t >= mint && p.t <= maxt)
                    .copied()
                    .collect(),
            })
            .collect())
    }
}

fn series(labels: &[(&str, &str)], every_ms: i64, values: &[f64]) -> SeriesSamples {
    SeriesSamples {
        histograms: Vec::new(),
        labels: Labels::from_pairs(labels.iter().copied()),
        samples: values
            .iter()
            .enumerate()
            .map(|(i, &v)| Sample {
                t: i as i64 * every_ms,
                v,
            })
            .collect(),
    }
}

fn db() -> Memory {
    let m = 60_000;
    Memory(vec![
        series(
            &[("__name__", "req_total"), ("job", "api"), ("i", "0")],
            m,
            &[0.0, 60.0, 120.0, 180.0, 240.0, 300.0],
        ),
        series(
            &[("__name__", "req_total"), ("job", "api"), ("i", "1")],
            m,
            &[0.0, 120.0, 240.0, 360.0, 480.0, 600.0],
        ),
        series(
            &[("__name__", "req_total"), ("job", "web"), ("i", "0")],
            m,
            &[10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
        ),
        series(
            &[("__name__", "up"), ("job", "api")],
            m,
            &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        ),
        series(
            &[("__name__", "up"), ("job", "web")],
            m,
            &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
        ),
        series(
            &[("__name__", "gone")],
            m,
            &[1.0, f64::from_bits(STALE_NAN_BITS)],
        ),
    ])
}

async fn instant(expr: &str, t: i64) -> Result<Vec<(String, f64)>, QueryError> {
    let engine = Engine::new(EngineConfig::default());
    let res = engine.instant(&db(), expr, t).await?;
    let mut out = match res.value {
        Value::Vector(v) => v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect(),
        Value::Scalar { v, .. } => vec![(String::new(), v)],
        other => panic!("unexpected {other:?}"),
    };
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn one(v: Vec<(String, f64)>) -> f64 {
    assert_eq!(v.len(), 1, "{v:?}");
    v[0].1
}

#[tokio::test]
async fn lookback_and_staleness() {
    assert_eq!(one(instant("gone", 30_000).await.expect("ok")), 1.0);
    assert!(
        instant("gone", 90_000).await.expect("ok").is_empty(),
        "stale marker ends the series"
    );
    // The last sample (at 5m) is visible for the lookback delta, left-open.
    assert_eq!(
        instant("up{job=\"api\"}", 599_999).await.expect("ok").len(),
        1
    );
    assert!(
        instant("up{job=\"api\"}", 600_000)
            .await
            .expect("ok")
            .is_empty()
    );
}

#[tokio::test]
async fn offset_and_at() {
    let v = instant("req_total{job=\"web\"} offset 2m", 300_000)
        .await
        .expect("ok");
    assert_eq!(one(v), 40.0);
    let v = instant("req_total{job=\"web\"} @ 60", 300_000)
        .await
        .expect("ok");
    assert_eq!(one(v), 20.0);
    let engine = Engine::new(EngineConfig::default());
    let res = engine
        .range(&db(), "req_total{job=\"web\"} @ end()", 0, 120_000, 60_000)
        .await
        .expect("ok");
    let Value::Matrix(m) = res.value else {
        panic!("matrix")
    };
    assert!(m[0].samples.iter().all(|s| s.v == 30.0));
}

#[tokio::test]
async fn rate_extrapolation_and_name_dropping() {
    // 60/min counter, samples exactly at window edges: (1m, 5m] has 4 intervals.
    let v = instant("rate(req_total{job=\"api\",i=\"0\"}[4m])", 300_000)
        .await
        .expect("ok");
    assert_eq!(v[0].0, "{i=\"0\", job=\"api\"}");
    assert!((v[0].1 - 1.0).abs() < 1e-9, "{v:?}");
    let v = instant("increase(req_total{job=\"api\",i=\"0\"}[5m])", 300_000)
        .await
        .expect("ok");
    assert!((one(v) - 300.0).abs() < 1e-9);
}

#[tokio::test]
async fn binary_matching() {
    let v = instant("req_total / on(job) group_left up", 300_000)
        .await
        .expect("ok");
    assert_eq!(v.len(), 3);
    let err = instant("req_total / on(job) up", 300_000)
        .await
        .expect_err("many-to-one");
    assert!(
        err.to_string()
            .contains("many-to-one matching must be explicit"),
        "{err}"
    );
    let err = instant("up / on() req_total", 300_000)
        .await
        .expect_err("dup rhs");
    assert!(
        err.to_string()
            .contains("found duplicate series for the match group"),
        "{err}"
    );
    let v = instant("up == 1", 240_000).await.expect("ok");
    assert_eq!(v.len(), 2);
    let v = instant("up == bool 1", 300_000).await.expect("ok");
    assert_eq!(
        v,
        vec![
            ("{job=\"api\"}".to_string(), 1.0),
            ("{job=\"web\"}".to_string(), 0.0)
        ]
    );
    let v = instant("req_total and on(job) up == 0", 300_000)
        .await
        .expect("ok");
    assert_eq!(v.len(), 1);
    assert_eq!(one(instant("2 ^ 3 - 1", 0).await.expect("ok")), 7.0);
}

#[tokio::test]
async fn aggregations() {
    let v = instant("sum by (job) (req_total)", 300_000)
        .await
        .expect("ok");
    assert_eq!(
        v,
        vec![
            ("{job=\"api\"}".to_string(), 900.0),
            ("{job=\"web\"}".to_string(), 60.0)
        ]
    );
    let v = instant("max without (i) (req_total)", 300_000)
        .await
        .expect("ok");
    assert_eq!(v[0], ("{job=\"api\"}".to_string(), 600.0));
    let engine = Engine::new(EngineConfig::default());
    let res = engine
        .instant(&db(), "topk(2, req_total)", 300_000)
        .await
        .expect("ok");
    let Value::Vector(v) = res.value else {
        panic!("vector")
    };
    assert_eq!(
        v.iter().map(|s| s.v).collect::<Vec<_>>(),
        vec![600.0, 300.0]
    );
    assert_eq!(one(instant("count(up)", 0).await.expect("ok")), 2.0);
    assert_eq!(
        one(instant("quantile(0.5, req_total)", 300_000)
            .await
            .expect("ok")),
        300.0
    );
    let v = instant("count_values(\"v\", up)", 60_000)
        .await
        .expect("ok");
    assert_eq!(
        v,
        vec![
            ("{v=\"0\"}".to_string(), 1.0),
            ("{v=\"1\"}".to_string(), 1.0)
        ]
    );
}

#[tokio::test]
async fn subquery_alignment() {
    // Steps at multiples of 1m within (5m - 3m, 5m]: 3m, 4m, 5m.
    let v = instant("count_over_time(up{job=\"api\"}[3m:1m])", 300_000)
        .await
        .expect("ok");
    assert_eq!(one(v), 3.0);
    // Offset 30s: (1m30s, 4m30s] holds 2m, 3m, 4m.
    let v = instant(
        "sum_over_time(req_total{job=\"web\"}[3m:1m] offset 30s)",
        300_000,
    )
    .await
    .expect("ok");
    assert_eq!(one(v), 30.0 + 40.0 + 50.0);
}

#[tokio::test]
async fn limits_and_errors() {
    let engine = Engine::new(EngineConfig {
        max_samples: 2,
        ..EngineConfig::default()
    });
    let err = engine
        .instant(&db(), "req_total", 0)
        .await
        .expect_err("too many");
    assert!(matches!(err, QueryError::TooManySamples { limit: 2 }));
    assert!(matches!(
        instant("sum(", 0).await,
        Err(QueryError::Parse(_))
    ));
    let res = Engine::new(EngineConfig::default())
        .range(&db(), "sum(up)", 0, 300_000, 60_000)
        .await
        .expect("ok");
    let Value::Matrix(m) = res.value else {
        panic!("matrix")
    };
    assert_eq!(
        m[0].samples.iter().map(|s| s.v).collect::<Vec<_>>(),
        vec![2.0, 1.0, 2.0, 1.0, 2.0, 1.0]
    );
}
