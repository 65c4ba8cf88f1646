//! `/api/tenants…` (tenants, members, audit) and what tenants may choose from:
//! `/api/templates` and `/api/nodes`.

use crate::ids::{TenantId, UserId};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{Caller, TenantCtx};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::guard::ClientIp;
use crate::audit::{self, AuditEvent};
use crate::db::entities::{audit_log, node, tenant};
use crate::pagination::{self, Page, PageQuery};
use crate::tenancy::{self, Member};
use crate::{AppState, Error, servers, templates};

type Result<T> = std::result::Result<T, ApiError>;

/// `{"items": [...], "next_cursor": ...}`.
pub fn page_json<T>(page: Page<T>, item: impl Fn(T) -> Value) -> Json<Value> {
    let items: Vec<Value> = page.items.into_iter().map(item).collect();
    Json(json!({ "items": items, "next_cursor": page.next_cursor }))
}

fn tenant_json(tenant: &tenant::Model) -> Value {
    json!({ "id": tenant.id, "name": tenant.name, "created_at": tenant.created_at })
}

fn member_json(member: Member) -> Value {
    json!({ "user_id": member.user_id, "email": member.email, "role": member.role.as_str() })
}

/// An audit row as the contract shows it.
pub fn audit_json(row: audit_log::Model) -> Value {
    json!({
        "id": row.id,
        "at": row.at,
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "outcome": row.outcome,
        "ip": row.ip,
        "details": row.details,
    })
}

/// `{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    name: String,
}

/// POST /api/tenants: the caller becomes its owner.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<NewTenant>,
) -> Result<Response> {
    let tenant =
        tenancy::create(&state.db, &body.name, &principal.user.id, state.clock.now()).await?;
    let event = AuditEvent {
        actor: principal.user.id.clone(),
        action: "tenant.create".into(),
        target: Some(tenant.id.clone()),
        outcome: "ok".into(),
        ip: Some(ip.to_string()),
        details: json!({ "name": tenant.name }),
        tenant_id: Some(tenant.id.clone()),
    };
    audit::record_or_log(&state.db, event).await;
    Ok((StatusCode::CREATED, Json(tenant_json(&tenant))).into_response())
}

/// GET /api/tenants: the tenants the caller belongs to, with their role.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    let page = tenancy::list_for(&state.db, &principal.user.id, &query).await?;
    Ok(page_json(page, |view| {
        let mut value = tenant_json(&view.tenant);
        value["role"] = json!(view.role.as_str());
        value
    }))
}

/// GET /api/tenants/{tid}.
pub async fn get(State(state): State<Arc<AppState>>, ctx: TenantCtx) -> Result<Json<Value>> {
    let tenant = tenancy::get(&state.db, &ctx.tenant_id).await?;
    let mut value = tenant_json(&tenant);
    value["role"] = json!(ctx.role.as_str());
    Ok(Json(value))
}

/// DELETE /api/tenants/{tid}: its servers are deleted on their nodes, then the tenant.
pub async fn delete(State(state): State<Arc<AppState>>, ctx: TenantCtx) -> Result<Response> {
    let servers = servers::delete_all(&state.servers, &ctx.tenant_id).await?;
    let secrets = crate::secrets::delete_all(&state.db, &ctx.tenant_id).await?;
    tenancy::delete(&state.db, &ctx.tenant_id).await?;
    let event = ctx.audit(
        "tenant.delete",
        Some(&ctx.tenant_id),
        "ok",
        json!({ "servers_deleted": servers, "secrets_destroyed": secrets }),
    );
    audit::record_or_log(&state.db, event).await;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// GET /api/tenants/{tid}/members.
pub async fn members(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    let page = tenancy::members(&state.db, &ctx.tenant_id, &query).await?;
    Ok(page_json(page, member_json))
}

/// `{email, role}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    email: String,
    role: String,
}

/// `{role}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePatch {
    role: String,
}

pub(super) fn parse_role(name: &str) -> Result<authz::Role> {
    authz::Role::parse(name)
        .ok_or_else(|| Error::Invalid("role must be owner, admin, support or member".into()).into())
}

/// POST /api/tenants/{tid}/members.
pub async fn add_member(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<NewMember>,
) -> Result<Response> {
    let role = parse_role(&body.role)?;
    let member = tenancy::add_member(
        &state.db,
        &ctx.tenant_id,
        ctx.role,
        &body.email,
        role,
        state.clock.now(),
    )
    .await?;
    let event = ctx.audit(
        "member.add",
        Some(&member.user_id),
        "ok",
        json!({ "role": role.as_str() }),
    );
    audit::record_or_log(&state.db, event).await;
    Ok((StatusCode::CREATED, Json(member_json(member))).into_response())
}

/// PATCH /api/tenants/{tid}/members/{uid}.
pub async fn update_member(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, user_id)): ApiPath<(TenantId, UserId)>,
    ApiJson(body): ApiJson<RolePatch>,
) -> Result<Json<Value>> {
    let role = parse_role(&body.role)?;
    let member = tenancy::change_member(
        &state.db,
        &ctx.tenant_id,
        ctx.role,
        &user_id,
        Some(role),
        state.clock.now(),
    )
    .await?;
    let event = ctx.audit(
        "member.update",
        Some(&user_id),
        "ok",
        json!({ "role": role.as_str() }),
    );
    audit::record_or_log(&state.db, event).await;
    let member = member.ok_or_else(|| ApiError::from(Error::NotFound("member".into())))?;
    Ok(Json(member_json(member)))
}

/// DELETE /api/tenants/{tid}/members/{uid}.
pub async fn remove_member(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, user_id)): ApiPath<(TenantId, UserId)>,
) -> Result<StatusCode> {
    tenancy::change_member(
        &state.db,
        &ctx.tenant_id,
        ctx.role,
        &user_id,
        None,
        state.clock.now(),
    )
    .await?;
    let event = ctx.audit("member.remove", Some(&user_id), "ok", json!({}));
    audit::record_or_log(&state.db, event).await;
    Ok(StatusCode::NO_CONTENT)
}

/// One page of audit rows, newest first: one tenant's, or every row when `tenant` is `None`.
pub async fn audit_page(
    state: &AppState,
    tenant: Option<&str>,
    query: &PageQuery,
) -> Result<Json<Value>> {
    let mut select = audit_log::Entity::find();
    if let Some(tenant) = tenant {
        select = select.filter(audit_log::Column::TenantId.eq(tenant));
    }
    let page = pagination::fetch(
        &state.db,
        select,
        audit_log::Column::Id,
        Order::Desc,
        query,
        |row| row.id.clone(),
    )
    .await?;
    Ok(page_json(page, audit_json))
}

/// GET /api/tenants/{tid}/audit: this tenant's rows only, newest first.
pub async fn audit_log(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    audit_page(&state, Some(&ctx.tenant_id), &query).await
}

/// GET /api/templates: names and declared variables, never the command line.
pub async fn templates(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    let page = templates::page(&state.db, &query).await?;
    let items: Vec<Value> = page
        .items
        .into_iter()
        .map(|t| json!({ "name": t.name, "variables": t.variables }))
        .collect();
    Ok(Json(
        json!({ "items": items, "next_cursor": page.next_cursor }),
    ))
}

/// GET /api/nodes: enabled nodes a server can be placed on.
pub async fn nodes(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    let page = crate::nodes::store::page(&state.db, true, &query).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|n: &node::Model| json!({ "id": n.id, "name": n.name, "online": state.nodes.link.is_online(&n.id) }))
        .collect();
    Ok(Json(
        json!({ "items": items, "next_cursor": page.next_cursor }),
    ))
}
