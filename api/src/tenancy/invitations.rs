//! Invitations to a tenant: a one-time link mailed to an address (7 days, stored as a SHA-256
//! hash, single use), made the same way whether or not the address has an account, so the
//! answer tells the inviter nothing about who is registered. Accepting needs a logged-in,
//! verified user whose address is the invited one; it adds the membership and uses the link up
//! in one transaction.

use authz::Role;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, Order, PaginatorTrait,
    QueryFilter, Set, TransactionTrait,
};

use super::{forbidden_owner, role_of};
use crate::Error;
use crate::db::entities::{invitation, membership, tenant, user};
use crate::identity::{normalise_email, tokens};
use crate::pagination::{self, Page, PageQuery};

/// How long a link works.
pub const TTL: chrono::Duration = chrono::Duration::days(7);
/// Pending invitations a tenant may have at once.
pub const MAX_PENDING: u64 = 100;

/// What an accepted, used, withdrawn, expired or unknown link is answered with (400).
fn unusable() -> Error {
    Error::Invalid("the invitation is invalid, expired, withdrawn or already used".into())
}

/// A new invitation and the token of its link (shown only in the mail).
pub struct Invited {
    /// The stored row.
    pub invitation: invitation::Model,
    /// The link's secret.
    pub token: String,
}

