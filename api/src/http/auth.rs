//! `/api/auth/*` and `/.well-known/jwks.json`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::access::Caller;
use super::error::{ApiError, ApiJson};
use super::guard::ClientIp;
use super::throttle::Attempt;
use super::types;
use crate::identity::{LoginOutcome, Origin, sessions};
use crate::{AppState, Error};

type Result<T> = std::result::Result<T, ApiError>;

/// Who is asking, without the user agent (kept only where a session is opened).
pub(super) fn origin(ip: ClientIp) -> Origin {
    Origin {
        ip: Some(ip.0.to_string()),
        user_agent: None,
    }
}

/// `{email, password, name?}`.
#[derive(Deserialize, ToSchema)]
pub struct Register {
    /// The account's address (a verification mail goes there).
    #[schema(format = Email)]
    email: String,
    /// At least 12 characters and at most 1024 bytes; not one of the 20,000 most common
    /// passwords nor containing the local part of the email (400 `weak_password`).
    #[schema(min_length = 12, max_length = 1024)]
    password: String,
    name: Option<String>,
}

/// POST /api/auth/register.
#[utoipa::path(
    post,
    path = "/api/auth/register",
    summary = r#"Create an account"#,
    description = r#"The account starts unverified; a verification mail is sent."#,
    request_body = Register,
    responses(
        (status = 201, description = "Created.", body = types::UserEnvelope),
        (status = 409, description = "See the description."),
    ),
)]
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
    let user = types::User::from(&user);
    Ok((StatusCode::CREATED, Json(types::UserEnvelope { user })).into_response())
}

/// `{token}`.
#[derive(Deserialize, ToSchema)]
pub struct TokenBody {
    token: String,
}

/// POST /api/auth/verify-email.
#[utoipa::path(
    post,
    path = "/api/auth/verify-email",
    summary = r#"Verify an email address"#,
    description = r#"The token is from the verification mail: one use, 24 hours."#,
    request_body = TokenBody,
    responses(
        (status = 200, description = "OK.", body = types::UserEnvelope),
    ),
)]
pub async fn verify_email(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Json<types::UserEnvelope>> {
    let user = state
        .identity
        .verify_email(&body.token, &origin(ip))
        .await?;
    let user = types::User::from(&user);
    Ok(Json(types::UserEnvelope { user }))
}

/// `{email}`.
#[derive(Deserialize, ToSchema)]
pub struct EmailBody {
    email: String,
}

/// POST /api/auth/resend-verification: 202 whatever the email, at once (see [`after_answer`]).
#[utoipa::path(
    post,
    path = "/api/auth/resend-verification",
    summary = r#"Mail a new verification link"#,
    description = r#"202 whatever the address, at once: the look-up and the mail run after the answer, so its timing does not tell which accounts exist."#,
    request_body = EmailBody,
    responses(
        (status = 202, description = "Accepted."),
    ),
)]
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
#[derive(Deserialize, ToSchema)]
pub struct Login {
    email: String,
    password: String,
    tenant_id: Option<String>,
}

/// POST /api/auth/login, throttled per client and per account (see [`super::throttle`]). With
/// TOTP on, the right password answers `{mfa_required: true, mfa_token}` instead of tokens, and
/// the client's network becomes familiar to the account only once the second step succeeds.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    summary = r#"Log in"#,
    description = r#"Unknown email and wrong password both answer 401 `invalid_credentials`. Ten failures from one client (IPv4 address or IPv6 /64) within an hour block it for an hour (429); twenty on one account from networks that never logged into it throttle such networks for 15 minutes (429). `tenant_id` must name a tenant of the user (400 otherwise). When the password-hashing queue is full the login is refused at once: 503 `unavailable` with `Retry-After`. A locked account (`api user lock`) with the right password is 403 `forbidden`. With TOTP on, the right password answers `{mfa_required: true, mfa_token}` instead of tokens: finish with `POST /api/auth/login/mfa`."#,
    request_body = Login,
    responses(
        (status = 200, description = "OK.", body = types::LoginAnswer),
        (status = 401, description = "See the description."),
        (status = 403, description = "See the description."),
        (status = 503, description = "See the description."),
    ),
)]
pub async fn login(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Login>,
) -> Result<Json<types::LoginAnswer>> {
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
            Ok(Json(types::LoginAnswer::Tokens(pair.into())))
        }
        Ok(LoginOutcome::MfaRequired { mfa_token }) => {
            Ok(Json(types::LoginAnswer::Mfa(types::MfaChallenge {
                mfa_required: true,
                mfa_token,
                expires_in: crate::identity::MFA_TTL.as_secs(),
            })))
        }
        Err(Error::InvalidCredentials) => {
            attempt.failed(&state).await;
            Err(Error::InvalidCredentials.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `{refresh_token}`.
#[derive(Deserialize, ToSchema)]
pub struct RefreshBody {
    refresh_token: String,
}

/// POST /api/auth/refresh.
#[utoipa::path(
    post,
    path = "/api/auth/refresh",
    summary = r#"Exchange a refresh token for a new pair"#,
    description = r#"Rotation: the old token is used up. Presenting a used one answers 401 `token_reused` and revokes its whole family."#,
    request_body = RefreshBody,
    responses(
        (status = 200, description = "OK.", body = types::TokenPair),
        (status = 401, description = "See the description."),
    ),
)]
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Json<types::TokenPair>> {
    let pair = state
        .identity
        .refresh(&body.refresh_token, &origin(ip))
        .await?;
    Ok(Json(pair.into()))
}

/// POST /api/auth/logout: revokes the token's family.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    summary = r#"End the session of a refresh token"#,
    description = r#"Unknown tokens are ignored."#,
    request_body = RefreshBody,
    responses(
        (status = 204, description = "Done; no content."),
    ),
)]
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
#[utoipa::path(
    post,
    path = "/api/auth/logout-all",
    summary = r#"End every session of the caller"#,
    description = r#"Access tokens issued before now stop working."#,
    responses(
        (status = 204, description = "Done; no content."),
    ),
)]
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
#[utoipa::path(
    post,
    path = "/api/auth/password-reset",
    summary = r#"Mail a password reset link"#,
    description = r#"202 whatever the address, at once (the mail is sent after the answer). The token is valid for one hour, once."#,
    request_body = EmailBody,
    responses(
        (status = 202, description = "Accepted."),
    ),
)]
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
#[derive(Deserialize, ToSchema)]
pub struct ResetConfirm {
    /// From the reset mail.
    token: String,
    /// As at registration.
    #[schema(min_length = 12, max_length = 1024)]
    new_password: String,
}

/// POST /api/auth/password-reset/confirm.
#[utoipa::path(
    post,
    path = "/api/auth/password-reset/confirm",
    summary = r#"Set a new password"#,
    description = r#"Every session of the account is revoked."#,
    request_body = ResetConfirm,
    responses(
        (status = 204, description = "Done; no content."),
    ),
)]
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

/// GET /.well-known/jwks.json.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    summary = r#"Keys that verify access tokens"#,
    description = r#"The active key and the retired ones still accepted; `kid` on every key."#,
    responses(
        (status = 200, description = "OK.", body = types::JwkSet),
    ),
)]
pub async fn jwks(State(state): State<Arc<AppState>>) -> Result<Json<types::JwkSet>> {
    // The keys are written by `security`, which knows no API types: read back as the type.
    let keys = serde_json::from_value(state.identity.jwks())
        .map_err(|e| ApiError::from(Error::internal(format!("JWKS: {e}"))))?;
    Ok(Json(keys))
}
