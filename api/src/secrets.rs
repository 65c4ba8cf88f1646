//! Tenants' secrets, envelope-encrypted with `security::envelope`: the master key ring from
//! `MASTER_ENCRYPTION_KEY` (+ retired keys), the startup check that it is the right key, the
//! secrets themselves, and `api keys rotate`. Accounts' TOTP secrets are sealed under the same
//! ring ([`Vault::seal`], used by [`crate::identity::totp`]), checked and rotated with these.
//!
//! The associated data of every value is its tenant and name, so a row copied to another
//! tenant or renamed does not open. Values never reach logs, audit rows or error messages.

use std::sync::Arc;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, Order, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use security::envelope::{self, Envelope, KeyEncryptionKey, KeyRing, LocalKek, Sealed};
use zeroize::Zeroizing;

use crate::config::{
    Environment, MASTER_ENCRYPTION_KEY, MASTER_ENCRYPTION_KEYS_RETIRED, SecurityConfig,
};
use crate::db::entities::{encryption_key, secret};
use crate::pagination::{self, Page, PageQuery};
use crate::{Error, tenancy};

/// The longest secret value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The master keys: the ring, and each key's id and check value for the startup check.
#[derive(Clone)]
pub struct Vault {
    ring: KeyRing,
    keys: Vec<(String, String, &'static str)>,
}

impl Vault {
    /// Loads `MASTER_ENCRYPTION_KEY` (generated into the data folder in development, required
    /// in production) and `MASTER_ENCRYPTION_KEYS_RETIRED`.
    pub fn load(config: &SecurityConfig, environment: Environment) -> Result<Vault, Error> {
        let bad = |var: &str, e: security::Error| Error::config(var, format!("{e}"));
        let active = match &config.master_key {
            Some(hex_key) => {
                LocalKek::from_hex(&hex_key.0).map_err(|e| bad(MASTER_ENCRYPTION_KEY, e))?
            }
            None if environment == Environment::Production => {
                return Err(Error::config(
                    MASTER_ENCRYPTION_KEY,
                    format!(
                        "{MASTER_ENCRYPTION_KEY} is required in production (64 hex characters)"
                    ),
                ));
            }
            None => {
                let path = config.data_dir.join("master.key");
                if !path.exists() {
                    let (_, hex_key) = LocalKek::generate();
                    security::pki::write_private(&path, hex_key.as_str())?;
                    tracing::warn!(path = %path.display(), "DEVELOPMENT ONLY: generated a master encryption key; set {MASTER_ENCRYPTION_KEY} in production and keep it safe: without it no secret can be read");
                }
                let hex_key = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
                    Error::config(
                        MASTER_ENCRYPTION_KEY,
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?);
                LocalKek::from_hex(&hex_key).map_err(|e| bad(MASTER_ENCRYPTION_KEY, e))?
            }
        };
        let mut keys = vec![(
            active.id().to_owned(),
            active.check_value(),
            MASTER_ENCRYPTION_KEY,
        )];
        let mut retired: Vec<Arc<dyn KeyEncryptionKey>> = Vec::new();
        for (id, hex_key) in &config.master_keys_retired {
            let kek = LocalKek::from_hex(&hex_key.0)
                .map_err(|e| bad(MASTER_ENCRYPTION_KEYS_RETIRED, e))?;
            if kek.id() != id {
                return Err(Error::config(
                    MASTER_ENCRYPTION_KEYS_RETIRED,
                    format!("the key given as {id} has the id {}", kek.id()),
                ));
            }
            keys.push((
                kek.id().to_owned(),
                kek.check_value(),
                MASTER_ENCRYPTION_KEYS_RETIRED,
            ));
            retired.push(Arc::new(kek));
        }
        Ok(Vault {
            ring: KeyRing::new(Arc::new(active), retired),
            keys,
        })
    }

    /// A vault over a ring of local keys (tests and tools).
    pub fn from_keys(active: LocalKek, retired: Vec<LocalKek>) -> Vault {
        let keys = std::iter::once(&active)
            .chain(&retired)
            .map(|k| (k.id().to_owned(), k.check_value(), MASTER_ENCRYPTION_KEY))
            .collect();
        let retired = retired
            .into_iter()
            .map(|k| Arc::new(k) as Arc<dyn KeyEncryptionKey>)
            .collect();
        Vault {
            ring: KeyRing::new(Arc::new(active), retired),
            keys,
        }
    }

