//! `POST /api/v1/push` and `POST /api/v1/write`: the remote-write endpoint.
//!
//! Answers 204 when everything was stored, 400 naming the refused series
//! when some were refused (the rest is stored), 202 for a dropped HA
//! replica, and the statuses of [`super::error`] otherwise. Remote-write 2.0
//! answers carry the `X-Prometheus-Remote-Write-*-Written` headers.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::error::text;
use crate::distributor::{DecodeError, Distributor, Protocol, decode};
use crate::tenant::{AuthConfig, AuthState, Tenant};

#[derive(Clone)]
pub struct PushState {
    pub distributor: Arc<Distributor>,
    pub auth: Arc<AuthConfig>,
}

impl AuthState for PushState {
    fn auth(&self) -> &AuthConfig {
        &self.auth
    }
}

pub const SAMPLES_WRITTEN: &str = "X-Prometheus-Remote-Write-Samples-Written";
pub const HISTOGRAMS_WRITTEN: &str = "X-Prometheus-Remote-Write-Histograms-Written";
pub const EXEMPLARS_WRITTEN: &str = "X-Prometheus-Remote-Write-Exemplars-Written";

pub fn routes(state: PushState) -> Router {
    // A compressed body is never larger than its decompressed size limit.
    let limit = state.distributor.config().max_recv_msg_size;
    Router::new()
        .route("/api/v1/push", post(push))
        .route("/api/v1/write", post(push))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn written_headers(response: &mut Response, samples: u64, histograms: u64, exemplars: u64) {
    for (name, value) in [
        (SAMPLES_WRITTEN, samples),
        (HISTOGRAMS_WRITTEN, histograms),
        (EXEMPLARS_WRITTEN, exemplars),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
            response.headers_mut().insert(name, value);
        }
    }
}

async fn push(
    State(state): State<PushState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let protocol = match Protocol::from_content_type(content_type) {
        Ok(protocol) => protocol,
        Err(err) => return err.into_response(),
    };
    let v2 = protocol == Protocol::V2;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("snappy");
    if !encoding.eq_ignore_ascii_case("snappy") {
        return DecodeError::UnsupportedEncoding(encoding.to_string()).into_response();
    }
    let limit = state.distributor.config().max_recv_msg_size;
    let decoded = tokio::task::block_in_place(|| {
        let mut scratch = Vec::new();
        decode::decompress(&body, limit, &mut scratch)?;
        decode::decode(protocol, &scratch)
    });
    let batch = match decoded {
        Ok(batch) => batch,
        Err(err) => {
            state.distributor.count_undecodable(&tenant);
            let mut response = err.into_response();
            if v2 {
                written_headers(&mut response, 0, 0, 0);
            }
            return response;
        }
    };
    match state.distributor.push(&tenant, batch).await {
        Err(err) => {
            let mut response = err.into_response();
            if v2 {
                written_headers(&mut response, 0, 0, 0);
            }
            response
        }
        Ok(outcome) => {
            let mut response = if outcome.dropped_by_ha {
                text(
                    StatusCode::ACCEPTED,
                    "samples from a non-elected HA replica were accepted and dropped",
                )
            } else if outcome.refusals.is_empty() {
                StatusCode::NO_CONTENT.into_response()
            } else {
                let max = state.distributor.config().max_errors_in_response.max(1);
                let mut lines: Vec<String> = outcome
                    .refusals
                    .iter()
                    .take(max)
                    .map(|r| r.message.clone())
                    .collect();
                if outcome.refusals.len() > max {
                    lines.push(format!(
                        "... and {} more refused series or samples",
                        outcome.refusals.len() - max
                    ));
                }
                text(StatusCode::BAD_REQUEST, lines.join("\n"))
            };
            if v2 {
                written_headers(
                    &mut response,
                    outcome.samples_written,
                    outcome.histograms_written,
                    outcome.exemplars_written,
                );
            }
            response
        }
    }
}
