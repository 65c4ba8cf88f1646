//! Refresh tokens: rotated on every use, in families (one per session).
//!
//! An exchange is one conditional `UPDATE … SET used_at WHERE used_at IS NULL`: of N
//! simultaneous exchanges of one token exactly one wins. Presenting a used token again is
//! reuse — someone holds a copy — and revokes the whole family, unless an operator allows a
//! grace (`REFRESH_REUSE_GRACE_SECS`): within it, re-presenting the *immediate parent* of a
//! child not yet used (two tabs refreshing at once) gets a fresh pair in the same family.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
};
use serde_json::json;

use super::{Identity, Origin, TokenPair, tokens};
use crate::Error;
use crate::audit::{self, AuditEvent};
use crate::db::entities::{refresh_token, session, user};

/// Stores a new refresh token in `session_id`'s family and returns the secret.
pub async fn issue(
    db: &DatabaseConnection,
    session_id: &str,
    parent_id: Option<String>,
    now: DateTime<Utc>,
) -> Result<String, Error> {
    let secret = tokens::new_secret();
    refresh_token::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        session_id: Set(session_id.to_owned()),
        token_hash: Set(tokens::hash(&secret)),
        parent_id: Set(parent_id),
        issued_at: Set(now),
        used_at: Set(None),
        expires_at: Set(now + chrono::Duration::from_std(super::REFRESH_TTL).unwrap_or_default()),
    }
    .insert(db)
    .await?;
    Ok(secret)
}

/// The stored row of a refresh token, if any.
pub async fn find(
    db: &DatabaseConnection,
    secret: &str,
) -> Result<Option<refresh_token::Model>, Error> {
    Ok(refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(tokens::hash(secret)))
        .one(db)
        .await?)
}

/// Exchanges `secret` for a new pair, or detects reuse.
pub async fn exchange(
    identity: &Identity,
    secret: &str,
    origin: &Origin,
) -> Result<TokenPair, Error> {
    let db = &identity.db;
    let Some(row) = find(db, secret).await? else {
        return Err(Error::Unauthenticated("invalid refresh token"));
    };
    let session = session::Entity::find_by_id(&row.session_id)
        .one(db)
        .await?
        .ok_or(Error::Unauthenticated("invalid refresh token"))?;
    if session.revoked_at.is_some() {
        // A used token of a revoked family is still reuse; an unused one just ended with it.
        // Read the token again: a concurrent exchange may have used it since `row` was read.
        let used = refresh_token::Entity::find_by_id(&row.id)
            .one(db)
            .await?
            .is_some_and(|current| current.used_at.is_some());
        return Err(if used {
            Error::TokenReused
        } else {
            Error::Unauthenticated("this session has ended")
        });
    }
    let now = identity.clock.now();
    if row.expires_at <= now {
        return Err(Error::Unauthenticated("refresh token expired"));
    }
    let won = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
        .filter(refresh_token::Column::Id.eq(&row.id))
        .filter(refresh_token::Column::UsedAt.is_null())
        .exec(db)
        .await?
        .rows_affected
        == 1;
    if !won && !grace_applies(identity, &row).await? {
        let revoked = super::revoke_sessions(
            db,
            session::Column::Id.eq(&session.id),
            "refresh token reuse",
            identity.clock.now(),
        )
        .await?;
        identity.metrics.refresh_reuse.inc();
        identity.announce_revoked(&session.user_id);
        let event = AuditEvent {
            actor: session.user_id.clone(),
            action: "auth.refresh".into(),
            target: Some(session.user_id.clone()),
            outcome: "rejected: token_reused".into(),
            ip: origin.ip.clone(),
            details: json!({ "session": session.id, "family_revoked": revoked > 0 }),
            tenant_id: None,
        };
        if let Err(e) = audit::record(db, event).await {
            tracing::error!(error = %e, "cannot write audit row");
        }
        tracing::warn!(session = %session.id, "refresh token reused: family revoked");
        return Err(Error::TokenReused);
    }
    let user = user::Entity::find_by_id(&session.user_id)
        .one(db)
        .await?
        .ok_or(Error::Unauthenticated("the account of this token is gone"))?;
    if user.locked_at.is_some() {
        return Err(Error::Unauthenticated("this account is locked"));
    }
    let refresh_token = issue(db, &session.id, Some(row.id.clone()), now).await?;
    Ok(TokenPair {
        access_token: identity.access_token(&user, &session)?,
        refresh_token,
    })
}

/// Whether a lost race or a re-presentation is the benign two-tabs case: within the grace, and
/// the token's newest child (if the winner has stored it yet) is still unused.
async fn grace_applies(identity: &Identity, row: &refresh_token::Model) -> Result<bool, Error> {
    let Some(current) = refresh_token::Entity::find_by_id(&row.id)
        .one(&identity.db)
        .await?
    else {
        return Ok(false);
    };
    let Some(used_at) = current.used_at else {
        return Ok(false);
    };
    if !within(used_at, identity.clock.now(), identity.grace) {
        return Ok(false);
    }
    let newest_child = refresh_token::Entity::find()
        .filter(refresh_token::Column::ParentId.eq(&row.id))
        .order_by_desc(refresh_token::Column::IssuedAt)
        .one(&identity.db)
        .await?;
    Ok(newest_child.is_none_or(|child| child.used_at.is_none()))
}

/// Whether `used_at` is within `grace` of `now` (a zero grace is strict).
fn within(used_at: DateTime<Utc>, now: DateTime<Utc>, grace: Duration) -> bool {
    !grace.is_zero()
        && now
            .signed_duration_since(used_at)
            .to_std()
            .is_ok_and(|elapsed| elapsed <= grace)
}
