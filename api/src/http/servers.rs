//! `/api/tenants/{tid}/servers…`: servers, power actions, commands and live events (SSE).

use crate::ids::{BackupId, CommandId, ServerId, TenantId};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use authz::Permission;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::access::TenantCtx;
use super::error::{ApiError, ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery};
use super::tenants::page_json;
use crate::audit;
use crate::pagination::PageQuery;
use crate::servers::{self, Action, Event, NewServer, ServerPatch, ServerView, events};
use crate::{AppState, Error, tenancy};

type Result<T> = std::result::Result<T, ApiError>;

/// How often an open event stream re-reads the caller's session and role.
const RECHECK: Duration = Duration::from_secs(15);

fn server_json(view: ServerView) -> Value {
    let s = view.server;
    json!({
        "id": s.id,
        "tenant_id": s.tenant_id,
        "name": s.name,
        "node_id": s.node_id,
        "template": view.template,
        "variables": s.variables,
        "port": s.port,
        "state": s.state,
        "state_reason": s.state_reason,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    })
}

/// POST /api/tenants/{tid}/servers.
pub async fn create(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<NewServer>,
) -> Result<Response> {
    ctx.principal.require_verified()?;
    let view = servers::create(&state.servers, &ctx.tenant_id, body).await?;
    let event = ctx.audit(
        "server.create",
        Some(&view.server.id),
        "ok",
        json!({ "node_id": view.server.node_id, "template": view.template }),
    );
    audit::record_or_log(&state.db, event).await;
    Ok((StatusCode::CREATED, Json(server_json(view))).into_response())
}

/// GET /api/tenants/{tid}/servers.
pub async fn list(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    let page = servers::list(&state.db, &ctx.tenant_id, &query).await?;
    Ok(page_json(page, server_json))
}

/// GET /api/tenants/{tid}/servers/{sid}.
pub async fn get(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
) -> Result<Json<Value>> {
    let view = servers::view(&state.db, &ctx.tenant_id, &server_id).await?;
    Ok(Json(server_json(view)))
}

/// PATCH /api/tenants/{tid}/servers/{sid}.
pub async fn update(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiJson(body): ApiJson<ServerPatch>,
) -> Result<Json<Value>> {
    let fields: Vec<&str> = [
        body.name.as_ref().map(|_| "name"),
        body.variables.as_ref().map(|_| "variables"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let view = servers::update(
        &state.db,
        &ctx.tenant_id,
        &server_id,
        body,
        state.clock.now(),
    )
    .await?;
    let event = ctx.audit(
        "server.update",
        Some(&server_id),
        "ok",
        json!({ "fields": fields }),
    );
    audit::record_or_log(&state.db, event).await;
    Ok(Json(server_json(view)))
}

/// DELETE /api/tenants/{tid}/servers/{sid}.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
) -> Result<StatusCode> {
    let server = servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    servers::delete(&state.servers, &server).await?;
    let event = ctx.audit("server.delete", Some(&server_id), "ok", json!({}));
    audit::record_or_log(&state.db, event).await;
    Ok(StatusCode::ACCEPTED)
}

/// `{action}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Power {
    action: String,
}

/// POST /api/tenants/{tid}/servers/{sid}/power: 202 with the command id.
pub async fn power(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiJson(body): ApiJson<Power>,
) -> Result<Response> {
    let action = Action::power(&body.action).ok_or_else(|| {
        ApiError::from(Error::Invalid(
            "action must be start, stop, restart or kill".into(),
        ))
    })?;
    ctx.require(&state, action.permission()).await?;
    let server = servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let result = servers::power(&state.servers, &server, action).await;
    let outcome = match &result {
        Ok(_) => "accepted".to_owned(),
        Err(e) => {
            // Tenant members read the audit log: the row keeps the contract's code only.
            tracing::warn!(server = %server_id, action = %action.kind().name(), error = %e, "power action refused");
            format!("rejected: {}", ApiError::code_of(e))
        }
    };
    let details = json!({ "action": action.kind(), "command_id": result.as_ref().ok() });
    let event = ctx.audit("server.power", Some(&server_id), &outcome, details);
    audit::record_or_log(&state.db, event).await;
    let command_id = result?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "command_id": command_id })),
    )
        .into_response())
}

/// GET /api/tenants/{tid}/servers/{sid}/commands/{cid}: what became of a command.
pub async fn command(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id, command_id)): ApiPath<(TenantId, ServerId, CommandId)>,
) -> Result<Json<Value>> {
    servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let row = servers::commands::get(&state.servers, &server_id, &command_id).await?;
    Ok(Json(json!({
        "id": row.id,
        "action": row.action,
        "state": row.state,
        "error": row.error,
        "created_at": row.created_at,
        "completed_at": row.completed_at,
    })))
}

