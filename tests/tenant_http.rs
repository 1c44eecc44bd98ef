//! The tenant extractor over real HTTP: 401 with a plain message for a
//! missing or invalid X-Scope-OrgID, the default tenant when auth is off.

mod common;

use anyhow::{Result, ensure};
use axum::Router;
use axum::routing::get;
use strata::tenant::{AuthConfig, AuthState, Tenant};

#[derive(Clone)]
struct State(AuthConfig);

impl AuthState for State {
    fn auth(&self) -> &AuthConfig {
        &self.0
    }
}

async fn whoami(Tenant(tenant): Tenant) -> String {
    tenant.to_string()
}

async fn serve(auth: AuthConfig) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/whoami", get(whoami))
        .with_state(State(auth));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/whoami"))
}

#[tokio::test]
async fn tenant_header_is_required_and_validated() -> Result<()> {
    let url = serve(AuthConfig::default()).await?;
    let client = common::http();

    let ok = client
        .get(&url)
        .header("X-Scope-OrgID", "team-a")
        .send()
        .await?;
    ensure!(ok.status() == 200);
    ensure!(ok.text().await? == "team-a");

    let missing = client.get(&url).send().await?;
    ensure!(missing.status() == 401);
    ensure!(missing.text().await? == "no org id: the X-Scope-OrgID header is missing");

    for bad in ["..", "a/b", &"x".repeat(151)] {
        let response = client.get(&url).header("X-Scope-OrgID", bad).send().await?;
        ensure!(response.status() == 401, "{bad:?} must get 401");
        ensure!(response.text().await?.starts_with("invalid tenant id:"));
    }
    Ok(())
}

#[tokio::test]
async fn default_tenant_when_auth_is_disabled() -> Result<()> {
    let url = serve(AuthConfig {
        enabled: false,
        default_tenant: "fake".into(),
        ..AuthConfig::default()
    })
    .await?;
    let response = common::http().get(&url).send().await?;
    ensure!(response.status() == 200);
    ensure!(response.text().await? == "fake");
    Ok(())
}
