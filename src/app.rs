//! Roles and how they are wired: which services a target needs, in which
//! order they start (as Mimir's `modules.go`), and the process's run loop.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use std::time::Duration;

use crate::config::Config;
use crate::distributor::Distributor;
use crate::ingester::client::ClientPool;
use crate::ingester::{Advertised, Ingester};
use crate::limits::{DiscardedSamples, Overrides};
use crate::metrics::Metrics;
use crate::querier::Querier;
use crate::querier::api::{self as querier_api, ApiState};
use crate::querier::remote_read::ReadMetrics;
use crate::ring::client::RingClient;
use crate::ring::kv::memory::MemoryKv;
use crate::ring::{INGESTER_RING_KEY, http as ring_http};
use crate::server::push::{self, PushState};
use crate::server::{AdminState, Listeners, Servers, admin_routes};
use crate::service::ServiceManager;
use crate::store::compactor::Compactor;
use crate::store::table_manager::TableManager;
use crate::store::{Store, TableDesc};

/// Largest message between Strata's own components over gRPC.
const INTERNAL_GRPC_MESSAGE_LIMIT: usize = 256 << 20;

/// A role this binary can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    All,
    Distributor,
    Ingester,
    Querier,
    QueryFrontend,
    Ruler,
    TableManager,
    Compactor,
}

impl Role {
    pub const ALL: [Role; 8] = [
        Role::All,
        Role::Distributor,
        Role::Ingester,
        Role::Querier,
        Role::QueryFrontend,
        Role::Ruler,
        Role::TableManager,
        Role::Compactor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Distributor => "distributor",
            Role::Ingester => "ingester",
            Role::Querier => "querier",
            Role::QueryFrontend => "query-frontend",
            Role::Ruler => "ruler",
            Role::TableManager => "table-manager",
            Role::Compactor => "compactor",
        }
    }

    /// Whether this build can run the role.
    pub fn available(self) -> bool {
        matches!(
            self,
            Role::All
                | Role::Ingester
                | Role::Distributor
                | Role::Querier
                | Role::TableManager
                | Role::Compactor
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s.trim())
            .ok_or_else(|| {
                let known: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown target {s:?}; known targets: {}", known.join(", "))
            })
    }
}

/// The roles of one process (`target`), written `all` or `a,b`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Targets(Vec<Role>);

impl Default for Targets {
    fn default() -> Self {
        Targets(vec![Role::All])
    }
}

impl Targets {
    pub fn roles(&self) -> &[Role] {
        &self.0
    }

    /// Whether `role` runs in this process, directly or as part of `all`.
    pub fn runs(&self, role: Role) -> bool {
        self.0.contains(&role) || (self.0.contains(&Role::All) && role.available())
    }

    /// Refuses roles this build does not have yet, naming them.
    pub fn check_available(&self) -> Result<(), String> {
        let missing: Vec<_> = self.0.iter().filter(|r| !r.available()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<_> = missing.iter().map(|r| r.as_str()).collect();
        let available: Vec<_> = Role::ALL
            .iter()
            .filter(|r| r.available())
            .map(|r| r.as_str())
            .collect();
        Err(format!(
            "target {} is not available in Strata {} yet; available targets: {}",
            names.join(","),
            crate::metrics::VERSION,
            available.join(", ")
        ))
    }
}

impl FromStr for Targets {
    type Err = String;

