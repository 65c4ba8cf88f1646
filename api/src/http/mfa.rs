//! `/api/auth/totp*` and `/api/auth/login/mfa`: the TOTP second factor over REST (the logic is
//! in [`crate::identity::totp`]). Each handler reads the clock once and passes `now` down.
//! Wrong passwords and codes count like failed logins of the account from this client (see
//! [`super::throttle`]): the login limit locks guessing out.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::auth::{origin, pair_json};
use super::error::{ApiError, ApiJson};
use super::guard::ClientIp;
use super::throttle::Attempt;
use crate::identity::{Origin, Proof, sessions};
use crate::{AppState, Error};

type Result<T> = std::result::Result<T, ApiError>;

/// POST /api/auth/totp/setup (authenticated): a new pending secret, shown once.
pub async fn setup(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    Caller(principal): Caller,
) -> Result<Json<Value>> {
    let enrolment = state
        .identity
        .totp_setup(&state.vault, &principal, &origin(ip), state.clock.now())
        .await?;
    Ok(Json(json!({
        "secret": enrolment.secret.as_str(),
        "otpauth_uri": enrolment.otpauth_uri.as_str(),
        "qr_svg": enrolment.qr_svg,
    })))
}

/// `{code}`.
#[derive(Deserialize)]
pub struct CodeBody {
    code: String,
}

/// POST /api/auth/totp/confirm (authenticated): turns TOTP on; the recovery codes, shown once.
pub async fn confirm(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    Caller(principal): Caller,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<Json<Value>> {
    let codes = state
        .identity
        .totp_confirm(
            &state.vault,
            &principal,
            &body.code,
            &origin(ip),
            state.clock.now(),
        )
        .await?;
    Ok(Json(json!({ "recovery_codes": codes })))
}

/// `{password, code}`.
#[derive(Deserialize)]
pub struct DisableBody {
    password: String,
    code: String,
}

/// DELETE /api/auth/totp (authenticated): turns TOTP off with the password and a code.
pub async fn disable(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    Caller(principal): Caller,
    ApiJson(body): ApiJson<DisableBody>,
) -> Result<StatusCode> {
    let attempt = Attempt::new(ip, &principal.user.email);
    let lane = attempt.admit(&state).await?;
    let result = state
        .identity
        .totp_disable(
            &state.vault,
            &principal,
            &body.password,
            &body.code,
            &origin(ip),
            lane,
            state.clock.now(),
        )
        .await;
    counted(&state, &attempt, result).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{mfa_token, code | recovery_code}`.
#[derive(Deserialize)]
pub struct MfaLogin {
    mfa_token: String,
    code: Option<String>,
    recovery_code: Option<String>,
}

/// POST /api/auth/login/mfa: the second step of a login; the token pair, as login answers.
pub async fn login_mfa(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<MfaLogin>,
) -> Result<Json<Value>> {
    let proof = match (body.code, body.recovery_code) {
        (Some(code), None) => Proof::Code(code),
        (None, Some(code)) => Proof::RecoveryCode(code),
        _ => {
            return Err(Error::Invalid("give exactly one of code and recovery_code".into()).into());
        }
    };
    let now = state.clock.now();
    // Throttled as a login of the token's account (an unknown token shares one key).
    let email = state
        .identity
        .mfa_account(&body.mfa_token, now)
        .await?
        .unwrap_or_default();
    let attempt = Attempt::new(ip, &email);
    attempt.admit(&state).await?;
    let origin = Origin {
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| sessions::bounded_user_agent(v.as_bytes())),
        ..origin(ip)
    };
    let result = state
        .identity
        .login_mfa(&state.vault, &body.mfa_token, &proof, &origin, now)
        .await;
    let pair = counted(&state, &attempt, result).await?;
    attempt.succeeded(&state).await;
    Ok(pair_json(pair))
}

/// Counts a wrong password, code or token as a failed login of `attempt`.
async fn counted<T>(
    state: &Arc<AppState>,
    attempt: &Attempt,
    result: std::result::Result<T, Error>,
) -> Result<T> {
    match result {
        Ok(value) => Ok(value),
        Err(e @ (Error::InvalidCredentials | Error::InvalidCode | Error::Unauthenticated(_))) => {
            attempt.failed(state).await;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}
