//! `/api/auth/*` and `/.well-known/jwks.json`.

use crate::ids::SessionId;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::error::{ApiError, ApiJson, ApiPath};
use super::guard::ClientIp;
use super::throttle::Attempt;
use crate::db::entities::user;
use crate::identity::{ACCESS_TTL, LoginOutcome, Origin, TokenPair, sessions};
use crate::{AppState, Error};

type Result<T> = std::result::Result<T, ApiError>;

/// Who is asking, without the user agent (kept only where a session is opened).
pub(super) fn origin(ip: ClientIp) -> Origin {
    Origin {
        ip: Some(ip.0.to_string()),
        user_agent: None,
    }
}

fn user_json(user: &user::Model) -> Value {
    json!({ "id": user.id, "email": user.email, "name": user.name, "email_verified": user.email_verified })
}

/// The token pair as login answers it.
pub(super) fn pair_json(pair: TokenPair) -> Json<Value> {
    Json(json!({
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TTL.as_secs(),
    }))
}

/// `{email, password, name?}`.
#[derive(Deserialize)]
pub struct Register {
    email: String,
    password: String,
    name: Option<String>,
}

/// POST /api/auth/register.
pub async fn register(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    ApiJson(body): ApiJson<Register>,
) -> Result<Response> {
    let user = state
        .identity
        .register(
            &body.email,
            &body.password,
            body.name.as_deref(),
            &origin(ip),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": user_json(&user) })),
    )
        .into_response())
}

/// `{token}`.
#[derive(Deserialize)]
pub struct TokenBody {
    token: String,
}

