//! Tenant API keys for scripts: `mhp_<id>_<secret>`, shown once.
//!
//! The id (16 hex characters) names the row; the secret (256 random bits, base64url) is kept
//! only as HMAC-SHA256 under the panel's API-key hashing key — a fast keyed hash rather than
//! argon2, because a key is checked on every request and is already high-entropy, and keyed so
//! that a copy of the database alone cannot test guesses. The hashing key is random, made once
//! per deployment and stored envelope-encrypted like tenant secrets (so `api keys rotate`
//! re-wraps it with the rest).
//!
//! A key reaches one tenant's routes, with at most the permissions it was given *and* its
//! creator's role grants now: demote or remove the creator and the key shrinks or stops.
//! Leaked keys are found by the pattern [`SCAN_PATTERN`].

use authz::{Permission, Role};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, Order, PaginatorTrait,
    QueryFilter, Set,
};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::db::entities::{api_key, user};
use crate::identity::tokens;
use crate::pagination::{self, Page, PageQuery};
use crate::secrets::{self, Vault};
use crate::{Error, tenancy};

/// What every key starts with.
pub const PREFIX: &str = "mhp_";
/// A regular expression matching a whole key, for secret scanners.
pub const SCAN_PATTERN: &str = r"\bmhp_[0-9a-f]{16}_[A-Za-z0-9_-]{43}\b";
/// Length of a key's id, in hex characters.
const ID_LEN: usize = 16;
/// Length of a key's secret (32 bytes, base64url without padding).
const SECRET_LEN: usize = 43;
/// Live keys one member may hold in one tenant.
pub const MAX_PER_MEMBER: u64 = 25;
/// `last_used_at` is written at most this often per key.
const TOUCH_EVERY: chrono::Duration = chrono::Duration::minutes(1);
/// Where the hashing key is kept, among the secrets (no tenant has this id).
const SYSTEM_TENANT: &str = "_system";
const HASHING_KEY_NAME: &str = "api-key-hmac";

/// The panel's API-key hashing key, loaded (or made, by the first key ever) on first use: a
/// panel whose tenants never made a key keeps no such key.
#[derive(Default)]
pub struct Hasher {
    mac: tokio::sync::OnceCell<Hmac<Sha256>>,
}

impl Hasher {
    /// The HMAC under the hashing key, loading or making the key the first time. Replicas
    /// making it at once agree: the first insert wins and the others read it.
    async fn mac(&self, db: &DatabaseConnection, vault: &Vault) -> Result<Hmac<Sha256>, Error> {
        self.mac
            .get_or_try_init(|| load_or_make(db, vault))
            .await
            .cloned()
    }

