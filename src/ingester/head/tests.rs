//! Tests of the head as a whole: appends and queries, matchers, limits,
//! out-of-order samples, collisions, gc, concurrency, and a property test
//! against a model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::chunk::XorIterator;
use crate::model::{MatchOp, Matcher, Sample};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
    Matcher::new(op, name, value).expect("valid matcher")
}

fn eq(name: &str, value: &str) -> Matcher {
    Matcher::equal(name, value)
}

fn unlimited() -> Limits {
    Limits {
        max_series_per_tenant: 0,
        max_series_per_metric: 0,
        ..Limits::default()
    }
}

fn with_ooo_window(ms: u64) -> Limits {
    Limits {
        out_of_order_time_window: Duration::from_millis(ms),
        ..unlimited()
    }
}

fn samples(ts: impl IntoIterator<Item = i64>) -> Vec<Sample> {
    ts.into_iter()
        .map(|t| Sample {
            t,
            v: t as f64 * 0.5,
        })
        .collect()
}

fn push(head: &Head, l: &Labels, s: &[Sample], limits: &Limits) -> AppendResult {
    head.append_batch(&[(l, s)], limits)
}

/// Every series matching `matchers`, with its samples merged.
fn read_all(head: &Head, matchers: &[Matcher]) -> Vec<(Labels, Vec<Sample>)> {
    head.query(matchers, i64::MIN, i64::MAX)
        .into_iter()
        .map(|s| {
            let samples = merge_chunks(&s.chunks, i64::MIN, i64::MAX).expect("valid chunks");
            (s.labels, samples)
        })
        .collect()
}

/// Checks every chunk's invariants: decodes, timestamps strictly increase,
/// min_t/max_t are its first and last timestamps.
fn check_chunks(chunks: &[ChunkData]) {
    for c in chunks {
        let mut it = XorIterator::new(&c.bytes);
        let ts: Vec<i64> = std::iter::from_fn(|| it.next().map(|(t, _)| t)).collect();
        assert!(it.err().is_none(), "chunk decodes");
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "increasing: {ts:?}");
        assert_eq!(ts.first(), Some(&c.min_t));
        assert_eq!(ts.last(), Some(&c.max_t));
    }
}

fn names(series: &[(Labels, Vec<Sample>)]) -> Vec<String> {
    series.iter().map(|(l, _)| l.to_string()).collect()
}

#[test]
fn append_and_query_back_across_chunk_cuts() {
    let head = Head::new("t", &HeadConfig::default());
    let up = labels(&[("__name__", "up"), ("job", "api")]);
    let all = samples((0..300).map(|i| i * 15_000));
    for batch in all.chunks(50) {
        let r = push(&head, &up, batch, &unlimited());
        assert_eq!(r.samples_appended, 50);
        assert!(r.rejected.is_empty());
    }
    let got = head.query(&[eq("job", "api")], i64::MIN, i64::MAX);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels, up);
    let sizes: Vec<usize> = got[0]
        .chunks
        .iter()
        .map(|c| XorIterator::new(&c.bytes).num_samples())
        .collect();
    assert_eq!(sizes, vec![120, 120, 60], "cut at 120 samples");
    check_chunks(&got[0].chunks);
    assert_eq!(
        merge_chunks(&got[0].chunks, i64::MIN, i64::MAX).expect("valid"),
        all
    );
    assert_eq!(head.chunks_cut_total(), 2);
    assert_eq!(head.samples_appended_total(), 300);
    assert_eq!(head.active_series(), 1);
    let bytes: usize = got[0].chunks.iter().map(|c| c.bytes.len()).sum();
    assert_eq!(head.chunk_bytes(), bytes as u64);

    // Only overlapping chunks, and the merge clips to the range.
    let (mint, maxt) = (130 * 15_000, 140 * 15_000);
    let got = head.query(&[eq("job", "api")], mint, maxt);
    assert_eq!(got[0].chunks.len(), 1);
    let clipped = merge_chunks(&got[0].chunks, mint, maxt).expect("valid");
    assert_eq!(clipped, all[130..=140].to_vec());
    assert!(head.query(&[eq("job", "api")], -10, -1).is_empty());
}

