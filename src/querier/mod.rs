//! The querier: PromQL over the ingesters (recent data; the long-term store
//! joins behind the same [`crate::promql::Queryable`]), and the Prometheus
//! HTTP API ([`api`]).

pub mod api;
pub mod ingesters;
pub mod params;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ingester::client::ClientPool;
use crate::promql::{Engine, EngineConfig, QueryError, QueryResult};
use crate::ring::client::RingClient;
use crate::tenant::TenantId;
use ingesters::IngesterQueryable;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerierConfig {
    pub engine: EngineConfig,
}

/// An API error in Prometheus's shape: its `errorType` and HTTP status are
/// decided in `server/error.rs`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub kind: ApiErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    BadData,
    Execution,
    Timeout,
    Internal,
}

impl ApiError {
    pub fn bad_data(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: ApiErrorKind::BadData,
            message: message.into(),
        }
    }
    pub fn execution(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: ApiErrorKind::Execution,
            message: message.into(),
        }
    }
    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: ApiErrorKind::Timeout,
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: ApiErrorKind::Internal,
            message: message.into(),
        }
    }
}

pub struct Querier {
    engine: Engine,
    ring: Arc<RingClient>,
    clients: Arc<ClientPool>,
    replication_factor: usize,
}

impl Querier {
    pub fn new(
        config: QuerierConfig,
        ring: Arc<RingClient>,
        clients: Arc<ClientPool>,
        replication_factor: usize,
    ) -> Querier {
        Querier {
            engine: Engine::new(config.engine),
            ring,
            clients,
            replication_factor,
        }
    }

    /// The ingesters as `tenant` sees them.
    pub fn ingesters(&self, tenant: &TenantId) -> IngesterQueryable {
        IngesterQueryable {
            tenant: tenant.clone(),
            ring: self.ring.clone(),
            clients: self.clients.clone(),
            replication_factor: self.replication_factor,
        }
    }

    pub async fn instant(
        &self,
        tenant: &TenantId,
        expr: &str,
        time_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        self.engine
            .instant(&self.ingesters(tenant), expr, time_ms)
            .await
    }

    pub async fn range(
        &self,
        tenant: &TenantId,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        self.engine
            .range(&self.ingesters(tenant), expr, start_ms, end_ms, step_ms)
            .await
    }
}
