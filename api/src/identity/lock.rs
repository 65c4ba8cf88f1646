//! Incident response from the command line (`api user lock|unlock|revoke-sessions <email>`),
//! acting on the database: a running panel sees the change at the next request of any of the
//! user's sessions (the `sid` check), and its open event streams at their next re-check. Every
//! command is audited with the actor `cli`.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::json;

use super::{find_user, normalise_email, revoke_sessions};
use crate::Error;
use crate::audit::{self, AuditEvent};
use crate::db::entities::{session, user};

/// What a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserCommand {
    /// Refuse logins and refreshes, end every session.
    Lock,
    /// Allow logins again.
    Unlock,
    /// End every session, leaving the account usable.
    RevokeSessions,
}

impl UserCommand {
    fn action(self) -> &'static str {
        match self {
            UserCommand::Lock => "user.lock",
            UserCommand::Unlock => "user.unlock",
            UserCommand::RevokeSessions => "user.revoke_sessions",
        }
    }
}

/// Runs `command` on the account of `email`; returns the account and how many live sessions
/// were ended, as of `now`. An unknown email is [`Error::NotFound`].
pub async fn run(
    db: &DatabaseConnection,
    command: UserCommand,
    email: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(user::Model, u64), Error> {
    let email = normalise_email(email)?;
    let user = find_user(db, &email)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user {email}")))?;
    let locked_at = match command {
        UserCommand::Lock => Some(now),
        UserCommand::Unlock => None,
        UserCommand::RevokeSessions => user.locked_at,
    };
    if command != UserCommand::RevokeSessions {
        user::Entity::update_many()
            .col_expr(user::Column::LockedAt, Expr::value(locked_at))
            .filter(user::Column::Id.eq(&user.id))
            .exec(db)
            .await?;
    }
    let ended = match command {
        UserCommand::Unlock => 0,
        UserCommand::Lock => {
            revoke_sessions(
                db,
                session::Column::UserId.eq(&user.id),
                "account locked",
                now,
            )
            .await?
        }
        UserCommand::RevokeSessions => {
            revoke_sessions(
                db,
                session::Column::UserId.eq(&user.id),
                "revoked by an administrator",
                now,
            )
            .await?
        }
    };
    // Incident response takes the account's API keys too (a lock alone already stops them).
    let keys_revoked = match command {
        UserCommand::Unlock => 0,
        UserCommand::Lock | UserCommand::RevokeSessions => {
            crate::apikeys::revoke_all_of(db, &user.id, None, now).await?
        }
    };
    let event = AuditEvent {
        actor: "cli".into(),
        action: command.action().into(),
        target: Some(user.id.clone()),
        outcome: "success".into(),
        ip: None,
        details: json!({ "email": email, "sessions_ended": ended, "api_keys_revoked": keys_revoked }),
        tenant_id: None,
    };
    audit::record(db, event).await?;
    Ok((user::Model { locked_at, ..user }, ended))
}

/// Refuses a locked account (login, refresh, every request).
pub(super) fn refuse_locked(user: &user::Model) -> Result<(), Error> {
    if user.locked_at.is_some() {
        return Err(Error::Forbidden {
            code: "forbidden",
            message: "this account is locked",
        });
    }
    Ok(())
}
