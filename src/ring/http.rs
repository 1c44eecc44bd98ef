//! `GET /ring`: members with state, zone, token count, ownership and
//! heartbeat age, as HTML or JSON (`Accept: application/json`);
//! `POST /ring` with `forget=<id>` removes an unhealthy member.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Form;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::client::RingClient;
use super::desc::now_ms;
use super::kv::Expect;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct RingMember {
    pub id: String,
    pub state: String,
    /// `ACTIVE`-style state of the descriptor, or `Unhealthy` when the
    /// heartbeat is older than the timeout.
    pub health: String,
    pub zone: String,
    pub addr: String,
    pub http_addr: String,
    pub tokens: usize,
    /// Share of the hash space owned as primary, in percent.
    pub ownership_percent: f64,
    pub heartbeat_age_seconds: f64,
    pub registered_at_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RingStatus {
    pub members: Vec<RingMember>,
    pub heartbeat_timeout_seconds: f64,
}

#[derive(Debug, Deserialize)]
pub struct ForgetForm {
    pub forget: String,
}

/// The `/ring` routes for one ring.
pub fn routes(path: &str, ring: Arc<RingClient>) -> Router {
    Router::new()
        .route(path, get(show).post(forget))
        .with_state(ring)
}

pub fn status(ring: &RingClient) -> RingStatus {
    let view = ring.view();
    let ownership = view.ownership();
    let now = now_ms();
    let timeout = ring.heartbeat_timeout_ms();
    let members = view
        .instances()
        .iter()
        .enumerate()
        .map(|(idx, desc)| RingMember {
            id: desc.id.clone(),
            state: desc.state.to_string(),
            health: if desc.is_heartbeat_fresh(now, timeout) {
                "Healthy".to_string()
            } else {
                "Unhealthy".to_string()
            },
            zone: desc.zone.clone(),
            addr: desc.addr.clone(),
            http_addr: desc.http_addr.clone(),
            tokens: view.token_count(idx),
            ownership_percent: ownership.get(idx).copied().unwrap_or(0.0) * 100.0,
            heartbeat_age_seconds: desc.heartbeat_age_ms(now) as f64 / 1000.0,
            registered_at_ms: desc.registered_ms,
        })
        .collect();
    RingStatus {
        members,
        heartbeat_timeout_seconds: timeout as f64 / 1000.0,
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

async fn show(State(ring): State<Arc<RingClient>>, headers: HeaderMap) -> Response {
    let status = status(&ring);
    if wants_json(&headers) {
        return Json(status).into_response();
    }
    Html(render(&status)).into_response()
}

async fn forget(
    State(ring): State<Arc<RingClient>>,
    headers: HeaderMap,
    Form(form): Form<ForgetForm>,
) -> Response {
    let Some(member) = ring.member(&form.forget) else {
        return (
            StatusCode::NOT_FOUND,
            format!("instance {:?} is not in the ring", form.forget),
        )
            .into_response();
    };
    if member
        .desc
        .is_heartbeat_fresh(now_ms(), ring.heartbeat_timeout_ms())
    {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "instance {:?} is healthy; only an unhealthy instance can be forgotten",
                form.forget
            ),
        )
            .into_response();
    }
    let key = ring.member_key(&member.desc.id);
    match ring
        .kv()
        .compare_and_swap(&key, Expect::Revision(member.revision), None)
        .await
    {
        Ok(true) => {
            tracing::info!(instance = %member.desc.id, "forgot ring member on request");
            if wants_json(&headers) {
                Json(serde_json::json!({"status": "success", "forgotten": member.desc.id}))
                    .into_response()
            } else {
                Redirect::to("/ring").into_response()
            }
        }
        Ok(false) => (
            StatusCode::CONFLICT,
            format!(
                "instance {:?} changed while forgetting it (it heartbeated); look again",
                form.forget
            ),
        )
            .into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("forgetting {:?} failed: {err}", form.forget),
        )
            .into_response(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render(status: &RingStatus) -> String {
    let mut html = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Strata ring</title>\
         <style>body{font-family:sans-serif}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px}.Unhealthy{background:#fdd}</style>\
         </head><body><h1>Ring</h1>",
    );
    let _ = write!(
        html,
        "<p>{} members; heartbeat timeout {} s.</p><table><tr><th>Instance</th><th>State</th>\
         <th>Health</th><th>Zone</th><th>Address</th><th>Tokens</th><th>Ownership</th>\
         <th>Last heartbeat</th><th></th></tr>",
        status.members.len(),
        status.heartbeat_timeout_seconds
    );
    for m in &status.members {
        let forget = if m.health == "Unhealthy" {
            format!(
                "<form method=\"post\" action=\"/ring\"><input type=\"hidden\" name=\"forget\" \
                 value=\"{}\"><button type=\"submit\">Forget</button></form>",
                escape(&m.id)
            )
        } else {
            String::new()
        };
        let _ = write!(
            html,
            "<tr class=\"{health}\"><td>{id}</td><td>{state}</td><td>{health}</td><td>{zone}</td>\
             <td>{addr}</td><td>{tokens}</td><td>{own:.1}%</td><td>{age:.1} s ago</td><td>{forget}</td></tr>",
            health = escape(&m.health),
            id = escape(&m.id),
            state = escape(&m.state),
            zone = escape(&m.zone),
            addr = escape(&m.addr),
            tokens = m.tokens,
            own = m.ownership_percent,
            age = m.heartbeat_age_seconds,
        );
    }
    html.push_str("</table></body></html>");
    html
}
