//! De-duplication of Prometheus HA pairs, as Cortex's HA tracker.
//!
//! Two Prometheus servers scraping the same targets carry the same `cluster`
//! label and different `__replica__` labels. Per tenant and cluster one
//! replica is elected and its choice kept in the KV store (key
//! `ha/<tenant>/<cluster>`), so every distributor agrees; samples from the
//! other replica are accepted and dropped. The elected replica refreshes its
//! timestamp every `update_timeout`; when it has sent nothing for
//! `failover_timeout`, the next replica that writes takes over.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::ring::kv::{Expect, KvError, KvStore};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaTrackerConfig {
    /// Track HA pairs (tenants opt in with limits.accept_ha_samples).
    pub enabled: bool,
    /// How often the elected replica's timestamp is written to the KV store.
    #[serde(with = "humantime_serde")]
    pub update_timeout: Duration,
    /// After this long without samples from the elected replica, another takes over.
    #[serde(with = "humantime_serde")]
    pub failover_timeout: Duration,
}

impl Default for HaTrackerConfig {
    fn default() -> Self {
        HaTrackerConfig {
            enabled: false,
            update_timeout: Duration::from_secs(15),
            failover_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Elected {
    replica: String,
    received_at_ms: i64,
}

#[derive(Clone, Debug)]
struct Cached {
    elected: Elected,
    fetched_at_ms: i64,
}

/// What to do with a request from a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaDecision {
    Accept,
    /// Not the elected replica: answer 202 and store nothing.
    Drop,
}

pub struct HaTracker {
    kv: Arc<dyn KvStore>,
    config: HaTrackerConfig,
    cache: Mutex<HashMap<(String, String), Cached>>,
}

/// How long a cached election is trusted before it is read again.
const CACHE_TTL_MS: i64 = 1000;

impl HaTracker {
    pub fn new(kv: Arc<dyn KvStore>, config: HaTrackerConfig) -> HaTracker {
        HaTracker {
            kv,
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn key(tenant: &str, cluster: &str) -> String {
        format!("ha/{tenant}/{cluster}")
    }

    /// Decides about a request from `replica` of `cluster`, at `now_ms`.
    pub async fn check(
        &self,
        tenant: &str,
        cluster: &str,
        replica: &str,
        now_ms: i64,
    ) -> Result<HaDecision, KvError> {
        let cache_key = (tenant.to_string(), cluster.to_string());
        let update_ms = self.config.update_timeout.as_millis() as i64;
        let failover_ms = self.config.failover_timeout.as_millis() as i64;
        // Fast path: we are the elected replica and refreshed recently.
        if let Some(cached) = self.cache.lock().get(&cache_key).cloned() {
            let fresh = now_ms - cached.fetched_at_ms <= CACHE_TTL_MS;
            if cached.elected.replica == replica
                && now_ms - cached.elected.received_at_ms < update_ms
            {
                return Ok(HaDecision::Accept);
            }
            if fresh
                && cached.elected.replica != replica
                && now_ms - cached.elected.received_at_ms <= failover_ms
            {
                return Ok(HaDecision::Drop);
            }
        }
        let key = HaTracker::key(tenant, cluster);
        for _ in 0..5 {
            let current = self.kv.get(&key).await?;
            let parsed = current.as_ref().and_then(|entry| {
                serde_json::from_slice::<Elected>(&entry.value)
                    .ok()
                    .map(|e| (e, entry.revision))
            });
            let expect = match (&current, &parsed) {
                (None, _) => Expect::Absent,
                // An unreadable record is replaced.
                (Some(entry), None) => Expect::Revision(entry.revision),
                (Some(_), Some((elected, revision))) => {
                    if elected.replica == replica {
                        Expect::Revision(*revision)
                    } else if now_ms - elected.received_at_ms > failover_ms {
                        tracing::info!(tenant, cluster, from = %elected.replica, to = replica, "HA pair fails over");
                        Expect::Revision(*revision)
                    } else {
                        self.cache.lock().insert(
                            cache_key.clone(),
                            Cached {
                                elected: elected.clone(),
                                fetched_at_ms: now_ms,
                            },
                        );
                        return Ok(HaDecision::Drop);
                    }
                }
            };
            let elected = Elected {
                replica: replica.to_string(),
                received_at_ms: now_ms,
            };
            let value =
                serde_json::to_vec(&elected).expect("invariant: the election record serializes");
            if self.kv.compare_and_swap(&key, expect, Some(value)).await? {
                self.cache.lock().insert(
                    cache_key,
                    Cached {
                        elected,
                        fetched_at_ms: now_ms,
                    },
                );
                return Ok(HaDecision::Accept);
            }
            // Another distributor changed it first: read again and decide.
        }
        Ok(HaDecision::Drop)
    }

    /// The elected replica of a cluster, for tests and status pages.
    pub async fn elected(&self, tenant: &str, cluster: &str) -> Result<Option<String>, KvError> {
        Ok(self
            .kv
            .get(&HaTracker::key(tenant, cluster))
            .await?
            .and_then(|entry| serde_json::from_slice::<Elected>(&entry.value).ok())
            .map(|e| e.replica))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::kv::memory::MemoryKv;

    fn tracker(kv: &MemoryKv) -> HaTracker {
        HaTracker::new(
            Arc::new(kv.clone()),
            HaTrackerConfig {
                enabled: true,
                update_timeout: Duration::from_secs(15),
                failover_timeout: Duration::from_secs(30),
            },
        )
    }

    #[tokio::test]
    async fn first_replica_wins_and_the_other_is_dropped() {
        let kv = MemoryKv::new();
        let a = tracker(&kv);
        let b = tracker(&kv); // a second distributor, same KV
        let t0 = 1_000_000;
        assert_eq!(
            a.check("t", "c", "r1", t0).await.expect("kv"),
            HaDecision::Accept
        );
        assert_eq!(
            b.check("t", "c", "r2", t0 + 10).await.expect("kv"),
            HaDecision::Drop
        );
        assert_eq!(
            b.check("t", "c", "r1", t0 + 20).await.expect("kv"),
            HaDecision::Accept
        );
        // Other clusters and tenants are independent.
        assert_eq!(
            b.check("t", "d", "r2", t0).await.expect("kv"),
            HaDecision::Accept
        );
        assert_eq!(
            b.check("u", "c", "r2", t0).await.expect("kv"),
            HaDecision::Accept
        );
        assert_eq!(
            a.elected("t", "c").await.expect("kv").as_deref(),
            Some("r1")
        );
    }

    #[tokio::test]
    async fn fails_over_when_the_elected_replica_goes_quiet() {
        let kv = MemoryKv::new();
        let a = tracker(&kv);
        let t0 = 1_000_000;
        assert_eq!(
            a.check("t", "c", "r1", t0).await.expect("kv"),
            HaDecision::Accept
        );
        assert_eq!(
            a.check("t", "c", "r2", t0 + 29_000).await.expect("kv"),
            HaDecision::Drop
        );
        assert_eq!(
            a.check("t", "c", "r2", t0 + 31_000).await.expect("kv"),
            HaDecision::Accept
        );
        assert_eq!(
            a.check("t", "c", "r1", t0 + 32_000).await.expect("kv"),
            HaDecision::Drop
        );
        assert_eq!(
            a.elected("t", "c").await.expect("kv").as_deref(),
            Some("r2")
        );
    }

    #[tokio::test]
    async fn elected_replica_refreshes_its_timestamp() {
        let kv = MemoryKv::new();
        let a = tracker(&kv);
        let t0 = 1_000_000;
        for step in 0..10 {
            // r1 keeps writing every 10 s: it stays elected past the failover timeout.
            assert_eq!(
                a.check("t", "c", "r1", t0 + step * 10_000)
                    .await
                    .expect("kv"),
                HaDecision::Accept
            );
        }
        assert_eq!(
            a.check("t", "c", "r2", t0 + 95_000).await.expect("kv"),
            HaDecision::Drop
        );
    }
}
