//! `/api/tenants/{tid}/secrets…`: envelope-encrypted values. Reads of a value are audited;
//! values never appear in audit rows, logs or errors.

use crate::ids::TenantId;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::TenantCtx;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::tenants::page_json;
use crate::pagination::PageQuery;
use crate::{AppState, audit, secrets};

type Result<T> = std::result::Result<T, ApiError>;

/// `{value}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    value: String,
}

/// PUT /api/tenants/{tid}/secrets/{name}.
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
pub async fn list(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    let page = secrets::list(&state.db, &ctx.tenant_id, &query).await?;
    Ok(page_json(
        page,
        |s| json!({ "name": s.name, "created_at": s.created_at, "updated_at": s.updated_at }),
    ))
}

/// GET /api/tenants/{tid}/secrets/{name}: the value, audited.
pub async fn get(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, name)): ApiPath<(TenantId, String)>,
) -> Result<Json<Value>> {
    let value = secrets::read(&state.db, &state.vault, &ctx.tenant_id, &name).await?;
    let event = ctx.audit("secret.read", Some(&name), "ok", json!({}));
    audit::record_or_log(&state.db, event).await;
    Ok(Json(json!({ "name": name, "value": value.as_str() })))
}

/// DELETE /api/tenants/{tid}/secrets/{name}.
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