    fn from_str(s: &str) -> Result<Targets, String> {
        let mut roles = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let role: Role = part.parse()?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        if roles.is_empty() {
            return Err("target must name at least one role".to_string());
        }
        Ok(Targets(roles))
    }
}

impl fmt::Display for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.0.iter().map(|r| r.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for Targets {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Targets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Targets, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    #[error(transparent)]
    Kv(#[from] crate::ring::kv::KvError),
    #[error("long-term store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Start(String),
}

/// The address other processes should dial for a listener bound to `bound`.
fn advertised(configured: &str, bound: Option<std::net::SocketAddr>) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    match bound {
        Some(addr) if !addr.ip().is_unspecified() => addr.to_string(),
        Some(addr) => format!(
            "{}:{}",
            crate::ring::lifecycler::default_instance_id(),
            addr.port()
        ),
        None => String::new(),
    }
}

/// A started process: its servers and services.
pub struct App {
    services: Arc<ServiceManager>,
    /// Cancelled when an operator asks the process to stop (`POST /shutdown`).
    shutdown_requested: tokio_util::sync::CancellationToken,
    servers: Servers,
    shutting_down: Arc<AtomicBool>,
    health: tonic_health::server::HealthReporter,
}

impl App {
    /// Binds the servers, builds the roles of `config.target` and starts them.
    pub async fn start(config: Config) -> Result<App, AppError> {
        config
            .target
            .check_available()
            .map_err(AppError::Unavailable)?;
        let metrics = Metrics::new();
        let services = Arc::new(ServiceManager::new());
        let listeners = Listeners::bind(&config.server).await?;
        let http_addr = listeners.http_addr();
        let grpc_addr = listeners.grpc_addr();
        tracing::info!(
            version = crate::metrics::VERSION,
            target = %config.target,
            http = ?http_addr,
            grpc = ?grpc_addr,
            "starting Strata"
        );
        let shutting_down = Arc::new(AtomicBool::new(false));
        let shutdown_requested = tokio_util::sync::CancellationToken::new();
        let mut router = admin_routes(AdminState {
            services: services.clone(),
            metrics: metrics.clone(),
            config_yaml: Arc::from(config.to_yaml(true)),
            shutting_down: shutting_down.clone(),
        });

        // Per-tenant limits, for the roles that enforce them.
        let overrides = Overrides::new(
            config.limits.clone(),
            config.runtime_config.clone(),
            &metrics,
        );
        let discarded = DiscardedSamples::new(&metrics);
        let runs_ingester = config.target.runs(Role::Ingester);
        let runs_distributor = config.target.runs(Role::Distributor);
        let runs_querier = config.target.runs(Role::Querier);
        if runs_ingester || runs_distributor || runs_querier {
            services.add(overrides.clone());
        }

        // The long-term store, for the roles that write or read it.
        let runs_table_manager = config.target.runs(Role::TableManager);
        let runs_compactor = config.target.runs(Role::Compactor);
        let store = if runs_ingester || runs_querier || runs_table_manager || runs_compactor {
            Some(Arc::new(Store::new(
                &config.storage,
                &config.schema,
                &metrics,
            )?))
        } else {
            None
        };

        if runs_table_manager && let Some(store) = &store {
            services.add(Arc::new(TableManager::new(
                config.table_manager.clone(),
                store.clone(),
                TableDesc::default(),
            )));
        }
        if runs_compactor && let Some(store) = &store {
            services.add(Arc::new(Compactor::new(
                config.compactor.clone(),
                store.clone(),
                &metrics,
            )));
        }

        // The ingester ring, for every role that reads or joins it.
        let memory_kv = MemoryKv::new();
        let mut ingester_grpc = None;
        if runs_ingester || runs_distributor || runs_querier {
            let kv = config.ring.kvstore.build(&memory_kv).await?;
            let ring = RingClient::new(
                "ingester-ring",
                kv,
                INGESTER_RING_KEY,
                config.ring.heartbeat_timeout,
                &metrics,
            );
            services.add(ring.clone());
            router = router.merge(ring_http::routes("/ring", ring.clone()));
            let clients = Arc::new(ClientPool::new(
                Duration::from_secs(5),
                INTERNAL_GRPC_MESSAGE_LIMIT,
            ));
            if runs_ingester {
                let advertised_grpc = advertised(&config.ingester.lifecycler.addr, grpc_addr);
                let ingester = Ingester::new(
                    config.ingester.clone(),
                    Advertised {
                        grpc_addr: advertised_grpc.clone(),
                        http_addr: advertised("", http_addr),
                    },
                    ring.clone(),
                    config.ring.forget_unhealthy_after,
                    (overrides.clone(), discarded.clone()),
                    store.clone(),
                    &metrics,
                );
                router = router.merge(ingester.http_routes(shutdown_requested.clone()));
                // This process's distributor and querier call it directly.
                clients.set_local(&advertised_grpc, ingester.grpc_service());
                ingester_grpc = Some(
                    ingester
                        .grpc_service()
                        .into_server(INTERNAL_GRPC_MESSAGE_LIMIT),
                );
                services.add(Arc::new(ingester));
            }
            if runs_querier {
                let querier = Arc::new(Querier::new(
                    config.querier.clone(),
                    ring.clone(),
                    clients.clone(),
                    overrides.clone(),
                    config.ring.replication_factor,
                    store.clone(),
                ));
                router = router.merge(querier_api::routes(ApiState {
                    querier,
                    auth: Arc::new(config.auth.clone()),
                    remote_read: ReadMetrics::new(&metrics),
                }));
            }
            if runs_distributor {
                let distributor = Arc::new(Distributor::new(
                    config.distributor.clone(),
                    &config.ring,
                    ring,
                    overrides.clone(),
                    clients.clone(),
                    discarded.clone(),
                    &metrics,
                ));
                router = router.merge(push::routes(PushState {
                    distributor,
                    auth: Arc::new(config.auth.clone()),
                }));
            }
        }

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let mut grpc_routes = tonic::service::Routes::new(health_service);
        if let Some(ingester) = ingester_grpc {
            grpc_routes = grpc_routes.add_service(ingester);
        }
        let servers = Servers::serve(
            listeners,
            router,
            grpc_routes,
            config.server.graceful_shutdown_timeout,
        );
        let app = App {
            services,
            shutdown_requested,
            servers,
            shutting_down,
            health,
        };
        if let Err(err) = app.services.start_all().await {
            app.servers.shutdown().await;
            return Err(AppError::Start(err.to_string()));
        }
        app.health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        tracing::info!("Strata is running");
        Ok(app)
    }

    /// Resolves when an operator asked the process to stop.
    pub async fn shutdown_requested(&self) {
        self.shutdown_requested.cancelled().await;
    }

    /// Graceful shutdown: not ready, roles stopped in reverse (an ingester
    /// leaves the ring), then the servers drain in-flight requests.
    pub async fn stop(self) {
        self.shutting_down.store(true, Ordering::Release);
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.services.stop_all().await;
        self.servers.shutdown().await;
        tracing::info!("Strata stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let targets: Targets = "ingester, distributor,ingester".parse().expect("parses");
        assert_eq!(targets.roles(), &[Role::Ingester, Role::Distributor]);
        assert_eq!(targets.to_string(), "ingester,distributor");
        assert!("nope".parse::<Targets>().is_err());
        assert!("".parse::<Targets>().is_err());
    }

    #[test]
    fn all_runs_the_available_roles() {
        let all = Targets::default();
        assert!(all.runs(Role::Ingester));
        assert!(all.check_available().is_ok());
    }

    #[test]
    fn unavailable_roles_are_refused_by_name() {
        let targets: Targets = "ingester,ruler".parse().expect("parses");
        let message = targets.check_available().expect_err("ruler not built");
        assert!(
            message.contains("target ruler is not available"),
            "{message}"
        );
        assert!(
            message.contains("available targets: all, distributor, ingester, querier"),
            "{message}"
        );
    }
}
