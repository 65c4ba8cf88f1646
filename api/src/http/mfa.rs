//! `/api/auth/totp*` and `/api/auth/login/mfa`: the TOTP second factor over REST (the logic is
//! in [`crate::identity::totp`]). Each handler reads the clock once and passes `now` down.
//! Wrong passwords and codes count like failed logins of the account from this client (see
//! [`super::throttle`]): the login limit locks guessing out.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use utoipa::ToSchema;

use super::access::Caller;
use super::auth::origin;
use super::error::{ApiError, ApiJson};
use super::guard::ClientIp;
use super::throttle::Attempt;
use super::types;
use crate::identity::{Origin, Proof, sessions};
use crate::{AppState, Error};

type Result<T> = std::result::Result<T, ApiError>;

/// POST /api/auth/totp/setup (authenticated): a new pending secret, shown once.
#[utoipa::path(
    post,
    path = "/api/auth/totp/setup",
    summary = r#"Set up TOTP for the caller"#,
    description = r#"A new secret (160 bits; RFC 6238 with SHA-1, 30-second steps, 6 digits), shown once as base32, as an `otpauth://` URI and as that URI's QR code (SVG). It stays pending, and logins do not ask for it, until confirmed; a new setup replaces a pending one. 409 while TOTP is on."#,
    responses(
        (status = 200, description = "OK.", body = types::TotpSetup),
        (status = 409, description = "See the description."),
    ),
)]
pub async fn setup(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    Caller(principal): Caller,
) -> Result<Json<types::TotpSetup>> {
    let enrolment = state
        .identity
        .totp_setup(&state.vault, &principal, &origin(ip), state.clock.now())
        .await?;
    Ok(Json(types::TotpSetup {
        secret: enrolment.secret.as_str().to_owned(),
        otpauth_uri: enrolment.otpauth_uri.as_str().to_owned(),
        qr_svg: enrolment.qr_svg,
    }))
}

/// `{code}`.
#[derive(Deserialize, ToSchema)]
pub struct CodeBody {
    code: String,
}

/// POST /api/auth/totp/confirm (authenticated): turns TOTP on; the recovery codes, shown once.
#[utoipa::path(
    post,
    path = "/api/auth/totp/confirm",
    summary = r#"Turn TOTP on with a first code"#,
    description = r#"The current code of the pending secret turns it on and answers ten single-use recovery codes, shown once. A wrong code is 400; nothing pending or TOTP already on is 409."#,
    request_body = CodeBody,
    responses(
        (status = 200, description = "OK.", body = types::RecoveryCodes),
        (status = 409, description = "See the description."),
    ),
)]
pub async fn confirm(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    Caller(principal): Caller,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<Json<types::RecoveryCodes>> {
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
    Ok(Json(types::RecoveryCodes {
        recovery_codes: codes,
    }))
}

/// `{password, code}`.
#[derive(Deserialize, ToSchema)]
pub struct DisableBody {
    password: String,
    code: String,
}

/// DELETE /api/auth/totp (authenticated): turns TOTP off with the password and a code.
#[utoipa::path(
    delete,
    path = "/api/auth/totp",
    summary = r#"Turn TOTP off"#,
    description = r#"Needs the account's password (wrong: 401 `invalid_credentials`) and a current code (wrong or reused: 401 `invalid_code`); each failure counts as a failed login from this client. The secret and the recovery codes are deleted and a notice is mailed. 409 when TOTP is not on."#,
    request_body = DisableBody,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 401, description = "See the description."),
        (status = 409, description = "See the description."),
        (status = 503, description = "See the description."),
    ),
)]
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

impl utoipa::PartialSchema for MfaLogin {
    /// The token and exactly one of `code` and `recovery_code` (400 otherwise).
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Type};
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let fields = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("mfa_token", string())
            .property("code", string())
            .property("recovery_code", string())
            .required("mfa_token");
        let one = OneOfBuilder::new()
            .item(ObjectBuilder::new().required("code"))
            .item(ObjectBuilder::new().required("recovery_code"));
        AllOfBuilder::new()
            .item(fields)
            .item(one)
            .description(Some(
                "The `mfa_token` of the login and exactly one of `code` and `recovery_code`.",
            ))
            .into()
    }
}

impl ToSchema for MfaLogin {}

/// POST /api/auth/login/mfa: the second step of a login; the token pair, as login answers.
#[utoipa::path(
    post,
    path = "/api/auth/login/mfa",
    summary = r#"Finish a login with a second factor"#,
    description = r#"The `mfa_token` of a login with TOTP on (5 minutes, one use, at most 5 wrong codes) and exactly one of `code` (the current 6-digit TOTP code; each is accepted once) or `recovery_code` (each works once). Answers the token pair as login does. A bad, expired or used-up token is 401 `unauthenticated`, a wrong or reused code 401 `invalid_code`; both count as failed logins of the account from this client (the login limit: 429). A lock or a password change since the login ends the token."#,
    request_body = MfaLogin,
    responses(
        (status = 200, description = "OK.", body = types::TokenPair),
        (status = 401, description = "See the description."),
        (status = 403, description = "See the description."),
    ),
)]
pub async fn login_mfa(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<MfaLogin>,
) -> Result<Json<types::TokenPair>> {
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
    Ok(Json(pair.into()))
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
