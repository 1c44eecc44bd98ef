//! An immutable, lookup-optimised view of the ring: which instances hold the
//! replicas of a key.
//!
//! A [`RingView`] is built once from the members' descriptors (each time the
//! ring changes) and then shared read-only by every request. Building resolves
//! what the per-member KV layout can leave inconsistent:
//!
//! - Token collisions: when two members list the same token, the member with
//!   the lower id keeps it and the other's copy is dropped from the view
//!   ([`RingView::lost_tokens`] counts them, so the loser can notice and pick
//!   new tokens). Every member computes the same winner without coordination.
//! - Duplicate ids (ids are KV keys, so this means hand-made input): the
//!   descriptor with the newest heartbeat wins.
//!
//! A replication set is the first `rf` distinct healthy instances met walking
//! clockwise from the key's position (in distinct zones when zone awareness is
//! on). Unhealthy instances are skipped, so the next healthy instance takes
//! their place; a write needs [`quorum`]`(rf)` of them. The lookup does no
//! allocation once its [`ReplicationSet`] buffer is warm.

use super::desc::{InstanceDesc, InstanceState};

/// Size of the hash space, 2^32.
const RING_SIZE: u64 = 1 << 32;

/// What a replication set is for; it decides which states qualify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Only ACTIVE instances take writes.
    Write,
    /// ACTIVE and LEAVING instances serve reads (a LEAVING instance still
    /// holds its series until it has flushed them).
    Read,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Write => "write",
            Operation::Read => "read",
        }
    }

    /// Whether an instance in `state` takes part in this operation.
    pub fn accepts(self, state: InstanceState) -> bool {
        match self {
            Operation::Write => state == InstanceState::Active,
            Operation::Read => matches!(state, InstanceState::Active | InstanceState::Leaving),
        }
    }

    /// The qualifying states, for messages.
    fn states(self) -> &'static str {
        match self {
            Operation::Write => "ACTIVE",
            Operation::Read => "ACTIVE or LEAVING",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The number of successful replicas an operation over `rf` replicas needs:
/// `rf / 2 + 1`.
pub const fn quorum(rf: usize) -> usize {
    rf / 2 + 1
}

/// A replication-set lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("the ring is empty: no instances have registered tokens")]
    Empty,
    #[error(
        "too few healthy instances in the ring to {op}: found {found}{}, need at least {wanted} \
         (a quorum of replication factor {replication_factor}); healthy means {} with a heartbeat \
         at most {heartbeat_timeout_ms} ms old, and {instances} instances are registered",
        if *zone_aware { " in distinct zones" } else { "" },
        op.states()
    )]
    TooFewHealthy {
        op: Operation,
        wanted: usize,
        found: usize,
        replication_factor: usize,
        zone_aware: bool,
        instances: usize,
        heartbeat_timeout_ms: i64,
    },
    #[error("the replication factor must be at least 1")]
    ZeroReplicationFactor,
}

/// The replicas chosen for one key: a reusable buffer, so a caller looking up
/// many keys allocates once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationSet {
    instances: Vec<u32>,
    replication_factor: usize,
}

impl ReplicationSet {
    pub fn new() -> ReplicationSet {
        ReplicationSet::default()
    }

    /// A buffer that holds `rf` instances without growing.
    pub fn with_capacity(rf: usize) -> ReplicationSet {
        ReplicationSet {
            instances: Vec::with_capacity(rf),
            replication_factor: 0,
        }
    }

