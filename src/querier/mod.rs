//! The querier: PromQL over the ingesters (recent data; the long-term store
//! joins behind the same [`crate::promql::Queryable`]), and the Prometheus
//! HTTP API ([`api`]).

pub mod api;
pub mod ast_json;
pub mod ingesters;
pub mod params;
pub mod remote_read;
pub mod store;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ingester::client::ClientPool;
use crate::limits::{Limits, Overrides};
use crate::promql::{Engine, EngineConfig, QueryError, QueryResult};
use crate::ring::client::RingClient;
use crate::ring::desc::now_ms;
use crate::store::Store;
use crate::tenant::TenantId;
use ingesters::IngesterQueryable;
use store::{StoreQueryable, TenantQueryable};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerierConfig {
    pub engine: EngineConfig,
    /// Only data older than this is read from the long-term store; newer
    /// data only from the ingesters (0s: the store is read for every
    /// range, which is always correct).
    #[serde(with = "humantime_serde")]
    pub query_store_after: std::time::Duration,
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
    engine: EngineConfig,
    query_store_after: std::time::Duration,
    store: Option<Arc<Store>>,
    ring: Arc<RingClient>,
    clients: Arc<ClientPool>,
    overrides: Arc<Overrides>,
    replication_factor: usize,
}

impl Querier {
    pub fn new(
        config: QuerierConfig,
        ring: Arc<RingClient>,
        clients: Arc<ClientPool>,
        overrides: Arc<Overrides>,
        replication_factor: usize,
        store: Option<Arc<Store>>,
    ) -> Querier {
        Querier {
            engine: config.engine,
            query_store_after: config.query_store_after,
            store,
            ring,
            clients,
            overrides,
            replication_factor,
        }
    }

    /// The ingesters as `tenant` sees them, within its query limits.
    pub fn ingesters(&self, tenant: &TenantId) -> IngesterQueryable {
        let limits = self.overrides.get(tenant.as_str());
        let min_time = min_query_time(&limits, now_ms());
        IngesterQueryable {
            tenant: tenant.clone(),
            ring: self.ring.clone(),
            clients: self.clients.clone(),
            replication_factor: self.replication_factor,
            min_time,
            max_series: limits.max_fetched_series_per_query,
            fetched: Arc::default(),
            limit_hit: Arc::default(),
        }
    }

    /// Everything `tenant` may read: the ingesters and the store.
    pub fn queryable(&self, tenant: &TenantId) -> TenantQueryable {
        let ingesters = self.ingesters(tenant);
        let store = self.store.as_ref().map(|store| StoreQueryable {
            tenant: tenant.clone(),
            store: store.clone(),
            min_time: ingesters.min_time,
            max_time: if self.query_store_after.is_zero() {
                i64::MAX
            } else {
                now_ms() - self.query_store_after.as_millis() as i64
            },
        });
        TenantQueryable { ingesters, store }
    }

    /// The engine with the tenant's sample limit.
    fn engine(&self, limits: &Limits) -> Engine {
        let mut config = self.engine.clone();
        if limits.max_samples_per_query > 0 {
            config.max_samples = limits.max_samples_per_query;
        }
        Engine::new(config)
    }

    fn outcome(
        queryable: &TenantQueryable,
        result: Result<QueryResult, QueryError>,
    ) -> Result<QueryResult, ApiError> {
        match result {
            Err(_)
                if queryable
                    .ingesters
                    .limit_hit
                    .load(std::sync::atomic::Ordering::Relaxed) =>
            {
                Err(ApiError::execution(ingesters::series_limit_message(
                    queryable.ingesters.max_series,
                )))
            }
            other => other.map_err(ApiError::from),
        }
    }

    pub async fn instant(
        &self,
        tenant: &TenantId,
        expr: &str,
        time_ms: i64,
    ) -> Result<QueryResult, ApiError> {
        let limits = self.overrides.get(tenant.as_str());
        let queryable = self.queryable(tenant);
        let result = self
            .engine(&limits)
            .instant(&queryable, expr, time_ms)
            .await;
        Querier::outcome(&queryable, result)
    }

    pub async fn range(
        &self,
        tenant: &TenantId,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, ApiError> {
        let limits = self.overrides.get(tenant.as_str());
        let max_length = limits.max_query_length;
        if !max_length.is_zero() && end_ms - start_ms > max_length.as_millis() as i64 {
            return Err(ApiError::bad_data(format!(
                "the query time range exceeds the limit (query length: {}, limit: {}); raise limits.max_query_length",
                humantime::format_duration(std::time::Duration::from_millis(
                    (end_ms - start_ms).max(0) as u64
                )),
                humantime::format_duration(max_length)
            )));
        }
        let queryable = self.queryable(tenant);
        let result = self
            .engine(&limits)
            .range(&queryable, expr, start_ms, end_ms, step_ms)
            .await;
        Querier::outcome(&queryable, result)
    }
}

/// The oldest sample a tenant's query may read: its retention and its max
/// query lookback, whichever is shorter (`i64::MIN` with neither).
pub fn min_query_time(limits: &Limits, now_ms: i64) -> i64 {
    [limits.max_query_lookback, limits.retention_period]
        .iter()
        .filter(|d| !d.is_zero())
        .map(|d| now_ms - d.as_millis() as i64)
        .max()
        .unwrap_or(i64::MIN)
}
