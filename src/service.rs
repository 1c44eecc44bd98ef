//! Services: every role is a value with explicit start and stop (as dskit's
//! services). A [`ServiceManager`] starts services in dependency order, keeps
//! their states for `/services` and `/ready`, and stops them in reverse.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::RwLock;
use serde::Serialize;

pub type ServiceError = Box<dyn std::error::Error + Send + Sync>;

/// A service's background task: spawned at start, cancelled and awaited at stop.
#[derive(Default)]
pub struct BackgroundTask {
    cancel: tokio_util::sync::CancellationToken,
    handle: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl BackgroundTask {
    /// Spawns `run`, handing it the token that [`BackgroundTask::stop`] cancels.
    pub fn spawn<F>(&self, run: impl FnOnce(tokio_util::sync::CancellationToken) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(run(self.cancel.clone()));
        *self.handle.lock() = Some(handle);
    }

    /// Runs `tick` every `period`, the first time `first` from now, until
    /// stopped. A tick that runs long delays the next ones (no burst of
    /// catch-up ticks); a stop waits for a running tick to end.
    pub fn spawn_every<F, Fut>(&self, first: Duration, period: Duration, mut tick: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        self.spawn(|cancel| async move {
            let start = tokio::time::Instant::now() + first;
            let mut ticker = tokio::time::interval_at(start, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = ticker.tick() => tick().await,
                }
            }
        });
    }

    /// Cancels the task and waits for it to finish.
    pub async fn stop(&self) {
        self.cancel.cancel();
        let handle = self.handle.lock().take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}

/// A long-lived part of the process.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Starts the service's tasks; returns once it is running. Must not block
    /// forever: a start that depends on an external system bounds its wait.
    async fn start(&self) -> Result<(), ServiceError>;

    /// Drains and stops the service; returns when it is done.
    async fn stop(&self) -> Result<(), ServiceError>;

    /// Whether the service can take traffic now; `Err` says why not.
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub enum State {
    New,
    Starting,
    Running,
    Stopping,
    Terminated,
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub name: &'static str,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Entry {
    service: Arc<dyn Service>,
    state: State,
    error: Option<String>,
}

/// The set of services of this process, in start order.
#[derive(Default)]
pub struct ServiceManager {
    entries: RwLock<Vec<Entry>>,
}

impl ServiceManager {
    pub fn new() -> ServiceManager {
        ServiceManager::default()
    }

    /// Adds a service; services start in the order they are added.
    pub fn add(&self, service: Arc<dyn Service>) {
        self.entries.write().push(Entry {
            service,
            state: State::New,
            error: None,
        });
    }

    fn set(&self, index: usize, state: State, error: Option<String>) {
        let mut entries = self.entries.write();
        entries[index].state = state;
        entries[index].error = error;
    }

    /// Starts every service in order; on the first failure, stops those
    /// already started (in reverse) and returns the error.
    pub async fn start_all(&self) -> Result<(), ServiceError> {
        let count = self.entries.read().len();
        for index in 0..count {
            let service = self.entries.read()[index].service.clone();
            self.set(index, State::Starting, None);
            tracing::info!(service = service.name(), "starting");
            if let Err(err) = service.start().await {
                let message = format!("{} failed to start: {err}", service.name());
                self.set(index, State::Failed, Some(err.to_string()));
                tracing::error!(service = service.name(), error = %err, "failed to start");
                self.stop_all().await;
                return Err(message.into());
            }
            self.set(index, State::Running, None);
        }
        Ok(())
    }

    /// Stops every running service, in reverse start order.
    pub async fn stop_all(&self) {
        let count = self.entries.read().len();
        for index in (0..count).rev() {
            let (service, state) = {
                let entries = self.entries.read();
                (entries[index].service.clone(), entries[index].state)
            };
            if state != State::Running {
                continue;
            }
            self.set(index, State::Stopping, None);
            tracing::info!(service = service.name(), "stopping");
            match service.stop().await {
                Ok(()) => self.set(index, State::Terminated, None),
                Err(err) => {
                    tracing::error!(service = service.name(), error = %err, "failed to stop cleanly");
                    self.set(index, State::Failed, Some(err.to_string()));
                }
            }
        }
    }

    pub fn statuses(&self) -> Vec<Status> {
        self.entries
            .read()
            .iter()
            .map(|entry| Status {
                name: entry.service.name(),
                state: entry.state,
                error: entry.error.clone(),
            })
            .collect()
    }

    /// Ready when every service runs and says it is ready.
    pub fn ready(&self) -> Result<(), String> {
        let entries = self.entries.read();
        if entries.is_empty() {
            return Err("no services".to_string());
        }
        for entry in entries.iter() {
            if entry.state != State::Running {
                return Err(format!(
                    "service {} is {:?}",
                    entry.service.name(),
                    entry.state
                ));
            }
            entry
                .service
                .ready()
                .map_err(|why| format!("service {} is not ready: {why}", entry.service.name()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Probe {
        name: &'static str,
        fail_start: bool,
        log: Arc<parking_lot::Mutex<Vec<String>>>,
        stops: AtomicUsize,
    }

    #[async_trait]
    impl Service for Probe {
        fn name(&self) -> &'static str {
            self.name
        }
        async fn start(&self) -> Result<(), ServiceError> {
            self.log.lock().push(format!("start {}", self.name));
            if self.fail_start {
                return Err("boom".into());
            }
            Ok(())
        }
        async fn stop(&self) -> Result<(), ServiceError> {
            self.stops.fetch_add(1, Ordering::SeqCst);
            self.log.lock().push(format!("stop {}", self.name));
            Ok(())
        }
    }

    fn probe(
        name: &'static str,
        fail_start: bool,
        log: &Arc<parking_lot::Mutex<Vec<String>>>,
    ) -> Arc<Probe> {
        Arc::new(Probe {
            name,
            fail_start,
            log: log.clone(),
            stops: AtomicUsize::new(0),
        })
    }

    #[tokio::test]
    async fn starts_in_order_and_stops_in_reverse() {
        let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let manager = ServiceManager::new();
        manager.add(probe("a", false, &log));
        manager.add(probe("b", false, &log));
        assert!(manager.ready().is_err());
        manager.start_all().await.expect("starts");
        assert!(manager.ready().is_ok());
        manager.stop_all().await;
        assert_eq!(*log.lock(), vec!["start a", "start b", "stop b", "stop a"]);
        assert!(
            manager
                .statuses()
                .iter()
                .all(|s| s.state == State::Terminated)
        );
    }

    #[tokio::test]
    async fn failed_start_stops_what_started() {
        let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let manager = ServiceManager::new();
        let a = probe("a", false, &log);
        manager.add(a.clone());
        manager.add(probe("b", true, &log));
        manager.add(probe("c", false, &log));
        let err = manager.start_all().await.expect_err("b fails");
        assert!(err.to_string().contains("b failed to start: boom"));
        assert_eq!(a.stops.load(Ordering::SeqCst), 1);
        assert_eq!(*log.lock(), vec!["start a", "start b", "stop a"]);
        let statuses = manager.statuses();
        assert_eq!(statuses[1].state, State::Failed);
        assert_eq!(statuses[2].state, State::New);
    }
}
