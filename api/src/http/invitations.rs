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
use serde_json::json;
use utoipa::ToSchema;

use super::access::{Caller, TenantCtx};
use super::auth::after_answer;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::guard::ClientIp;
use super::tenants::parse_role;
use super::types::{self, Page};
use crate::audit::{self, AuditEvent};
use crate::pagination::PageQuery;
use crate::tenancy::invitations::{self, Refusal};
use crate::{AppState, Error};

type Result<T> = std::result::Result<T, ApiError>;

/// Invitations a tenant may send per hour.
const INVITATIONS_PER_TENANT: security::limiter::Rule = security::limiter::Rule {
    limit: 30,
    window: std::time::Duration::from_secs(3600),
};

/// `{email, role}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvitation {
    /// The address to invite.
    #[schema(format = Email)]
    email: String,
    /// Only an owner invites an owner.
    #[schema(value_type = types::RoleName)]
    role: String,
}

/// POST /api/tenants/{tid}/invitations: 202 with the invitation, whoever the address is.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/invitations",
    summary = r#"Invite an address into the tenant"#,
    description = r#"Mails a one-time link (7 days) to the address, whether or not it has an account: the answer is the same either way. Only an owner invites an owner. At most 100 pending invitations per tenant (409). Unknown fields are refused."#,
    request_body = NewInvitation,
    responses(
        (status = 202, description = "Accepted.", body = types::Invitation),
        (status = 409, description = "See the description."),
    ),
)]
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
    let invitation = types::Invitation::from(invited.invitation);
    Ok((StatusCode::ACCEPTED, Json(invitation)).into_response())
}

/// GET /api/tenants/{tid}/invitations: pending ones, oldest first.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/invitations",
    summary = r#"The tenant's pending invitations, oldest first"#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<types::Invitation>),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<types::Invitation>>> {
    let page = invitations::pending(&state.db, &ctx.tenant_id, state.clock.now(), &query).await?;
    Ok(Json(Page::of(page, types::Invitation::from)))
}

/// DELETE /api/tenants/{tid}/invitations/{iid}: the link stops working.
#[utoipa::path(
    delete,
    path = "/api/tenants/{tid}/invitations/{iid}",
    summary = r#"Withdraw a pending invitation"#,
    description = r#"Its link stops working. Only an owner withdraws an owner's invitation."#,
    responses(
        (status = 204, description = "Done; no content."),
    ),
)]
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
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    token: String,
}

/// POST /api/invitations/accept: the caller joins the tenant (audited either way).
#[utoipa::path(
    post,
    path = "/api/invitations/accept",
    summary = r#"Accept an invitation to a tenant"#,
    description = r#"The token is from the invitation mail: one use, 7 days. The caller must be logged in with the invited, verified address (403 otherwise; an address without an account registers first). A used, withdrawn, expired or unknown link is 400; already a member of the tenant, 409."#,
    request_body = Accept,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 400, description = "See the description."),
        (status = 403, description = "See the description."),
        (status = 409, description = "See the description."),
    ),
)]
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
