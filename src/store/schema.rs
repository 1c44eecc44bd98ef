//! The schema: which backends and table layout hold the data of each time
//! range. An operator changes backend or layout from a date on by adding a
//! period; data written before that date stays where it is and is still
//! read from there.
//!
//! Time is cut two ways:
//! - **tables**: each period's index (and chunks) go into one table per
//!   `table_period` (default a week), named `prefix` + the table number
//!   (`t / table_period`), so retention drops whole tables;
//! - **buckets**: inside a table, index rows are grouped per `bucket`
//!   (default a day), so a query reads only the days it covers. A chunk
//!   spanning several buckets is indexed in each.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One period of the schema: from its date (UTC midnight) until the next
/// period's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeriodConfig {
    /// First day of the period, `YYYY-MM-DD` (UTC).
    pub from: String,
    /// Where chunks go: `filesystem`, `s3` or `cassandra`.
    pub chunks: ChunkBackend,
    /// Where the index goes: `embedded`, `cassandra` or `dynamodb`.
    pub index: IndexBackend,
    /// Table name prefix of the index tables.
    pub index_prefix: String,
    /// Table name prefix of the chunk tables (Cassandra) or key prefix
    /// (filesystem, S3).
    pub chunks_prefix: String,
    /// Span of one table.
    #[serde(with = "humantime_serde")]
    pub table_period: Duration,
    /// Span of one index bucket; divides `table_period`.
    #[serde(with = "humantime_serde")]
    pub bucket: Duration,
}

impl Default for PeriodConfig {
    fn default() -> Self {
        PeriodConfig {
            from: "2020-01-01".to_string(),
            chunks: ChunkBackend::Filesystem,
            index: IndexBackend::Embedded,
            index_prefix: "index_".to_string(),
            chunks_prefix: "chunks_".to_string(),
            table_period: Duration::from_secs(7 * 24 * 3600),
            bucket: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkBackend {
    #[default]
    Filesystem,
    S3,
    Cassandra,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexBackend {
    #[default]
    Embedded,
    Cassandra,
    Dynamodb,
}

/// The periods, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaConfig {
    pub periods: Vec<PeriodConfig>,
}

impl Default for SchemaConfig {
    fn default() -> Self {
        SchemaConfig {
            periods: vec![PeriodConfig::default()],
        }
    }
}

/// A validated period with its start in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Period {
    pub from_ms: i64,
    pub config: PeriodConfig,
    table_ms: i64,
    bucket_ms: i64,
}

impl Period {
    pub fn index_table(&self, t: i64) -> String {
        format!(
            "{}{}",
            self.config.index_prefix,
            t.div_euclid(self.table_ms)
        )
    }

    pub fn chunk_table(&self, t: i64) -> String {
        format!(
            "{}{}",
            self.config.chunks_prefix,
            t.div_euclid(self.table_ms)
        )
    }

    /// The bucket number of `t`.
    pub fn bucket(&self, t: i64) -> i64 {
        t.div_euclid(self.bucket_ms)
    }

    pub fn bucket_ms(&self) -> i64 {
        self.bucket_ms
    }

    pub fn table_ms(&self) -> i64 {
        self.table_ms
    }
}

/// The schema, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    periods: Vec<Period>,
}

/// One bucket of one period: where its index rows live.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BucketRef {
    /// Index of the period in the schema.
    pub period: usize,
    pub table: String,
    pub bucket: i64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SchemaError {
    #[error("schema.periods is empty: at least one period is needed")]
    Empty,
    #[error("schema.periods[{index}].from: {value:?} is not a date YYYY-MM-DD")]
    BadDate { index: usize, value: String },
    #[error("schema.periods[{index}].from: periods must be in increasing order of their dates")]
    NotIncreasing { index: usize },
    #[error(
        "schema.periods[{index}]: bucket ({bucket:?}) must be at least a minute and divide table_period ({table_period:?})"
    )]
    BadBucket {
        index: usize,
        bucket: Duration,
        table_period: Duration,
    },
}

impl Schema {
    pub fn new(config: &SchemaConfig) -> Result<Schema, SchemaError> {
        if config.periods.is_empty() {
            return Err(SchemaError::Empty);
        }
        let mut periods: Vec<Period> = Vec::with_capacity(config.periods.len());
        for (index, p) in config.periods.iter().enumerate() {
            let from_ms = parse_date_ms(&p.from).ok_or_else(|| SchemaError::BadDate {
                index,
                value: p.from.clone(),
            })?;
            if let Some(prev) = periods.last()
                && from_ms <= prev.from_ms
            {
                return Err(SchemaError::NotIncreasing { index });
            }
            let table_ms = p.table_period.as_millis() as i64;
            let bucket_ms = p.bucket.as_millis() as i64;
            if bucket_ms < 60_000 || table_ms < bucket_ms || table_ms % bucket_ms != 0 {
                return Err(SchemaError::BadBucket {
                    index,
                    bucket: p.bucket,
                    table_period: p.table_period,
                });
            }
            periods.push(Period {
                from_ms,
                config: p.clone(),
                table_ms,
                bucket_ms,
            });
        }
        Ok(Schema { periods })
    }

