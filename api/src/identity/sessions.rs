//! A user's own sessions: listed with where they were opened and when last used, and ended one
//! at a time (its access tokens stop at their next request through the `sid` check, its refresh
//! family at once). `last_used_at` is written by [`Identity::authenticate`] at most once per
//! [`TOUCH_EVERY`] per session, by a conditional update, so busy clients cost no write a request.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{Identity, Origin, Principal, revoke_sessions};
use crate::Error;
use crate::db::entities::session;

/// `last_used_at` is written at most this often per session.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// The session list shows at most this many, newest first.
pub const LIST_CAP: u64 = 100;
/// Kept of a `User-Agent`, in characters.
pub const USER_AGENT_CHARS: usize = 255;

/// One live session as its owner sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The session id (`sid`).
    pub id: String,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it was last used (to the minute), if since the upgrade that records it.
    pub last_used_at: Option<DateTime<Utc>>,
    /// The client IP at login.
    pub ip: Option<String>,
    /// The client's `User-Agent` at login.
    pub user_agent: Option<String>,
    /// Whether it is the caller's own.
    pub current: bool,
}

impl Identity {
    /// The caller's live sessions, newest first, at most [`LIST_CAP`].
    pub async fn sessions(&self, principal: &Principal) -> Result<Vec<SessionInfo>, Error> {
        let rows = session::Entity::find()
            .filter(session::Column::UserId.eq(&principal.user.id))
            .filter(session::Column::RevokedAt.is_null())
            .order_by_desc(session::Column::CreatedAt)
            .order_by_desc(session::Column::Id)
            .limit(LIST_CAP)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|s| SessionInfo {
                current: principal.session_id() == Some(s.id.as_str()),
                id: s.id,
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                ip: s.ip,
                user_agent: s.user_agent,
            })
            .collect())
    }

    /// Ends the caller's live session `id`; another user's, an ended or an unknown one is
    /// [`Error::NotFound`].
    pub async fn end_session(
        &self,
        principal: &Principal,
        id: &str,
        origin: &Origin,
    ) -> Result<(), Error> {
        let ended = revoke_sessions(
            &self.db,
            Condition::all()
                .add(session::Column::Id.eq(id))
                .add(session::Column::UserId.eq(&principal.user.id))
                .into(),
            "ended by its user",
            self.clock.now(),
        )
        .await?;
        if ended == 0 {
            return Err(Error::NotFound("session".into()));
        }
        self.announce_revoked(&principal.user.id);
        self.audit(&principal.user.id, "auth.session_end", "success", origin)
            .await;
        Ok(())
    }

    /// Records that `session_id` was used now, unless it was within [`TOUCH_EVERY`].
    pub(super) async fn touch(&self, session_id: &str, now: DateTime<Utc>) -> Result<(), Error> {
        let stale = now - chrono::Duration::from_std(TOUCH_EVERY).unwrap_or_default();
        session::Entity::update_many()
            .col_expr(session::Column::LastUsedAt, Expr::value(now))
            .filter(session::Column::Id.eq(session_id))
            .filter(
                Condition::any()
                    .add(session::Column::LastUsedAt.is_null())
                    .add(session::Column::LastUsedAt.lt(stale)),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

/// A `User-Agent` as kept: control characters dropped, at most [`USER_AGENT_CHARS`].
pub fn bounded_user_agent(raw: &[u8]) -> Option<String> {
    let kept: String = String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control())
        .take(USER_AGENT_CHARS)
        .collect();
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_bounded() {
        assert_eq!(bounded_user_agent(b""), None);
        assert_eq!(
            bounded_user_agent(b"curl/8.5\r\n\x00").as_deref(),
            Some("curl/8.5")
        );
        let long = "é".repeat(1000);
        assert_eq!(
            bounded_user_agent(long.as_bytes()).map(|s| s.chars().count()),
            Some(USER_AGENT_CHARS)
        );
    }
}
