//! One-time email tokens (verification 24 h, password reset 1 h): made, mailed, consumed once.

use std::time::Duration;

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

use super::{Identity, RESET_TTL, VERIFY_TTL, tokens};
use crate::Error;
use crate::db::entities::{email_token, user};

#[derive(Debug, Clone, Copy)]
pub(super) enum Purpose {
    /// Proves the address.
    VerifyEmail,
    /// Sets a new password.
    PasswordReset,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::PasswordReset => "password_reset",
        }
    }

    fn ttl(self) -> Duration {
        match self {
            Purpose::VerifyEmail => VERIFY_TTL,
            Purpose::PasswordReset => RESET_TTL,
        }
    }
}

impl Identity {
    pub(super) async fn send_verification(&self, user: &user::Model) -> Result<(), Error> {
        let token = self.new_email_token(&user.id, Purpose::VerifyEmail).await?;
        let link = format!("{}/verify-email?token={token}", self.public_url);
        let body = format!(
            "Welcome to Mamba Host Panel.\n\nConfirm your email address within 24 hours: {link}\n"
        );
        self.mailer
            .send(&user.email, "Verify your Mamba account", body)
            .await
    }

    pub(super) async fn new_email_token(
        &self,
        user_id: &str,
        purpose: Purpose,
    ) -> Result<String, Error> {
        let token = tokens::new_secret();
        let now = self.clock.now();
        email_token::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            user_id: Set(user_id.to_owned()),
            purpose: Set(purpose.as_str().to_owned()),
            token_hash: Set(tokens::hash(&token)),
            created_at: Set(now),
            expires_at: Set(now + chrono::Duration::from_std(purpose.ttl()).unwrap_or_default()),
            used_at: Set(None),
        }
        .insert(&self.db)
        .await?;
        Ok(token)
    }

    /// The user of a valid, unused token, without using it up.
    pub(super) async fn email_token_user(
        &self,
        purpose: Purpose,
        token: &str,
    ) -> Result<Option<user::Model>, Error> {
        let row = email_token::Entity::find()
            .filter(email_token::Column::TokenHash.eq(tokens::hash(token)))
            .filter(email_token::Column::Purpose.eq(purpose.as_str()))
            .filter(email_token::Column::UsedAt.is_null())
            .filter(email_token::Column::ExpiresAt.gt(self.clock.now()))
            .one(&self.db)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(user::Entity::find_by_id(&row.user_id).one(&self.db).await?)
    }

    /// Marks a token used in one conditional update (so it works once, even under races) and
    /// returns its user.
    pub(super) async fn consume_email_token(
        &self,
        purpose: Purpose,
        token: &str,
    ) -> Result<String, Error> {
        let hash = tokens::hash(token);
        let now = self.clock.now();
        let consumed = email_token::Entity::update_many()
            .col_expr(email_token::Column::UsedAt, Expr::value(now))
            .filter(email_token::Column::TokenHash.eq(&hash))
            .filter(email_token::Column::Purpose.eq(purpose.as_str()))
            .filter(email_token::Column::UsedAt.is_null())
            .filter(email_token::Column::ExpiresAt.gt(now))
            .exec(&self.db)
            .await?;
        if consumed.rows_affected != 1 {
            return Err(Error::Invalid(
                "the token is invalid, expired or already used".into(),
            ));
        }
        email_token::Entity::find()
            .filter(email_token::Column::TokenHash.eq(&hash))
            .one(&self.db)
            .await?
            .map(|row| row.user_id)
            .ok_or_else(|| Error::Invalid("the token is invalid".into()))
    }
}

impl Identity {
    /// Mails an invitation link to `to`. An address without an account is told to register
    /// first; the inviter's answer was the same either way.
    pub async fn mail_invitation(
        &self,
        to: &str,
        tenant_id: &str,
        token: &str,
    ) -> Result<(), Error> {
        let registered = super::find_user(&self.db, to).await?.is_some();
        let link = format!("{}/invitations/accept?token={token}", self.public_url);
        let first = if registered {
            String::new()
        } else {
            format!(
                "You have no Mamba account yet: register with this address at {}/register and \
                 verify it first, then open the link.\n\n",
                self.public_url
            )
        };
        let body = format!(
            "You were invited to join a tenant ({tenant_id}) on Mamba Host Panel.\n\n{first}\
             Accept within 7 days, logged in as {to}: {link}\n\nIf you did not expect this, ignore this mail.\n"
        );
        self.mailer
            .send(to, "You are invited to a Mamba tenant", body)
            .await
    }
}
