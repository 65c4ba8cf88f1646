//! The TOTP second factor (RFC 6238: HMAC-SHA-1, 30-second steps, 6 digits, one step either
//! side), with codes from the maintained `totp-rs` crate.
//!
//! Setting up makes a pending 160-bit secret, envelope-encrypted under the master key ring of
//! [`crate::secrets::Vault`] and bound to its user by the associated data; confirming it with a
//! first code turns it on and hands out ten single-use recovery codes (80 random bits each,
//! stored as their SHA-256). A code is accepted only for a time step later than the last one
//! accepted for the account, by a conditional update in the database, so no code works twice,
//! even from two requests at once. Turning it off needs the password and a code.
//!
//! Time is the caller's `now` (the HTTP handler reads the clock once per request), so tests
//! drive it. The secret never reaches logs, audit rows or errors.

mod sealed;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use zeroize::Zeroizing;

use super::{Identity, Lane, Origin, Principal, tokens};
use crate::Error;
use crate::db::entities::totp_credential::{self, TotpState};
use crate::db::entities::{mfa_challenge, recovery_code};
use crate::secrets::Vault;
use sealed::{aad, open, row};
pub(crate) use sealed::{kek_ids, rotate};

/// The issuer authenticator apps show.
pub const ISSUER: &str = "Mamba";
/// Seconds per time step.
pub const STEP_SECS: u64 = 30;
/// Digits of a code.
pub const DIGITS: usize = 6;
/// Steps accepted either side of the current one.
pub const SKEW: u16 = 1;
/// Recovery codes handed out when TOTP is turned on.
pub const RECOVERY_CODES: usize = 10;
/// Random bytes of a secret (160 bits, as RFC 4226 recommends).
const SECRET_BYTES: usize = 20;
/// Random bytes of a recovery code (80 bits).
const RECOVERY_BYTES: usize = 10;
/// A code or recovery code longer than this is wrong without looking further.
const MAX_CODE_LEN: usize = 64;

/// What setting up returns: the secret three ways (shown once).
pub struct Enrolment {
    /// The secret, base32 without padding, for typing into an app.
    pub secret: Zeroizing<String>,
    /// `otpauth://totp/Mamba:<email>?secret=…&issuer=Mamba`.
    pub otpauth_uri: Zeroizing<String>,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

/// Why a code was not accepted (audit rows say which; the client only that it was wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not the code of the current step or a neighbour, or not six digits.
    Wrong,
    /// Right, but its step (or a later one) was already accepted: a replay.
    Reused,
}

impl Refusal {
    /// The audit outcome.
    pub fn outcome(self) -> &'static str {
        match self {
            Refusal::Wrong => "failure: invalid_code",
            Refusal::Reused => "failure: code_reused",
        }
    }
}

