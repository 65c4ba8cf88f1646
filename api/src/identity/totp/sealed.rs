//! How an account's TOTP secret is kept: envelope-encrypted under the master key ring of
//! [`crate::secrets::Vault`] with the user id in the associated data (a row moved to another
//! account does not open), in the columns of `totp_credentials`; the key ids the vault's
//! start-up check must hold, and the re-wrapping `api keys rotate` does.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use security::envelope::{self, Envelope};
use zeroize::Zeroizing;

use crate::Error;
use crate::db::entities::totp_credential::{self, TotpState};
use crate::secrets::{Vault, sealed};

/// The master keys TOTP secrets are sealed under (the vault's start-up check needs them all).
pub(crate) async fn kek_ids(db: &DatabaseConnection) -> Result<Vec<String>, Error> {
    use sea_orm::QuerySelect;
    Ok(totp_credential::Entity::find()
        .select_only()
        .column(totp_credential::Column::KekId)
        .distinct()
        .into_tuple()
        .all(db)
        .await?)
}

/// Re-wraps the data key of every TOTP secret not under the active master key (`api keys
/// rotate`); returns (re-wrapped, failed).
pub(crate) async fn rotate(db: &DatabaseConnection, vault: &Vault) -> Result<(u64, u64), Error> {
    let rows = totp_credential::Entity::find()
        .filter(totp_credential::Column::KekId.ne(vault.active_id()))
        .all(db)
        .await?;
    let (mut rewrapped, mut failed) = (0, 0);
    for row in rows {
        match envelope_of(&row).and_then(|e| vault.rewrap(&e, &aad(&row.user_id))) {
            Ok(Some(e)) => {
                totp_credential::Entity::update_many()
                    .col_expr(totp_credential::Column::KekId, Expr::value(e.kek_id))
                    .col_expr(
                        totp_credential::Column::DekNonce,
                        Expr::value(e.dek.nonce.to_vec()),
                    )
                    .col_expr(
                        totp_credential::Column::WrappedDek,
                        Expr::value(e.dek.ciphertext),
                    )
                    .col_expr(
                        totp_credential::Column::DekTag,
                        Expr::value(e.dek.tag.to_vec()),
                    )
                    .filter(totp_credential::Column::UserId.eq(&row.user_id))
                    .filter(totp_credential::Column::KekId.eq(&row.kek_id))
                    .exec(db)
                    .await?;
                rewrapped += 1;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(user = %row.user_id, kek = %row.kek_id, error = %e, "cannot re-wrap a TOTP secret");
                failed += 1;
            }
        }
    }
    Ok((rewrapped, failed))
}

/// The associated data binding a TOTP secret to its user.
pub(super) fn aad(user_id: &str) -> Vec<u8> {
    envelope::aad(&["mamba totp v1", user_id])
}

pub(super) fn row(
    user_id: &str,
    sealed: Envelope,
    now: DateTime<Utc>,
) -> totp_credential::ActiveModel {
    totp_credential::ActiveModel {
        user_id: Set(user_id.to_owned()),
        state: Set(TotpState::Pending),
        version: Set(sealed.version),
        algorithm: Set(sealed.algorithm),
        kek_id: Set(sealed.kek_id),
        nonce: Set(sealed.data.nonce.to_vec()),
        ciphertext: Set(sealed.data.ciphertext),
        tag: Set(sealed.data.tag.to_vec()),
        dek_nonce: Set(sealed.dek.nonce.to_vec()),
        wrapped_dek: Set(sealed.dek.ciphertext),
        dek_tag: Set(sealed.dek.tag.to_vec()),
        last_step: Set(None),
        created_at: Set(now),
        confirmed_at: Set(None),
    }
}

fn envelope_of(row: &totp_credential::Model) -> Result<Envelope, Error> {
    Ok(Envelope {
        version: row.version,
        algorithm: row.algorithm.clone(),
        kek_id: row.kek_id.clone(),
        data: sealed(&row.nonce, &row.ciphertext, &row.tag)?,
        dek: sealed(&row.dek_nonce, &row.wrapped_dek, &row.dek_tag)?,
    })
}

/// The stored secret, decrypted; one that does not open is logged by user, never by value.
pub(super) fn open(
    vault: &Vault,
    row: &totp_credential::Model,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    envelope_of(row)
        .and_then(|e| vault.open(&e, &aad(&row.user_id)))
        .map_err(|e| {
            tracing::error!(user = %row.user_id, error = %e, "a TOTP secret does not decrypt");
            Error::Undecryptable
        })
}