    /// Indices into [`RingView::instances`], in clockwise walk order.
    pub fn instances(&self) -> &[u32] {
        &self.instances
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    pub fn contains(&self, idx: usize) -> bool {
        self.instances.iter().any(|&i| i as usize == idx)
    }

    /// Empties the set, keeping its capacity.
    pub fn clear(&mut self) {
        self.instances.clear();
        self.replication_factor = 0;
    }

    /// The replication factor of the last lookup.
    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// Acknowledgements needed: [`quorum`] of the replication factor asked
    /// for, not of the instances found.
    pub fn min_success(&self) -> usize {
        quorum(self.replication_factor)
    }

    /// How many of the chosen instances may fail with the operation still
    /// reaching [`ReplicationSet::min_success`].
    pub fn max_errors(&self) -> usize {
        self.instances.len().saturating_sub(self.min_success())
    }
}

/// Per-instance fields the lookup reads, packed away from the descriptors'
/// strings.
#[derive(Clone, Copy, Debug)]
struct Member {
    heartbeat_ms: i64,
    zone: u32,
    state: InstanceState,
}

/// An immutable snapshot of the ring.
///
/// Instances are sorted by id and addressed by their index in that order.
#[derive(Clone, Debug)]
pub struct RingView {
    instances: Vec<InstanceDesc>,
    members: Vec<Member>,
    /// `(token, owner index)` sorted by token, unique tokens.
    tokens: Vec<(u32, u32)>,
    token_counts: Vec<u32>,
    lost_tokens: Vec<u32>,
    /// Distinct zones among instances that own tokens.
    zones_with_tokens: usize,
    /// Instances that own at least one token.
    instances_with_tokens: usize,
    heartbeat_timeout_ms: i64,
}

impl Default for RingView {
    fn default() -> RingView {
        RingView::empty()
    }
}

impl RingView {
    /// Builds the view; see the module docs for how collisions and duplicate
    /// ids are resolved. A `heartbeat_timeout_ms` of zero or less disables the
    /// heartbeat check (as Cortex's `heartbeat_timeout: 0`).
    pub fn new(mut instances: Vec<InstanceDesc>, heartbeat_timeout_ms: i64) -> RingView {
        instances.sort_unstable_by(|a, b| {
            a.id.cmp(&b.id)
                .then_with(|| b.heartbeat_ms.cmp(&a.heartbeat_ms))
        });
        instances.dedup_by(|later, kept| later.id == kept.id);

        let mut zones: Vec<&str> = instances.iter().map(|i| i.zone.as_str()).collect();
        zones.sort_unstable();
        zones.dedup();
        let members: Vec<Member> = instances
            .iter()
            .map(|i| Member {
                heartbeat_ms: i.heartbeat_ms,
                zone: zones
                    .binary_search(&i.zone.as_str())
                    .expect("invariant: every instance's zone was interned")
                    as u32,
                state: i.state,
            })
            .collect();

        let mut all: Vec<(u32, u32)> =
            Vec::with_capacity(instances.iter().map(|i| i.tokens.len()).sum());
        for (idx, instance) in instances.iter().enumerate() {
            all.extend(instance.tokens.iter().map(|&token| (token, idx as u32)));
        }
        // Sorting by (token, index) puts the lowest id first among holders of a token.
        all.sort_unstable();
        all.dedup();
        let mut tokens: Vec<(u32, u32)> = Vec::with_capacity(all.len());
        let mut token_counts = vec![0u32; instances.len()];
        let mut lost_tokens = vec![0u32; instances.len()];
        for (token, owner) in all {
            match tokens.last() {
                Some(&(kept, _)) if kept == token => lost_tokens[owner as usize] += 1,
                _ => {
                    tokens.push((token, owner));
                    token_counts[owner as usize] += 1;
                }
            }
        }

        let mut zones_with_tokens: Vec<u32> = members
            .iter()
            .zip(&token_counts)
            .filter(|&(_, &count)| count > 0)
            .map(|(member, _)| member.zone)
            .collect();
        zones_with_tokens.sort_unstable();
        zones_with_tokens.dedup();
        let instances_with_tokens = token_counts.iter().filter(|&&count| count > 0).count();

        RingView {
            instances,
            members,
            tokens,
            token_counts,
            lost_tokens,
            zones_with_tokens: zones_with_tokens.len(),
            instances_with_tokens,
            heartbeat_timeout_ms,
        }
    }

