//! Registers this process as a ring member and keeps it there.
//!
//! `start` claims tokens (reusing the ones a previous run of the same
//! instance id left in the ring, so a restarted ingester gets its series
//! back), writes the descriptor as JOINING and starts heartbeating; the owner
//! moves it to ACTIVE when ready. Every heartbeat also replaces tokens lost
//! in a collision (the lower instance id keeps a contested token) and
//! forgets members that have been unhealthy for longer than
//! `forget_unhealthy_after`. `stop` marks the member LEAVING, runs nothing
//! else (the owner flushes before calling it) and deletes the descriptor.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::client::RingClient;
use super::desc::{InstanceDesc, InstanceState, now_ms};
use super::kv::{Expect, KvError};
use super::read::RingView;
use super::token::generate_tokens;
use crate::metrics::Metrics;
use crate::service::BackgroundTask;

/// This instance's identity in the ring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecyclerConfig {
    /// Instance id, unique in the ring (default: the host name).
    pub id: String,
    /// gRPC address other components dial; empty: derived from the server's
    /// gRPC listen address (the host name when listening on all interfaces).
    pub addr: String,
    /// Availability zone of this instance (for zone-aware replication).
    pub zone: String,
    /// Number of tokens this instance owns in the ring.
    pub num_tokens: usize,
    /// How often the instance heartbeats into the ring.
    #[serde(with = "humantime_serde")]
    pub heartbeat_period: Duration,
    /// File that keeps this instance's tokens across restarts, so that a
    /// restarted instance owns the same ranges (empty: do not keep them).
    pub tokens_file_path: String,
}

impl Default for LifecyclerConfig {
    fn default() -> Self {
        LifecyclerConfig {
            id: default_instance_id(),
            addr: String::new(),
            zone: String::new(),
            num_tokens: 128,
            heartbeat_period: Duration::from_secs(5),
            tokens_file_path: "data/tokens".to_string(),
        }
    }
}

/// The host name, or `strata` when it cannot be read.
pub fn default_instance_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "strata".to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum LifecyclerError {
    #[error("joining the ring as {id:?}: {source}")]
    Join {
        id: String,
        #[source]
        source: KvError,
    },
    #[error("leaving the ring as {id:?}: {source}")]
    Leave {
        id: String,
        #[source]
        source: KvError,
    },
}

struct Inner {
    desc: Mutex<InstanceDesc>,
    tokens_file: Option<std::path::PathBuf>,
    ring: Arc<RingClient>,
    forget_unhealthy_after: Duration,
    heartbeats: Counter,
    heartbeat_failures: Counter,
}

/// One instance's membership of a ring.
pub struct Lifecycler {
    inner: Arc<Inner>,
    heartbeat_period: Duration,
    heartbeat: BackgroundTask,
}

impl Lifecycler {
    pub fn new(
        config: &LifecyclerConfig,
        addr: String,
        http_addr: String,
        ring: Arc<RingClient>,
        forget_unhealthy_after: Duration,
        metrics: &Metrics,
    ) -> Lifecycler {
        let desc = InstanceDesc {
            id: config.id.clone(),
            addr,
            http_addr,
            zone: config.zone.clone(),
            state: InstanceState::Pending,
            tokens: Vec::new(),
            heartbeat_ms: 0,
            registered_ms: 0,
        };
        let inner = Arc::new(Inner {
            desc: Mutex::new(desc),
            tokens_file: (!config.tokens_file_path.is_empty())
                .then(|| std::path::PathBuf::from(&config.tokens_file_path)),
            ring,
            forget_unhealthy_after,
            heartbeats: Counter::default(),
            heartbeat_failures: Counter::default(),
        });
        metrics.with_registry(|registry| {
            registry.register(
                "strata_ring_heartbeats",
                "Heartbeats this instance wrote into the ring.",
                inner.heartbeats.clone(),
            );
            registry.register(
                "strata_ring_heartbeat_failures",
                "Heartbeats this instance failed to write into the ring.",
                inner.heartbeat_failures.clone(),
            );
        });
        Lifecycler {
            inner,
            heartbeat_period: config.heartbeat_period,
            heartbeat: BackgroundTask::default(),
        }
    }