    async fn hash(
        &self,
        db: &DatabaseConnection,
        vault: &Vault,
        secret: &str,
    ) -> Result<String, Error> {
        let mut mac = self.mac(db, vault).await?;
        mac.update(secret.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether `secret` is the one stored as `stored` (hex), in constant time.
    async fn matches(
        &self,
        db: &DatabaseConnection,
        vault: &Vault,
        secret: &str,
        stored: &str,
    ) -> Result<bool, Error> {
        let Ok(stored) = hex::decode(stored) else {
            return Ok(false);
        };
        let mut mac = self.mac(db, vault).await?;
        mac.update(secret.as_bytes());
        Ok(mac.verify_slice(&stored).is_ok())
    }
}

fn mac_of(key: &[u8]) -> Result<Hmac<Sha256>, Error> {
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .map_err(|_| Error::internal("the API-key hashing key is corrupt"))
}

async fn load_or_make(db: &DatabaseConnection, vault: &Vault) -> Result<Hmac<Sha256>, Error> {
    for _ in 0..2 {
        match secrets::read(db, vault, SYSTEM_TENANT, HASHING_KEY_NAME).await {
            Ok(hex_key) => {
                let key = Zeroizing::new(
                    hex::decode(hex_key.as_bytes())
                        .map_err(|_| Error::internal("the API-key hashing key is corrupt"))?,
                );
                return mac_of(&key);
            }
            Err(Error::NotFound(_)) => {
                let fresh = Zeroizing::new(hex::encode(rand::random::<[u8; 32]>()));
                let row = secrets::seal_row(vault, SYSTEM_TENANT, HASHING_KEY_NAME, &fresh)?;
                if let Err(e) = row.insert(db).await
                    && !matches!(
                        e.sql_err(),
                        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                    )
                {
                    return Err(Error::Db(e));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::internal(
        "the API-key hashing key could not be stored",
    ))
}

/// What an API key may do, as authenticated for one request.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The key's id (the actor of its audit rows: `apikey:<id>`).
    pub id: String,
    /// The one tenant it reaches.
    pub tenant_id: String,
    /// The permissions it was given (its creator's role bounds them further).
    pub permissions: Vec<Permission>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Grant {
    /// Whether the key was given `permission`.
    pub fn allows(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }
}

/// A key as lists show it (never the secret).
pub struct KeyView {
    /// The row.
    pub row: api_key::Model,
    /// Its permissions, parsed.
    pub permissions: Vec<Permission>,
}

impl KeyView {
    /// The key's visible beginning, `mhp_<id>`.
    pub fn prefix(&self) -> String {
        format!("{PREFIX}{}", self.row.id)
    }
}

fn parse_permissions(stored: &str) -> Vec<Permission> {
    serde_json::from_str(stored).unwrap_or_default()
}

fn view(row: api_key::Model) -> KeyView {
    let permissions = parse_permissions(&row.permissions);
    KeyView { row, permissions }
}

/// What [`create`] is asked for.
pub struct NewKey<'a> {
    /// The tenant.
    pub tenant_id: &'a str,
    /// The creator.
    pub user_id: &'a str,
    /// The creator's role in the tenant now.
    pub role: Role,
    /// A label.
    pub name: &'a str,
    /// What the key may do: each must be granted by `role`.
    pub permissions: &'a [Permission],
    /// When it stops working, if ever (in the future).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Makes a key: its view and the whole key, to be shown once.
pub async fn create(
    db: &DatabaseConnection,
    (hasher, vault): (&Hasher, &Vault),
    new: NewKey<'_>,
    now: DateTime<Utc>,
) -> Result<(KeyView, Zeroizing<String>), Error> {
    let name = tenancy::validate_name("name", new.name)?;
    if new.permissions.is_empty() {
        return Err(Error::Invalid(
            "permissions: name at least one permission".into(),
        ));
    }
    if new.permissions.iter().any(|&p| !new.role.grants(p)) {
        return Err(Error::Forbidden {
            code: "forbidden",
            message: "a key cannot hold a permission your role does not grant",
        });
    }
    if new.expires_at.is_some_and(|at| at <= now) {
        return Err(Error::Invalid("expires_at: must be in the future".into()));
    }
    let live = live_select(now)
        .filter(api_key::Column::TenantId.eq(new.tenant_id))
        .filter(api_key::Column::UserId.eq(new.user_id))
        .count(db)
        .await?;
    if live >= MAX_PER_MEMBER {
        return Err(Error::Conflict(format!(
            "you hold {MAX_PER_MEMBER} live keys in this tenant; revoke one first"
        )));
    }
    let mut permissions = new.permissions.to_vec();
    permissions.sort();
    permissions.dedup();
    let id = hex::encode(rand::random::<[u8; ID_LEN / 2]>());
    let secret = Zeroizing::new(tokens::new_secret());
    let row = api_key::ActiveModel {
        id: Set(id.clone()),
        tenant_id: Set(new.tenant_id.to_owned()),
        user_id: Set(new.user_id.to_owned()),
        name: Set(name),
        permissions: Set(serde_json::to_string(&permissions).unwrap_or_default()),
        secret_hash: Set(hasher.hash(db, vault, &secret).await?),
        created_at: Set(now),
        last_used_at: Set(None),
        expires_at: Set(new.expires_at),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    let key = Zeroizing::new(format!("{PREFIX}{id}_{}", secret.as_str()));
    Ok((view(row), key))
}

fn live_select(now: DateTime<Utc>) -> sea_orm::Select<api_key::Entity> {
    api_key::Entity::find()
        .filter(api_key::Column::RevokedAt.is_null())
        .filter(
            sea_orm::Condition::any()
                .add(api_key::Column::ExpiresAt.is_null())
                .add(api_key::Column::ExpiresAt.gt(now)),
        )
}

/// The tenant's live keys, one page: every member's when `of_user` is `None`.
pub async fn list(
    db: &DatabaseConnection,
    tenant_id: &str,
    of_user: Option<&str>,
    now: DateTime<Utc>,
    query: &PageQuery,
) -> Result<Page<KeyView>, Error> {
    let mut select = live_select(now).filter(api_key::Column::TenantId.eq(tenant_id));
    if let Some(user_id) = of_user {
        select = select.filter(api_key::Column::UserId.eq(user_id));
    }
    let page = pagination::fetch(db, select, api_key::Column::Id, Order::Asc, query, |k| {
        k.id.clone()
    })
    .await?;
    Ok(Page {
        items: page.items.into_iter().map(view).collect(),
        next_cursor: page.next_cursor,
    })
}

/// Revokes a live key of the tenant; only its creator's unless `anyones`.
pub async fn revoke(
    db: &DatabaseConnection,
    tenant_id: &str,
    id: &str,
    by_user: &str,
    anyones: bool,
    now: DateTime<Utc>,
) -> Result<api_key::Model, Error> {
    let mut select = live_select(now)
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .filter(api_key::Column::Id.eq(id));
    if !anyones {
        select = select.filter(api_key::Column::UserId.eq(by_user));
    }
    let row = select
        .one(db)
        .await?
        .ok_or_else(|| Error::NotFound("API key".into()))?;
    api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(now))
        .filter(api_key::Column::Id.eq(&row.id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(row)
}

/// Revokes every live key `user_id` made (in `tenant_id` only, when given): an account taken
/// back (password reset or change, every session ended, a lock) or a member removed keeps no
/// key behind. Returns how many.
pub async fn revoke_all_of(
    db: &impl sea_orm::ConnectionTrait,
    user_id: &str,
    tenant_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<u64, Error> {
    let mut update = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(now))
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::RevokedAt.is_null());
    if let Some(tenant_id) = tenant_id {
        update = update.filter(api_key::Column::TenantId.eq(tenant_id));
    }
    Ok(update.exec(db).await?.rows_affected)
}

/// Splits `mhp_<id>_<secret>`; `None` when it does not have that shape.
fn split(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = (rest.get(..ID_LEN)?, rest.get(ID_LEN..)?);
    let secret = secret.strip_prefix('_')?;
    let shaped = id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    shaped.then_some((id, secret))
}

/// The user behind a presented key and what the key may do; 401 for a malformed, unknown,
/// revoked or expired key, or a locked creator.
pub async fn authenticate(
    db: &DatabaseConnection,
    (hasher, vault): (&Hasher, &Vault),
    presented: &str,
    now: DateTime<Utc>,
) -> Result<(user::Model, Grant), Error> {
    let unknown = || Error::Unauthenticated("invalid API key");
    let (id, secret) = split(presented).ok_or_else(unknown)?;
    let row = api_key::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(unknown)?;
    if !hasher.matches(db, vault, secret, &row.secret_hash).await? {
        return Err(unknown());
    }
    if row.revoked_at.is_some() {
        return Err(Error::Unauthenticated("this API key was revoked"));
    }
    if row.expires_at.is_some_and(|at| at <= now) {
        return Err(Error::Unauthenticated("this API key has expired"));
    }
    let user = user::Entity::find_by_id(&row.user_id)
        .one(db)
        .await?
        .ok_or(Error::Unauthenticated("the account of this key is gone"))?;
    if user.locked_at.is_some() {
        return Err(Error::Unauthenticated("this account is locked"));
    }
    if row.last_used_at.is_none_or(|at| now - at >= TOUCH_EVERY) {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(now))
            .filter(api_key::Column::Id.eq(&row.id))
            .exec(db)
            .await?;
    }
    let grant = Grant {
        permissions: parse_permissions(&row.permissions),
        id: row.id,
        tenant_id: row.tenant_id,
        expires_at: row.expires_at,
    };
    Ok((user, grant))
}

/// Whether the key of `grant` still works (open event streams re-check it).
pub async fn still_live(
    db: &DatabaseConnection,
    grant: &Grant,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    Ok(live_select(now)
        .filter(api_key::Column::Id.eq(&grant.id))
        .one(db)
        .await?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_only_in_their_own_shape() {
        let secret = "A".repeat(SECRET_LEN);
        let good = format!("mhp_0123456789abcdef_{secret}");
        assert_eq!(split(&good), Some(("0123456789abcdef", secret.as_str())));
        let scan = regex::Regex::new(SCAN_PATTERN).unwrap();
        assert!(scan.is_match(&format!("token: {good} ")));
        for bad in [
            "mhp_".to_owned(),
            format!("mhp_0123456789ABCDEF_{secret}"),
            format!("mhp_0123456789abcdef-{secret}"),
            format!("mhp_0123456789abcdef_{secret}x"),
            format!("mhp_0123456789abcdef_{}", "é".repeat(22)),
            format!("xhp_0123456789abcdef_{secret}"),
        ] {
            assert_eq!(split(&bad), None, "{bad}");
        }
    }
}
