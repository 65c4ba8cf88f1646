//! `/api/tenants/{tid}/servers/{sid}/backups…`: back a server up, list, restore and delete its
//! backups (the work is in [`crate::servers::backups`]).

use crate::ids::{BackupId, ServerId, TenantId};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::access::TenantCtx;
use super::error::{ApiError, ApiJsonOrEmpty, ApiPath, ApiQuery};
use super::types::{self, Page};
use crate::pagination::PageQuery;
use crate::{AppState, audit, servers};

type Result<T> = std::result::Result<T, ApiError>;

/// `{name?}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBackup {
    /// Without one it gets a dated one.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: Option<String>,
}

/// POST /api/tenants/{tid}/servers/{sid}/backups: 202 `{id, state: "pending"}`.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/servers/{sid}/backups",
    summary = r#"Back a server up"#,
    description = r#"The backup is `pending` until its node reports; without a name it gets a dated one. 409 `node_offline`. Unknown fields are refused; the body may be left out."#,
    request_body = Option<NewBackup>,
    responses(
        (status = 202, description = "Accepted.", body = types::Backup),
        (status = 409, description = "See the description."),
    ),
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<NewBackup>,
) -> Result<Response> {
    let server = servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let backup = servers::backups::create(&state.servers, &server, body.name.as_deref()).await?;
    let event = ctx.audit(
        "backup.create",
        Some(&server_id),
        "accepted",
        json!({ "backup_id": backup.id }),
    );
    audit::record_or_log(&state.db, event).await;
    Ok((StatusCode::ACCEPTED, Json(types::Backup::from(backup))).into_response())
}

/// GET /api/tenants/{tid}/servers/{sid}/backups.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/servers/{sid}/backups",
    summary = r#"A server's backups, newest first"#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<types::Backup>),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<types::Backup>>> {
    servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let page = servers::backups::list(&state.db, &server_id, &query).await?;
    Ok(Json(Page::of(page, types::Backup::from)))
}

/// POST /api/tenants/{tid}/servers/{sid}/backups/{bid}/restore: 202 `{command_id}`.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/servers/{sid}/backups/{bid}/restore",
    summary = r#"Restore a backup"#,
    description = r#"Only a completed backup (409 otherwise, or when the node is offline)."#,
    responses(
        (status = 202, description = "Accepted.", body = types::CommandAccepted),
        (status = 409, description = "See the description."),
    ),
)]
pub async fn restore(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id, backup_id)): ApiPath<(TenantId, ServerId, BackupId)>,
) -> Result<Response> {
    let server = servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let backup = servers::backups::get(&state.db, &server_id, &backup_id).await?;
    let command_id = servers::backups::restore(&state.servers, &server, &backup).await?;
    let event = ctx.audit(
        "backup.restore",
        Some(&server_id),
        "accepted",
        json!({ "backup_id": backup_id }),
    );
    audit::record_or_log(&state.db, event).await;
    let accepted = types::CommandAccepted { command_id };
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// DELETE /api/tenants/{tid}/servers/{sid}/backups/{bid}.
#[utoipa::path(
    delete,
    path = "/api/tenants/{tid}/servers/{sid}/backups/{bid}",
    summary = r#"Delete a backup"#,
    description = r#"Its node removes the archive; 409 when the node is offline."#,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 409, description = "See the description."),
    ),
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id, backup_id)): ApiPath<(TenantId, ServerId, BackupId)>,
) -> Result<StatusCode> {
    let server = servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let backup = servers::backups::get(&state.db, &server_id, &backup_id).await?;
    servers::backups::delete(&state.servers, &server, &backup).await?;
    let event = ctx.audit(
        "backup.delete",
        Some(&server_id),
        "ok",
        json!({ "backup_id": backup_id }),
    );
    audit::record_or_log(&state.db, event).await;
    Ok(StatusCode::NO_CONTENT)
}