/// GET /api/tenants/{tid}/servers/{sid}/events: `status`, `console` (with `server:console`)
/// and `command` events as Server-Sent Events. The first event is the current status, then
/// the last console lines the panel has. The stream ends when its access token expires, at
/// once when this panel revokes its session (logout, logout-all, password reset, refresh
/// reuse), and within 15 s when another process does; the caller's role is re-read every 15 s
/// too, and a caller who lost access has the stream closed.
pub async fn events(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
) -> Result<Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>>> {
    let server = servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let subscription = state
        .servers
        .events
        .subscribe(&server.id, &ctx.principal.user.id)
        .map_err(|refused| {
            let which = match refused {
                events::Refused::UserCap => format!(
                    "you have {} event streams open; close one first",
                    events::STREAMS_PER_USER
                ),
                events::Refused::ServerCap => format!(
                    "this server has {} event streams open",
                    events::STREAMS_PER_SERVER
                ),
            };
            // Streams free their slot within a keep-alive interval of their client leaving.
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", which).retry_after(15)
        })?;
    let mut console = ctx.allows(Permission::ServerConsole);
    let first = Event::Status {
        state: server.state,
        reason: server.state_reason.clone(),
        at: server.updated_at.to_rfc3339(),
    };
    let principal = ctx.principal.clone();
    let mut revocations = state.identity.revocations();
    // The stream lives no longer than the access token that opened it.
    let now = state.clock.now().timestamp();
    let token_left = principal.open_until(now) - now;
    let expiry = tokio::time::sleep(Duration::from_secs(u64::try_from(token_left).unwrap_or(0)));
    let stream = async_stream::stream! {
        let mut subscription = subscription;
        tokio::pin!(expiry);
        yield Ok(sse(&first));
        if console {
            for event in std::mem::take(&mut subscription.backlog) {
                yield Ok(sse(&event));
            }
        }
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            tokio::select! {
                _ = state.stopping.cancelled() => break,
                () = &mut expiry => break,
                notice = revocations.recv() => {
                    let recheck_now = match notice {
                        Ok(user_id) => user_id == principal.user.id,
                        Err(RecvError::Lagged(_)) => true,
                        Err(RecvError::Closed) => break,
                    };
                    if recheck_now && !session_live(&state, &principal).await {
                        break;
                    }
                }
                _ = recheck.tick() => {
                    // Revocations by another process (a replica, the CLI) show up here.
                    if !session_live(&state, &principal).await {
                        break;
                    }
                    let role = tenancy::role_of(&state.db, &ctx.tenant_id, &ctx.principal.user.id).await;
                    match role {
                        Ok(Some(role)) if ctx.grants(role, Permission::ServerRead) => {
                            console = ctx.grants(role, Permission::ServerConsole);
                        }
                        Ok(_) => break,
                        Err(_) => {}
                    }
                }
                received = subscription.receiver.recv() => match received {
                    Ok(event) => {
                        if console || !matches!(event, Event::Console { .. }) {
                            yield Ok(sse(&event));
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        yield Ok(SseEvent::default().comment(format!("{missed} events dropped: this client reads too slowly")));
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Whether the stream's session is still live; a database failure ends the stream too (the
/// client reconnects and is authenticated afresh).
async fn session_live(state: &AppState, principal: &crate::identity::Principal) -> bool {
    matches!(state.identity.session_live(principal).await, Ok(true))
}

fn sse(event: &Event) -> SseEvent {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    SseEvent::default().event(event.name()).data(data)
}

fn backup_json(b: crate::db::entities::backup::Model) -> Value {
    json!({
        "id": b.id,
        "name": b.name,
        "state": b.state,
        "size_bytes": b.size_bytes,
        "sha256": b.sha256,
        "error": b.error,
        "restore_state": b.restore_state,
        "restore_error": b.restore_error,
        "created_at": b.created_at,
        "completed_at": b.completed_at,
    })
}

/// `{name?}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewBackup {
    name: Option<String>,
}

/// POST /api/tenants/{tid}/servers/{sid}/backups: 202 `{id, state: "pending"}`.
pub async fn create_backup(
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
    Ok((StatusCode::ACCEPTED, Json(backup_json(backup))).into_response())
}

/// GET /api/tenants/{tid}/servers/{sid}/backups.
pub async fn backups(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let page = servers::backups::list(&state.db, &server_id, &query).await?;
    Ok(page_json(page, backup_json))
}

/// POST /api/tenants/{tid}/servers/{sid}/backups/{bid}/restore: 202 `{command_id}`.
pub async fn restore_backup(
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
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "command_id": command_id })),
    )
        .into_response())
}

/// DELETE /api/tenants/{tid}/servers/{sid}/backups/{bid}.
pub async fn delete_backup(
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

/// `{line}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleLine {
    line: String,
}

/// POST /api/tenants/{tid}/servers/{sid}/console: 204; the line goes to the process's stdin.
/// Audited, without the line when the template marks input as sensitive.
pub async fn console(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiJson(body): ApiJson<ConsoleLine>,
) -> Result<StatusCode> {
    let server = servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let bytes = body.line.len();
    let shown = body.line.clone();
    let (command_id, sensitive) =
        servers::console_input(&state.servers, &server, body.line).await?;
    let details = if sensitive {
        json!({ "command_id": command_id, "bytes": bytes, "sensitive": true })
    } else {
        json!({ "command_id": command_id, "line": shown })
    };
    let event = ctx.audit("server.console", Some(&server_id), "accepted", details);
    audit::record_or_log(&state.db, event).await;
    Ok(StatusCode::NO_CONTENT)
}
