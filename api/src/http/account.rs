//! The caller's own account over REST: `/api/auth/password`, `/api/auth/sessions…` and
//! `/api/auth/me` (logins and tokens are in [`super::auth`]).

use crate::ids::SessionId;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::access::Caller;
use super::auth::origin;
use super::error::{ApiError, ApiJson, ApiPath};
use super::guard::ClientIp;
use super::throttle::Attempt;
use super::types;
use crate::{AppState, Error};

type Result<T> = std::result::Result<T, ApiError>;

/// `{current_password, new_password}`.
#[derive(Deserialize, ToSchema)]
pub struct PasswordChange {
    /// The password now.
    current_password: String,
    /// As at registration.
    #[schema(min_length = 12, max_length = 1024)]
    new_password: String,
}

/// POST /api/auth/password (authenticated): a wrong current password counts as a failed login
/// of the caller's account from this client (see [`super::throttle`]).
#[utoipa::path(
    post,
    path = "/api/auth/password",
    summary = r#"Change the caller's password"#,
    description = r#"Checks `current_password` (a wrong one answers 401 `invalid_credentials` and counts as a failed login from this client: ten within an hour block it for an hour, logins included). The new password must have at least 12 characters, at most 1024 bytes, not be one of the 20,000 most common passwords nor contain the local part of the account's email (400 `weak_password`). Every other session of the account ends (its access tokens at their next request, its refresh tokens at once); the caller's stays. A notice is mailed."#,
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 401, description = "See the description."),
        (status = 503, description = "See the description."),
    ),
)]
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
#[utoipa::path(
    get,
    path = "/api/auth/sessions",
    summary = r#"The caller's live sessions"#,
    description = r#"Newest first, at most 100: where each was opened (IP and `User-Agent` at login), when, when last used (to the minute) and whether it is the caller's."#,
    responses(
        (status = 200, description = "OK.", body = types::Sessions),
    ),
)]
pub async fn sessions(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
) -> Result<Json<types::Sessions>> {
    let items = state
        .identity
        .sessions(&principal)
        .await?
        .into_iter()
        .map(|s| types::Session {
            id: s.id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            ip: s.ip,
            user_agent: s.user_agent,
            current: s.current,
        })
        .collect();
    Ok(Json(types::Sessions { items }))
}

/// DELETE /api/auth/sessions/{id} (authenticated): ends one of the caller's sessions.
#[utoipa::path(
    delete,
    path = "/api/auth/sessions/{id}",
    summary = r#"End one of the caller's sessions"#,
    description = r#"Its access tokens stop at their next request, its refresh tokens at once. Another user's, an ended or an unknown session is 404."#,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 400, description = "See the description."),
    ),
)]
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
#[utoipa::path(
    get,
    path = "/api/auth/me",
    summary = r#"The caller and their memberships"#,
    responses(
        (status = 200, description = "OK.", body = types::Me),
    ),
)]
pub async fn me(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
) -> Result<Json<types::Me>> {
    let memberships = crate::tenancy::memberships_of(&state.db, &principal.user.id)
        .await?
        .into_iter()
        .map(|(tenant_id, role)| types::Membership { tenant_id, role })
        .collect();
    let user = types::User::from(&principal.user);
    Ok(Json(types::Me { user, memberships }))
}