#[test]
fn chunks_are_cut_by_size() {
    let config = HeadConfig {
        max_chunk_bytes: 256,
        ..HeadConfig::default()
    };
    let head = Head::new("t", &config);
    let l = labels(&[("__name__", "noise")]);
    // Values whose bits change everywhere compress badly.
    let all: Vec<Sample> = (0..200)
        .map(|i: i64| Sample {
            t: i * 1000 + (i * 7919) % 13,
            v: f64::from_bits(
                0x4000_0000_0000_0000 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 12,
            ),
        })
        .collect();
    push(&head, &l, &all, &unlimited());
    let got = head.query(&[eq("__name__", "noise")], i64::MIN, i64::MAX);
    let chunks = &got[0].chunks;
    assert!(chunks.len() > 2, "cut by bytes, not at 120 samples");
    for c in &chunks[..chunks.len() - 1] {
        assert!(
            c.bytes.len() >= 256 && c.bytes.len() < 256 + 32,
            "{}",
            c.bytes.len()
        );
    }
    check_chunks(chunks);
    assert_eq!(
        merge_chunks(chunks, i64::MIN, i64::MAX).expect("valid"),
        all
    );
}

fn matcher_head() -> Head {
    let head = Head::new("t", &HeadConfig::default());
    let s = samples([1000]);
    for l in [
        labels(&[("__name__", "up"), ("job", "api"), ("instance", "a")]),
        labels(&[("__name__", "up"), ("job", "web"), ("instance", "b")]),
        labels(&[("__name__", "up"), ("instance", "c")]),
        labels(&[("__name__", "other"), ("job", "api")]),
    ] {
        push(&head, &l, &s, &unlimited());
    }
    head
}

