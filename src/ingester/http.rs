//! The ingester's operator endpoints, as Cortex has them:
//! - `POST /flush` (or `/ingester/flush`): cut and flush every chunk now;
//!   answers with what was written once the store acknowledged it;
//! - `POST /shutdown` (or `/ingester/shutdown`): flush everything, leave
//!   the ring and exit, whatever `ingester.flush.flush_on_shutdown` says.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::State;

#[derive(Clone)]
pub struct IngesterHttp {
    pub(super) state: Arc<State>,
    /// Cancelled to stop the process as SIGTERM does.
    pub(super) shutdown: CancellationToken,
}

pub fn routes(h: IngesterHttp) -> Router {
    Router::new()
        .route("/flush", post(flush))
        .route("/ingester/flush", post(flush))
        .route("/shutdown", post(shutdown))
        .route("/ingester/shutdown", post(shutdown))
        .with_state(h)
}

async fn flush(AxumState(h): AxumState<IngesterHttp>) -> Response {
    let Some(flusher) = &h.state.flusher else {
        return (
            StatusCode::BAD_REQUEST,
            "this ingester has no long-term store to flush to\n",
        )
            .into_response();
    };
    match flusher.flush_round(&h.state.heads, true).await {
        Ok(report) => Json(json!({
            "chunks": report.chunks,
            "already_stored": report.already_stored,
            "packs": report.packs,
            "bytes": report.bytes,
            "index_rows": report.index_rows,
        }))
        .into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("flush failed, the chunks stay in memory and in the WAL: {err}\n"),
        )
            .into_response(),
    }
}

async fn shutdown(AxumState(h): AxumState<IngesterHttp>) -> Response {
    h.state.flush_on_stop.store(true, Ordering::Release);
    h.shutdown.cancel();
    (
        StatusCode::ACCEPTED,
        "shutting down: flushing every chunk, then leaving the ring\n",
    )
        .into_response()
}
