//! The table manager: keeps each schema period's tables in step with time.
//! Every `poll_interval` it creates the table of now and, within
//! `creation_grace_period` of the next table's start, that one too, so no
//! write waits on table creation; and with retention on it deletes every
//! table whose whole time range ended more than `retention_period` ago,
//! which is how retention frees storage: whole tables, never row by row.
//!
//! Per-tenant `limits.retention_period` hides older samples from queries;
//! `table_manager.retention_period` should be at least the longest of them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, TableClient, TableDesc};
use crate::model::now_ms;
use crate::service::{BackgroundTask, Service, ServiceError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableManagerConfig {
    /// Delete tables past `retention_period`.
    pub retention_deletes_enabled: bool,
    /// Tables whose time range ended longer ago than this are deleted (0s:
    /// keep everything).
    #[serde(with = "humantime_serde")]
    pub retention_period: Duration,
    /// The next table is created this long before it starts.
    #[serde(with = "humantime_serde")]
    pub creation_grace_period: Duration,
    /// How often tables are checked.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for TableManagerConfig {
    fn default() -> Self {
        TableManagerConfig {
            retention_deletes_enabled: false,
            retention_period: Duration::ZERO,
            creation_grace_period: Duration::from_secs(10 * 60),
            poll_interval: Duration::from_secs(2 * 60),
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TablesReport {
    pub created: Vec<String>,
    pub deleted: Vec<String>,
}

pub struct TableManager {
    inner: Arc<Inner>,
    task: BackgroundTask,
}

struct Inner {
    config: TableManagerConfig,
    store: Arc<Store>,
    desc: TableDesc,
}

/// A table named `prefix` + number, if `name` is one.
fn table_number(name: &str, prefix: &str) -> Option<i64> {
    name.strip_prefix(prefix)?.parse().ok()
}

impl TableManager {
    pub fn new(config: TableManagerConfig, store: Arc<Store>, desc: TableDesc) -> TableManager {
        TableManager {
            inner: Arc::new(Inner {
                config,
                store,
                desc,
            }),
            task: BackgroundTask::default(),
        }
    }

    /// One pass as of `now_ms`.
    pub async fn sync(&self, now_ms: i64) -> Result<TablesReport, StoreError> {
        self.inner.sync(now_ms).await
    }
}

impl Inner {
    async fn sync(&self, now_ms: i64) -> Result<TablesReport, StoreError> {
        let mut report = TablesReport::default();
        let schema = self.store.schema();
        let periods = schema.periods();
        let retention_ms = self.config.retention_period.as_millis() as i64;
        let deleting = self.config.retention_deletes_enabled && retention_ms > 0;
        for clients in self.store.table_clients() {
            let period = &periods[clients.period];
            let end_ms = periods
                .get(clients.period + 1)
                .map_or(i64::MAX, |next| next.from_ms);
            let table_ms = period.table_ms();
            let pairs: [(&str, Arc<dyn TableClient>); 2] = [
                (
                    &period.config.index_prefix,
                    clients.index.clone() as Arc<dyn TableClient>,
                ),
                (
                    &period.config.chunks_prefix,
                    clients.objects.clone() as Arc<dyn TableClient>,
                ),
            ];
            for (prefix, client) in pairs {
                let existing = client.list_tables().await?;
                // The table of now and, close to its start, the next one,
                // when they belong to this period.
                let grace = self.config.creation_grace_period.as_millis() as i64;
                let mut wanted = vec![now_ms.div_euclid(table_ms)];
                let next = now_ms.div_euclid(table_ms) + 1;
                if next * table_ms - grace <= now_ms {
                    wanted.push(next);
                }
                for n in wanted {
                    let (start, end) = (n * table_ms, (n + 1) * table_ms);
                    if end <= period.from_ms || start >= end_ms {
                        continue;
                    }
                    let name = format!("{prefix}{n}");
                    if !existing.contains(&name) {
                        client.create_table(&name, &self.desc).await?;
                        report.created.push(name);
                    }
                }
                if deleting {
                    for name in &existing {
                        let Some(n) = table_number(name, prefix) else {
                            continue;
                        };
                        let table_end = (n + 1) * table_ms;
                        if table_end < now_ms - retention_ms {
                            client.delete_table(name).await?;
                            report.deleted.push(name.clone());
                        }
                    }
                }
            }
        }
        Ok(report)
    }
}

#[async_trait]
impl Service for TableManager {
    fn name(&self) -> &'static str {
        "table-manager"
    }

    async fn start(&self) -> Result<(), ServiceError> {
        let report = self
            .sync(now_ms())
            .await
            .map_err(|e| format!("table manager: {e}"))?;
        if !report.created.is_empty() {
            tracing::info!(tables = ?report.created, "created tables");
        }
        let interval = self.inner.config.poll_interval.max(Duration::from_secs(1));
        let manager = self.inner.clone();
        self.task.spawn_every(interval, interval, move || {
            let manager = manager.clone();
            async move {
                match manager.sync(now_ms()).await {
                    Ok(report) => {
                        if !report.created.is_empty() {
                            tracing::info!(tables = ?report.created, "created tables");
                        }
                        if !report.deleted.is_empty() {
                            tracing::info!(tables = ?report.deleted, "deleted tables past retention");
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "table manager pass failed; retrying at the next poll"),
                }
            }
        });
        Ok(())
    }

    async fn stop(&self) -> Result<(), ServiceError> {
        self.task.stop().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::StorageConfig;

    const DAY: i64 = 86_400_000;
    const WEEK: i64 = 7 * DAY;

    #[tokio::test]
    async fn creates_ahead_and_deletes_past_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = StorageConfig::in_dir(dir.path());
        let store = Arc::new(
            Store::new(
                &storage,
                &crate::store::SchemaConfig::default(),
                &Metrics::new(),
            )
            .expect("store"),
        );
        let tm = TableManager::new(
            TableManagerConfig {
                retention_deletes_enabled: true,
                retention_period: Duration::from_millis(3 * WEEK as u64),
                ..TableManagerConfig::default()
            },
            store.clone(),
            TableDesc::default(),
        );
        // Mid-week: this week's tables only.
        let week = 2900;
        let report = tm.sync(week * WEEK + 3 * DAY).await.expect("sync");
        let mut created = report.created.clone();
        created.sort();
        assert_eq!(
            created,
            vec![format!("chunks_{week}"), format!("index_{week}")]
        );
        // Five minutes before the next week: that one too.
        let report = tm.sync((week + 1) * WEEK - 300_000).await.expect("sync");
        assert_eq!(report.created.len(), 2);
        // Seven weeks later, the two old weeks are past 3 weeks of retention.
        let report = tm.sync((week + 7) * WEEK + DAY).await.expect("sync");
        let mut deleted = report.deleted.clone();
        deleted.sort();
        assert_eq!(
            deleted,
            vec![
                format!("chunks_{week}"),
                format!("chunks_{}", week + 1),
                format!("index_{week}"),
                format!("index_{}", week + 1),
            ]
        );
        let clients = store.table_clients();
        let left = clients[0].index.list_tables().await.expect("list");
        assert_eq!(left, vec![format!("index_{}", week + 7)]);
    }
}