    /// A ring with no members; every lookup fails with [`RingError::Empty`].
    pub fn empty() -> RingView {
        RingView::new(Vec::new(), 0)
    }

    /// The members, sorted by id.
    pub fn instances(&self) -> &[InstanceDesc] {
        &self.instances
    }

    /// The member at `idx`. Panics if `idx >= instances().len()`.
    pub fn instance(&self, idx: usize) -> &InstanceDesc {
        &self.instances[idx]
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.instances
            .binary_search_by(|i| i.id.as_str().cmp(id))
            .ok()
    }

    /// `(token, owner index)` sorted by token, after collision resolution.
    pub fn tokens(&self) -> &[(u32, u32)] {
        &self.tokens
    }

    pub fn heartbeat_timeout_ms(&self) -> i64 {
        self.heartbeat_timeout_ms
    }

    /// Whether the member at `idx` qualifies for `op` at `now_ms`: its state
    /// accepts `op` and its heartbeat is fresh. False for an unknown index.
    pub fn is_healthy(&self, idx: usize, op: Operation, now_ms: i64) -> bool {
        self.members
            .get(idx)
            .is_some_and(|member| self.member_is_healthy(member, op, now_ms))
    }

    #[inline]
    fn member_is_healthy(&self, member: &Member, op: Operation, now_ms: i64) -> bool {
        // Same rule as `InstanceDesc::is_heartbeat_fresh`, on the packed copy.
        op.accepts(member.state)
            && (self.heartbeat_timeout_ms <= 0
                || now_ms.saturating_sub(member.heartbeat_ms) <= self.heartbeat_timeout_ms)
    }

    /// Tokens the member at `idx` owns after collision resolution (0 for an
    /// unknown index).
    pub fn token_count(&self, idx: usize) -> usize {
        self.token_counts
            .get(idx)
            .map_or(0, |&count| count as usize)
    }

    /// Tokens the member at `idx` lists but lost to a member with a lower id
    /// (0 for an unknown index).
    pub fn lost_tokens(&self, idx: usize) -> usize {
        self.lost_tokens.get(idx).map_or(0, |&count| count as usize)
    }

    /// Per instance index, the fraction of the hash space it owns as primary,
    /// i.e. the ranges `(predecessor, token]` of its tokens. Sums to 1.0 when
    /// any instance owns a token; all zeros otherwise.
    pub fn ownership(&self) -> Vec<f64> {
        let mut owned = vec![0u64; self.instances.len()];
        let Some(&(last, _)) = self.tokens.last() else {
            return vec![0.0; self.instances.len()];
        };
        let mut prev = u64::from(last);
        for &(token, owner) in &self.tokens {
            let token = u64::from(token);
            let size = match (token + RING_SIZE - prev) % RING_SIZE {
                0 => RING_SIZE, // a lone token owns the whole ring
                size => size,
            };
            owned[owner as usize] += size;
            prev = token;
        }
        owned
            .into_iter()
            .map(|size| size as f64 / RING_SIZE as f64)
            .collect()
    }