    /// The active master key's id.
    pub fn active_id(&self) -> &str {
        self.ring.active_id()
    }

    /// Seals a value that is not a tenant's secret (an account's TOTP secret) under a fresh data
    /// key wrapped by the active master key; `aad` binds it to its owner.
    pub(crate) fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Envelope, Error> {
        Ok(self.ring.seal(plaintext, aad)?)
    }

    /// Opens what [`Vault::seal`] sealed with the same `aad`.
    pub(crate) fn open(
        &self,
        envelope: &Envelope,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        Ok(self.ring.open(envelope, aad)?)
    }

    /// [`Vault::seal`]'s envelope with its data key re-wrapped under the active master key, or
    /// `None` when it already is (`api keys rotate`).
    pub(crate) fn rewrap(
        &self,
        envelope: &Envelope,
        aad: &[u8],
    ) -> Result<Option<Envelope>, Error> {
        Ok(self.ring.rewrap(envelope, aad)?)
    }

    /// Refuses to start with a wrong master key ([`Vault::verify`]), then records the active
    /// key's check value.
    pub async fn check(&self, db: &DatabaseConnection) -> Result<(), Error> {
        let stored = self.verify(db).await?;
        let (id, check_value, _) = &self.keys[0];
        if !stored.iter().any(|r| &r.id == id) {
            encryption_key::ActiveModel {
                id: Set(id.clone()),
                check_value: Set(check_value.clone()),
                created_at: Set(Utc::now()),
            }
            .insert(db)
            .await?;
        }
        Ok(())
    }

    /// Reads only: fails, naming the variable, when a configured key's check value differs from
    /// the stored one or secrets are sealed under a key that is not configured. Returns the
    /// stored key rows.
    pub async fn verify(
        &self,
        db: &DatabaseConnection,
    ) -> Result<Vec<encryption_key::Model>, Error> {
        let stored = encryption_key::Entity::find().all(db).await?;
        for (id, check_value, var) in &self.keys {
            if let Some(row) = stored.iter().find(|r| &r.id == id)
                && &row.check_value != check_value
            {
                return Err(Error::config(
                    *var,
                    format!(
                        "the key check value of key {id} does not match the stored one: a wrong key"
                    ),
                ));
            }
        }
        let mut used: Vec<String> = secret::Entity::find()
            .select_only()
            .column(secret::Column::KekId)
            .distinct()
            .into_tuple()
            .all(db)
            .await?;
        used.extend(crate::identity::totp::kek_ids(db).await?);
        if let Some(missing) = used.iter().find(|id| !self.ring.has(id)) {
            return Err(Error::config(
                MASTER_ENCRYPTION_KEY,
                format!(
                    "secrets are sealed under master key {missing}, which is neither {MASTER_ENCRYPTION_KEY} ({}) nor in {MASTER_ENCRYPTION_KEYS_RETIRED}: a wrong key?",
                    self.ring.active_id()
                ),
            ));
        }
        Ok(stored)
    }
}

fn aad(tenant_id: &str, name: &str) -> Vec<u8> {
    envelope::aad(&["mamba secret v1", tenant_id, name])
}

/// One sealed part as stored in three columns; a wrong length is [`Error::Undecryptable`].
pub(crate) fn sealed(nonce: &[u8], ciphertext: &[u8], tag: &[u8]) -> Result<Sealed, Error> {
    let corrupt = || Error::Undecryptable;
    Ok(Sealed {
        nonce: nonce.try_into().map_err(|_| corrupt())?,
        ciphertext: ciphertext.to_vec(),
        tag: tag.try_into().map_err(|_| corrupt())?,
    })
}

fn envelope_of(row: &secret::Model) -> Result<Envelope, Error> {
    Ok(Envelope {
        version: row.version,
        algorithm: row.algorithm.clone(),
        kek_id: row.kek_id.clone(),
        data: sealed(&row.nonce, &row.ciphertext, &row.tag)?,
        dek: sealed(&row.dek_nonce, &row.wrapped_dek, &row.dek_tag)?,
    })
}

/// Checks a secret's name: `[A-Za-z0-9_.-]{1,64}`.
pub fn validate_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(Error::Invalid(
            "a secret's name must match [A-Za-z0-9_.-]{1,64}".into(),
        ));
    }
    Ok(())
}

