//! The ring descriptor: one [`InstanceDesc`] per member, each stored under its
//! own key (`<prefix><instance id>`) in the KV store.
//!
//! Invariants: `tokens` is sorted and free of duplicates; `heartbeat_ms` and
//! `registered_ms` are milliseconds since the Unix epoch on the member's clock.
//! The encoding is JSON so that `etcdctl get --prefix` stays readable; a
//! descriptor of 128 tokens is about 1.5 KiB.

use serde::{Deserialize, Serialize};

/// Where a member is in its lifecycle (as Cortex's ring states).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    /// Registered, owns no tokens yet.
    Pending,
    /// Has tokens, is preparing (e.g. replaying its WAL); receives no writes.
    Joining,
    /// Serves reads and writes.
    Active,
    /// Shutting down (flushing or handing over); serves reads, no new writes.
    Leaving,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "PENDING",
            InstanceState::Joining => "JOINING",
            InstanceState::Active => "ACTIVE",
            InstanceState::Leaving => "LEAVING",
        }
    }

    pub const ALL: [InstanceState; 4] = [
        InstanceState::Pending,
        InstanceState::Joining,
        InstanceState::Active,
        InstanceState::Leaving,
    ];
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of the ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDesc {
    /// Unique instance id (defaults to the host name).
    pub id: String,
    /// gRPC address other components dial (`host:port`).
    pub addr: String,
    /// HTTP address of the member (`host:port`), for operators.
    #[serde(default)]
    pub http_addr: String,
    /// Availability zone; empty when zone awareness is not used.
    #[serde(default)]
    pub zone: String,
    pub state: InstanceState,
    /// Sorted, unique tokens on the 32-bit hash space.
    #[serde(default)]
    pub tokens: Vec<u32>,
    /// Last heartbeat, milliseconds since the Unix epoch.
    pub heartbeat_ms: i64,
    /// When the member first registered, milliseconds since the Unix epoch.
    #[serde(default)]
    pub registered_ms: i64,
}

/// A descriptor could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("ring descriptor for key {key:?} is malformed: {source}")]
pub struct DecodeError {
    pub key: String,
    #[source]
    pub source: serde_json::Error,
}

impl InstanceDesc {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("invariant: InstanceDesc always serializes to JSON")
    }

    pub fn decode(key: &str, bytes: &[u8]) -> Result<InstanceDesc, DecodeError> {
        let mut desc: InstanceDesc =
            serde_json::from_slice(bytes).map_err(|source| DecodeError {
                key: key.to_string(),
                source,
            })?;
        // Keep the invariant even for descriptors written by hand.
        desc.tokens.sort_unstable();
        desc.tokens.dedup();
        Ok(desc)
    }

    /// Milliseconds since the last heartbeat, as seen at `now_ms`.
    pub fn heartbeat_age_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.heartbeat_ms).max(0)
    }

    /// Healthy means the heartbeat is no older than `heartbeat_timeout_ms`.
    pub fn is_heartbeat_fresh(&self, now_ms: i64, heartbeat_timeout_ms: i64) -> bool {
        self.heartbeat_age_ms(now_ms) <= heartbeat_timeout_ms
    }
}

pub use crate::model::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts_tokens() {
        let desc = InstanceDesc {
            id: "ingester-1".into(),
            addr: "127.0.0.1:9095".into(),
            http_addr: "127.0.0.1:9009".into(),
            zone: "a".into(),
            state: InstanceState::Active,
            tokens: vec![3, 1, 2, 2],
            heartbeat_ms: 10,
            registered_ms: 5,
        };
        let decoded = InstanceDesc::decode("k", &desc.encode()).expect("decodes");
        assert_eq!(decoded.tokens, vec![1, 2, 3]);
        assert_eq!(decoded.state, InstanceState::Active);
        assert!(
            String::from_utf8(desc.encode())
                .expect("utf8")
                .contains("\"ACTIVE\"")
        );
    }

    #[test]
    fn malformed_descriptor_names_the_key() {
        let err = InstanceDesc::decode("ring/x", b"{not json").expect_err("must fail");
        assert!(err.to_string().contains("ring/x"));
    }

    #[test]
    fn heartbeat_freshness() {
        let mut desc = InstanceDesc::decode(
            "k",
            br#"{"id":"a","addr":"x","state":"ACTIVE","heartbeat_ms":1000}"#,
        )
        .expect("decodes");
        assert!(desc.is_heartbeat_fresh(2000, 1000));
        assert!(!desc.is_heartbeat_fresh(2001, 1000));
        desc.heartbeat_ms = 5000;
        assert_eq!(desc.heartbeat_age_ms(1000), 0);
    }
}
