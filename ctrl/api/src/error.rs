//! The API's one error type and its single mapping to HTTP and gRPC. Internal details are
//! logged, never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cvlan_store::StoreError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or violates a rule; the message says which.
    #[error("{0}")]
    BadRequest(String),
    /// No or invalid credentials.
    #[error("authentication required")]
    Unauthenticated,
    /// A registration token was refused (malformed, bad signature, expired, revoked, used).
    #[error("{0}")]
    TokenRefused(String),
    /// Login with an unknown email or a wrong password (deliberately not saying which).
    #[error("invalid email or password")]
    BadCredentials,
    /// Authenticated, but the role does not allow this.
    #[error("permission denied")]
    Forbidden,
    /// Absent, or in a tenant the caller cannot see.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Conflicts with existing state (duplicate name, address taken, overlapping prefix).
    #[error("{0}")]
    Conflict(String),
    /// A pool (addresses) is used up.
    #[error("{0}")]
    Exhausted(String),
    /// Too many attempts; retry later.
    #[error("too many requests, retry later")]
    TooManyRequests,
    /// The endpoint is not served in this server mode.
    #[error("not served by this server mode")]
    WrongMode,
    /// Something failed on our side; details are in the server log only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Result alias for handlers and the service layer.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// Shorthand for a 400 with a message.
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::TokenRefused(_) => (StatusCode::UNAUTHORIZED, "token_refused"),
            ApiError::BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "permission_denied"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Exhausted(_) => (StatusCode::CONFLICT, "exhausted"),
            ApiError::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::WrongMode => (StatusCode::NOT_FOUND, "not_served"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(k) => ApiError::NotFound(k),
            StoreError::Conflict { .. } | StoreError::AddressTaken(_) => {
                ApiError::Conflict(e.to_string())
            }
            StoreError::AddressOutOfRange(_) => ApiError::BadRequest(e.to_string()),
            StoreError::Exhausted => ApiError::Exhausted(e.to_string()),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let body = serde_json::json!({"error": {"code": code, "message": self.to_string()}});
        (status, Json(body)).into_response()
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        use tonic::Code;
        let code = match &e {
            ApiError::BadRequest(_) => Code::InvalidArgument,
            ApiError::Unauthenticated | ApiError::BadCredentials | ApiError::TokenRefused(_) => {
                Code::Unauthenticated
            }
            ApiError::Forbidden => Code::PermissionDenied,
            ApiError::NotFound(_) | ApiError::WrongMode => Code::NotFound,
            ApiError::Conflict(_) => Code::AlreadyExists,
            ApiError::Exhausted(_) | ApiError::TooManyRequests => Code::ResourceExhausted,
            ApiError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "rpc failed");
                Code::Internal
            }
        };
        tonic::Status::new(code, e.to_string())
    }
}
