//! The REST listener: public endpoints (`/health`, `/metrics`, JWKS) and `/api/auth/*`.
//! Errors use the contract's body everywhere, unknown routes included.

mod auth;
mod error;
mod guard;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sea_orm::ConnectionTrait;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{ApiError, ApiJson};
pub use guard::ClientIp;

use crate::AppState;
use guard::Class;

/// Bodies over this are answered 413.
const BODY_LIMIT: usize = 1024 * 1024;

/// Serves until `shutdown` is cancelled.
pub async fn serve(state: Arc<AppState>, listener: TcpListener, shutdown: CancellationToken) {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// Every route of the REST API.
pub fn router(state: Arc<AppState>) -> Router {
    let limited = |class: Class| {
        let state = state.clone();
        from_fn_with_state(state.clone(), move |ip, request, next| {
            guard::limit(state.clone(), class, ip, request, next)
        })
    };
    let authenticated = from_fn_with_state(state.clone(), guard::authenticate);
    let auth = Router::new()
        .route(
            "/register",
            post(auth::register).route_layer(limited(Class::Register)),
        )
        .route(
            "/verify-email",
            post(auth::verify_email).route_layer(limited(Class::Verify)),
        )
        .route(
            "/resend-verification",
            post(auth::resend_verification).route_layer(limited(Class::Verify)),
        )
        .route(
            "/login",
            post(auth::login).route_layer(limited(Class::Login)),
        )
        .route("/refresh", post(auth::refresh))
        .route("/logout", post(auth::logout))
        .route(
            "/password-reset",
            post(auth::password_reset).route_layer(limited(Class::PasswordReset)),
        )
        .route(
            "/password-reset/confirm",
            post(auth::password_reset_confirm).route_layer(limited(Class::PasswordReset)),
        )
        .route(
            "/logout-all",
            post(auth::logout_all).route_layer(authenticated.clone()),
        )
        .route("/me", get(auth::me).route_layer(authenticated));
    let authenticated = from_fn_with_state(state.clone(), guard::authenticate);
    Router::new()
        .route(
            "/api/permissions",
            get(permissions).route_layer(authenticated),
        )
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(auth::jwks))
        .nest("/api/auth", auth)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let db_ok = state.db.execute_unprepared("SELECT 1").await.is_ok();
    let body = json!({
        "status": if db_ok { "ok" } else { "degraded" },
        "db": if db_ok { "ok" } else { "down" },
        "redis": state.limits.redis_status().await,
        "nodes_online": state.registry.len(),
    });
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// GET /api/permissions: the role → permission table of `authz`.
async fn permissions() -> Json<serde_json::Value> {
    let table: serde_json::Map<String, serde_json::Value> = authz::table()
        .into_iter()
        .map(|(role, permissions)| (role.as_str().to_owned(), json!(permissions)))
        .collect();
    Json(serde_json::Value::Object(table))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}