/// Invites `email` into the tenant as `role`. `actor` is the inviter's role: only an owner
/// invites an owner.
pub async fn create(
    db: &DatabaseConnection,
    tenant_id: &str,
    actor: Role,
    invited_by: &str,
    email: &str,
    role: Role,
    now: DateTime<Utc>,
) -> Result<Invited, Error> {
    if !actor.may_assign(role) {
        return Err(forbidden_owner());
    }
    let email = normalise_email(email)?;
    let pending = pending_select(tenant_id, now).count(db).await?;
    if pending >= MAX_PENDING {
        return Err(Error::Conflict(format!(
            "a tenant has at most {MAX_PENDING} pending invitations; withdraw some first"
        )));
    }
    let token = tokens::new_secret();
    let invitation = invitation::ActiveModel {
        id: Set(super::new_id()),
        tenant_id: Set(tenant_id.to_owned()),
        email: Set(email),
        role: Set(role.as_str().to_owned()),
        token_hash: Set(tokens::hash(&token)),
        invited_by: Set(invited_by.to_owned()),
        created_at: Set(now),
        expires_at: Set(now + TTL),
        accepted_at: Set(None),
        accepted_by: Set(None),
        withdrawn_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(Invited { invitation, token })
}

fn pending_select(tenant_id: &str, now: DateTime<Utc>) -> sea_orm::Select<invitation::Entity> {
    invitation::Entity::find()
        .filter(invitation::Column::TenantId.eq(tenant_id))
        .filter(invitation::Column::AcceptedAt.is_null())
        .filter(invitation::Column::WithdrawnAt.is_null())
        .filter(invitation::Column::ExpiresAt.gt(now))
}

/// The tenant's pending invitations, oldest first, one page.
pub async fn pending(
    db: &DatabaseConnection,
    tenant_id: &str,
    now: DateTime<Utc>,
    query: &PageQuery,
) -> Result<Page<invitation::Model>, Error> {
    pagination::fetch(
        db,
        pending_select(tenant_id, now),
        invitation::Column::Id,
        Order::Asc,
        query,
        |i| i.id.clone(),
    )
    .await
}

/// Withdraws a pending invitation of the tenant: its link stops working. `actor` is the
/// caller's role (an owner invitation is an owner's to withdraw).
pub async fn withdraw(
    db: &DatabaseConnection,
    tenant_id: &str,
    actor: Role,
    id: &str,
    now: DateTime<Utc>,
) -> Result<invitation::Model, Error> {
    let found = pending_select(tenant_id, now)
        .filter(invitation::Column::Id.eq(id))
        .one(db)
        .await?
        .ok_or_else(|| Error::NotFound("invitation".into()))?;
    if Role::parse(&found.role).is_some_and(|role| !actor.may_assign(role)) {
        return Err(forbidden_owner());
    }
    let withdrawn = invitation::Entity::update_many()
        .col_expr(invitation::Column::WithdrawnAt, Expr::value(now))
        .filter(invitation::Column::Id.eq(id))
        .filter(invitation::Column::AcceptedAt.is_null())
        .filter(invitation::Column::WithdrawnAt.is_null())
        .exec(db)
        .await?;
    if withdrawn.rows_affected != 1 {
        return Err(Error::NotFound("invitation".into()));
    }
    Ok(found)
}

/// Why an acceptance was refused, for the audit row.
#[derive(Debug)]
pub enum Refusal {
    /// The link is unknown, used, withdrawn or expired (400).
    Unusable,
    /// The invitation is for another address (403); its tenant, for the audit row.
    OtherAccount {
        /// The invitation's tenant.
        tenant_id: String,
        /// The invitation.
        invitation_id: String,
    },
    /// Anything else (already a member: 409; the database).
    Other(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        Refusal::Other(e)
    }
}

impl From<sea_orm::DbErr> for Refusal {
    fn from(e: sea_orm::DbErr) -> Refusal {
        Refusal::Other(Error::Db(e))
    }
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Error {
        match refusal {
            Refusal::Unusable => unusable(),
            Refusal::OtherAccount { .. } => Error::Forbidden {
                code: "forbidden",
                message: "this invitation was sent to another address",
            },
            Refusal::Other(e) => e,
        }
    }
}

/// Accepts the invitation of `token` for `user` (already known to be verified): adds the
/// membership and uses the link up, both or neither.
pub async fn accept(
    db: &DatabaseConnection,
    token: &str,
    user: &user::Model,
    now: DateTime<Utc>,
) -> Result<invitation::Model, Refusal> {
    let found = invitation::Entity::find()
        .filter(invitation::Column::TokenHash.eq(tokens::hash(token)))
        .one(db)
        .await?;
    let Some(found) =
        found.filter(|i| i.accepted_at.is_none() && i.withdrawn_at.is_none() && i.expires_at > now)
    else {
        return Err(Refusal::Unusable);
    };
    if found.email != user.email {
        return Err(Refusal::OtherAccount {
            tenant_id: found.tenant_id,
            invitation_id: found.id,
        });
    }
    let role = Role::parse(&found.role).ok_or(Refusal::Unusable)?;
    let txn = db.begin().await?;
    if tenant::Entity::find_by_id(&found.tenant_id)
        .one(&txn)
        .await?
        .is_none()
    {
        return Err(Refusal::Unusable);
    }
    if role_of(&txn, &found.tenant_id, &user.id).await?.is_some() {
        return Err(Refusal::Other(Error::Conflict(
            "you are already a member of this tenant".into(),
        )));
    }
    let used = invitation::Entity::update_many()
        .col_expr(invitation::Column::AcceptedAt, Expr::value(now))
        .col_expr(invitation::Column::AcceptedBy, Expr::value(user.id.clone()))
        .filter(invitation::Column::Id.eq(&found.id))
        .filter(invitation::Column::AcceptedAt.is_null())
        .filter(invitation::Column::WithdrawnAt.is_null())
        .filter(invitation::Column::ExpiresAt.gt(now))
        .exec(&txn)
        .await?;
    if used.rows_affected != 1 {
        return Err(Refusal::Unusable);
    }
    membership::ActiveModel {
        tenant_id: Set(found.tenant_id.clone()),
        user_id: Set(user.id.clone()),
        role: Set(role.as_str().to_owned()),
        created_at: Set(now),
    }
    .insert(&txn)
    .await
    .map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => Refusal::Other(Error::Conflict(
            "you are already a member of this tenant".into(),
        )),
        _ => Refusal::from(e),
    })?;
    txn.commit().await?;
    Ok(found)
}

/// Removes every invitation of a deleted tenant.
pub async fn delete_all(db: &impl sea_orm::ConnectionTrait, tenant_id: &str) -> Result<(), Error> {
    invitation::Entity::delete_many()
        .filter(invitation::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    Ok(())
}
