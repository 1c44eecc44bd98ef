//! The one place errors become HTTP statuses, following the remote-write
//! spec: 2xx stored; 4xx the sender must not retry (bad data, over a
//! permanent limit); 429 and 5xx the sender retries (rate limit, ingesters
//! unavailable). Bodies are plain text saying what to fix or what failed.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::distributor::{DecodeError, PushError};

/// The status of a request that could not be decoded.
pub fn decode_status(err: &DecodeError) -> StatusCode {
    match err {
        DecodeError::UnsupportedContentType(_)
        | DecodeError::UnsupportedProto(_)
        | DecodeError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        DecodeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        DecodeError::Snappy(_) | DecodeError::Protobuf(_) | DecodeError::Symbols(_) => {
            StatusCode::BAD_REQUEST
        }
    }
}

/// The status of a push the distributor refused as a whole.
pub fn push_status(err: &PushError) -> StatusCode {
    match err {
        PushError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        PushError::LargerThanBurst { .. } => StatusCode::BAD_REQUEST,
        PushError::Ring(_) | PushError::Ingesters(_) | PushError::HaTracker(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// A plain-text error answer.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (status, body).into_response()
}

impl IntoResponse for DecodeError {
    fn into_response(self) -> Response {
        text(decode_status(&self), self.to_string())
    }
}

impl IntoResponse for PushError {
    fn into_response(self) -> Response {
        let status = push_status(&self);
        let mut response = text(status, self.to_string());
        if let PushError::RateLimited { retry_after, .. } = &self {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// The Prometheus API's error format and statuses: `bad_data` 400,
/// `execution` 422, `timeout` 503, `internal` 500.
impl IntoResponse for crate::querier::ApiError {
    fn into_response(self) -> Response {
        use crate::querier::ApiErrorKind;
        let (status, kind) = match self.kind {
            ApiErrorKind::BadData => (StatusCode::BAD_REQUEST, "bad_data"),
            ApiErrorKind::Execution => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
            ApiErrorKind::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ApiErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let body = serde_json::json!({"status": "error", "errorType": kind, "error": self.message});
        (status, axum::Json(body)).into_response()
    }
}

/// Remote read's statuses (plain text bodies, as Prometheus's handler).
fn read_status(err: &crate::querier::remote_read::ReadError) -> StatusCode {
    use crate::querier::remote_read::ReadError;
    match err {
        ReadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        ReadError::Snappy(_)
        | ReadError::Protobuf(_)
        | ReadError::UnsupportedResponseType(_)
        | ReadError::MatcherType { .. }
        | ReadError::Matcher { .. } => StatusCode::BAD_REQUEST,
        ReadError::Storage { .. } | ReadError::Compress(_) | ReadError::Encode { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl IntoResponse for crate::querier::remote_read::ReadError {
    fn into_response(self) -> Response {
        text(read_status(&self), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn remote_read_statuses() {
        use crate::querier::remote_read::ReadError;
        assert_eq!(
            read_status(&ReadError::TooLarge { size: 2, limit: 1 }),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            read_status(&ReadError::Snappy("x".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            read_status(&ReadError::UnsupportedResponseType(vec![7])),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            read_status(&ReadError::Storage {
                query: 0,
                message: "down".into()
            }),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn statuses_follow_the_remote_write_spec() {
        assert_eq!(
            decode_status(&DecodeError::UnsupportedProto("x".into())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            decode_status(&DecodeError::TooLarge { size: 2, limit: 1 }),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            decode_status(&DecodeError::Snappy("x".into())),
            StatusCode::BAD_REQUEST
        );
        let limited = PushError::RateLimited {
            tenant: "t".into(),
            rate: 1.0,
            burst: 1,
            samples: 5,
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(push_status(&limited), StatusCode::TOO_MANY_REQUESTS);
        let response = limited.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            push_status(&PushError::Ingesters("down".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