    /// Fills `out` with the replicas of `key` for `op`: walking clockwise from
    /// the first token `>= key` (wrapping), the first `rf` distinct instances
    /// healthy for `op` (see [`RingView::is_healthy`]), in distinct zones when
    /// `zone_aware`. The walk stops after one lap.
    ///
    /// Finding fewer than `rf` but at least [`quorum`]`(rf)` instances is a
    /// success with a shorter set; fewer than that is
    /// [`RingError::TooFewHealthy`] (with `out` holding what was found).
    pub fn replication_set(
        &self,
        key: u32,
        op: Operation,
        rf: usize,
        zone_aware: bool,
        now_ms: i64,
        out: &mut ReplicationSet,
    ) -> Result<(), RingError> {
        out.instances.clear();
        out.replication_factor = rf;
        if rf == 0 {
            return Err(RingError::ZeroReplicationFactor);
        }
        if self.tokens.is_empty() {
            return Err(RingError::Empty);
        }
        // Nothing more can be found once every owner (or zone) is in the set.
        let reachable = if zone_aware {
            self.zones_with_tokens
        } else {
            self.instances_with_tokens
        };
        let wanted = rf.min(reachable);
        out.instances.reserve(wanted);

        let start = match self.tokens.partition_point(|&(token, _)| token < key) {
            end if end == self.tokens.len() => 0,
            start => start,
        };
        let (before, after) = self.tokens.split_at(start);
        for &(_, owner) in after.iter().chain(before) {
            if out.instances.contains(&owner) {
                continue;
            }
            let member = &self.members[owner as usize];
            if !self.member_is_healthy(member, op, now_ms) {
                continue;
            }
            if zone_aware
                && out
                    .instances
                    .iter()
                    .any(|&chosen| self.members[chosen as usize].zone == member.zone)
            {
                continue;
            }
            out.instances.push(owner);
            if out.instances.len() == wanted {
                break;
            }
        }

        let found = out.instances.len();
        if found < quorum(rf) {
            return Err(RingError::TooFewHealthy {
                op,
                wanted: quorum(rf),
                found,
                replication_factor: rf,
                zone_aware,
                instances: self.instances.len(),
                heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::token::generate_tokens;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::{BTreeMap, HashSet};

    const NOW: i64 = 1_000_000;
    const TIMEOUT: i64 = 60_000;

    fn desc(id: &str, zone: &str, state: InstanceState, tokens: &[u32]) -> InstanceDesc {
        let mut tokens = tokens.to_vec();
        tokens.sort_unstable();
        tokens.dedup();
        InstanceDesc {
            id: id.to_string(),
            addr: format!("{id}:9095"),
            http_addr: String::new(),
            zone: zone.to_string(),
            state,
            tokens,
            heartbeat_ms: NOW,
            registered_ms: 0,
        }
    }

    fn active(id: &str, tokens: &[u32]) -> InstanceDesc {
        desc(id, "", InstanceState::Active, tokens)
    }

    fn ids(view: &RingView, set: &ReplicationSet) -> Vec<String> {
        set.instances()
            .iter()
            .map(|&i| view.instance(i as usize).id.clone())
            .collect()
    }

    fn lookup(
        view: &RingView,
        key: u32,
        op: Operation,
        rf: usize,
    ) -> Result<Vec<String>, RingError> {
        let mut set = ReplicationSet::new();
        view.replication_set(key, op, rf, false, NOW, &mut set)?;
        Ok(ids(view, &set))
    }

    /// a: 10, 40   b: 20, 50   c: 30, 60
    fn abc() -> Vec<InstanceDesc> {
        vec![
            active("c", &[30, 60]),
            active("a", &[10, 40]),
            active("b", &[20, 50]),
        ]
    }

    #[test]
    fn view_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
        check::<RingView>();
        check::<ReplicationSet>();
    }

    #[test]
    fn empty_ring_never_panics() {
        for view in [
            RingView::empty(),
            RingView::new(vec![active("a", &[]), active("b", &[])], TIMEOUT),
        ] {
            let mut set = ReplicationSet::new();
            for key in [0, 1, u32::MAX] {
                let err = view
                    .replication_set(key, Operation::Write, 3, false, NOW, &mut set)
                    .expect_err("empty ring");
                assert!(matches!(err, RingError::Empty), "{err}");
                assert!(err.to_string().contains("empty"));
            }
            assert!(view.tokens().is_empty());
            assert!(view.ownership().iter().all(|&o| o == 0.0));
            assert_eq!(view.token_count(0), 0);
            assert_eq!(view.token_count(99), 0);
            assert!(!view.is_healthy(99, Operation::Read, NOW));
        }
    }

    #[test]
    fn instances_are_sorted_by_id() {
        let view = RingView::new(abc(), TIMEOUT);
        let sorted: Vec<&str> = view.instances().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(sorted, ["a", "b", "c"]);
        assert_eq!(view.index_of("b"), Some(1));
        assert_eq!(view.index_of("z"), None);
        assert_eq!(view.instance(2).id, "c");
        assert_eq!(
            view.tokens(),
            &[(10, 0), (20, 1), (30, 2), (40, 0), (50, 1), (60, 2)]
        );
    }

    #[test]
    fn key_goes_to_first_token_at_or_after_it_and_wraps() {
        let view = RingView::new(abc(), TIMEOUT);
        assert_eq!(lookup(&view, 20, Operation::Write, 1).unwrap(), ["b"]);
        assert_eq!(lookup(&view, 21, Operation::Write, 1).unwrap(), ["c"]);
        assert_eq!(lookup(&view, 0, Operation::Write, 1).unwrap(), ["a"]);
        assert_eq!(
            lookup(&view, 61, Operation::Write, 3).unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(
            lookup(&view, u32::MAX, Operation::Write, 2).unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            lookup(&view, 45, Operation::Write, 3).unwrap(),
            ["b", "c", "a"]
        );
    }

    #[test]
    fn collision_goes_to_the_lower_id() {
        // "b" is listed first and has the later tokens; "a" still wins token 100.
        let view = RingView::new(
            vec![active("b", &[100, 300]), active("a", &[100, 200])],
            TIMEOUT,
        );
        assert_eq!(view.tokens(), &[(100, 0), (200, 0), (300, 1)]);
        assert_eq!(view.token_count(view.index_of("a").unwrap()), 2);
        assert_eq!(view.token_count(view.index_of("b").unwrap()), 1);
        assert_eq!(view.lost_tokens(view.index_of("a").unwrap()), 0);
        assert_eq!(view.lost_tokens(view.index_of("b").unwrap()), 1);
        assert_eq!(lookup(&view, 50, Operation::Write, 1).unwrap(), ["a"]);
        let owned = view.ownership();
        assert!((owned.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(owned[1], 100.0 / RING_SIZE as f64);
    }

    #[test]
    fn duplicate_ids_keep_the_newest_heartbeat() {
        let mut old = active("a", &[1]);
        old.heartbeat_ms = NOW - 10;
        let new = active("a", &[2]);
        let view = RingView::new(vec![old, new], TIMEOUT);
        assert_eq!(view.instances().len(), 1);
        assert_eq!(view.tokens(), &[(2, 0)]);
    }

    #[test]
    fn ownership_of_ranges() {
        let quarter = (RING_SIZE / 4) as u32;
        let view = RingView::new(
            vec![
                active("a", &[quarter]),
                active("b", &[3 * quarter]),
                active("c", &[]),
            ],
            TIMEOUT,
        );
        assert_eq!(view.ownership(), [0.5, 0.5, 0.0]);
        let lone = RingView::new(vec![active("a", &[7])], TIMEOUT);
        assert_eq!(lone.ownership(), [1.0]);
    }

    #[test]
    fn stale_heartbeats_are_skipped() {
        let mut instances = abc();
        instances[2].heartbeat_ms = NOW - TIMEOUT - 1; // "b"
        let view = RingView::new(instances, TIMEOUT);
        assert!(!view.is_healthy(1, Operation::Write, NOW));
        assert!(view.is_healthy(1, Operation::Write, NOW - 1));
        // Quorum of 3 is 2: "b" is skipped and the set is short but usable.
        let mut set = ReplicationSet::new();
        view.replication_set(15, Operation::Write, 3, false, NOW, &mut set)
            .unwrap();
        assert_eq!(ids(&view, &set), ["c", "a"]);
        assert_eq!(set.min_success(), 2);
        assert_eq!(set.max_errors(), 0);
        // With RF=2 the next healthy instance takes b's place.
        assert_eq!(lookup(&view, 15, Operation::Write, 2).unwrap(), ["c", "a"]);
        // Exactly at the timeout is still fresh.
        let mut instances = abc();
        instances[2].heartbeat_ms = NOW - TIMEOUT;
        let view = RingView::new(instances, TIMEOUT);
        assert_eq!(
            lookup(&view, 15, Operation::Write, 3).unwrap(),
            ["b", "c", "a"]
        );
    }

    #[test]
    fn zero_timeout_disables_the_heartbeat_check() {
        let mut instances = abc();
        for instance in &mut instances {
            instance.heartbeat_ms = 0;
        }
        let view = RingView::new(instances, 0);
        assert_eq!(
            lookup(&view, 0, Operation::Write, 3).unwrap(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn states_qualify_per_operation() {
        let view = RingView::new(
            vec![
                desc("a", "", InstanceState::Leaving, &[10]),
                desc("b", "", InstanceState::Joining, &[20]),
                desc("c", "", InstanceState::Pending, &[30]),
                desc("d", "", InstanceState::Active, &[40]),
                desc("e", "", InstanceState::Active, &[50]),
                desc("f", "", InstanceState::Active, &[60]),
            ],
            TIMEOUT,
        );
        assert_eq!(
            lookup(&view, 0, Operation::Write, 3).unwrap(),
            ["d", "e", "f"]
        );
        assert_eq!(
            lookup(&view, 0, Operation::Read, 3).unwrap(),
            ["a", "d", "e"]
        );
        assert!(!view.is_healthy(0, Operation::Write, NOW));
        assert!(view.is_healthy(0, Operation::Read, NOW));
        for idx in [1, 2] {
            assert!(!view.is_healthy(idx, Operation::Write, NOW));
            assert!(!view.is_healthy(idx, Operation::Read, NOW));
        }
    }

    #[test]
    fn fewer_than_quorum_healthy_is_an_error() {
        let mut instances = abc();
        instances[0].heartbeat_ms = 0; // "c"
        instances[2].state = InstanceState::Leaving; // "b"
        let view = RingView::new(instances, TIMEOUT);
        let mut set = ReplicationSet::new();
        let err = view
            .replication_set(0, Operation::Write, 3, false, NOW, &mut set)
            .expect_err("one healthy of three");
        match &err {
            RingError::TooFewHealthy {
                wanted,
                found,
                replication_factor,
                instances,
                ..
            } => assert_eq!(
                (*wanted, *found, *replication_factor, *instances),
                (2, 1, 3, 3)
            ),
            other => panic!("unexpected {other}"),
        }
        let message = err.to_string();
        assert!(message.contains("found 1"), "{message}");
        assert!(message.contains("at least 2"), "{message}");
        assert!(message.contains("ACTIVE"), "{message}");
        // Reads still reach "a" and the LEAVING "b".
        view.replication_set(0, Operation::Read, 3, false, NOW, &mut set)
            .unwrap();
        assert_eq!(ids(&view, &set), ["a", "b"]);
        // RF=1 needs one.
        assert_eq!(lookup(&view, 0, Operation::Write, 1).unwrap(), ["a"]);
    }

    #[test]
    fn zero_replication_factor_is_an_error() {
        let view = RingView::new(abc(), TIMEOUT);
        assert!(matches!(
            lookup(&view, 0, Operation::Write, 0),
            Err(RingError::ZeroReplicationFactor)
        ));
    }

    #[test]
    fn zone_awareness_picks_distinct_zones() {
        let view = RingView::new(
            vec![
                desc("a1", "a", InstanceState::Active, &[10, 70]),
                desc("a2", "a", InstanceState::Active, &[20, 80]),
                desc("b1", "b", InstanceState::Active, &[30]),
                desc("b2", "b", InstanceState::Active, &[40]),
                desc("c1", "c", InstanceState::Active, &[50]),
                desc("c2", "c", InstanceState::Active, &[60]),
            ],
            TIMEOUT,
        );
        let mut set = ReplicationSet::new();
        view.replication_set(0, Operation::Write, 3, true, NOW, &mut set)
            .unwrap();
        assert_eq!(ids(&view, &set), ["a1", "b1", "c1"]);
        view.replication_set(0, Operation::Write, 3, false, NOW, &mut set)
            .unwrap();
        assert_eq!(ids(&view, &set), ["a1", "a2", "b1"]);
        // An unhealthy instance's zone is still served by its zone peer.
        let mut instances = view.instances().to_vec();
        instances[2].heartbeat_ms = 0; // b1
        let view = RingView::new(instances, TIMEOUT);
        view.replication_set(25, Operation::Write, 3, true, NOW, &mut set)
            .unwrap();
        assert_eq!(ids(&view, &set), ["b2", "c1", "a1"]);
    }

    #[test]
    fn zone_awareness_with_two_zones_returns_a_quorum() {
        let view = RingView::new(
            vec![
                desc("a1", "a", InstanceState::Active, &[10]),
                desc("a2", "a", InstanceState::Active, &[20]),
                desc("b1", "b", InstanceState::Active, &[30]),
            ],
            TIMEOUT,
        );
        let mut set = ReplicationSet::new();
        view.replication_set(0, Operation::Write, 3, true, NOW, &mut set)
            .unwrap();
        assert_eq!(ids(&view, &set), ["a1", "b1"]);
        let err = view
            .replication_set(0, Operation::Write, 5, true, NOW, &mut set)
            .expect_err("two zones cannot give three of five");
        assert!(err.to_string().contains("distinct zones"), "{err}");
    }

    #[test]
    fn lookups_reuse_the_buffer() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut instances = Vec::new();
        let mut ring: Vec<(u32, u32)> = Vec::new();
        for i in 0..10u32 {
            let tokens = generate_tokens(32, &ring, &mut rng);
            ring.extend(tokens.iter().map(|&t| (t, i)));
            ring.sort_unstable();
            instances.push(active(&format!("i{i}"), &tokens));
        }
        let view = RingView::new(instances, TIMEOUT);
        let mut set = ReplicationSet::with_capacity(3);
        let ptr = set.instances.as_ptr();
        for _ in 0..1000 {
            view.replication_set(rng.random(), Operation::Write, 3, false, NOW, &mut set)
                .unwrap();
            assert_eq!(set.len(), 3);
            assert_eq!(set.instances.as_ptr(), ptr, "the buffer was reallocated");
        }
    }

    /// A straightforward reimplementation from the rules, on ids and strings.
    fn oracle(
        instances: &[InstanceDesc],
        key: u32,
        op: Operation,
        rf: usize,
        zone_aware: bool,
    ) -> (Vec<String>, bool) {
        let mut owners: BTreeMap<u32, &InstanceDesc> = BTreeMap::new();
        for instance in instances {
            for &token in &instance.tokens {
                let owner = owners.entry(token).or_insert(instance);
                if instance.id < owner.id {
                    *owner = instance;
                }
            }
        }
        let mut chosen: Vec<String> = Vec::new();
        let mut zones: HashSet<&str> = HashSet::new();
        for (_, instance) in owners.range(key..).chain(owners.range(..key)) {
            if chosen.len() == rf {
                break;
            }
            let healthy = op.accepts(instance.state) && instance.is_heartbeat_fresh(NOW, TIMEOUT);
            if !healthy || chosen.contains(&instance.id) {
                continue;
            }
            if zone_aware && !zones.insert(instance.zone.as_str()) {
                continue;
            }
            chosen.push(instance.id.clone());
        }
        // A majority of rf, written out rather than through `quorum`.
        let ok = chosen.len() > rf / 2;
        (chosen, ok)
    }

    fn arb_instances(max: usize) -> impl Strategy<Value = Vec<InstanceDesc>> {
        let token = prop_oneof![0u32..400, any::<u32>()];
        let instance = (
            prop::collection::vec(token, 0..24),
            0usize..3,
            prop::sample::select(InstanceState::ALL.to_vec()),
            prop::bool::weighted(0.15),
        );
        prop::collection::vec(instance, 1..max).prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (tokens, zone, state, stale))| {
                    let mut d = desc(&format!("i{i:02}"), ["a", "b", "c"][zone], state, &tokens);
                    if stale {
                        d.heartbeat_ms = NOW - TIMEOUT - 1;
                    }
                    d
                })
                .collect()
        })
    }

    /// Ring of `n` ACTIVE, healthy members with balanced tokens, three zones.
    fn balanced_ring(n: usize, tokens_each: usize, seed: u64) -> Vec<InstanceDesc> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ring: Vec<(u32, u32)> = Vec::new();
        (0..n)
            .map(|i| {
                let tokens = generate_tokens(tokens_each, &ring, &mut rng);
                ring.extend(tokens.iter().map(|&t| (t, i as u32)));
                ring.sort_unstable();
                desc(
                    &format!("i{i:02}"),
                    ["a", "b", "c"][i % 3],
                    InstanceState::Active,
                    &tokens,
                )
            })
            .collect()
    }

    proptest! {
        #[test]
        fn matches_the_reference_walk(
            instances in arb_instances(12),
            keys in prop::collection::vec(prop_oneof![0u32..400, any::<u32>()], 1..20),
            rf in 1usize..6,
            zone_aware in any::<bool>(),
            read in any::<bool>(),
        ) {
            let op = if read { Operation::Read } else { Operation::Write };
            let view = RingView::new(instances.clone(), TIMEOUT);
            let mut set = ReplicationSet::new();
            for key in keys {
                let result = view.replication_set(key, op, rf, zone_aware, NOW, &mut set);
                if view.tokens().is_empty() {
                    prop_assert!(matches!(result, Err(RingError::Empty)));
                    continue;
                }
                let (want, want_ok) = oracle(&instances, key, op, rf, zone_aware);
                prop_assert_eq!(ids(&view, &set), want);
                prop_assert_eq!(result.is_ok(), want_ok, "{:?}", result);
            }
        }

        #[test]
        fn rf3_sets_are_distinct_and_full(
            n in 3usize..20,
            seed in any::<u64>(),
            keys in prop::collection::vec(any::<u32>(), 1..50),
            zone_aware in any::<bool>(),
        ) {
            let view = RingView::new(balanced_ring(n, 16, seed), TIMEOUT);
            let mut set = ReplicationSet::new();
            for key in keys {
                view.replication_set(key, Operation::Write, 3, zone_aware, NOW, &mut set).unwrap();
                prop_assert_eq!(set.len(), 3);
                let distinct: HashSet<u32> = set.instances().iter().copied().collect();
                prop_assert_eq!(distinct.len(), 3);
                if zone_aware {
                    let zones: HashSet<&str> = set
                        .instances()
                        .iter()
                        .map(|&i| view.instance(i as usize).zone.as_str())
                        .collect();
                    prop_assert_eq!(zones.len(), 3);
                }
            }
        }

        /// A joining member only ever takes a replica's place: no key moves
        /// between two members that were already there.
        #[test]
        fn joins_only_displace_replicas(
            n in 1usize..15,
            seed in any::<u64>(),
            keys in prop::collection::vec(any::<u32>(), 1..50),
            zone_aware in any::<bool>(),
        ) {
            let instances = balanced_ring(n + 1, 16, seed);
            let newcomer = instances[n].id.clone();
            let before = RingView::new(instances[..n].to_vec(), TIMEOUT);
            let after = RingView::new(instances, TIMEOUT);
            let (mut old, mut new) = (ReplicationSet::new(), ReplicationSet::new());
            for key in keys {
                // Small rings may fall short of a quorum; compare what was found.
                let _ = before.replication_set(key, Operation::Write, 3, zone_aware, NOW, &mut old);
                let _ = after.replication_set(key, Operation::Write, 3, zone_aware, NOW, &mut new);
                let old_ids = ids(&before, &old);
                for id in ids(&after, &new) {
                    prop_assert!(id == newcomer || old_ids.contains(&id),
                        "key {}: {} was not a replica before {} joined ({:?})", key, id, newcomer, old_ids);
                }
            }
        }
    }
}
