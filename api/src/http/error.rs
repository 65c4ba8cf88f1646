//! The error body of the contract, `{"error": {"code", "message"}}`, produced in one place from
//! the panel's [`Error`], and a JSON extractor whose rejections use it too.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::Error;

/// An HTTP error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// The same error, telling the client when to retry (`Retry-After`, seconds).
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl ApiError {
    /// The contract's error code for `error`, without any of its text: what audit rows keep
    /// (the detail goes to the log).
    pub fn code_of(error: &Error) -> &'static str {
        classify(error).1
    }
}

/// The status and code of every error, in one place.
fn classify(error: &Error) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match error {
        Error::Invalid(_) => (S::BAD_REQUEST, "invalid_request"),
        Error::WeakPassword(_) => (S::BAD_REQUEST, "weak_password"),
        Error::NotFound(_) => (S::NOT_FOUND, "not_found"),
        Error::Conflict(_) => (S::CONFLICT, "conflict"),
        Error::NodeOffline(_) => (S::CONFLICT, "node_offline"),
        Error::NodeGone => (S::BAD_GATEWAY, "node_gone"),
        Error::File { kind, .. } => match kind {
            crate::FileFailure::InvalidPath => (S::BAD_REQUEST, "invalid_path"),
            crate::FileFailure::NotFound => (S::NOT_FOUND, "not_found"),
            crate::FileFailure::Conflict => (S::CONFLICT, "conflict"),
            crate::FileFailure::TooLarge => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            crate::FileFailure::Invalid => (S::BAD_REQUEST, "invalid_request"),
            crate::FileFailure::Range(_) => (S::RANGE_NOT_SATISFIABLE, "range_not_satisfiable"),
            crate::FileFailure::Failed => (S::SERVICE_UNAVAILABLE, "unavailable"),
        },
        Error::NoFreePort(_) => (S::CONFLICT, "no_free_port"),
        Error::Undecryptable => (S::CONFLICT, "secret_unreadable"),
        Error::Unauthenticated(_) => (S::UNAUTHORIZED, "unauthenticated"),
        Error::InvalidCredentials => (S::UNAUTHORIZED, "invalid_credentials"),
        Error::InvalidCode => (S::UNAUTHORIZED, "invalid_code"),
        Error::TokenReused => (S::UNAUTHORIZED, "token_reused"),
        Error::Forbidden { code, .. } => (S::FORBIDDEN, code),
        Error::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate_limited"),
        Error::Db(_) | Error::Mail(_) | Error::Unavailable(_) => {
            (S::SERVICE_UNAVAILABLE, "unavailable")
        }
        _ => (S::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let (status, code) = classify(&error);
        match &error {
            Error::RateLimited { retry_after_secs } => ApiError {
                status,
                code,
                message: "too many requests; retry later".into(),
                retry_after: Some(*retry_after_secs),
            },
            Error::Unavailable(retry_after_secs) => ApiError {
                status,
                code,
                message: "the panel is busy; retry later".into(),
                retry_after: Some(*retry_after_secs),
            },
            Error::Db(_) | Error::Mail(_) => {
                tracing::error!(error = %error, "dependency failed");
                ApiError::new(status, code, "a dependency is unavailable; retry later")
            }
            _ if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %error, "internal error");
                ApiError::new(status, code, "internal error")
            }
            _ => ApiError::new(status, code, error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// `axum::Json` whose rejections are contract errors: 415 when not JSON, 413 over the body
/// limit, 400 for malformed JSON or missing/invalid fields.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// [`ApiJson`] for bodies whose every field is optional: no body at all (no `Content-Type`, zero
/// bytes) is the default value; anything else must be JSON.
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for ApiJsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if request.headers().contains_key(header::CONTENT_TYPE) {
            let ApiJson(value) = ApiJson::from_request(request, state).await?;
            return Ok(ApiJsonOrEmpty(value));
        }
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the body is over the 1 MiB limit",
                ),
                _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()),
            })?;
        if body.is_empty() {
            Ok(ApiJsonOrEmpty(T::default()))
        } else {
            Err(json_rejection(JsonRejection::MissingJsonContentType(
                Default::default(),
            )))
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is over the 1 MiB limit",
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            rejection.body_text(),
        ),
    }
}

/// `axum::extract::Query` whose rejections are contract errors (400 `invalid_request`).
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                rejection.body_text(),
            )),
        }
    }
}

/// `axum::extract::Path` whose rejections are contract errors (400 `invalid_request`, saying
/// which id is malformed): handlers take typed ids, `ApiPath<(TenantId, ServerId)>`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                e.into_kind().to_string(),
            )),
            Err(other) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                other.body_text(),
            )),
        }
    }
}
