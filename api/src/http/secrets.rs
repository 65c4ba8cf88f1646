//! `/api/tenants/{tid}/secrets…`: envelope-encrypted values. Reads of a value are audited;
//! values never appear in audit rows, logs or errors.

use crate::ids::TenantId;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::access::TenantCtx;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::types::{self, Page};
use crate::pagination::PageQuery;
use crate::{AppState, audit, secrets};

type Result<T> = std::result::Result<T, ApiError>;

/// `{value}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// At most 64 KiB.
    #[schema(max_length = 65536)]
    value: String,
}

/// PUT /api/tenants/{tid}/secrets/{name}.
#[utoipa::path(
    put,
    path = "/api/tenants/{tid}/secrets/{name}",
    summary = r#"Create or replace a secret"#,
    description = r#"Needs a verified email address. The value is at most 64 KiB. Unknown fields are refused."#,
    request_body = SecretValue,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 409, description = "See the description."),
    ),
)]
pub async fn put(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, name)): ApiPath<(TenantId, String)>,
    ApiJson(body): ApiJson<SecretValue>,
) -> Result<StatusCode> {
    ctx.principal.require_verified()?;
    let value = zeroize::Zeroizing::new(body.value);
    secrets::put(&state.db, &state.vault, &ctx.tenant_id, &name, &value).await?;
    let event = ctx.audit("secret.write", Some(&name), "ok", json!({}));
    audit::record_or_log(&state.db, event).await;
    Ok(StatusCode::NO_CONTENT)
}

/// GET /api/tenants/{tid}/secrets: names and times only.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/secrets",
    summary = r#"The tenant's secrets: names and times only"#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<types::SecretInfo>),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<types::SecretInfo>>> {
    let page = secrets::list(&state.db, &ctx.tenant_id, &query).await?;
    Ok(Json(Page::of(page, |s| types::SecretInfo {
        name: s.name,
        created_at: s.created_at,
        updated_at: s.updated_at,
    })))
}

/// GET /api/tenants/{tid}/secrets/{name}: the value, audited.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/secrets/{name}",
    summary = r#"A secret's value (audited)"#,
    description = r#"409 `secret_unreadable` when the stored value does not decrypt."#,
    responses(
        (status = 200, description = "OK.", body = types::Secret),
        (status = 409, description = "See the description."),
    ),
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, name)): ApiPath<(TenantId, String)>,
) -> Result<Json<types::Secret>> {
    let value = secrets::read(&state.db, &state.vault, &ctx.tenant_id, &name).await?;
    let event = ctx.audit("secret.read", Some(&name), "ok", json!({}));
    audit::record_or_log(&state.db, event).await;
    let value = value.as_str().to_owned();
    Ok(Json(types::Secret { name, value }))
}

/// DELETE /api/tenants/{tid}/secrets/{name}.
#[utoipa::path(
    delete,
    path = "/api/tenants/{tid}/secrets/{name}",
    summary = r#"Delete a secret"#,
    responses(
        (status = 204, description = "Done; no content."),
    ),
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, name)): ApiPath<(TenantId, String)>,
) -> Result<StatusCode> {
    secrets::delete(&state.db, &ctx.tenant_id, &name).await?;
    let event = ctx.audit("secret.delete", Some(&name), "ok", json!({}));
    audit::record_or_log(&state.db, event).await;
    Ok(StatusCode::NO_CONTENT)
}