    pub fn id(&self) -> String {
        self.inner.desc.lock().id.clone()
    }

    pub fn state(&self) -> InstanceState {
        self.inner.desc.lock().state
    }

    pub fn tokens(&self) -> Vec<u32> {
        self.inner.desc.lock().tokens.clone()
    }

    /// Claims tokens, registers as JOINING and starts heartbeating.
    pub async fn join(&self, num_tokens: usize) -> Result<(), LifecyclerError> {
        let id = self.id();
        let join_err = |source| LifecyclerError::Join {
            id: id.clone(),
            source,
        };
        let ring = &self.inner.ring;
        ring.refresh().await.map_err(join_err)?;
        let now = now_ms();
        let previous = ring.member(&id);
        let from_file = self.inner.read_tokens_file();
        let tokens = match (&previous, from_file) {
            (Some(member), _) if member.desc.tokens.len() == num_tokens => {
                tracing::info!(instance = %id, tokens = num_tokens, "rejoining the ring with the tokens of the previous run");
                member.desc.tokens.clone()
            }
            (_, Some(tokens)) if tokens.len() == num_tokens => {
                tracing::info!(instance = %id, tokens = num_tokens, "rejoining the ring with the tokens kept in the tokens file");
                tokens
            }
            _ => {
                let view = ring.view();
                let others = tokens_of_others(&view, &id);
                let mut rng = rand::rngs::StdRng::from_os_rng();
                generate_tokens(num_tokens, &others, &mut rng)
            }
        };
        {
            let mut desc = self.inner.desc.lock();
            desc.tokens = tokens;
            desc.state = InstanceState::Joining;
            desc.heartbeat_ms = now;
            desc.registered_ms = previous
                .as_ref()
                .map(|m| m.desc.registered_ms)
                .filter(|ms| *ms > 0)
                .unwrap_or(now);
        }
        self.inner.write().await.map_err(join_err)?;
        self.inner.write_tokens_file();
        tracing::info!(instance = %id, state = "JOINING", "registered in the ring");
        let inner = self.inner.clone();
        let period = self.heartbeat_period;
        self.heartbeat.spawn_every(period, period, move || {
            let inner = inner.clone();
            async move { inner.heartbeat().await }
        });
        Ok(())
    }

    /// Moves the instance to `state` and writes it at once.
    pub async fn change_state(&self, state: InstanceState) -> Result<(), KvError> {
        self.inner.desc.lock().state = state;
        tracing::info!(instance = %self.id(), state = %state, "changing ring state");
        self.inner.write().await
    }

    /// Marks the instance LEAVING (the caller drains after this).
    pub async fn begin_leaving(&self) -> Result<(), LifecyclerError> {
        self.change_state(InstanceState::Leaving)
            .await
            .map_err(|source| LifecyclerError::Leave {
                id: self.id(),
                source,
            })
    }

    /// Stops heartbeating and removes the instance from the ring.
    pub async fn leave(&self) -> Result<(), LifecyclerError> {
        self.heartbeat.stop().await;
        let id = self.id();
        let key = self.inner.ring.member_key(&id);
        self.inner
            .ring
            .kv()
            .delete(&key)
            .await
            .map_err(|source| LifecyclerError::Leave {
                id: id.clone(),
                source,
            })?;
        tracing::info!(instance = %id, "left the ring");
        Ok(())
    }
}

/// The ring's tokens without those of `id`, to balance a (re)join against
/// the other members only.
fn tokens_of_others(view: &RingView, id: &str) -> Vec<(u32, u32)> {
    let me = view.index_of(id).map(|i| i as u32);
    view.tokens()
        .iter()
        .filter(|(_, owner)| Some(*owner) != me)
        .copied()
        .collect()
}

