//! The second step of a login with TOTP on. The right password earns a challenge, not a
//! session: an opaque `mfa_token` (256 random bits, stored as its SHA-256) valid for
//! [`MFA_TTL`], for at most [`MFA_ATTEMPTS`] wrong codes, and exchanged once, with a current
//! code or an unused recovery code, for the usual token pair. A lock or a password change
//! between the two steps ends the challenge. Every outcome is audited (`auth.login_mfa`); the
//! HTTP layer counts failures like failed logins.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::json;

use super::{Identity, Origin, TokenPair, lock, tokens};
use crate::Error;
use crate::audit::{self, AuditEvent};
use crate::db::entities::{mfa_challenge, user};
use crate::secrets::Vault;

/// How long an `mfa_token` works.
pub const MFA_TTL: Duration = Duration::from_secs(5 * 60);
/// Wrong codes one `mfa_token` takes before it stops working.
pub const MFA_ATTEMPTS: i32 = 5;

/// What a login with the right password leads to.
pub enum LoginOutcome {
    /// A session: the token pair.
    Tokens(TokenPair),
    /// TOTP is on: the second step needs this token and a code.
    MfaRequired {
        /// The challenge, shown once.
        mfa_token: String,
    },
}

/// The second factor presented with an `mfa_token` (its `Debug` shows only which kind).
#[derive(Clone)]
pub enum Proof {
    /// A six-digit TOTP code.
    Code(String),
    /// One of the recovery codes.
    RecoveryCode(String),
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proof::{}(…)", self.name())
    }
}

impl Proof {
    fn name(&self) -> &'static str {
        match self {
            Proof::Code(_) => "code",
            Proof::RecoveryCode(_) => "recovery_code",
        }
    }
}

impl Identity {
    /// A new challenge for `user` (password and tenant already checked): the `mfa_token`.
    pub(super) async fn mfa_challenge(
        &self,
        user: &user::Model,
        tenant_id: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<String, Error> {
        // The account's spent and expired challenges go, so they never pile up.
        mfa_challenge::Entity::delete_many()
            .filter(mfa_challenge::Column::UserId.eq(&user.id))
            .filter(
                Condition::any()
                    .add(mfa_challenge::Column::ExpiresAt.lte(now))
                    .add(mfa_challenge::Column::UsedAt.is_not_null())
                    .add(mfa_challenge::Column::Attempts.gte(MFA_ATTEMPTS)),
            )
            .exec(&self.db)
            .await?;
        let token = tokens::new_secret();
        mfa_challenge::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            user_id: Set(user.id.clone()),
            token_hash: Set(tokens::hash(&token)),
            password_tag: Set(tokens::hash(&user.password_hash)),
            tenant_id: Set(tenant_id),
            attempts: Set(0),
            created_at: Set(now),
            expires_at: Set(now + chrono::Duration::from_std(MFA_TTL).unwrap_or_default()),
            used_at: Set(None),
        }
        .insert(&self.db)
        .await?;
        Ok(token)
    }

    /// The email of the account a live `mfa_token` belongs to, so the HTTP layer can throttle
    /// the attempt like a login of that account before any code is checked.
    pub async fn mfa_account(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, Error> {
        let Some(challenge) = self.live_challenge(token, now).await? else {
            return Ok(None);
        };
        Ok(user::Entity::find_by_id(&challenge.user_id)
            .one(&self.db)
            .await?
            .map(|u| u.email))
    }

    /// Finishes a login: a live `mfa_token` and a right, unused code or recovery code open a
    /// session. A bad token is [`Error::Unauthenticated`]; a wrong or replayed code is
    /// [`Error::InvalidCode`] and counts against the token.
    pub async fn login_mfa(
        &self,
        vault: &Vault,
        token: &str,
        proof: &Proof,
        origin: &Origin,
        now: DateTime<Utc>,
    ) -> Result<TokenPair, Error> {
        const GONE: &str = "the mfa_token is invalid, expired or used up; log in again";
        let Some(challenge) = self.live_challenge(token, now).await? else {
            self.mfa_audit("unknown", "failure: invalid_token", proof, origin)
                .await;
            return Err(Error::Unauthenticated(GONE));
        };
        let Some(user) = user::Entity::find_by_id(&challenge.user_id)
            .one(&self.db)
            .await?
        else {
            return Err(Error::Unauthenticated(GONE));
        };
        if let Err(e) = lock::refuse_locked(&user) {
            self.mfa_audit(&user.id, "failure: locked", proof, origin)
                .await;
            return Err(e);
        }
        if tokens::hash(&user.password_hash) != challenge.password_tag {
            self.mfa_audit(&user.id, "failure: password_changed", proof, origin)
                .await;
            return Err(Error::Unauthenticated(GONE));
        }
        let refusal = match proof {
            Proof::Code(code) => self.accept_code(vault, &user.id, code, now).await?.err(),
            Proof::RecoveryCode(code) => (!self.use_recovery_code(&user.id, code, now).await?)
                .then_some(super::totp::Refusal::Wrong),
        };
        if let Some(refusal) = refusal {
            mfa_challenge::Entity::update_many()
                .col_expr(
                    mfa_challenge::Column::Attempts,
                    Expr::col(mfa_challenge::Column::Attempts).add(1),
                )
                .filter(mfa_challenge::Column::Id.eq(&challenge.id))
                .exec(&self.db)
                .await?;
            self.mfa_audit(&user.id, refusal.outcome(), proof, origin)
                .await;
            return Err(Error::InvalidCode);
        }
        // Used once, even by two requests at once.
        let used = mfa_challenge::Entity::update_many()
            .col_expr(mfa_challenge::Column::UsedAt, Expr::value(now))
            .filter(mfa_challenge::Column::Id.eq(&challenge.id))
            .filter(mfa_challenge::Column::UsedAt.is_null())
            .filter(mfa_challenge::Column::Attempts.lt(MFA_ATTEMPTS))
            .exec(&self.db)
            .await?;
        if used.rows_affected != 1 {
            self.mfa_audit(&user.id, "failure: invalid_token", proof, origin)
                .await;
            return Err(Error::Unauthenticated(GONE));
        }
        let pair = self
            .open_session(&user, challenge.tenant_id, origin)
            .await?;
        self.mfa_audit(&user.id, "success", proof, origin).await;
        Ok(pair)
    }

    /// The challenge of `token` if it is unused, unexpired and has attempts left.
    async fn live_challenge(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<mfa_challenge::Model>, Error> {
        // Tokens are 43 characters; anything much longer is not one, and is not hashed.
        if token.len() > 128 {
            return Ok(None);
        }
        Ok(mfa_challenge::Entity::find()
            .filter(mfa_challenge::Column::TokenHash.eq(tokens::hash(token)))
            .filter(mfa_challenge::Column::UsedAt.is_null())
            .filter(mfa_challenge::Column::ExpiresAt.gt(now))
            .filter(mfa_challenge::Column::Attempts.lt(MFA_ATTEMPTS))
            .one(&self.db)
            .await?)
    }

    /// An `auth.login_mfa` row: which kind of proof, never the proof itself.
    async fn mfa_audit(&self, actor: &str, outcome: &str, proof: &Proof, origin: &Origin) {
        let event = AuditEvent {
            actor: actor.to_owned(),
            action: "auth.login_mfa".into(),
            target: (actor != "unknown").then(|| actor.to_owned()),
            outcome: outcome.to_owned(),
            ip: origin.ip.clone(),
            details: json!({ "method": proof.name() }),
            tenant_id: None,
        };
        audit::record_or_log(&self.db, event).await;
    }
}