/// A new row holding `value` sealed for `tenant_id` and `name` (not yet stored).
pub fn seal_row(
    vault: &Vault,
    tenant_id: &str,
    name: &str,
    value: &str,
) -> Result<secret::ActiveModel, Error> {
    let sealed = vault.ring.seal(value.as_bytes(), &aad(tenant_id, name))?;
    let now = Utc::now();
    Ok(secret::ActiveModel {
        id: Set(tenancy::new_id()),
        tenant_id: Set(tenant_id.to_owned()),
        name: Set(name.to_owned()),
        version: Set(sealed.version),
        algorithm: Set(sealed.algorithm),
        kek_id: Set(sealed.kek_id),
        nonce: Set(sealed.data.nonce.to_vec()),
        ciphertext: Set(sealed.data.ciphertext),
        tag: Set(sealed.data.tag.to_vec()),
        dek_nonce: Set(sealed.dek.nonce.to_vec()),
        wrapped_dek: Set(sealed.dek.ciphertext),
        dek_tag: Set(sealed.dek.tag.to_vec()),
        created_at: Set(now),
        updated_at: Set(now),
    })
}

/// Creates or replaces a secret.
pub async fn put(
    db: &DatabaseConnection,
    vault: &Vault,
    tenant_id: &str,
    name: &str,
    value: &str,
) -> Result<(), Error> {
    validate_name(name)?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::Invalid(format!(
            "a secret's value is at most {MAX_VALUE_BYTES} bytes"
        )));
    }
    let mut row = seal_row(vault, tenant_id, name, value)?;
    let stored = match find(db, tenant_id, name).await? {
        Some(existing) => {
            row.id = sea_orm::ActiveValue::Unchanged(existing.id);
            row.created_at = sea_orm::ActiveValue::Unchanged(existing.created_at);
            row.update(db).await.map(|_| ())
        }
        None => row.insert(db).await.map(|_| ()),
    };
    stored.map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            Error::Conflict(format!("secret {name} was written concurrently; retry"))
        }
        _ => Error::Db(e),
    })?;
    Ok(())
}

async fn find(
    db: &DatabaseConnection,
    tenant_id: &str,
    name: &str,
) -> Result<Option<secret::Model>, Error> {
    Ok(secret::Entity::find()
        .filter(secret::Column::TenantId.eq(tenant_id))
        .filter(secret::Column::Name.eq(name))
        .one(db)
        .await?)
}

/// Whether the tenant has a secret called `name`.
pub async fn exists(db: &DatabaseConnection, tenant_id: &str, name: &str) -> Result<bool, Error> {
    Ok(find(db, tenant_id, name).await?.is_some())
}

/// A secret's value, decrypted.
pub async fn read(
    db: &DatabaseConnection,
    vault: &Vault,
    tenant_id: &str,
    name: &str,
) -> Result<Zeroizing<String>, Error> {
    let row = find(db, tenant_id, name)
        .await?
        .ok_or_else(|| Error::NotFound("secret".into()))?;
    open_row(vault, &row)
}

/// Opens a stored row. A row that does not open under its own tenant and name is
/// [`Error::Undecryptable`] (and logged by id, never by value).
pub fn open_row(vault: &Vault, row: &secret::Model) -> Result<Zeroizing<String>, Error> {
    let plain = envelope_of(row)
        .and_then(|e| {
            vault
                .ring
                .open(&e, &aad(&row.tenant_id, &row.name))
                .map_err(Error::from)
        })
        .map_err(|e| {
            tracing::error!(secret = %row.id, tenant = %row.tenant_id, error = %e, "a secret does not decrypt");
            Error::Undecryptable
        })?;
    String::from_utf8(plain.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| Error::Undecryptable)
}

