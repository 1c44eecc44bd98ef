//! The process's HTTP (axum) and gRPC (tonic) servers and the admin
//! endpoints every process serves: `/ready`, `/metrics`, `/config`,
//! `/services`.
//!
//! Listeners are bound before any role starts so that a taken port fails
//! fast and `/ready` answers (503) while roles start. Shutdown stops
//! accepting, lets in-flight requests finish within
//! `graceful_shutdown_timeout`, then returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod error;
pub mod push;

use crate::metrics::Metrics;
use crate::service::ServiceManager;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP server listens on.
    pub http_listen_address: String,
    /// HTTP port.
    pub http_listen_port: u16,
    /// Address the gRPC server listens on.
    pub grpc_listen_address: String,
    /// gRPC port.
    pub grpc_listen_port: u16,
    /// How long in-flight requests may take to finish on shutdown.
    #[serde(with = "humantime_serde")]
    pub graceful_shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_listen_address: "0.0.0.0".to_string(),
            http_listen_port: 9009,
            grpc_listen_address: "0.0.0.0".to_string(),
            grpc_listen_port: 9095,
            graceful_shutdown_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub services: Arc<ServiceManager>,
    pub metrics: Metrics,
    /// The effective configuration as YAML, secrets masked.
    pub config_yaml: Arc<str>,
    pub shutting_down: Arc<AtomicBool>,
}

impl AdminState {
    pub fn ready(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err("shutting down".to_string());
        }
        self.services.ready()
    }
}

/// The admin routes; roles merge their own routes beside them.
pub fn admin_routes(state: AdminState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .route("/services", get(services))
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Strata</title></head><body>\
         <h1>Strata</h1><ul>\
         <li><a href=\"/ready\">/ready</a></li><li><a href=\"/services\">/services</a></li>\
         <li><a href=\"/ring\">/ring</a></li><li><a href=\"/config\">/config</a></li>\
         <li><a href=\"/metrics\">/metrics</a></li></ul></body></html>",
    )
}

async fn ready(State(state): State<AdminState>) -> Response {
    match state.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn config(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/yaml; charset=utf-8")],
        state.config_yaml.to_string(),
    )
        .into_response()
}

async fn services(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let statuses = state.services.statuses();
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if !wants_html {
        return Json(statuses).into_response();
    }
    let mut html = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Services</title></head>\
         <body><h1>Services</h1><table><tr><th>Service</th><th>State</th></tr>",
    );
    for status in statuses {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{:?}</td></tr>",
            status.name, status.state
        ));
    }
    html.push_str("</table></body></html>");
    Html(html).into_response()
}

/// Bound listeners, ready to serve.
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &ServerConfig) -> Result<Listeners, ServerError> {
        let http_addr = format!("{}:{}", config.http_listen_address, config.http_listen_port);
        let grpc_addr = format!("{}:{}", config.grpc_listen_address, config.grpc_listen_port);
        let http = TcpListener::bind(&http_addr)
            .await
            .map_err(|source| ServerError::Bind {
                what: "HTTP",
                addr: http_addr.clone(),
                source,
            })?;
        let grpc = TcpListener::bind(&grpc_addr)
            .await
            .map_err(|source| ServerError::Bind {
                what: "gRPC",
                addr: grpc_addr.clone(),
                source,
            })?;
        Ok(Listeners { http, grpc })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.local_addr().ok()
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.local_addr().ok()
    }
}

/// The running servers.
pub struct Servers {
    cancel: CancellationToken,
    http: JoinHandle<()>,
    grpc: JoinHandle<()>,
    graceful_timeout: Duration,
}

impl Servers {
    /// Serves `router` over HTTP and `grpc` over gRPC until [`Servers::shutdown`].
    pub fn serve(
        listeners: Listeners,
        router: Router,
        grpc: tonic::service::Routes,
        graceful_timeout: Duration,
    ) -> Servers {
        let cancel = CancellationToken::new();
        let http_cancel = cancel.clone();
        let http = tokio::spawn(async move {
            let result = axum::serve(listeners.http, router)
                .with_graceful_shutdown(async move { http_cancel.cancelled().await })
                .await;
            if let Err(err) = result {
                tracing::error!(error = %err, "HTTP server failed");
            }
        });
        let grpc_cancel = cancel.clone();
        let grpc_task = tokio::spawn(async move {
            let incoming = tokio_stream_from(listeners.grpc);
            let result = tonic::transport::Server::builder()
                .add_routes(grpc)
                .serve_with_incoming_shutdown(
                    incoming,
                    async move { grpc_cancel.cancelled().await },
                )
                .await;
            if let Err(err) = result {
                tracing::error!(error = %err, "gRPC server failed");
            }
        });
        Servers {
            cancel,
            http,
            grpc: grpc_task,
            graceful_timeout,
        }
    }

    /// Stops accepting and waits for in-flight requests, at most the
    /// graceful shutdown timeout.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let drained = async {
            let _ = self.http.await;
            let _ = self.grpc.await;
        };
        if tokio::time::timeout(self.graceful_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?self.graceful_timeout, "in-flight requests did not finish in time");
        }
    }
}

/// Accepted connections of a listener as the stream tonic serves.
fn tokio_stream_from(
    listener: TcpListener,
) -> impl futures::Stream<Item = Result<tokio::net::TcpStream, std::io::Error>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}