#[test]
fn matchers_follow_prometheus_semantics() {
    let head = matcher_head();
    let cases: Vec<(Vec<Matcher>, Vec<&str>)> = vec![
        (
            vec![eq("job", "api")],
            vec![r#"other{job="api"}"#, r#"up{instance="a", job="api"}"#],
        ),
        (
            vec![eq("__name__", "up"), m(MatchOp::NotEqual, "job", "api")],
            vec![r#"up{instance="b", job="web"}"#, r#"up{instance="c"}"#],
        ),
        (
            vec![m(MatchOp::RegexMatch, "job", "a.*"), eq("__name__", "up")],
            vec![r#"up{instance="a", job="api"}"#],
        ),
        (
            vec![eq("__name__", "up"), m(MatchOp::RegexNoMatch, "job", "a.*")],
            vec![r#"up{instance="b", job="web"}"#, r#"up{instance="c"}"#],
        ),
        (vec![eq("job", "")], vec![r#"up{instance="c"}"#]),
        (
            vec![m(MatchOp::RegexMatch, "job", ".+")],
            vec![
                r#"other{job="api"}"#,
                r#"up{instance="a", job="api"}"#,
                r#"up{instance="b", job="web"}"#,
            ],
        ),
        (
            vec![m(MatchOp::NotEqual, "job", "")],
            vec![
                r#"other{job="api"}"#,
                r#"up{instance="a", job="api"}"#,
                r#"up{instance="b", job="web"}"#,
            ],
        ),
        (
            vec![m(MatchOp::RegexMatch, "job", "api|")],
            vec![
                r#"other{job="api"}"#,
                r#"up{instance="a", job="api"}"#,
                r#"up{instance="c"}"#,
            ],
        ),
        (vec![eq("__name__", "up"), eq("job", "nope")], vec![]),
        (vec![eq("missing", "x")], vec![]),
        (
            vec![m(MatchOp::NotEqual, "missing", "x"), eq("__name__", "up")],
            vec![
                r#"up{instance="a", job="api"}"#,
                r#"up{instance="b", job="web"}"#,
                r#"up{instance="c"}"#,
            ],
        ),
        (
            vec![
                m(MatchOp::RegexMatch, "__name__", ".*"),
                eq("instance", "b"),
            ],
            vec![r#"up{instance="b", job="web"}"#],
        ),
        (vec![], vec![]),
    ];
    for (matchers, want) in cases {
        let got = read_all(&head, &matchers);
        assert_eq!(names(&got), want, "{matchers:?}");
        assert_eq!(head.series(&matchers, i64::MIN, i64::MAX).len(), want.len());
    }
}

#[test]
fn label_names_and_values() {
    let head = matcher_head();
    assert_eq!(
        head.label_names(&[], i64::MIN, i64::MAX),
        vec!["__name__", "instance", "job"]
    );
    assert_eq!(
        head.label_names(&[eq("__name__", "other")], i64::MIN, i64::MAX),
        vec!["__name__", "job"]
    );
    assert_eq!(
        head.label_values("job", &[], i64::MIN, i64::MAX),
        vec!["api", "web"]
    );
    assert_eq!(
        head.label_values("__name__", &[eq("job", "api")], i64::MIN, i64::MAX),
        vec!["other", "up"]
    );
    assert_eq!(
        head.label_values("instance", &[eq("__name__", "up")], i64::MIN, i64::MAX),
        vec!["a", "b", "c"]
    );
    // Outside the time range: nothing.
    assert!(head.label_names(&[], 2000, 3000).is_empty());
    assert!(
        head.label_values("job", &[eq("job", "api")], 2000, 3000)
            .is_empty()
    );
    assert!(head.series(&[eq("job", "api")], 2000, 3000).is_empty());
    assert!(
        head.label_values("nope", &[], i64::MIN, i64::MAX)
            .is_empty()
    );
}

#[test]
fn fingerprint_collisions_make_two_series() {
    let head = Head::new("t", &HeadConfig::default());
    let a = labels(&[("__name__", "a")]);
    let b = labels(&[("__name__", "b")]);
    let c = labels(&[("__name__", "c")]);
    let lim = unlimited();
    let mut keys = packed::KeyBuilder::new("t");
    // Every label set under one fingerprint.
    let mut get = |l: &Labels| {
        let key = packed::SeriesKey {
            fingerprint: 42,
            ..keys.key(l.as_slice())
        };
        head.get_or_create_by_key(key, &lim)
    };
    let (ra, created_a) = get(&a).expect("created");
    let (rb, created_b) = get(&b).expect("created");
    let (rc, _) = get(&c).expect("created");
    assert!(created_a && created_b);
    assert_ne!(ra, rb);
    assert_eq!(
        get(&b),
        Ok((rb, false)),
        "found again in the collision list"
    );
    assert_eq!(head.active_series(), 3);
    head.append_sample(ra, 1, 1.0, &lim).expect("appended");
    head.append_sample(rb, 1, 2.0, &lim).expect("appended");
    head.append_sample(rc, 1, 3.0, &lim).expect("appended");
    let got = read_all(&head, &[m(MatchOp::RegexMatch, "__name__", ".+")]);
    let values: Vec<(String, f64)> = got.iter().map(|(l, s)| (l.to_string(), s[0].v)).collect();
    assert_eq!(
        values,
        vec![
            ("a{}".into(), 1.0),
            ("b{}".into(), 2.0),
            ("c{}".into(), 3.0)
        ]
    );

    // Removing the first of the fingerprint promotes another.
    let removed = head.gc_idle_at(
        Instant::now() + Duration::from_secs(7200),
        Duration::from_secs(3600),
        |s| s.labels == a,
    );
    assert_eq!(removed, 1);
    assert_eq!(get(&b), Ok((rb, false)));
    assert_eq!(get(&c), Ok((rc, false)));
    let (ra2, created) = get(&a).expect("created");
    assert!(created && ra2 != ra, "a new series with a new ref");
}

#[test]
fn out_of_order_samples_merge_on_read() {
    let head = Head::new("t", &HeadConfig::default());
    let l = labels(&[("__name__", "x")]);
    let lim = with_ooo_window(100);
    push(&head, &l, &samples((0..10).map(|i| i * 20)), &lim);
    // 180 is the newest; 80..180 is the window.
    let ooo = [
        Sample { t: 95, v: 1.0 },
        Sample { t: 85, v: 2.0 },
        Sample { t: 175, v: 3.0 },
    ];
    let r = push(&head, &l, &ooo, &lim);
    assert_eq!(r.samples_appended, 3);
    let r = push(
        &head,
        &l,
        &[
            Sample { t: 95, v: 1.0 },   // duplicate of an out-of-order sample
            Sample { t: 100, v: 50.0 }, // in-order chunk has 100 with value 50
            Sample { t: 100, v: 7.0 },  // different value at a stored timestamp
            Sample { t: 95, v: 9.0 },   // different value at a buffered timestamp
            Sample { t: 79, v: 1.0 },   // outside the window
            Sample { t: 180, v: 90.0 }, // the newest sample again
        ],
        &lim,
    );
    assert_eq!(r.samples_appended, 0);
    assert_eq!(r.duplicates, 3);
    let errors: Vec<(i64, Rejection)> = r
        .rejected
        .iter()
        .map(|x| (x.timestamp, x.rejection))
        .collect();
    assert_eq!(
        errors,
        vec![
            (
                100,
                AppendError::DuplicateTimestampDifferentValue { t: 100 }.into()
            ),
            (
                95,
                AppendError::DuplicateTimestampDifferentValue { t: 95 }.into()
            ),
            (
                79,
                AppendError::TooOldForOooWindow {
                    t: 79,
                    min_valid_t: 80
                }
                .into()
            ),
        ]
    );
    let mut want = samples((0..10).map(|i| i * 20));
    want.extend(ooo);
    want.sort_by_key(|s| s.t);
    let got = read_all(&head, &[eq("__name__", "x")]);
    assert_eq!(got[0].1, want);

    // Without a window, older samples are out of order.
    let r = push(&head, &l, &[Sample { t: 170, v: 1.0 }], &unlimited());
    assert_eq!(
        r.rejected[0].rejection,
        Rejection::Sample(AppendError::OutOfOrder { t: 170, max_t: 180 })
    );
    assert_eq!(r.rejected[0].rejection.reason(), DiscardReason::OutOfOrder);
}

#[test]
fn out_of_order_buffer_becomes_a_chunk() {
    let config = HeadConfig {
        out_of_order_capacity: 4,
        ..HeadConfig::default()
    };
    let head = Head::new("t", &config);
    let l = labels(&[("__name__", "x")]);
    let lim = with_ooo_window(1_000_000);
    push(&head, &l, &samples([1000]), &lim);
    let ooo = samples([7, 3, 9, 1, 5, 2]);
    push(&head, &l, &ooo, &lim);
    assert_eq!(head.chunks_cut_total(), 1, "four buffered samples encoded");
    let got = head.query(&[eq("__name__", "x")], i64::MIN, i64::MAX);
    check_chunks(&got[0].chunks);
    assert_eq!(got[0].chunks.len(), 3, "compacted, buffered, open");
    // A sample at a timestamp of the compacted chunk is found there.
    let r = push(&head, &l, &[Sample { t: 3, v: 99.0 }], &lim);
    assert_eq!(r.rejected.len(), 1);
    let r = push(&head, &l, &samples([3]), &lim);
    assert_eq!(r.duplicates, 1);
    let got = read_all(&head, &[eq("__name__", "x")]);
    assert_eq!(got[0].1, samples([1, 2, 3, 5, 7, 9, 1000]));
    // Query ranges select the buffered samples too.
    let some = head.query(&[eq("__name__", "x")], 2, 2);
    assert_eq!(
        merge_chunks(&some[0].chunks, 2, 2).expect("valid"),
        samples([2])
    );
}

#[test]
fn series_limits_name_their_config_key() {
    let head = Head::new("t", &HeadConfig::default());
    let limits = Limits {
        max_series_per_tenant: 3,
        max_series_per_metric: 2,
        ..Limits::default()
    };
    let s = samples([1, 2]);
    let a1 = labels(&[("__name__", "a"), ("i", "1")]);
    let a2 = labels(&[("__name__", "a"), ("i", "2")]);
    let a3 = labels(&[("__name__", "a"), ("i", "3")]);
    let b1 = labels(&[("__name__", "b"), ("i", "1")]);
    let b2 = labels(&[("__name__", "b"), ("i", "2")]);
    let r = head.append_batch(
        &[
            (&a1, &s),
            (&a2, &s),
            (&a3, &s),
            (&b1, &s),
            (&b2, &s),
            (&a1, &s[1..]),
        ],
        &limits,
    );
    assert_eq!(r.series_created, 3);
    assert_eq!(r.samples_appended, 6);
    assert_eq!(r.duplicates, 1);
    let rejected: Vec<(usize, i64, DiscardReason)> = r
        .rejected
        .iter()
        .map(|x| (x.series_index, x.timestamp, x.rejection.reason()))
        .collect();
    assert_eq!(
        rejected,
        vec![
            (2, 1, DiscardReason::PerMetricSeriesLimit),
            (2, 2, DiscardReason::PerMetricSeriesLimit),
            (4, 1, DiscardReason::PerTenantSeriesLimit),
            (4, 2, DiscardReason::PerTenantSeriesLimit),
        ]
    );
    let per_metric = r.rejected[0].rejection.to_string();
    assert!(
        per_metric.contains("limits.max_series_per_metric"),
        "{per_metric}"
    );
    assert!(per_metric.contains(" 2 "), "{per_metric}");
    let per_tenant = r.rejected[2].rejection.to_string();
    assert!(
        per_tenant.contains("limits.max_series_per_tenant"),
        "{per_tenant}"
    );
    assert_eq!(
        head.get_or_create_series(&b2, &limits),
        Err(SeriesLimitError::PerTenant { limit: 3 })
    );
    // Existing series still take samples at the limit.
    let r = push(&head, &a1, &samples([3]), &limits);
    assert_eq!(r.samples_appended, 1, "{r:?}");
    // Zero means unlimited.
    assert!(head.get_or_create_series(&b2, &unlimited()).is_ok());
}

#[test]
fn gc_idle_removes_series_from_the_postings() {
    let head = Head::new("t", &HeadConfig::default());
    let a = labels(&[("__name__", "up"), ("job", "a")]);
    let b = labels(&[("__name__", "up"), ("job", "b")]);
    push(&head, &a, &samples([1, 2, 3]), &unlimited());
    push(&head, &b, &samples([1]), &unlimited());
    let empty_index = Head::new("t", &HeadConfig::default()).memory_estimate();
    let idle_for = Duration::from_secs(3600);
    let later = Instant::now() + Duration::from_secs(7200);

    assert_eq!(head.gc_idle(idle_for, |_| true), 0, "recently pushed");
    assert_eq!(head.gc_idle_at(later, idle_for, |_| false), 0, "not safe");
    let seen = std::sync::Mutex::new(Vec::new());
    let removed = head.gc_idle_at(later, idle_for, |s| {
        seen.lock()
            .expect("not poisoned")
            .push((s.labels.to_string(), s.time_range));
        s.labels == a
    });
    assert_eq!(removed, 1);
    let mut seen = seen.into_inner().expect("not poisoned");
    seen.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        seen,
        vec![
            (r#"up{job="a"}"#.to_string(), Some((1, 3))),
            (r#"up{job="b"}"#.to_string(), Some((1, 1))),
        ]
    );
    assert_eq!(
        names(&read_all(&head, &[eq("__name__", "up")])),
        vec![r#"up{job="b"}"#]
    );
    assert_eq!(head.label_values("job", &[], i64::MIN, i64::MAX), vec!["b"]);
    assert!(head.select(&[eq("job", "a")]).is_empty());
    assert_eq!(head.active_series(), 1);
    assert_eq!(head.series_removed_total(), 1);

    assert_eq!(head.gc_idle_at(later, idle_for, |_| true), 1);
    assert_eq!(head.active_series(), 0);
    assert!(head.label_names(&[], i64::MIN, i64::MAX).is_empty());
    assert_eq!(head.chunk_bytes(), 0);
    assert_eq!(head.memory_estimate(), empty_index, "symbols released");

    // The series comes back as a new one.
    let r = push(&head, &a, &samples([10]), &unlimited());
    assert_eq!(r.series_created, 1);
    assert_eq!(read_all(&head, &[eq("job", "a")])[0].1, samples([10]));
}

#[test]
fn concurrent_appends_to_overlapping_series() {
    let head = Arc::new(Head::new("t", &HeadConfig::default()));
    let series: Arc<Vec<Labels>> = Arc::new(
        (0..200)
            .map(|i| labels(&[("__name__", "m"), ("i", &i.to_string())]))
            .collect(),
    );
    let per_thread = 300;
    let threads = 4;
    let lim = with_ooo_window(1_000_000_000);
    std::thread::scope(|scope| {
        for k in 0..threads {
            let (head, series, lim) = (Arc::clone(&head), Arc::clone(&series), lim.clone());
            scope.spawn(move || {
                for step in 0..per_thread {
                    // Each thread writes its own timestamps to every series,
                    // in batches of 50 series, starting at a different series.
                    let s = [Sample {
                        t: step * threads + k,
                        v: k as f64,
                    }];
                    let order: Vec<&Labels> = series
                        .iter()
                        .cycle()
                        .skip(k as usize * 50)
                        .take(series.len())
                        .collect();
                    for batch in order.chunks(50) {
                        let batch: Vec<(&Labels, &[Sample])> =
                            batch.iter().map(|l| (*l, &s[..])).collect();
                        let r = head.append_batch(&batch, &lim);
                        assert!(r.rejected.is_empty(), "{:?}", r.rejected.first());
                    }
                }
            });
        }
    });
    let want: Vec<i64> = (0..per_thread * threads).collect();
    let got = read_all(&head, &[eq("__name__", "m")]);
    assert_eq!(got.len(), 200);
    for (l, s) in got {
        let ts: Vec<i64> = s.iter().map(|s| s.t).collect();
        assert_eq!(ts, want, "{l}");
        assert!(s.iter().all(|s| s.v == (s.t % threads) as f64));
    }
    assert_eq!(head.active_series(), 200);
    assert_eq!(
        head.samples_appended_total(),
        200 * (per_thread * threads) as u64
    );
}

#[test]
fn gc_racing_appends_keeps_the_head_consistent() {
    let head = Head::new("t", &HeadConfig::default());
    let series: Vec<Labels> = (0..100)
        .map(|i| labels(&[("__name__", &format!("m{}", i % 7)), ("i", &i.to_string())]))
        .collect();
    let lim = with_ooo_window(1_000_000);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let removed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for k in 0..3i64 {
            let (head, series, lim) = (&head, &series, &lim);
            scope.spawn(move || {
                for step in 0..200 {
                    let s = [Sample {
                        t: step * 3 + k,
                        v: 1.0,
                    }];
                    let batch: Vec<(&Labels, &[Sample])> =
                        series.iter().map(|l| (l, &s[..])).collect();
                    let r = head.append_batch(&batch, lim);
                    assert!(r.rejected.is_empty(), "{:?}", r.rejected.first());
                }
            });
        }
        scope.spawn(|| {
            // Everything looks idle an hour from now: series are removed
            // and recreated under the appenders' feet.
            let later = Instant::now() + Duration::from_secs(7200);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = head.gc_idle_at(later, Duration::from_secs(3600), |_| true);
                removed.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                std::thread::yield_now();
            }
        });
        // Let the appenders finish, then stop the collector.
        while head.samples_appended_total() < 3 * 200 * 100
            && removed.load(std::sync::atomic::Ordering::Relaxed) < 1_000_000
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(
        removed.into_inner() > 0,
        "the collector ran against the appenders"
    );
    let live = head.all_series();
    assert_eq!(live.len() as u64, head.active_series());
    let selected = head.select(&[m(MatchOp::RegexMatch, "__name__", ".+")]);
    assert_eq!(selected, live.iter().map(|(r, _)| *r).collect::<Vec<_>>());
    for (r, l) in &live {
        let matchers: Vec<Matcher> = l.iter().map(|l| eq(&l.name, &l.value)).collect();
        assert_eq!(head.select(&matchers), vec![*r], "{l}");
    }
    assert_eq!(
        head.series_created_total() - head.series_removed_total(),
        head.active_series()
    );
    // Removing everything returns every byte the counters track.
    head.gc_idle_at(
        Instant::now() + Duration::from_secs(7200),
        Duration::from_secs(3600),
        |_| true,
    );
    assert_eq!(head.active_series(), 0);
    assert_eq!(head.chunk_bytes(), 0);
    let est = head.memory_estimate();
    assert_eq!(
        (est.series_bytes, est.index_bytes, est.sample_bytes),
        (0, 0, 0),
        "{est:?}"
    );
}

#[test]
fn wal_api_replays_into_a_new_head() {
    let lim = with_ooo_window(1000);
    let head = Head::new("t", &HeadConfig::default());
    let a = labels(&[("__name__", "a"), ("x", "1")]);
    let b = labels(&[("__name__", "b")]);
    // What the ingester would log: series records, then samples by ref.
    let mut log: Vec<(SeriesRef, Labels)> = Vec::new();
    let mut samples_log: Vec<(SeriesRef, i64, f64)> = Vec::new();
    for (l, t) in [(&a, 10), (&b, 10), (&a, 20), (&a, 15), (&b, 5)] {
        let (r, created) = head.get_or_create_series(l, &lim).expect("within limits");
        if created {
            log.push((r, l.clone()));
        }
        samples_log.push((r, t, t as f64));
        let _ = head.append_sample(r, t, t as f64, &lim);
    }
    assert_eq!(log.len(), 2);
    assert_eq!(head.series_labels(log[0].0), Some(a.clone()));
    assert_eq!(head.all_series(), log);
    assert_eq!(
        head.append_sample(log[1].0, 5, 1.0, &lim),
        Err(HeadError::Append(
            AppendError::DuplicateTimestampDifferentValue { t: 5 }
        ))
    );
    assert_eq!(
        head.append_sample(log[1].0, 5, 5.0, &lim),
        Ok(Admission::Duplicate)
    );
    assert_eq!(
        head.append_sample(log[1].0, 11, 1.0, &lim),
        Ok(Admission::InOrder)
    );
    samples_log.push((log[1].0, 11, 1.0));
    let unknown = head.append_sample(SeriesRef(999), 1, 1.0, &lim);
    assert!(matches!(unknown, Err(HeadError::UnknownSeries { .. })));

    let replayed = Head::new("t", &HeadConfig::default());
    for (r, l) in &log {
        assert_eq!(replayed.create_series_with_ref(*r, l), Ok(*r));
        assert_eq!(replayed.create_series_with_ref(*r, l), Ok(*r), "idempotent");
    }
    for &(r, t, v) in &samples_log {
        let _ = replayed.append_sample(r, t, v, &lim);
    }
    let all = [m(MatchOp::RegexMatch, "__name__", ".+")];
    assert_eq!(read_all(&replayed, &all), read_all(&head, &all));

    // A ref taken by other labels is a conflict; known labels under another
    // ref map to the existing series.
    assert!(matches!(
        replayed.create_series_with_ref(log[0].0, &b),
        Err(HeadError::SeriesRefConflict { .. })
    ));
    assert_eq!(
        replayed.create_series_with_ref(SeriesRef(77), &b),
        Ok(log[1].0)
    );
    // New series get refs above every replayed one.
    replayed
        .create_series_with_ref(SeriesRef(100), &labels(&[("__name__", "c")]))
        .expect("created");
    let (r, created) = replayed
        .get_or_create_series(&labels(&[("__name__", "d")]), &lim)
        .expect("created");
    assert!(created && r > SeriesRef(100));
}

#[test]
fn empty_label_values_are_absent_labels() {
    let head = Head::new("t", &HeadConfig::default());
    let with_empty = labels(&[("__name__", "up"), ("job", "")]);
    let without = labels(&[("__name__", "up")]);
    push(&head, &with_empty, &samples([1]), &unlimited());
    let r = push(&head, &without, &samples([2]), &unlimited());
    assert_eq!(r.series_created, 0);
    let got = read_all(&head, &[eq("__name__", "up")]);
    assert_eq!(got, vec![(without, samples([1, 2]))]);
    assert_eq!(head.label_names(&[], i64::MIN, i64::MAX), vec!["__name__"]);
}

#[test]
fn memory_estimate_tracks_series_and_chunks() {
    let head = Head::new("t", &HeadConfig::default());
    assert_eq!(head.memory_estimate().bytes_per_series, 0.0);
    for i in 0..100 {
        let l = labels(&[("__name__", "m"), ("i", &i.to_string())]);
        push(
            &head,
            &l,
            &samples((0..240).map(|t| t * 15_000)),
            &unlimited(),
        );
    }
    let est = head.memory_estimate();
    assert_eq!(est.series, 100);
    assert!(est.sample_bytes >= head.chunk_bytes(), "{est:?}");
    assert_eq!(
        est.total_bytes,
        est.series_bytes + est.index_bytes + est.sample_bytes
    );
    assert!(
        est.bytes_per_series > 300.0 && est.bytes_per_series < 2048.0,
        "{est:?}"
    );
}

#[test]
fn config_defaults_and_validation() {
    let config: HeadConfig = serde_json::from_str("{}").expect("defaults");
    assert_eq!(config, HeadConfig::default());
    assert_eq!(config.max_samples_per_chunk, 120);
    assert_eq!(config.max_chunk_bytes, 1024);
    assert!(config.validate().is_ok());
    assert!(serde_json::from_str::<HeadConfig>(r#"{"max_samples": 1}"#).is_err());
    let bad = HeadConfig {
        max_samples_per_chunk: 70_000,
        ..HeadConfig::default()
    };
    let err = bad.validate().expect_err("too many samples");
    assert!(err.to_string().contains("max_samples_per_chunk"), "{err}");
}

#[test]
fn heads_are_per_tenant() {
    let heads = Heads::new(HeadConfig::default());
    assert!(heads.get("a").is_none());
    let a = heads.get_or_create("a");
    assert!(Arc::ptr_eq(&a, &heads.get_or_create("a")));
    let l = labels(&[("__name__", "up")]);
    push(&a, &l, &samples([1]), &unlimited());
    let b = heads.get_or_create("b");
    assert!(
        read_all(&b, &[eq("__name__", "up")]).is_empty(),
        "tenants are apart"
    );
    let tenants: Vec<String> = heads.all().into_iter().map(|(t, _)| t).collect();
    assert_eq!(tenants, vec!["a", "b"]);
    assert!(heads.remove("a").is_some());
    assert!(heads.get("a").is_none());
}

/// What the head should store, by the rules of `appendable` plus the
/// lookup of stored timestamps.
#[derive(Default)]
struct Model {
    samples: BTreeMap<i64, f64>,
    max_t: Option<i64>,
}

impl Model {
    /// Some(true): appended, Some(false): duplicate, None: refused.
    fn append(&mut self, t: i64, v: f64, window: i64) -> Option<bool> {
        if let Some(max_t) = self.max_t
            && t < max_t
            && (window == 0 || t < max_t - window)
        {
            return None;
        }
        match self.samples.get(&t) {
            Some(stored) if stored.to_bits() == v.to_bits() => Some(false),
            Some(_) => None,
            None => {
                self.samples.insert(t, v);
                self.max_t = Some(self.max_t.map_or(t, |m| m.max(t)));
                Some(true)
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn stores_exactly_the_accepted_samples(
        ops in prop::collection::vec((0usize..3, 0i64..80, 0u8..3, 1usize..4), 1..200),
        window in prop_oneof![Just(0i64), 1i64..40],
        max_samples in 1usize..10,
        ooo_capacity in 1usize..6,
    ) {
        let config = HeadConfig {
            max_samples_per_chunk: max_samples,
            out_of_order_capacity: ooo_capacity,
            ..HeadConfig::default()
        };
        let head = Head::new("t", &config);
        let lim = with_ooo_window(window as u64);
        let series: Vec<Labels> = (0..3).map(|i| labels(&[("__name__", "p"), ("s", &i.to_string())])).collect();
        let mut models: Vec<Model> = (0..3).map(|_| Model::default()).collect();
        // Ops go in small batches of consecutive samples of one series.
        let mut appended = 0u64;
        for (s, t, v, n) in ops {
            let batch: Vec<Sample> = (0..n as i64)
                .map(|k| Sample { t: t + k * 3, v: f64::from(v) + k as f64 })
                .collect();
            let (mut want_appended, mut want_duplicates, mut want_refused) = (0u64, 0u64, Vec::new());
            for sample in &batch {
                match models[s].append(sample.t, sample.v, window) {
                    Some(true) => want_appended += 1,
                    Some(false) => want_duplicates += 1,
                    None => want_refused.push(sample.t),
                }
            }
            let r = head.append_batch(&[(&series[s], &batch)], &lim);
            prop_assert_eq!(r.samples_appended, want_appended);
            prop_assert_eq!(r.duplicates, want_duplicates);
            let refused: Vec<i64> = r.rejected.iter().map(|x| x.timestamp).collect();
            prop_assert_eq!(refused, want_refused);
            appended += want_appended;
        }
        prop_assert_eq!(head.samples_appended_total(), appended);
        let got = head.query(&[eq("__name__", "p")], i64::MIN, i64::MAX);
        for sc in &got {
            check_chunks(&sc.chunks);
        }
        let got: BTreeMap<String, Vec<(i64, u64)>> = got
            .into_iter()
            .map(|sc| {
                let samples = merge_chunks(&sc.chunks, i64::MIN, i64::MAX).expect("valid");
                (sc.labels.to_string(), samples.iter().map(|s| (s.t, s.v.to_bits())).collect())
            })
            .collect();
        for (i, model) in models.iter().enumerate() {
            let want: Vec<(i64, u64)> = model.samples.iter().map(|(&t, v)| (t, v.to_bits())).collect();
            let key = series[i].to_string();
            prop_assert_eq!(got.get(&key).cloned().unwrap_or_default(), want, "{}", key);
        }
    }
}