impl Inner {
    /// Tokens kept by a previous run, one per line; `None` when absent or unreadable.
    fn read_tokens_file(&self) -> Option<Vec<u32>> {
        let path = self.tokens_file.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        let mut tokens: Vec<u32> = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.parse() {
                Ok(token) => tokens.push(token),
                Err(_) => {
                    tracing::warn!(file = %path.display(), "ignoring a malformed tokens file");
                    return None;
                }
            }
        }
        tokens.sort_unstable();
        tokens.dedup();
        Some(tokens)
    }

    fn write_tokens_file(&self) {
        let Some(path) = &self.tokens_file else {
            return;
        };
        let text: String = self
            .desc
            .lock()
            .tokens
            .iter()
            .map(|t| format!("{t}\n"))
            .collect();
        let tmp = path.with_extension("tmp");
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(err) = result {
            tracing::warn!(file = %path.display(), error = %err, "cannot keep the tokens in the tokens file");
        }
    }

    async fn write(&self) -> Result<(), KvError> {
        let (key, value) = {
            let desc = self.desc.lock();
            (self.ring.member_key(&desc.id), desc.encode())
        };
        self.ring.kv().put(&key, value).await.map(|_| ())
    }

    async fn heartbeat(&self) {
        self.replace_lost_tokens();
        self.desc.lock().heartbeat_ms = now_ms();
        match self.write().await {
            Ok(()) => {
                self.heartbeats.inc();
            }
            Err(err) => {
                self.heartbeat_failures.inc();
                tracing::warn!(error = %err, "ring heartbeat failed");
            }
        }
        self.forget_unhealthy().await;
    }

    /// Tokens another member with a lower id also claims are ours no more:
    /// pick new ones.
    fn replace_lost_tokens(&self) {
        let view = self.ring.view();
        let mut desc = self.desc.lock();
        let Some(me) = view.index_of(&desc.id) else {
            return;
        };
        if view.lost_tokens(me) == 0 {
            return;
        }
        let kept: std::collections::HashSet<u32> = view
            .tokens()
            .iter()
            .filter(|(_, owner)| *owner as usize == me)
            .map(|(token, _)| *token)
            .collect();
        let lost = desc.tokens.len() - kept.len();
        let mut rng = rand::rngs::StdRng::from_os_rng();
        // Avoid every token in the ring, ours included.
        let fresh = generate_tokens(lost, view.tokens(), &mut rng);
        tracing::info!(instance = %desc.id, lost, "replacing tokens lost in a collision");
        let mut tokens: Vec<u32> = kept.into_iter().chain(fresh).collect();
        tokens.sort_unstable();
        tokens.dedup();
        desc.tokens = tokens;
        drop(desc);
        self.write_tokens_file();
    }

    async fn forget_unhealthy(&self) {
        if self.forget_unhealthy_after.is_zero() {
            return;
        }
        let limit = self.forget_unhealthy_after.as_millis() as i64;
        let now = now_ms();
        let own = self.desc.lock().id.clone();
        for member in self.ring.members() {
            if member.desc.id == own || member.desc.heartbeat_age_ms(now) <= limit {
                continue;
            }
            let key = self.ring.member_key(&member.desc.id);
            match self
                .ring
                .kv()
                .compare_and_swap(&key, Expect::Revision(member.revision), None)
                .await
            {
                Ok(true) => tracing::info!(
                    instance = %member.desc.id,
                    heartbeat_age = ?Duration::from_millis(member.desc.heartbeat_age_ms(now) as u64),
                    "forgot an unhealthy ring member"
                ),
                Ok(false) => {} // it heartbeated, or another member forgot it first
                Err(err) => tracing::warn!(error = %err, "forgetting an unhealthy member failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::kv::KvStore;
    use crate::ring::kv::memory::MemoryKv;
    use crate::service::Service;

    fn client(kv: &MemoryKv, metrics: &Metrics) -> Arc<RingClient> {
        RingClient::new(
            "ring",
            Arc::new(kv.clone()),
            crate::ring::INGESTER_RING_KEY,
            Duration::from_secs(60),
            metrics,
        )
    }

    fn config(id: &str) -> LifecyclerConfig {
        LifecyclerConfig {
            id: id.to_string(),
            heartbeat_period: Duration::from_millis(20),
            num_tokens: 16,
            tokens_file_path: String::new(),
            ..LifecyclerConfig::default()
        }
    }

    async fn wait_for(mut check: impl FnMut() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached in 5 s");
    }

    #[tokio::test]
    async fn joins_activates_and_leaves() {
        let kv = MemoryKv::new();
        let metrics = Metrics::new();
        let ring = client(&kv, &metrics);
        ring.start().await.expect("ring client starts");
        let lifecycler = Lifecycler::new(
            &config("a"),
            "127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
            ring.clone(),
            Duration::ZERO,
            &metrics,
        );
        lifecycler.join(16).await.expect("joins");
        wait_for(|| ring.member("a").map(|m| m.desc.state) == Some(InstanceState::Joining)).await;
        lifecycler
            .change_state(InstanceState::Active)
            .await
            .expect("activates");
        wait_for(|| ring.member("a").map(|m| m.desc.state) == Some(InstanceState::Active)).await;
        assert_eq!(ring.view().token_count(0), 16);
        let first_heartbeat = ring.member("a").expect("member").desc.heartbeat_ms;
        wait_for(|| {
            ring.member("a")
                .is_some_and(|m| m.desc.heartbeat_ms > first_heartbeat)
        })
        .await;
        lifecycler.begin_leaving().await.expect("leaving");
        wait_for(|| ring.member("a").map(|m| m.desc.state) == Some(InstanceState::Leaving)).await;
        lifecycler.leave().await.expect("leaves");
        wait_for(|| ring.member("a").is_none()).await;
        ring.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn rejoin_reuses_tokens_of_previous_run() {
        let kv = MemoryKv::new();
        let metrics = Metrics::new();
        let ring = client(&kv, &metrics);
        ring.start().await.expect("ring client starts");
        let first = Lifecycler::new(
            &config("a"),
            String::new(),
            String::new(),
            ring.clone(),
            Duration::ZERO,
            &metrics,
        );
        first.join(16).await.expect("joins");
        let tokens = first.tokens();
        // A crash: the heartbeat stops, the descriptor stays.
        first.heartbeat.stop().await;
        let second = Lifecycler::new(
            &config("a"),
            String::new(),
            String::new(),
            ring.clone(),
            Duration::ZERO,
            &metrics,
        );
        second.join(16).await.expect("rejoins");
        assert_eq!(second.tokens(), tokens);
    }

    #[tokio::test]
    async fn tokens_file_keeps_tokens_across_a_graceful_leave() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = MemoryKv::new();
        let metrics = Metrics::new();
        let ring = client(&kv, &metrics);
        ring.start().await.expect("ring client starts");
        let with_file = LifecyclerConfig {
            tokens_file_path: dir.path().join("tokens").display().to_string(),
            ..config("a")
        };
        let first = Lifecycler::new(
            &with_file,
            String::new(),
            String::new(),
            ring.clone(),
            Duration::ZERO,
            &metrics,
        );
        first.join(16).await.expect("joins");
        let tokens = first.tokens();
        first.leave().await.expect("leaves");
        wait_for(|| ring.member("a").is_none()).await;
        let second = Lifecycler::new(
            &with_file,
            String::new(),
            String::new(),
            ring.clone(),
            Duration::ZERO,
            &metrics,
        );
        second.join(16).await.expect("rejoins");
        assert_eq!(second.tokens(), tokens);
    }

    #[tokio::test]
    async fn forgets_members_unhealthy_for_too_long() {
        let kv = MemoryKv::new();
        let metrics = Metrics::new();
        let ring = client(&kv, &metrics);
        ring.start().await.expect("ring client starts");
        let dead = InstanceDesc {
            id: "dead".into(),
            addr: String::new(),
            http_addr: String::new(),
            zone: String::new(),
            state: InstanceState::Active,
            tokens: vec![1, 2, 3],
            heartbeat_ms: now_ms() - 60_000,
            registered_ms: 0,
        };
        kv.put(&ring.member_key("dead"), dead.encode())
            .await
            .expect("put");
        let alive = Lifecycler::new(
            &config("alive"),
            String::new(),
            String::new(),
            ring.clone(),
            Duration::from_secs(30),
            &metrics,
        );
        alive.join(16).await.expect("joins");
        wait_for(|| ring.member("dead").is_none()).await;
        assert!(ring.member("alive").is_some());
    }
}
