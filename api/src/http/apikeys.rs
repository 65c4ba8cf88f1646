//! `/api/tenants/{tid}/api-keys`: a member makes keys for scripts (holding at most what their
//! role grants), lists them (their own; every member's with `member:manage`) and revokes them.
//! The whole key is in the creation answer only. These routes are closed to keys themselves.

use crate::ids::{ApiKeyId, TenantId};
use std::sync::Arc;

use authz::Permission;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::TenantCtx;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::tenants::page_json;
use crate::AppState;
use crate::apikeys::{self, KeyView, NewKey};
use crate::audit;
use crate::pagination::PageQuery;

type Result<T> = std::result::Result<T, ApiError>;

fn key_json(key: KeyView) -> Value {
    json!({
        "id": key.row.id,
        "prefix": key.prefix(),
        "name": key.row.name,
        "permissions": key.permissions,
        "created_by": key.row.user_id,
        "created_at": key.row.created_at,
        "last_used_at": key.row.last_used_at,
        "expires_at": key.row.expires_at,
    })
}

/// `{name, permissions, expires_at?}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    name: String,
    permissions: Vec<Permission>,
    expires_at: Option<DateTime<Utc>>,
}

/// POST /api/tenants/{tid}/api-keys: 201 with the whole key, shown this once.
pub async fn create(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<NewKeyBody>,
) -> Result<Response> {
    let (view, key) = apikeys::create(
        &state.db,
        (&state.api_keys, &state.vault),
        NewKey {
            tenant_id: &ctx.tenant_id,
            user_id: &ctx.principal.user.id,
            role: ctx.role,
            name: &body.name,
            permissions: &body.permissions,
            expires_at: body.expires_at,
        },
        state.clock.now(),
    )
    .await?;
    let event = ctx.audit(
        "apikey.create",
        Some(&view.row.id),
        "ok",
        json!({ "name": view.row.name, "permissions": view.permissions }),
    );
    audit::record_or_log(&state.db, event).await;
    let mut value = key_json(view);
    value["key"] = json!(key.as_str());
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// GET /api/tenants/{tid}/api-keys: live keys, never their secrets.
pub async fn list(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    let of_user = (!ctx.allows(Permission::MemberManage)).then_some(ctx.principal.user.id.as_str());
    let page = apikeys::list(
        &state.db,
        &ctx.tenant_id,
        of_user,
        state.clock.now(),
        &query,
    )
    .await?;
    Ok(page_json(page, key_json))
}

/// DELETE /api/tenants/{tid}/api-keys/{kid}: one's own key, or any with `member:manage`.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, id)): ApiPath<(TenantId, ApiKeyId)>,
) -> Result<StatusCode> {
    let revoked = apikeys::revoke(
        &state.db,
        &ctx.tenant_id,
        &id,
        &ctx.principal.user.id,
        ctx.allows(Permission::MemberManage),
        state.clock.now(),
    )
    .await?;
    // Its open event streams re-check at once.
    state.identity.announce_revoked(&revoked.user_id);
    let event = ctx.audit(
        "apikey.revoke",
        Some(&revoked.id),
        "ok",
        json!({ "name": revoked.name, "created_by": revoked.user_id }),
    );
    audit::record_or_log(&state.db, event).await;
    Ok(StatusCode::NO_CONTENT)
}
