//! The public meta routes: `/health`, `/metrics`, and the role → permission table
//! (`/api/permissions`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sea_orm::ConnectionTrait;

use super::types;
use crate::AppState;

#[utoipa::path(
    get,
    path = "/health",
    summary = r#"Liveness and dependencies"#,
    description = r#"503 when the database is down; Redis `down` alone keeps 200."#,
    responses(
        (status = 200, description = "OK.", body = types::Health),
        (status = 503, description = "Unavailable.", body = types::Health),
    ),
)]
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let db_ok = state.db.execute_unprepared("SELECT 1").await.is_ok();
    let body = types::Health {
        status: if db_ok {
            types::HealthStatus::Ok
        } else {
            types::HealthStatus::Degraded
        },
        db: if db_ok {
            types::Up::Ok
        } else {
            types::Up::Down
        },
        redis: state.limits.redis_status().await,
        nodes_online: state.nodes.link.online_count(),
    };
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    summary = r#"Prometheus metrics"#,
    responses(
        (status = 200, description = "OK.", body = String, content_type = "text/plain"),
    ),
)]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// GET /api/permissions: the role → permission table of `authz`.
#[utoipa::path(
    get,
    path = "/api/permissions",
    summary = r#"The role → permission table"#,
    responses(
        (status = 200, description = "OK.", body = types::RolePermissions),
    ),
)]
pub async fn permissions() -> Json<types::RolePermissions> {
    Json(types::RolePermissions(authz::table().into_iter().collect()))
}
