//! Changing a password while logged in: the current one is checked (the HTTP layer counts a
//! failure like a failed login), the new one must pass the policy of
//! [`security::password::check_new`], and every other session of the account ends (its access
//! tokens at their next request, its refresh family at once); the caller's stays. The owner is
//! told by mail.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use security::password::{self, Verdict};

use super::{Identity, Lane, Origin, Principal, revoke_sessions};
use crate::Error;
use crate::db::entities::{session, user};

/// Why other sessions were revoked, as the session rows say.
const REASON: &str = "password change";

impl Identity {
    /// Whether `given` is the account's password. One longer than any accepted password is
    /// wrong without hashing it.
    pub(super) async fn password_matches(
        &self,
        user: &user::Model,
        given: &str,
        lane: Lane,
    ) -> Result<bool, Error> {
        if given.len() > password::MAX_BYTES {
            return Ok(false);
        }
        let (phc, attempt) = (user.password_hash.clone(), given.to_owned());
        Ok(matches!(
            self.blocking_in(lane, move || password::verify(&phc, &attempt))
                .await?,
            Verdict::Match { .. }
        ))
    }

    /// Checks `current` against the caller's password, then sets `new` and ends every other
    /// session of the account. A wrong `current` is [`Error::InvalidCredentials`] (audited).
    pub async fn change_password(
        &self,
        principal: &Principal,
        current: &str,
        new: &str,
        origin: &Origin,
        lane: Lane,
    ) -> Result<(), Error> {
        let user = &principal.user;
        check_new(new, &user.email)?;
        if !self.password_matches(user, current, lane).await? {
            self.audit(
                &user.id,
                "auth.password_change",
                "failure: invalid_credentials",
                origin,
            )
            .await;
            return Err(Error::InvalidCredentials);
        }
        let hash = self.hash(new.to_owned()).await?;
        user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(hash))
            .filter(user::Column::Id.eq(&user.id))
            .exec(&self.db)
            .await?;
        let ended = revoke_sessions(
            &self.db,
            session::Column::UserId
                .eq(&user.id)
                .and(session::Column::Id.ne(principal.session_id().unwrap_or_default())),
            REASON,
            self.clock.now(),
        )
        .await?;
        crate::apikeys::revoke_all_of(&self.db, &user.id, None, self.clock.now()).await?;
        self.announce_revoked(&user.id);
        self.audit(&user.id, "auth.password_change", "success", origin)
            .await;
        tracing::info!(user = %user.id, ended, "password changed");
        let body = format!(
            "The password of your Mamba account was changed{}.\n\nEvery other session was \
             ended. If it was not you, reset your password at {}/reset-password now.\n",
            origin
                .ip
                .as_deref()
                .map(|ip| format!(" from {ip}"))
                .unwrap_or_default(),
            self.public_url
        );
        self.mailer
            .send(&user.email, "Your Mamba password was changed", body)
            .await
    }
}

/// [`password::check_new`] as this crate's error.
pub(super) fn check_new(new: &str, email: &str) -> Result<(), Error> {
    password::check_new(new, email).map_err(|e| Error::WeakPassword(e.to_string()))
}
