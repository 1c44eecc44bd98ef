//! An in-memory KV store for a single process (`ring.kvstore.store: memory`).
//!
//! It keeps a short history of changes so that a watch may start from a
//! revision slightly in the past (between a `list` and its `watch_prefix`),
//! as etcd allows; a watch further back fails with [`KvError::WatchLost`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::{Expect, KvEntry, KvError, KvStore, Snapshot, WatchEvent, WatchStream};

const HISTORY: usize = 4096;
const STORE: &str = "memory";

#[derive(Default)]
struct State {
    entries: BTreeMap<String, (Vec<u8>, i64)>,
    revision: i64,
    history: VecDeque<WatchEvent>,
}

/// A process-local KV store; clones share the same data.
#[derive(Clone)]
pub struct MemoryKv {
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<WatchEvent>,
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryKv {
    pub fn new() -> MemoryKv {
        let (changes, _) = broadcast::channel(HISTORY);
        MemoryKv {
            state: Arc::new(Mutex::new(State::default())),
            changes,
        }
    }

    fn record(&self, state: &mut State, event: WatchEvent) {
        if state.history.len() == HISTORY {
            state.history.pop_front();
        }
        state.history.push_back(event.clone());
        // No receivers is fine: nobody watches yet.
        let _ = self.changes.send(event);
    }

    fn apply(&self, state: &mut State, key: &str, value: Option<Vec<u8>>) -> i64 {
        state.revision += 1;
        let revision = state.revision;
        match value {
            Some(value) => {
                state
                    .entries
                    .insert(key.to_string(), (value.clone(), revision));
                let entry = KvEntry {
                    key: key.to_string(),
                    value,
                    revision,
                };
                self.record(state, WatchEvent::Put(entry));
            }
            None => {
                if state.entries.remove(key).is_some() {
                    self.record(
                        state,
                        WatchEvent::Delete {
                            key: key.to_string(),
                            revision,
                        },
                    );
                }
            }
        }
        revision
    }
}

#[async_trait]
impl KvStore for MemoryKv {
    fn name(&self) -> &'static str {
        STORE
    }

    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        let state = self.state.lock();
        Ok(state.entries.get(key).map(|(value, revision)| KvEntry {
            key: key.to_string(),
            value: value.clone(),
            revision: *revision,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Snapshot, KvError> {
        let state = self.state.lock();
        let entries = state
            .entries
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, (value, revision))| KvEntry {
                key: key.clone(),
                value: value.clone(),
                revision: *revision,
            })
            .collect();
        Ok(Snapshot {
            entries,
            revision: state.revision,
        })
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64, KvError> {
        let mut state = self.state.lock();
        Ok(self.apply(&mut state, key, Some(value)))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Option<Vec<u8>>,
    ) -> Result<bool, KvError> {
        let mut state = self.state.lock();
        let current = state.entries.get(key).map(|(_, revision)| *revision);
        let matches = match expect {
            Expect::Absent => current.is_none(),
            Expect::Revision(revision) => current == Some(revision),
        };
        if matches {
            self.apply(&mut state, key, value);
        }
        Ok(matches)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let mut state = self.state.lock();
        if state.entries.contains_key(key) {
            self.apply(&mut state, key, None);
        }
        Ok(())
    }

    async fn watch_prefix(
        &self,
        prefix: &str,
        after_revision: i64,
    ) -> Result<WatchStream, KvError> {
        // Subscribe and read the history under one lock so no change falls between.
        let (backlog, receiver) = {
            let state = self.state.lock();
            let oldest_kept = state
                .history
                .front()
                .map(WatchEvent::revision)
                .unwrap_or(state.revision + 1);
            if after_revision + 1 < oldest_kept && after_revision < state.revision {
                return Err(KvError::WatchLost {
                    store: STORE,
                    prefix: prefix.to_string(),
                    revision: after_revision,
                    reason: "history no longer holds that revision".into(),
                });
            }
            let backlog: Vec<WatchEvent> = state
                .history
                .iter()
                .filter(|event| event.revision() > after_revision)
                .filter(|event| event_key(event).starts_with(prefix))
                .cloned()
                .collect();
            (backlog, self.changes.subscribe())
        };
        let prefix = prefix.to_string();
        let backlog_stream = futures::stream::iter((!backlog.is_empty()).then_some(Ok(backlog)));
        let live = futures::stream::unfold(
            (receiver, prefix, after_revision),
            |(mut receiver, prefix, last)| async move {
                loop {
                    match receiver.recv().await {
                        Ok(event) => {
                            if event.revision() <= last || !event_key(&event).starts_with(&prefix) {
                                continue;
                            }
                            let revision = event.revision();
                            return Some((Ok(vec![event]), (receiver, prefix, revision)));
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let err = KvError::WatchLost {
                                store: STORE,
                                prefix: prefix.clone(),
                                revision: last,
                                reason: format!("watcher fell behind by {missed} changes"),
                            };
                            return Some((Err(err), (receiver, prefix, last)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        );
        Ok(backlog_stream.chain(live).boxed())
    }
}

fn event_key(event: &WatchEvent) -> &str {
    match event {
        WatchEvent::Put(entry) => &entry.key,
        WatchEvent::Delete { key, .. } => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cas_and_list() {
        let kv = MemoryKv::new();
        assert!(
            kv.compare_and_swap("ring/a", Expect::Absent, Some(b"1".to_vec()))
                .await
                .expect("cas")
        );
        assert!(
            !kv.compare_and_swap("ring/a", Expect::Absent, Some(b"2".to_vec()))
                .await
                .expect("cas")
        );
        let entry = kv.get("ring/a").await.expect("get").expect("present");
        assert!(
            !kv.compare_and_swap("ring/a", Expect::Revision(entry.revision + 1), None)
                .await
                .expect("cas")
        );
        kv.put("ring/b", b"x".to_vec()).await.expect("put");
        kv.put("other/c", b"y".to_vec()).await.expect("put");
        let snapshot = kv.list("ring/").await.expect("list");
        let keys: Vec<_> = snapshot.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, vec!["ring/a", "ring/b"]);
        assert_eq!(snapshot.revision, 3);
        assert!(
            kv.compare_and_swap("ring/a", Expect::Revision(entry.revision), None)
                .await
                .expect("cas")
        );
        assert!(kv.get("ring/a").await.expect("get").is_none());
    }

    #[tokio::test]
    async fn watch_sees_changes_after_revision_including_backlog() {
        let kv = MemoryKv::new();
        kv.put("ring/a", b"1".to_vec()).await.expect("put");
        let snapshot = kv.list("ring/").await.expect("list");
        // A change between list and watch must not be missed.
        kv.put("ring/b", b"2".to_vec()).await.expect("put");
        let mut watch = kv
            .watch_prefix("ring/", snapshot.revision)
            .await
            .expect("watch");
        kv.put("elsewhere", b"3".to_vec()).await.expect("put");
        kv.delete("ring/a").await.expect("delete");
        let first = watch.next().await.expect("event").expect("ok");
        assert!(matches!(&first[0], WatchEvent::Put(e) if e.key == "ring/b"));
        let second = watch.next().await.expect("event").expect("ok");
        assert!(matches!(&second[0], WatchEvent::Delete { key, .. } if key == "ring/a"));
    }
}
