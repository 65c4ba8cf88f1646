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
use serde_json::json;
use utoipa::ToSchema;

use super::access::TenantCtx;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::types::{self, Page};
use crate::AppState;
use crate::apikeys::{self, NewKey};
use crate::audit;
use crate::pagination::PageQuery;

type Result<T> = std::result::Result<T, ApiError>;

/// `{name, permissions, expires_at?}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// 1 to 100 characters (trimmed), no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: String,
    /// Each one the caller's role grants.
    #[schema(value_type = Vec<types::PermissionName>, min_items = 1)]
    permissions: Vec<Permission>,
    /// In the future; absent or null: it does not expire.
    expires_at: Option<DateTime<Utc>>,
}

/// POST /api/tenants/{tid}/api-keys: 201 with the whole key, shown this once.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/api-keys",
    summary = r#"Make an API key for scripts"#,
    description = r#"The whole key (`mhp_` + 16 hex characters + `_` + 43 base64url characters) is in this answer only. It reaches this tenant's routes only, with the permissions given here, each of which the caller's role must grant (403), and never more than the caller's role grants at the time of use. Send it as `Authorization: Bearer mhp_…`. At most 25 live keys per member. Unknown fields are refused."#,
    request_body = NewKeyBody,
    responses(
        (status = 201, description = "Created.", body = types::NewApiKey),
        (status = 409, description = "See the description."),
    ),
)]
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
    let made = types::NewApiKey {
        key: view.into(),
        secret: key.as_str().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

/// GET /api/tenants/{tid}/api-keys: live keys, never their secrets.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/api-keys",
    summary = r#"Live API keys"#,
    description = r#"The caller's own; every member's with `member:manage`. Never the secret."#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<types::ApiKey>),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<types::ApiKey>>> {
    let of_user = (!ctx.allows(Permission::MemberManage)).then_some(ctx.principal.user.id.as_str());
    let page = apikeys::list(
        &state.db,
        &ctx.tenant_id,
        of_user,
        state.clock.now(),
        &query,
    )
    .await?;
    Ok(Json(Page::of(page, types::ApiKey::from)))
}

/// DELETE /api/tenants/{tid}/api-keys/{kid}: one's own key, or any with `member:manage`.
#[utoipa::path(
    delete,
    path = "/api/tenants/{tid}/api-keys/{kid}",
    summary = r#"Revoke an API key"#,
    description = r#"One's own, or any with `member:manage`; it stops at its next request."#,
    responses(
        (status = 204, description = "Done; no content."),
    ),
)]
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
