//! Keeps this process's view of a ring current: lists the ring's keys, then
//! watches them, rebuilding an immutable [`RingView`] after every change.
//!
//! When the KV store is unreachable the last view stays in service and the
//! client retries with backoff; it is ready once it has listed the ring once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio_util::sync::CancellationToken;

use super::desc::{InstanceDesc, InstanceState, now_ms};
use super::kv::{KvError, KvStore, WatchEvent};
use super::read::RingView;
use crate::metrics::Metrics;
use crate::service::{BackgroundTask, Service, ServiceError};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A member and the KV revision its descriptor was read at.
#[derive(Clone, Debug)]
pub struct Member {
    pub desc: InstanceDesc,
    pub revision: i64,
}

struct Shared {
    kv: Arc<dyn KvStore>,
    key_prefix: String,
    heartbeat_timeout_ms: i64,
    members: Mutex<BTreeMap<String, Member>>,
    view: ArcSwap<RingView>,
    synced: AtomicBool,
    watch_restarts: Counter,
}

/// Watches one ring in the KV store.
pub struct RingClient {
    shared: Arc<Shared>,
    name: &'static str,
    task: BackgroundTask,
}

impl RingClient {
    /// `key_prefix` selects the ring (e.g. [`super::INGESTER_RING_KEY`]).
    pub fn new(
        name: &'static str,
        kv: Arc<dyn KvStore>,
        key_prefix: &str,
        heartbeat_timeout: Duration,
        metrics: &Metrics,
    ) -> Arc<RingClient> {
        let heartbeat_timeout_ms = heartbeat_timeout.as_millis() as i64;
        let shared = Arc::new(Shared {
            kv,
            key_prefix: key_prefix.to_string(),
            heartbeat_timeout_ms,
            members: Mutex::new(BTreeMap::new()),
            view: ArcSwap::from_pointee(RingView::new(Vec::new(), heartbeat_timeout_ms)),
            synced: AtomicBool::new(false),
            watch_restarts: Counter::default(),
        });
        let ring = key_prefix.trim_end_matches('/').to_string();
        metrics.with_registry(|registry| {
            let sub = registry.sub_registry_with_label((
                std::borrow::Cow::Borrowed("ring"),
                std::borrow::Cow::Owned(ring),
            ));
            sub.register(
                "strata_ring_watch_restarts",
                "Times the ring watch was restarted after a KV store error.",
                shared.watch_restarts.clone(),
            );
            sub.register_collector(Box::new(MembersCollector {
                shared: shared.clone(),
            }));
        });
        Arc::new(RingClient {
            shared,
            name,
            task: BackgroundTask::default(),
        })
    }

    /// The current view; cheap, lock-free.
    pub fn view(&self) -> Arc<RingView> {
        self.shared.view.load_full()
    }

    pub fn kv(&self) -> &Arc<dyn KvStore> {
        &self.shared.kv
    }

    pub fn key_prefix(&self) -> &str {
        &self.shared.key_prefix
    }

    pub fn heartbeat_timeout_ms(&self) -> i64 {
        self.shared.heartbeat_timeout_ms
    }

    pub fn member(&self, id: &str) -> Option<Member> {
        self.shared.members.lock().get(id).cloned()
    }

    pub fn members(&self) -> Vec<Member> {
        self.shared.members.lock().values().cloned().collect()
    }

    /// Lists the ring now (bypassing the watch), e.g. before choosing tokens.
    pub async fn refresh(&self) -> Result<i64, KvError> {
        self.shared.resync().await
    }

    /// The KV key of a member.
    pub fn member_key(&self, id: &str) -> String {
        format!("{}{}", self.shared.key_prefix, id)
    }
}

/// A KV entry as a member, or `None` (logged) when malformed.
fn member(entry: &super::kv::KvEntry) -> Option<Member> {
    match InstanceDesc::decode(&entry.key, &entry.value) {
        Ok(desc) => Some(Member {
            desc,
            revision: entry.revision,
        }),
        Err(err) => {
            tracing::warn!(error = %err, "skipping malformed ring entry");
            None
        }
    }
}

impl Shared {
    async fn resync(&self) -> Result<i64, KvError> {
        let snapshot = self.kv.list(&self.key_prefix).await?;
        let mut members = BTreeMap::new();
        for entry in &snapshot.entries {
            if let Some(member) = member(entry) {
                members.insert(member.desc.id.clone(), member);
            }
        }
        *self.members.lock() = members;
        self.rebuild();
        self.synced.store(true, Ordering::Release);
        Ok(snapshot.revision)
    }

    fn apply(&self, events: Vec<WatchEvent>) {
        {
            let mut members = self.members.lock();
            for event in events {
                match event {
                    WatchEvent::Put(entry) => {
                        if let Some(member) = member(&entry) {
                            members.insert(member.desc.id.clone(), member);
                        }
                    }
                    WatchEvent::Delete { key, .. } => {
                        let id = key.strip_prefix(&self.key_prefix).unwrap_or(&key);
                        members.remove(id);
                    }
                }
            }
        }
        self.rebuild();
    }

    fn rebuild(&self) {
        let instances: Vec<InstanceDesc> = self
            .members
            .lock()
            .values()
            .map(|member| member.desc.clone())
            .collect();
        self.view.store(Arc::new(RingView::new(
            instances,
            self.heartbeat_timeout_ms,
        )));
    }

    /// List, then watch from the listed revision; on any error, back off and
    /// start over. Returns when cancelled.
    async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                result = self.sync_and_watch() => result,
            };
            if let Err(err) = result {
                self.watch_restarts.inc();
                tracing::warn!(error = %err, ring = %self.key_prefix, backoff = ?backoff, "ring watch failed; keeping the last ring and retrying");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn sync_and_watch(&self) -> Result<(), KvError> {
        let revision = self.resync().await?;
        let mut stream = self.kv.watch_prefix(&self.key_prefix, revision).await?;
        while let Some(batch) = stream.next().await {
            self.apply(batch?);
        }
        Ok(())
    }
}

#[async_trait]
impl Service for RingClient {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn start(&self) -> Result<(), ServiceError> {
        // Try once synchronously so a healthy KV store gives a full ring at
        // start; otherwise the background task keeps trying.
        if let Err(err) = self.shared.resync().await {
            tracing::warn!(error = %err, "cannot read the ring yet; retrying in the background");
        }
        let shared = self.shared.clone();
        self.task.spawn(|cancel| shared.run(cancel));
        Ok(())
    }

    async fn stop(&self) -> Result<(), ServiceError> {
        self.task.stop().await;
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        if self.shared.synced.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err("the ring has not been read from the KV store yet".to_string())
        }
    }
}

/// `strata_ring_members{state}` from the current view, at scrape time.
struct MembersCollector {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MembersCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MembersCollector")
    }
}

impl Collector for MembersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = now_ms();
        let members = self.shared.members.lock();
        let mut counts: BTreeMap<&'static str, i64> = InstanceState::ALL
            .iter()
            .map(|s| (s.as_str(), 0))
            .chain([("Unhealthy", 0)])
            .collect();
        for member in members.values() {
            let key = if member
                .desc
                .is_heartbeat_fresh(now, self.shared.heartbeat_timeout_ms)
            {
                member.desc.state.as_str()
            } else {
                "Unhealthy"
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        let mut family = encoder.encode_descriptor(
            "strata_ring_members",
            "Members of the ring by state; members with a stale heartbeat count as Unhealthy.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (state, count) in counts {
            let gauge = ConstGauge::new(count);
            gauge.encode(family.encode_family(&[("state", state)])?)?;
        }
        Ok(())
    }
}