/// POST /api/auth/verify-email.
pub async fn verify_email(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Json<Value>> {
    let user = state
        .identity
        .verify_email(&body.token, &origin(ip))
        .await?;
    Ok(Json(json!({ "user": user_json(&user) })))
}

/// `{email}`.
#[derive(Deserialize)]
pub struct EmailBody {
    email: String,
}

/// POST /api/auth/resend-verification: 202 whatever the email, at once (see [`after_answer`]).
pub async fn resend_verification(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<EmailBody>,
) -> Result<StatusCode> {
    after_answer(&state, "resend verification", move |state| async move {
        state.identity.resend_verification(&body.email).await
    });
    Ok(StatusCode::ACCEPTED)
}

/// Runs the look-up and the mail of an endpoint that answers 202 whatever the email after the
/// answer, so an existing account's answer takes no longer than a missing one's. Bounded: when
/// [`crate::identity::Identity::mail_job`] has no slot the job is dropped with a warning.
pub(super) fn after_answer<F, Fut>(state: &Arc<AppState>, what: &'static str, work: F)
where
    F: FnOnce(Arc<AppState>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::result::Result<(), Error>> + Send + 'static,
{
    let Some(slot) = state.identity.mail_job() else {
        tracing::warn!(what, "too many mail jobs queued; request dropped");
        return;
    };
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = work(state).await {
            tracing::warn!(what, error = %e, "background mail job failed");
        }
        drop(slot);
    });
}

/// `{email, password, tenant_id?}`.
#[derive(Deserialize)]
pub struct Login {
    email: String,
    password: String,
    tenant_id: Option<String>,
}

/// POST /api/auth/login, throttled per client and per account (see [`super::throttle`]). With
/// TOTP on, the right password answers `{mfa_required: true, mfa_token}` instead of tokens, and
/// the client's network becomes familiar to the account only once the second step succeeds.
pub async fn login(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Login>,
) -> Result<Json<Value>> {
    let attempt = Attempt::new(ip, &body.email);
    let origin = Origin {
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| sessions::bounded_user_agent(v.as_bytes())),
        ..origin(ip)
    };
    let lane = attempt.admit(&state).await?;
    match state
        .identity
        .login(&body.email, &body.password, body.tenant_id, &origin, lane)
        .await
    {
        Ok(LoginOutcome::Tokens(pair)) => {
            attempt.succeeded(&state).await;
            Ok(pair_json(pair))
        }
        Ok(LoginOutcome::MfaRequired { mfa_token }) => Ok(Json(json!({
            "mfa_required": true,
            "mfa_token": mfa_token,
            "expires_in": crate::identity::MFA_TTL.as_secs(),
        }))),
        Err(Error::InvalidCredentials) => {
            attempt.failed(&state).await;
            Err(Error::InvalidCredentials.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `{refresh_token}`.
#[derive(Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
}

/// POST /api/auth/refresh.
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Json<Value>> {
    Ok(pair_json(
        state
            .identity
            .refresh(&body.refresh_token, &origin(ip))
            .await?,
    ))
}

/// POST /api/auth/logout: revokes the token's family.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<StatusCode> {
    state
        .identity
        .logout(&body.refresh_token, &origin(ip))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// POST /api/auth/logout-all (authenticated).
pub async fn logout_all(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    Caller(principal): Caller,
) -> Result<StatusCode> {
    state
        .identity
        .logout_all(&principal.user.id, &origin(ip))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// POST /api/auth/password-reset: 202 whatever the email, at once (see [`after_answer`]).
pub async fn password_reset(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    ApiJson(body): ApiJson<EmailBody>,
) -> Result<StatusCode> {
    let origin = origin(ip);
    after_answer(&state, "password reset", move |state| async move {
        state
            .identity
            .request_password_reset(&body.email, &origin)
            .await
    });
    Ok(StatusCode::ACCEPTED)
}

/// `{token, new_password}`.
#[derive(Deserialize)]
pub struct ResetConfirm {
    token: String,
    new_password: String,
}

/// POST /api/auth/password-reset/confirm.
pub async fn password_reset_confirm(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    ApiJson(body): ApiJson<ResetConfirm>,
) -> Result<StatusCode> {
    state
        .identity
        .confirm_password_reset(&body.token, &body.new_password, &origin(ip))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{current_password, new_password}`.
#[derive(Deserialize)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// POST /api/auth/password (authenticated): a wrong current password counts as a failed login
/// of the caller's account from this client (see [`super::throttle`]).
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    Caller(principal): Caller,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<StatusCode> {
    let attempt = Attempt::new(ip, &principal.user.email);
    let lane = attempt.admit(&state).await?;
    match state
        .identity
        .change_password(
            &principal,
            &body.current_password,
            &body.new_password,
            &origin(ip),
            lane,
        )
        .await
    {
        Ok(()) => {
            attempt.succeeded(&state).await;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(Error::InvalidCredentials) => {
            attempt.failed(&state).await;
            Err(Error::InvalidCredentials.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// GET /api/auth/sessions (authenticated): the caller's live sessions, newest first.
pub async fn sessions(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
) -> Result<Json<Value>> {
    let items: Vec<Value> = state
        .identity
        .sessions(&principal)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "created_at": s.created_at,
                "last_used_at": s.last_used_at,
                "ip": s.ip,
                "user_agent": s.user_agent,
                "current": s.current,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// DELETE /api/auth/sessions/{id} (authenticated): ends one of the caller's sessions.
pub async fn end_session(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    Caller(principal): Caller,
    ApiPath(id): ApiPath<SessionId>,
) -> Result<StatusCode> {
    state
        .identity
        .end_session(&principal, &id, &origin(ip))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// GET /api/auth/me (authenticated).
pub async fn me(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
) -> Result<Json<Value>> {
    let memberships: Vec<Value> = crate::tenancy::memberships_of(&state.db, &principal.user.id)
        .await?
        .into_iter()
        .map(|(tenant_id, role)| json!({ "tenant_id": tenant_id, "role": role.as_str() }))
        .collect();
    Ok(Json(
        json!({ "user": user_json(&principal.user), "memberships": memberships }),
    ))
}

/// GET /.well-known/jwks.json.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(state.identity.jwks())
}
