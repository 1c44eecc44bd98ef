//! Tenants: the `X-Scope-OrgID` header, tenant id validation, and the
//! default tenant used when authentication is off.
//!
//! A valid tenant id is 1 to 150 characters from Cortex's set — ASCII
//! letters and digits and `! - _ . * ' ( )` — and is not `.` or `..` (ids
//! become path segments in the store).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The header that carries the tenant id.
pub const ORG_ID_HEADER: &str = "X-Scope-OrgID";
/// Longest tenant id accepted.
pub const MAX_TENANT_ID_LENGTH: usize = 150;

/// A validated tenant id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("no org id: the {ORG_ID_HEADER} header is missing")]
    Missing,
    #[error("invalid tenant id: {0}")]
    Invalid(String),
    #[error("wrong basic auth password for tenant {0:?}")]
    BadCredentials(String),
}

/// `Basic base64(user:password)` -> (user, password).
fn parse_basic_auth(value: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = value.trim().strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

impl TenantId {
    pub fn parse(id: &str) -> Result<TenantId, TenantError> {
        if id.is_empty() {
            return Err(TenantError::Missing);
        }
        if id.len() > MAX_TENANT_ID_LENGTH {
            return Err(TenantError::Invalid(format!(
                "tenant id is {} characters long, the maximum is {MAX_TENANT_ID_LENGTH}",
                id.len()
            )));
        }
        if id == "." || id == ".." {
            return Err(TenantError::Invalid(format!(
                "tenant id {id:?} is not allowed"
            )));
        }
        if let Some(bad) = id.chars().find(|c| !is_allowed(*c)) {
            return Err(TenantError::Invalid(format!(
                "tenant id {id:?} contains unsupported character {bad:?} (allowed: letters, digits and !-_.*'())"
            )));
        }
        Ok(TenantId(Arc::from(id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')')
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How requests are assigned to tenants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require the X-Scope-OrgID header on every tenant request.
    pub enabled: bool,
    /// The tenant used for every request when `enabled` is false.
    pub default_tenant: String,
    /// Without an X-Scope-OrgID header, take the tenant from the HTTP basic
    /// auth user name (for senders that cannot set headers).
    pub basic_auth_tenant: bool,
    /// Per-tenant basic auth passwords. When not empty, a basic-auth tenant
    /// must be listed here with the right password.
    pub basic_auth_passwords: BTreeMap<String, String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            default_tenant: "anonymous".to_string(),
            basic_auth_tenant: false,
            basic_auth_passwords: BTreeMap::new(),
        }
    }
}

impl AuthConfig {
    /// Checks the default tenant id once at start.
    pub fn validate(&self) -> Result<(), TenantError> {
        TenantId::parse(&self.default_tenant).map(|_| ())
    }

    /// The tenant of a request, from its `X-Scope-OrgID` header value.
    pub fn resolve(&self, header: Option<&str>) -> Result<TenantId, TenantError> {
        self.resolve_with_basic_auth(header, None)
    }

    /// The tenant of a request: the `X-Scope-OrgID` header, else (when
    /// `basic_auth_tenant` is on) the basic-auth user, checked against
    /// `basic_auth_passwords` when that is not empty.
    pub fn resolve_with_basic_auth(
        &self,
        header: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<TenantId, TenantError> {
        if !self.enabled {
            return TenantId::parse(&self.default_tenant);
        }
        if let Some(value) = header {
            return TenantId::parse(value.trim());
        }
        if !self.basic_auth_tenant {
            return Err(TenantError::Missing);
        }
        let Some((user, password)) = authorization.and_then(parse_basic_auth) else {
            return Err(TenantError::Missing);
        };
        let tenant = TenantId::parse(&user)?;
        if !self.basic_auth_passwords.is_empty()
            && self.basic_auth_passwords.get(tenant.as_str()) != Some(&password)
        {
            return Err(TenantError::BadCredentials(tenant.to_string()));
        }
        Ok(tenant)
    }
}

/// Anything that can hand out the auth config to the [`Tenant`] extractor.
pub trait AuthState {
    fn auth(&self) -> &AuthConfig;
}

/// Extracts the request's tenant; rejects with 401 and a plain message.
pub struct Tenant(pub TenantId);

impl IntoResponse for TenantError {
    fn into_response(self) -> Response {
        (StatusCode::UNAUTHORIZED, self.to_string()).into_response()
    }
}

impl<S> FromRequestParts<S> for Tenant
where
    S: AuthState + Send + Sync,
{
    type Rejection = TenantError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = match parts.headers.get(ORG_ID_HEADER) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                TenantError::Invalid(format!("{ORG_ID_HEADER} is not valid ASCII"))
            })?),
        };
        let authorization = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        state
            .auth()
            .resolve_with_basic_auth(header, authorization)
            .map(Tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_cortex_character_set() {
        for id in ["team-a", "Team_B.1", "a!b*c'(d)", "0", &"x".repeat(150)] {
            assert_eq!(TenantId::parse(id).expect("valid").as_str(), id);
        }
    }

    #[test]
    fn refuses_bad_ids() {
        assert_eq!(TenantId::parse(""), Err(TenantError::Missing));
        for id in [
            ".",
            "..",
            "a/b",
            "a b",
            "ä",
            "a\\b",
            "a:b",
            &"x".repeat(151),
        ] {
            assert!(
                matches!(TenantId::parse(id), Err(TenantError::Invalid(_))),
                "{id:?} must be refused"
            );
        }
    }

    #[test]
    fn default_tenant_when_auth_disabled() {
        let auth = AuthConfig {
            enabled: false,
            default_tenant: "fake".into(),
            ..AuthConfig::default()
        };
        assert_eq!(auth.resolve(None).expect("default").as_str(), "fake");
        assert_eq!(
            auth.resolve(Some("other")).expect("default").as_str(),
            "fake"
        );
        let auth = AuthConfig::default();
        assert_eq!(auth.resolve(None), Err(TenantError::Missing));
        assert_eq!(auth.resolve(Some("team-a")).expect("ok").as_str(), "team-a");
    }

    fn basic(user_password: &str) -> String {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn tenant_from_basic_auth_user() {
        let mut auth = AuthConfig {
            basic_auth_tenant: true,
            ..AuthConfig::default()
        };
        let header = basic("team-b:anything");
        assert_eq!(
            auth.resolve_with_basic_auth(None, Some(&header))
                .expect("user is the tenant")
                .as_str(),
            "team-b"
        );
        // The header wins over basic auth.
        assert_eq!(
            auth.resolve_with_basic_auth(Some("team-a"), Some(&header))
                .expect("header")
                .as_str(),
            "team-a"
        );
        auth.basic_auth_passwords
            .insert("team-b".into(), "s3cret".into());
        assert_eq!(
            auth.resolve_with_basic_auth(None, Some(&header)),
            Err(TenantError::BadCredentials("team-b".into()))
        );
        assert!(
            auth.resolve_with_basic_auth(None, Some(&basic("team-b:s3cret")))
                .is_ok()
        );
        assert!(
            auth.resolve_with_basic_auth(None, Some(&basic("team-c:s3cret")))
                .is_err(),
            "not listed"
        );
        let off = AuthConfig::default();
        assert_eq!(
            off.resolve_with_basic_auth(None, Some(&header)),
            Err(TenantError::Missing),
            "off by default"
        );
    }
}