    pub fn periods(&self) -> &[Period] {
        &self.periods
    }

    /// The period holding `t` (the first one for times before it).
    pub fn period_index(&self, t: i64) -> usize {
        self.periods
            .iter()
            .rposition(|p| p.from_ms <= t)
            .unwrap_or(0)
    }

    pub fn period(&self, t: i64) -> &Period {
        &self.periods[self.period_index(t)]
    }

    /// Every bucket overlapping `[mint, maxt]`, in time order, each in the
    /// period that holds it.
    pub fn buckets(&self, mint: i64, maxt: i64) -> Vec<BucketRef> {
        let mut out = Vec::new();
        if maxt < mint {
            return out;
        }
        for (i, p) in self.periods.iter().enumerate() {
            let start = if i == 0 { i64::MIN } else { p.from_ms };
            let end = self
                .periods
                .get(i + 1)
                .map(|n| n.from_ms - 1)
                .unwrap_or(i64::MAX);
            let lo = mint.max(start);
            let hi = maxt.min(end);
            if lo > hi {
                continue;
            }
            for b in p.bucket(lo)..=p.bucket(hi) {
                out.push(BucketRef {
                    period: i,
                    table: p.index_table(b * p.bucket_ms),
                    bucket: b,
                });
            }
        }
        out
    }
}

/// Milliseconds of UTC midnight of a `YYYY-MM-DD` date.
pub fn parse_date_ms(s: &str) -> Option<i64> {
    let mut parts = s.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn dates_parse_to_utc_midnight() {
        assert_eq!(parse_date_ms("1970-01-01"), Some(0));
        assert_eq!(parse_date_ms("2020-01-01"), Some(1_577_836_800_000));
        assert_eq!(parse_date_ms("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(parse_date_ms("2024-13-01"), None);
        assert_eq!(parse_date_ms("yesterday"), None);
    }

    #[test]
    fn buckets_follow_periods() {
        let schema = Schema::new(&SchemaConfig {
            periods: vec![
                PeriodConfig::default(),
                PeriodConfig {
                    from: "2024-01-01".to_string(),
                    index: IndexBackend::Cassandra,
                    index_prefix: "v2_".to_string(),
                    ..PeriodConfig::default()
                },
            ],
        })
        .expect("valid schema");
        let switch = parse_date_ms("2024-01-01").expect("date");
        let buckets = schema.buckets(switch - DAY - 1, switch + 10);
        assert_eq!(buckets.len(), 3);
        assert_eq!(buckets[0].period, 0);
        assert_eq!(buckets[1].period, 0);
        assert_eq!(buckets[2].period, 1);
        assert!(buckets[2].table.starts_with("v2_"));
        assert_eq!(buckets[2].bucket, switch / DAY);
        assert_eq!(
            schema.period(switch - 1).config.index,
            IndexBackend::Embedded
        );
        assert_eq!(schema.period(switch).config.index, IndexBackend::Cassandra);
        // Weekly tables: 7 days of buckets share one table name.
        let monday = (switch / (7 * DAY) + 1) * 7 * DAY;
        let week = schema.buckets(monday, monday + 6 * DAY);
        assert_eq!(week.len(), 7);
        assert!(week.iter().all(|b| b.table == week[0].table));
    }

    #[test]
    fn bad_schemas_are_refused() {
        assert_eq!(
            Schema::new(&SchemaConfig { periods: vec![] }),
            Err(SchemaError::Empty)
        );
        let two_same = SchemaConfig {
            periods: vec![PeriodConfig::default(), PeriodConfig::default()],
        };
        assert_eq!(
            Schema::new(&two_same),
            Err(SchemaError::NotIncreasing { index: 1 })
        );
        let bad_bucket = SchemaConfig {
            periods: vec![PeriodConfig {
                bucket: Duration::from_secs(5 * 3600),
                ..PeriodConfig::default()
            }],
        };
        assert!(matches!(
            Schema::new(&bad_bucket),
            Err(SchemaError::BadBucket { .. })
        ));
    }
}
