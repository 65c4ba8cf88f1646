//! `/api/tenants/{tid}/invitations` and `/api/invitations/accept`: invite by address, list
//! and withdraw pending invitations, accept one. The answer to an invitation is the same
//! whether or not the address has an account; the look-up and the mail run after it.

use crate::ids::{InvitationId, TenantId};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{Caller, TenantCtx};
use super::auth::after_answer;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::guard::ClientIp;
use super::tenants::{page_json, parse_role};
use crate::audit::{self, AuditEvent};
use crate::db::entities::invitation;
use crate::pagination::PageQuery;
use crate::tenancy::invitations::{self, Refusal};
use crate::{AppState, Error};

type Result<T> = std::result::Result<T, ApiError>;

/// Invitations a tenant may send per hour.
const INVITATIONS_PER_TENANT: security::limiter::Rule = security::limiter::Rule {
    limit: 30,
    window: std::time::Duration::from_secs(3600),
};

fn invitation_json(i: invitation::Model) -> Value {
    json!({
        "id": i.id,
        "email": i.email,
        "role": i.role,
        "invited_by": i.invited_by,
        "created_at": i.created_at,
        "expires_at": i.expires_at,
    })
}

/// `{email, role}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInvitation {
    email: String,
    role: String,
}

/// POST /api/tenants/{tid}/invitations: 202 with the invitation, whoever the address is.
pub async fn create(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<NewInvitation>,
) -> Result<Response> {
    let role = parse_role(&body.role)?;
    // Each invitation is a mail to any address: counted per tenant (withdrawn ones too), so
    // invite-withdraw loops cannot turn the panel into a mailer.
    let decision = state
        .limits
        .check(&format!("invite:{}", ctx.tenant_id), INVITATIONS_PER_TENANT)
        .await;
    if !decision.allowed {
        return Err(Error::RateLimited {
            retry_after_secs: decision.retry_after_secs(state.clock.now().timestamp_millis()),
        }
        .into());
    }
    let invited = invitations::create(
        &state.db,
        &ctx.tenant_id,
        ctx.role,
        &ctx.principal.user.id,
        &body.email,
        role,
        state.clock.now(),
    )
    .await?;
    let event = ctx.audit(
        "member.invite",
        Some(&invited.invitation.id),
        "ok",
        json!({ "email": invited.invitation.email, "role": role.as_str() }),
    );
    audit::record_or_log(&state.db, event).await;
    let (to, token, tenant_id) = (
        invited.invitation.email.clone(),
        invited.token,
        ctx.tenant_id.clone(),
    );
    after_answer(&state, "invitation mail", move |state| async move {
        state
            .identity
            .mail_invitation(&to, &tenant_id, &token)
            .await
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(invitation_json(invited.invitation)),
    )
        .into_response())
}

/// GET /api/tenants/{tid}/invitations: pending ones, oldest first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    let page = invitations::pending(&state.db, &ctx.tenant_id, state.clock.now(), &query).await?;
    Ok(page_json(page, invitation_json))
}

/// DELETE /api/tenants/{tid}/invitations/{iid}: the link stops working.
pub async fn withdraw(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, id)): ApiPath<(TenantId, InvitationId)>,
) -> Result<StatusCode> {
    let withdrawn =
        invitations::withdraw(&state.db, &ctx.tenant_id, ctx.role, &id, state.clock.now()).await?;
    let event = ctx.audit(
        "member.invitation_withdrawn",
        Some(&withdrawn.id),
        "ok",
        json!({ "email": withdrawn.email }),
    );
    audit::record_or_log(&state.db, event).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `{token}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    token: String,
}

/// POST /api/invitations/accept: the caller joins the tenant (audited either way).
pub async fn accept(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<Accept>,
) -> Result<StatusCode> {
    let result =
        invitations::accept(&state.db, &body.token, &principal.user, state.clock.now()).await;
    let (outcome, target, tenant_id) = match &result {
        Ok(i) => ("ok", Some(i.id.clone()), Some(i.tenant_id.clone())),
        Err(Refusal::OtherAccount {
            tenant_id,
            invitation_id,
        }) => (
            "rejected: other_account",
            Some(invitation_id.clone()),
            Some(tenant_id.clone()),
        ),
        Err(Refusal::Unusable) => ("rejected: unusable", None, None),
        Err(Refusal::Other(Error::Conflict(_))) => ("rejected: already_member", None, None),
        Err(Refusal::Other(_)) => ("failed", None, None),
    };
    let event = AuditEvent {
        actor: principal.actor(),
        action: "member.invitation_accept".into(),
        target,
        outcome: outcome.to_owned(),
        ip: Some(ip.to_string()),
        details: json!({}),
        tenant_id,
    };
    audit::record_or_log(&state.db, event).await;
    result
        .map(|_| StatusCode::NO_CONTENT)
        .map_err(|refusal| ApiError::from(Error::from(refusal)))
}