impl Identity {
    /// Makes a new pending secret for the caller (replacing a pending one); 409 while TOTP is on.
    pub async fn totp_setup(
        &self,
        vault: &Vault,
        principal: &Principal,
        origin: &Origin,
        now: DateTime<Utc>,
    ) -> Result<Enrolment, Error> {
        let user = &principal.user;
        if find(&self.db, &user.id)
            .await?
            .is_some_and(|c| c.state == TotpState::Active)
        {
            return Err(Error::Conflict(
                "two-factor authentication is already on; turn it off first".into(),
            ));
        }
        let secret = Zeroizing::new(rand::random::<[u8; SECRET_BYTES]>());
        let sealed = vault.seal(secret.as_slice(), &aad(&user.id))?;
        totp_credential::Entity::delete_many()
            .filter(totp_credential::Column::UserId.eq(&user.id))
            .filter(totp_credential::Column::State.eq(TotpState::Pending))
            .exec(&self.db)
            .await?;
        row(&user.id, sealed, now)
            .insert(&self.db)
            .await
            .map_err(|e| match e.sql_err() {
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                    Error::Conflict("two-factor authentication was changed concurrently".into())
                }
                _ => Error::Db(e),
            })?;
        let totp = generator(secret.as_slice(), Some(&user.email))?;
        let otpauth_uri = Zeroizing::new(totp.to_url().map_err(totp_error)?);
        let qr_svg = qrcode::QrCode::new(otpauth_uri.as_bytes())
            .map_err(|e| Error::internal(format!("QR code: {e}")))?
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .build();
        self.audit(&user.id, "auth.totp_setup", "success", origin)
            .await;
        Ok(Enrolment {
            secret: Zeroizing::new(totp.secret().to_base32()),
            otpauth_uri,
            qr_svg,
        })
    }

    /// Turns the pending secret on with its first code; returns the recovery codes (shown
    /// once). A wrong code is 400; nothing pending (or TOTP already on) is 409.
    pub async fn totp_confirm(
        &self,
        vault: &Vault,
        principal: &Principal,
        code: &str,
        origin: &Origin,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, Error> {
        let user_id = &principal.user.id;
        let credential = match find(&self.db, user_id).await? {
            Some(c) if c.state == TotpState::Pending => c,
            Some(_) => {
                return Err(Error::Conflict(
                    "two-factor authentication is already on".into(),
                ));
            }
            None => {
                return Err(Error::Conflict(
                    "no two-factor setup is pending: POST /api/auth/totp/setup first".into(),
                ));
            }
        };
        let Some(step) = step_of(&open(vault, &credential)?, code, now)? else {
            self.audit(
                user_id,
                "auth.totp_enable",
                Refusal::Wrong.outcome(),
                origin,
            )
            .await;
            return Err(Error::Invalid(
                "code: not the current code of this secret".into(),
            ));
        };
        let turned_on = totp_credential::Entity::update_many()
            .col_expr(
                totp_credential::Column::State,
                Expr::value(TotpState::Active),
            )
            .col_expr(totp_credential::Column::LastStep, Expr::value(step))
            .col_expr(totp_credential::Column::ConfirmedAt, Expr::value(now))
            .filter(totp_credential::Column::UserId.eq(user_id))
            .filter(totp_credential::Column::State.eq(TotpState::Pending))
            .filter(totp_credential::Column::KekId.eq(&credential.kek_id))
            .filter(totp_credential::Column::Ciphertext.eq(credential.ciphertext.clone()))
            .exec(&self.db)
            .await?;
        if turned_on.rows_affected != 1 {
            return Err(Error::Conflict(
                "two-factor authentication was changed concurrently".into(),
            ));
        }
        let codes = self.new_recovery_codes(user_id, now).await?;
        self.audit(user_id, "auth.totp_enable", "success", origin)
            .await;
        // Someone holding a stolen access token could lock the owner out this way: the owner
        // hears of it at once.
        let body = format!(
            "Two-factor authentication was turned on for your Mamba account{}.\n\nIf it was \
             not you, reset your password at {}/reset-password now and contact your panel's \
             operators: they can lock the account (api user lock).\n",
            origin
                .ip
                .as_deref()
                .map(|ip| format!(" from {ip}"))
                .unwrap_or_default(),
            self.public_url
        );
        if let Err(e) = self
            .mailer
            .send(
                &principal.user.email,
                "Two-factor authentication was turned on",
                body,
            )
            .await
        {
            tracing::warn!(user = %user_id, error = %e, "cannot mail the two-factor notice");
        }
        Ok(codes)
    }

    /// Turns TOTP off with the account's password and a current code: 409 when it is not on,
    /// [`Error::InvalidCredentials`] for a wrong password, [`Error::InvalidCode`] for a wrong
    /// or replayed code (each audited; the HTTP layer counts them like failed logins).
    #[allow(clippy::too_many_arguments)]
    pub async fn totp_disable(
        &self,
        vault: &Vault,
        principal: &Principal,
        password_given: &str,
        code: &str,
        origin: &Origin,
        lane: Lane,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let user = &principal.user;
        if !self.totp_active(&user.id).await? {
            return Err(Error::Conflict(
                "two-factor authentication is not on".into(),
            ));
        }
        if !self.password_matches(user, password_given, lane).await? {
            self.audit(
                &user.id,
                "auth.totp_disable",
                "failure: invalid_credentials",
                origin,
            )
            .await;
            return Err(Error::InvalidCredentials);
        }
        if let Err(refusal) = self.accept_code(vault, &user.id, code, now).await? {
            self.audit(&user.id, "auth.totp_disable", refusal.outcome(), origin)
                .await;
            return Err(Error::InvalidCode);
        }
        remove_all(&self.db, &user.id).await?;
        self.audit(&user.id, "auth.totp_disable", "success", origin)
            .await;
        let body = format!(
            "Two-factor authentication was turned off for your Mamba account{}.\n\nIf it was \
             not you, reset your password at {}/reset-password now and turn it on again.\n",
            origin
                .ip
                .as_deref()
                .map(|ip| format!(" from {ip}"))
                .unwrap_or_default(),
            self.public_url
        );
        self.mailer
            .send(
                &user.email,
                "Two-factor authentication was turned off",
                body,
            )
            .await
    }

    /// Whether logins of `user_id` need a second factor.
    pub(super) async fn totp_active(&self, user_id: &str) -> Result<bool, Error> {
        Ok(find(&self.db, user_id)
            .await?
            .is_some_and(|c| c.state == TotpState::Active))
    }

    /// Checks `code` against the account's active secret and, when right, records its step as
    /// the last accepted one in one conditional update: `Ok(Err(_))` when wrong or replayed.
    pub(super) async fn accept_code(
        &self,
        vault: &Vault,
        user_id: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Refusal>, Error> {
        let Some(credential) = find(&self.db, user_id)
            .await?
            .filter(|c| c.state == TotpState::Active)
        else {
            return Ok(Err(Refusal::Wrong));
        };
        let Some(step) = step_of(&open(vault, &credential)?, code, now)? else {
            return Ok(Err(Refusal::Wrong));
        };
        let accepted = totp_credential::Entity::update_many()
            .col_expr(totp_credential::Column::LastStep, Expr::value(step))
            .filter(totp_credential::Column::UserId.eq(user_id))
            .filter(totp_credential::Column::State.eq(TotpState::Active))
            .filter(
                Condition::any()
                    .add(totp_credential::Column::LastStep.is_null())
                    .add(totp_credential::Column::LastStep.lt(step)),
            )
            .exec(&self.db)
            .await?;
        Ok(if accepted.rows_affected == 1 {
            Ok(())
        } else {
            Err(Refusal::Reused)
        })
    }

    /// Uses up one of the account's recovery codes: `false` when it is not one, or was used.
    pub(super) async fn use_recovery_code(
        &self,
        user_id: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        if code.len() > MAX_CODE_LEN {
            return Ok(false);
        }
        let hash = tokens::hash(&normalise_recovery(code));
        let Some(row) = recovery_code::Entity::find()
            .filter(recovery_code::Column::UserId.eq(user_id))
            .filter(recovery_code::Column::CodeHash.eq(&hash))
            .filter(recovery_code::Column::UsedAt.is_null())
            .one(&self.db)
            .await?
        else {
            return Ok(false);
        };
        let used = recovery_code::Entity::update_many()
            .col_expr(recovery_code::Column::UsedAt, Expr::value(now))
            .filter(recovery_code::Column::Id.eq(&row.id))
            .filter(recovery_code::Column::UsedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(used.rows_affected == 1)
    }

    /// Replaces the account's recovery codes with [`RECOVERY_CODES`] new ones.
    async fn new_recovery_codes(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, Error> {
        recovery_code::Entity::delete_many()
            .filter(recovery_code::Column::UserId.eq(user_id))
            .exec(&self.db)
            .await?;
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
        let rows = codes.iter().map(|code| recovery_code::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            user_id: Set(user_id.to_owned()),
            code_hash: Set(tokens::hash(&normalise_recovery(code))),
            created_at: Set(now),
            used_at: Set(None),
        });
        recovery_code::Entity::insert_many(rows)
            .exec(&self.db)
            .await?;
        Ok(codes)
    }
}

/// Deletes the account's secret, recovery codes and pending login challenges.
async fn remove_all(db: &DatabaseConnection, user_id: &str) -> Result<(), Error> {
    totp_credential::Entity::delete_many()
        .filter(totp_credential::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    recovery_code::Entity::delete_many()
        .filter(recovery_code::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    mfa_challenge::Entity::delete_many()
        .filter(mfa_challenge::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

async fn find(
    db: &DatabaseConnection,
    user_id: &str,
) -> Result<Option<totp_credential::Model>, Error> {
    Ok(totp_credential::Entity::find_by_id(user_id).one(db).await?)
}

/// The RFC 6238 generator of `secret` (with the account's name for its URI).
fn generator(secret: &[u8], account: Option<&str>) -> Result<totp_rs::Totp, Error> {
    let mut builder = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(DIGITS as u8)
        .with_skew(SKEW)
        .with_step_duration(STEP_SECS)
        .with_secret(secret.to_vec());
    if let Some(account) = account {
        // A colon would split the label; an email may hold one in its local part.
        builder = builder
            .with_account_name(account.replace(':', "_"))
            .with_issuer(Some(ISSUER));
    }
    builder.build().map_err(totp_error)
}

fn totp_error(e: totp_rs::TotpError) -> Error {
    Error::internal(format!("TOTP: {e}"))
}

/// The time step (Unix seconds / 30) whose code `code` is, within one step of `now`; `None`
/// when it is none of them or not six digits (spaces allowed, as apps show `123 456`).
pub fn step_of(secret: &[u8], code: &str, now: DateTime<Utc>) -> Result<Option<i64>, Error> {
    if code.len() > MAX_CODE_LEN {
        return Ok(None);
    }
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() != DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let Ok(unix) = u64::try_from(now.timestamp()) else {
        return Ok(None);
    };
    Ok(generator(secret, None)?
        .check(&digits, unix)
        .and_then(|step| i64::try_from(step).ok()))
}

/// A fresh recovery code: 80 random bits as four groups of five hex digits.
fn new_recovery_code() -> String {
    let hex = hex::encode(rand::random::<[u8; RECOVERY_BYTES]>());
    let groups: Vec<&str> = (0..4).map(|i| &hex[i * 5..i * 5 + 5]).collect();
    groups.join("-")
}

/// A recovery code as hashed: without separators or spaces, lower case.
fn normalise_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests;