/// The tenant's secrets (names and times only), one page.
pub async fn list(
    db: &DatabaseConnection,
    tenant_id: &str,
    query: &PageQuery,
) -> Result<Page<secret::Model>, Error> {
    pagination::fetch(
        db,
        secret::Entity::find().filter(secret::Column::TenantId.eq(tenant_id)),
        secret::Column::Name,
        Order::Asc,
        query,
        |s| s.name.clone(),
    )
    .await
}

/// Deletes a secret.
pub async fn delete(db: &DatabaseConnection, tenant_id: &str, name: &str) -> Result<(), Error> {
    let deleted = secret::Entity::delete_many()
        .filter(secret::Column::TenantId.eq(tenant_id))
        .filter(secret::Column::Name.eq(name))
        .exec(db)
        .await?;
    if deleted.rows_affected == 0 {
        return Err(Error::NotFound("secret".into()));
    }
    Ok(())
}

/// Destroys every secret of a tenant.
pub async fn delete_all(db: &DatabaseConnection, tenant_id: &str) -> Result<u64, Error> {
    Ok(secret::Entity::delete_many()
        .filter(secret::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?
        .rows_affected)
}

/// What `api keys rotate` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Data keys re-wrapped under the active key.
    pub rewrapped: u64,
    /// Secrets that could not be re-wrapped (their key is not configured, or they are
    /// corrupt); they stay as they were.
    pub failed: u64,
    /// Secrets still under another key when it stopped.
    pub remaining: u64,
}

/// Re-wraps every data key not under the active key, `batch` rows at a time, each batch
/// committed on its own: stopped at any point (`max_batches`, a crash), running it again
/// picks up where it was. Ciphertexts are never touched.
pub async fn rotate(
    db: &DatabaseConnection,
    vault: &Vault,
    batch: u64,
    max_batches: Option<u64>,
) -> Result<Rotation, Error> {
    let active = vault.active_id().to_owned();
    let mut report = Rotation::default();
    let mut failed_ids: Vec<String> = Vec::new();
    let mut batches = 0;
    loop {
        if max_batches.is_some_and(|m| batches >= m) {
            break;
        }
        let rows = secret::Entity::find()
            .filter(secret::Column::KekId.ne(&active))
            .filter(secret::Column::Id.is_not_in(failed_ids.clone()))
            .order_by_asc(secret::Column::Id)
            .limit(batch)
            .all(db)
            .await?;
        if rows.is_empty() {
            break;
        }
        batches += 1;
        let txn = sea_orm::TransactionTrait::begin(db).await?;
        for row in rows {
            let rewrapped = envelope_of(&row).and_then(|e| {
                vault
                    .ring
                    .rewrap(&e, &aad(&row.tenant_id, &row.name))
                    .map_err(Error::from)
            });
            match rewrapped {
                Ok(Some(e)) => {
                    secret::Entity::update_many()
                        .col_expr(secret::Column::KekId, Expr::value(e.kek_id))
                        .col_expr(secret::Column::DekNonce, Expr::value(e.dek.nonce.to_vec()))
                        .col_expr(secret::Column::WrappedDek, Expr::value(e.dek.ciphertext))
                        .col_expr(secret::Column::DekTag, Expr::value(e.dek.tag.to_vec()))
                        .filter(secret::Column::Id.eq(&row.id))
                        .filter(secret::Column::KekId.eq(&row.kek_id))
                        .exec(&txn)
                        .await?;
                    report.rewrapped += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(secret = %row.id, kek = %row.kek_id, error = %e, "cannot re-wrap");
                    report.failed += 1;
                    failed_ids.push(row.id);
                }
            }
        }
        txn.commit().await?;
    }
    // Accounts' TOTP secrets are sealed under the same ring: a handful of rows, done at once.
    let (rewrapped, failed) = crate::identity::totp::rotate(db, vault).await?;
    report.rewrapped += rewrapped;
    report.failed += failed;
    report.remaining = secret::Entity::find()
        .filter(secret::Column::KekId.ne(&active))
        .count(db)
        .await?
        + failed;
    Ok(report)
}
