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
use serde_json::json;
use utoipa::ToSchema;

use super::access::{Caller, TenantCtx};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::guard::ClientIp;
use super::types::{self, Page};
use crate::audit::{self, AuditEvent};
use crate::db::entities::{audit_log, node};
use crate::pagination::{self, PageQuery};
use crate::tenancy;
use crate::{AppState, Error, servers, templates};

type Result<T> = std::result::Result<T, ApiError>;

/// `{name}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// 1 to 100 characters (trimmed), no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: String,
}

/// POST /api/tenants: the caller becomes its owner.
#[utoipa::path(
    post,
    path = "/api/tenants",
    summary = r#"Create a tenant"#,
    description = r#"The caller becomes its owner. Unknown fields are refused."#,
    request_body = NewTenant,
    responses(
        (status = 201, description = "Created.", body = types::Tenant),
    ),
)]
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
    Ok((StatusCode::CREATED, Json(types::Tenant::new(&tenant, None))).into_response())
}

/// GET /api/tenants: the tenants the caller belongs to, with their role.
#[utoipa::path(
    get,
    path = "/api/tenants",
    summary = r#"The tenants the caller belongs to, with their role"#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<types::Tenant>),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<types::Tenant>>> {
    let page = tenancy::list_for(&state.db, &principal.user.id, &query).await?;
    Ok(Json(Page::of(page, |view| {
        types::Tenant::new(&view.tenant, Some(view.role))
    })))
}

/// GET /api/tenants/{tid}.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}",
    summary = r#"A tenant, with the caller's role"#,
    responses(
        (status = 200, description = "OK.", body = types::Tenant),
    ),
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
) -> Result<Json<types::Tenant>> {
    let tenant = tenancy::get(&state.db, &ctx.tenant_id).await?;
    Ok(Json(types::Tenant::new(&tenant, Some(ctx.role))))
}

/// DELETE /api/tenants/{tid}: its servers are deleted on their nodes, then the tenant.
#[utoipa::path(
    delete,
    path = "/api/tenants/{tid}",
    summary = r#"Delete a tenant"#,
    description = r#"Its servers are deleted on their nodes and its secrets destroyed."#,
    responses(
        (status = 202, description = "Accepted."),
    ),
)]
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
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/members",
    summary = r#"The tenant's members"#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<types::Member>),
    ),
)]
pub async fn members(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<types::Member>>> {
    let page = tenancy::members(&state.db, &ctx.tenant_id, &query).await?;
    Ok(Json(Page::of(page, types::Member::from)))
}

/// `{email, role}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// The address of an account.
    #[schema(format = Email)]
    email: String,
    /// Only an owner grants `owner`.
    #[schema(value_type = types::RoleName)]
    role: String,
}

/// `{role}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolePatch {
    /// The new role.
    #[schema(value_type = types::RoleName)]
    role: String,
}

pub(super) fn parse_role(name: &str) -> Result<authz::Role> {
    authz::Role::parse(name)
        .ok_or_else(|| Error::Invalid("role must be owner, admin, support or member".into()).into())
}

/// POST /api/tenants/{tid}/members.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/members",
    summary = r#"Add a user as a member"#,
    description = r#"404 when no account has the address; only an owner grants `owner`. Unknown fields are refused."#,
    request_body = NewMember,
    responses(
        (status = 201, description = "Created.", body = types::Member),
        (status = 409, description = "See the description."),
    ),
)]
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
    Ok((StatusCode::CREATED, Json(types::Member::from(member))).into_response())
}

/// PATCH /api/tenants/{tid}/members/{uid}.
#[utoipa::path(
    patch,
    path = "/api/tenants/{tid}/members/{uid}",
    summary = r#"Change a member's role"#,
    description = r#"The last owner cannot be demoted (409). Unknown fields are refused."#,
    request_body = RolePatch,
    responses(
        (status = 200, description = "OK.", body = types::Member),
        (status = 409, description = "See the description."),
    ),
)]
pub async fn update_member(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, user_id)): ApiPath<(TenantId, UserId)>,
    ApiJson(body): ApiJson<RolePatch>,
) -> Result<Json<types::Member>> {
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
    Ok(Json(member.into()))
}

/// DELETE /api/tenants/{tid}/members/{uid}.
#[utoipa::path(
    delete,
    path = "/api/tenants/{tid}/members/{uid}",
    summary = r#"Remove a member"#,
    description = r#"The last owner cannot be removed (409)."#,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 409, description = "See the description."),
    ),
)]
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
) -> Result<Json<Page<types::AuditEntry>>> {
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
    Ok(Json(Page::of(page, types::AuditEntry::from)))
}

/// GET /api/tenants/{tid}/audit: this tenant's rows only, newest first.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/audit",
    summary = r#"The tenant's audit log, newest first"#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<types::AuditEntry>),
    ),
)]
pub async fn audit_log(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<types::AuditEntry>>> {
    audit_page(&state, Some(&ctx.tenant_id), &query).await
}

/// GET /api/templates: names and declared variables, never the command line.
#[utoipa::path(
    get,
    path = "/api/templates",
    summary = r#"Templates a server can be made from, by name"#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<types::TemplateSummary>),
    ),
)]
pub async fn templates(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<types::TemplateSummary>>> {
    let page = templates::page(&state.db, &query).await?;
    Ok(Json(Page::of(page, |t| types::TemplateSummary {
        name: t.name,
        variables: t.variables,
    })))
}

/// GET /api/nodes: enabled nodes a server can be placed on.
#[utoipa::path(
    get,
    path = "/api/nodes",
    summary = r#"Enabled nodes a server can be placed on, by id"#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<types::NodeSummary>),
    ),
)]
pub async fn nodes(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<types::NodeSummary>>> {
    let page = crate::nodes::store::page(&state.db, true, &query).await?;
    Ok(Json(Page::of(page, |n: node::Model| types::NodeSummary {
        online: state.nodes.link.is_online(&n.id),
        id: n.id,
        name: n.name,
    })))
}
