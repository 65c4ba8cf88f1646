//! `/api/tenants/{tid}/servers…`: servers, power actions, commands and live events (SSE).

use crate::ids::{CommandId, ServerId, TenantId};
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
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use super::access::TenantCtx;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::types::{self, Page};
use crate::audit;
use crate::pagination::PageQuery;
use crate::servers::{self, Action, Event, NewServer, ServerPatch, events};
use crate::{AppState, Error, tenancy};

type Result<T> = std::result::Result<T, ApiError>;

/// How often an open event stream re-reads the caller's session and role.
const RECHECK: Duration = Duration::from_secs(15);

/// POST /api/tenants/{tid}/servers.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/servers",
    summary = r#"Create a server"#,
    description = r#"Needs a verified email address. 409 `node_offline` when the node is not connected, `no_free_port` when its port range is used up. Unknown fields are refused."#,
    request_body = NewServer,
    responses(
        (status = 201, description = "Created.", body = types::Server),
        (status = 409, description = "See the description."),
    ),
)]
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
    Ok((StatusCode::CREATED, Json(types::Server::from(view))).into_response())
}

/// GET /api/tenants/{tid}/servers.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/servers",
    summary = r#"The tenant's servers"#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<types::Server>),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<types::Server>>> {
    let page = servers::list(&state.db, &ctx.tenant_id, &query).await?;
    Ok(Json(Page::of(page, types::Server::from)))
}

/// GET /api/tenants/{tid}/servers/{sid}.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/servers/{sid}",
    summary = r#"A server"#,
    responses(
        (status = 200, description = "OK.", body = types::Server),
    ),
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
) -> Result<Json<types::Server>> {
    let view = servers::view(&state.db, &ctx.tenant_id, &server_id).await?;
    Ok(Json(view.into()))
}

/// PATCH /api/tenants/{tid}/servers/{sid}.
#[utoipa::path(
    patch,
    path = "/api/tenants/{tid}/servers/{sid}",
    summary = r#"Rename a server or replace its variables"#,
    description = r#"New variables are used from the next start. Unknown fields are refused."#,
    request_body = ServerPatch,
    responses(
        (status = 200, description = "OK.", body = types::Server),
    ),
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiJson(body): ApiJson<ServerPatch>,
) -> Result<Json<types::Server>> {
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
    Ok(Json(view.into()))
}

/// DELETE /api/tenants/{tid}/servers/{sid}.
#[utoipa::path(
    delete,
    path = "/api/tenants/{tid}/servers/{sid}",
    summary = r#"Delete a server"#,
    description = r#"Its node removes it now, or when it next connects."#,
    responses(
        (status = 202, description = "Accepted."),
    ),
)]
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
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Power {
    /// `start` needs `server:start`; the others `server:stop`.
    #[schema(value_type = PowerAction)]
    action: String,
}

/// What a power action asks for, for the document only: the body keeps the string, which
/// [`Action::power`] parses, so an unknown one gets the contract's message.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    /// Start the process.
    Start,
    /// SIGTERM, then SIGKILL after the grace period.
    Stop,
    /// Stop, then start.
    Restart,
    /// SIGKILL.
    Kill,
}

/// POST /api/tenants/{tid}/servers/{sid}/power: 202 with the command id.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/servers/{sid}/power",
    summary = r#"Start, stop, restart or kill a server"#,
    description = r#"`start` needs `server:start`; `stop`, `restart` and `kill` need `server:stop`. 409 for the wrong state or an offline node. Unknown fields are refused."#,
    request_body = Power,
    responses(
        (status = 202, description = "Accepted.", body = types::CommandAccepted),
        (status = 409, description = "See the description."),
    ),
)]
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
    let accepted = types::CommandAccepted { command_id };
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// GET /api/tenants/{tid}/servers/{sid}/commands/{cid}: what became of a command.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/servers/{sid}/commands/{cid}",
    summary = r#"What became of a command"#,
    responses(
        (status = 200, description = "OK.", body = types::Command),
    ),
)]
pub async fn command(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id, command_id)): ApiPath<(TenantId, ServerId, CommandId)>,
) -> Result<Json<types::Command>> {
    servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let row = servers::commands::get(&state.servers, &server_id, &command_id).await?;
    Ok(Json(row.into()))
}

/// GET /api/tenants/{tid}/servers/{sid}/events: `status`, `console` (with `server:console`)
/// and `command` events as Server-Sent Events. The first event is the current status, then
/// the last console lines the panel has. The stream ends when its access token expires, at
/// once when this panel revokes its session (logout, logout-all, password reset, refresh
/// reuse), and within 15 s when another process does; the caller's role is re-read every 15 s
/// too, and a caller who lost access has the stream closed.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/servers/{sid}/events",
    summary = r#"Live events of a server (SSE)"#,
    description = r#"Server-Sent Events, each `data` a JSON object with a `type`: `status` first, then `console` lines (with `server:console`), `stats`, `command` and `backup`. The stream stays open; the caller's role is re-read every 15 s. 429 when the caller or the server has too many streams open."#,
    responses(
        (status = 200, description = "OK.", body = String, content_type = "text/event-stream"),
    ),
)]
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
        .await
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
                received = subscription.recv() => match received {
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

/// `{line}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleLine {
    /// At most 4096 bytes, without line breaks or NUL.
    #[schema(max_length = 4096, pattern = "^[^\\n\\r\\u0000]*$")]
    line: String,
}

/// POST /api/tenants/{tid}/servers/{sid}/console: 204; the line goes to the process's stdin.
/// Audited, without the line when the template marks input as sensitive.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/servers/{sid}/console",
    summary = r#"Write a line to the server's stdin"#,
    description = r#"At most 4096 bytes, without line breaks or NUL. 409 unless the server is running. Unknown fields are refused."#,
    request_body = ConsoleLine,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 409, description = "See the description."),
    ),
)]
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
