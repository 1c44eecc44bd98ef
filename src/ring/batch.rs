//! Quorum fan-out for a batch of keys (as dskit's `ring/batch.go`): every
//! item goes to its replication set; the batch succeeds once every item has
//! `min_success` acknowledgements, and fails as soon as one item has more
//! failures than its replication set can absorb. The error of a minority of
//! replicas never masks the majority's success.
//!
//! [`Tracker`] is the pure bookkeeping, testable without a ring or network;
//! [`send`] drives it over the instances' futures.

use std::collections::HashMap;
use std::future::Future;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::read::quorum as min_success;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemState {
    Pending,
    Succeeded,
    Failed,
}

/// Acknowledgement bookkeeping for one batch.
#[derive(Debug)]
pub struct Tracker {
    /// Per item: (successes needed, failures tolerated, successes, failures, state).
    items: Vec<(usize, usize, usize, usize, ItemState)>,
    pending: usize,
}

/// What the batch as a whole has come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Succeeded,
    /// An item can no longer reach its quorum.
    Failed {
        item: usize,
    },
}

impl Tracker {
    /// `replicas[i]` is the size of item i's replication set; `min_success`
    /// of the configured replication factor is needed for each.
    pub fn new(replicas: impl IntoIterator<Item = usize>, rf: usize) -> Tracker {
        let need = min_success(rf);
        let items: Vec<_> = replicas
            .into_iter()
            .map(|n| {
                let need = need.min(n.max(1));
                (need, n.saturating_sub(need), 0, 0, ItemState::Pending)
            })
            .collect();
        let pending = items.len();
        Tracker { items, pending }
    }

    /// Records one replica's answer for `item`; returns the batch outcome.
    pub fn record(&mut self, item: usize, ok: bool) -> Outcome {
        let Some(entry) = self.items.get_mut(item) else {
            return self.outcome();
        };
        let (need, tolerate, successes, failures, state) = entry;
        if *state != ItemState::Pending {
            return self.outcome();
        }
        if ok {
            *successes += 1;
            if *successes >= *need {
                *state = ItemState::Succeeded;
                self.pending -= 1;
            }
        } else {
            *failures += 1;
            if *failures > *tolerate {
                *state = ItemState::Failed;
                return Outcome::Failed { item };
            }
        }
        self.outcome()
    }

    pub fn outcome(&self) -> Outcome {
        if let Some(item) = self
            .items
            .iter()
            .position(|entry| entry.4 == ItemState::Failed)
        {
            return Outcome::Failed { item };
        }
        if self.pending == 0 {
            Outcome::Succeeded
        } else {
            Outcome::Pending
        }
    }
}

/// Sends every instance its items and waits for the quorum.
///
/// `sets[i]` is item i's replication set (instance indices); `call(instance,
/// items)` sends those items to that instance. Returns `Ok(())` once every
/// item reached its quorum (slower replicas keep running in the
/// background), or the first error that made an item fail.
pub async fn send<E, F, Fut>(sets: &[Vec<usize>], rf: usize, call: F) -> Result<(), E>
where
    E: Send + 'static,
    F: Fn(usize, Vec<usize>) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
{
    let mut per_instance: HashMap<usize, Vec<usize>> = HashMap::new();
    for (item, set) in sets.iter().enumerate() {
        for &instance in set {
            per_instance.entry(instance).or_default().push(item);
        }
    }
    let mut tracker = Tracker::new(sets.iter().map(Vec::len), rf);
    if tracker.outcome() == Outcome::Succeeded {
        return Ok(());
    }
    let mut calls: FuturesUnordered<_> = per_instance
        .into_iter()
        .map(|(instance, items)| {
            let fut = call(instance, items.clone());
            async move { (items, fut.await) }
        })
        .collect();
    let mut first_error = None;
    while let Some((items, result)) = calls.next().await {
        let ok = result.is_ok();
        if let Err(err) = result {
            first_error.get_or_insert(err);
        }
        for item in items {
            match tracker.record(item, ok) {
                Outcome::Succeeded => {
                    // Let the slower replicas finish on their own.
                    tokio::spawn(async move { while calls.next().await.is_some() {} });
                    return Ok(());
                }
                Outcome::Failed { .. } => {
                    if let Some(err) = first_error.take() {
                        tokio::spawn(async move { while calls.next().await.is_some() {} });
                        return Err(err);
                    }
                }
                Outcome::Pending => {}
            }
        }
    }
    match (tracker.outcome(), first_error) {
        (Outcome::Succeeded, _) => Ok(()),
        (_, Some(err)) => Err(err),
        // Unreachable in practice: every call answered and nothing failed,
        // so every item succeeded.
        (_, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn one_failure_of_three_is_absorbed_two_are_not() {
        let mut tracker = Tracker::new([3], 3);
        assert_eq!(tracker.record(0, false), Outcome::Pending);
        assert_eq!(tracker.record(0, true), Outcome::Pending);
        assert_eq!(tracker.record(0, true), Outcome::Succeeded);
        let mut tracker = Tracker::new([3], 3);
        assert_eq!(tracker.record(0, false), Outcome::Pending);
        assert_eq!(tracker.record(0, false), Outcome::Failed { item: 0 });
    }

    #[test]
    fn every_item_needs_its_quorum() {
        let mut tracker = Tracker::new([3, 3], 3);
        tracker.record(0, true);
        tracker.record(0, true);
        assert_eq!(tracker.outcome(), Outcome::Pending);
        tracker.record(1, true);
        assert_eq!(tracker.record(1, true), Outcome::Succeeded);
    }

    #[test]
    fn a_smaller_set_than_rf_needs_all_it_has_up_to_quorum() {
        // A single-instance ring with RF=3: the one instance must succeed.
        let mut tracker = Tracker::new([1], 3);
        assert_eq!(tracker.record(0, true), Outcome::Succeeded);
        let mut tracker = Tracker::new([1], 3);
        assert_eq!(tracker.record(0, false), Outcome::Failed { item: 0 });
    }

    #[tokio::test]
    async fn minority_error_does_not_mask_majority_success() {
        // Item 0 on instances 0,1,2; instance 2 fails.
        let sets = vec![vec![0, 1, 2], vec![1, 2, 3]];
        let result: Result<(), String> = send(&sets, 3, |instance, _items| async move {
            if instance == 2 {
                Err(format!("instance {instance} down"))
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(result, Ok(()));
    }

    #[tokio::test]
    async fn failed_quorum_returns_an_error() {
        let sets = vec![vec![0, 1, 2]];
        let result: Result<(), String> = send(&sets, 3, |instance, _| async move {
            if instance == 0 {
                Ok(())
            } else {
                Err(format!("instance {instance} down"))
            }
        })
        .await;
        assert!(result.is_err());
    }

    #[tokio::test]
    async fn returns_at_quorum_without_waiting_for_the_slow_replica() {
        let finished = Arc::new(AtomicUsize::new(0));
        let sets = vec![vec![0, 1, 2]];
        let counter = finished.clone();
        let result: Result<(), String> = send(&sets, 3, move |instance, _| {
            let counter = counter.clone();
            async move {
                if instance == 2 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await;
        assert_eq!(result, Ok(()));
        assert_eq!(finished.load(Ordering::SeqCst), 2);
    }
}
