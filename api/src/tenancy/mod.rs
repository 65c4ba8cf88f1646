//! Tenants and their members. Roles are stored per membership and read on every request; the
//! last owner of a tenant can be neither demoted nor removed.

use authz::Role;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, Order,
    PaginatorTrait, QueryFilter, Set, TransactionTrait,
};

pub mod invitations;

use crate::Error;
use crate::db::entities::{api_key, membership, tenant, user};
use crate::pagination::{self, Page, PageQuery};

/// A tenant as a member sees it.
#[derive(Debug, Clone)]
pub struct TenantView {
    /// The tenant.
    pub tenant: tenant::Model,
    /// The caller's role in it.
    pub role: Role,
}

/// A member as the member list shows it.
#[derive(Debug, Clone)]
pub struct Member {
    /// The user.
    pub user_id: String,
    /// Their email.
    pub email: String,
    /// Their role.
    pub role: Role,
}

/// A new id: UUID v7, so ids sort by creation time (keyset pagination relies on it).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Checks a display name: 1 to 100 characters, no control characters.
pub fn validate_name(what: &str, name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{what} must be 1 to 100 characters without control characters"
        )));
    }
    Ok(name.to_owned())
}

/// The caller's role in `tenant_id` now, or `None` when they are not a member (or there is
/// no such tenant: the two are not told apart).
pub async fn role_of(
    db: &impl ConnectionTrait,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<Role>, Error> {
    let row = membership::Entity::find_by_id((tenant_id.to_owned(), user_id.to_owned()))
        .one(db)
        .await?;
    Ok(row.and_then(|m| Role::parse(&m.role)))
}

/// Every membership of a user, for `/api/auth/me`.
pub async fn memberships_of(
    db: &DatabaseConnection,
    user_id: &str,
) -> Result<Vec<(String, Role)>, Error> {
    let rows = membership::Entity::find()
        .filter(membership::Column::UserId.eq(user_id))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|m| Role::parse(&m.role).map(|r| (m.tenant_id, r)))
        .collect())
}

/// Creates a tenant with `owner_id` as its owner.
pub async fn create(
    db: &DatabaseConnection,
    name: &str,
    owner_id: &str,
    now: DateTime<Utc>,
) -> Result<tenant::Model, Error> {
    let name = validate_name("name", name)?;
    let txn = db.begin().await?;
    let tenant = tenant::ActiveModel {
        id: Set(new_id()),
        name: Set(name),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    membership::ActiveModel {
        tenant_id: Set(tenant.id.clone()),
        user_id: Set(owner_id.to_owned()),
        role: Set(Role::Owner.as_str().to_owned()),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok(tenant)
}

/// Reads the id of a row.
type IdOf<M> = fn(&M) -> &str;

/// One page of memberships where `mine` holds, ordered by the other side's id (`other`), each
/// with the other side's row (`related`, looked up by id in one query). Memberships whose
/// other side is gone are left out.
async fn memberships_with<E>(
    db: &DatabaseConnection,
    mine: (membership::Column, &str),
    other: (membership::Column, IdOf<membership::Model>),
    related: (E::Column, IdOf<E::Model>),
    query: &PageQuery,
) -> Result<Page<(membership::Model, E::Model)>, Error>
where
    E: EntityTrait,
    E::Model: Clone,
{
    let page = pagination::fetch(
        db,
        membership::Entity::find().filter(mine.0.eq(mine.1)),
        other.0,
        Order::Asc,
        query,
        |m| other.1(m).to_owned(),
    )
    .await?;
    let ids: Vec<String> = page.items.iter().map(|m| other.1(m).to_owned()).collect();
    let rows = E::find().filter(related.0.is_in(ids)).all(db).await?;
    let items = page
        .items
        .into_iter()
        .filter_map(|m| {
            let row = rows.iter().find(|r| related.1(r) == other.1(&m))?.clone();
            Some((m, row))
        })
        .collect();
    Ok(Page {
        items,
        next_cursor: page.next_cursor,
    })
}

/// The tenants `user_id` belongs to, one page.
pub async fn list_for(
    db: &DatabaseConnection,
    user_id: &str,
    query: &PageQuery,
) -> Result<Page<TenantView>, Error> {
    let page = memberships_with::<tenant::Entity>(
        db,
        (membership::Column::UserId, user_id),
        (membership::Column::TenantId, |m| &m.tenant_id),
        (tenant::Column::Id, |t| &t.id),
        query,
    )
    .await?;
    let items = page
        .items
        .into_iter()
        .filter_map(|(m, tenant)| {
            Some(TenantView {
                tenant,
                role: Role::parse(&m.role)?,
            })
        })
        .collect();
    Ok(Page {
        items,
        next_cursor: page.next_cursor,
    })
}

/// One tenant.
pub async fn get(db: &DatabaseConnection, tenant_id: &str) -> Result<tenant::Model, Error> {
    tenant::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .ok_or_else(|| Error::NotFound("tenant".into()))
}

/// Removes the tenant's row, memberships, invitations and API keys (its servers are the
/// caller's to remove first).
pub async fn delete(db: &DatabaseConnection, tenant_id: &str) -> Result<(), Error> {
    let txn = db.begin().await?;
    membership::Entity::delete_many()
        .filter(membership::Column::TenantId.eq(tenant_id))
        .exec(&txn)
        .await?;
    invitations::delete_all(&txn, tenant_id).await?;
    api_key::Entity::delete_many()
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .exec(&txn)
        .await?;
    tenant::Entity::delete_by_id(tenant_id).exec(&txn).await?;
    txn.commit().await?;
    Ok(())
}

/// The members of a tenant, one page.
pub async fn members(
    db: &DatabaseConnection,
    tenant_id: &str,
    query: &PageQuery,
) -> Result<Page<Member>, Error> {
    let page = memberships_with::<user::Entity>(
        db,
        (membership::Column::TenantId, tenant_id),
        (membership::Column::UserId, |m| &m.user_id),
        (user::Column::Id, |u| &u.id),
        query,
    )
    .await?;
    let items = page
        .items
        .into_iter()
        .filter_map(|(m, user)| {
            Some(Member {
                role: Role::parse(&m.role)?,
                user_id: m.user_id,
                email: user.email,
            })
        })
        .collect();
    Ok(Page {
        items,
        next_cursor: page.next_cursor,
    })
}

/// Adds the user with `email` to the tenant. `actor` is the caller's role.
pub async fn add_member(
    db: &DatabaseConnection,
    tenant_id: &str,
    actor: Role,
    email: &str,
    role: Role,
    now: DateTime<Utc>,
) -> Result<Member, Error> {
    if !actor.may_assign(role) {
        return Err(forbidden_owner());
    }
    let email = crate::identity::normalise_email(email)?;
    let user = user::Entity::find()
        .filter(user::Column::Email.eq(&email))
        .one(db)
        .await?
        .ok_or_else(|| Error::NotFound("user".into()))?;
    if role_of(db, tenant_id, &user.id).await?.is_some() {
        return Err(Error::Conflict(format!(
            "{email} is already a member of this tenant"
        )));
    }
    membership::ActiveModel {
        tenant_id: Set(tenant_id.to_owned()),
        user_id: Set(user.id.clone()),
        role: Set(role.as_str().to_owned()),
        created_at: Set(now),
    }
    .insert(db)
    .await
    .map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            Error::Conflict(format!("{email} is already a member of this tenant"))
        }
        _ => Error::Db(e),
    })?;
    Ok(Member {
        user_id: user.id,
        email,
        role,
    })
}

/// Changes a member's role (`Some`) or removes them (`None`), refusing to leave the tenant
/// without an owner. Serialised per tenant, so two owners cannot demote each other at once.
pub async fn change_member(
    db: &DatabaseConnection,
    tenant_id: &str,
    actor: Role,
    user_id: &str,
    new_role: Option<Role>,
    now: DateTime<Utc>,
) -> Result<Option<Member>, Error> {
    let txn = db.begin().await?;
    // A write to the tenant row: PostgreSQL locks the row, SQLite takes its write lock, so
    // concurrent membership changes of one tenant run one after the other.
    tenant::Entity::update_many()
        .col_expr(tenant::Column::Name, Expr::col(tenant::Column::Name).into())
        .filter(tenant::Column::Id.eq(tenant_id))
        .exec(&txn)
        .await?;
    let current = role_of(&txn, tenant_id, user_id)
        .await?
        .ok_or_else(|| Error::NotFound("member".into()))?;
    if !actor.may_assign(current) || new_role.is_some_and(|r| !actor.may_assign(r)) {
        return Err(forbidden_owner());
    }
    if current == Role::Owner && new_role != Some(Role::Owner) {
        let owners = membership::Entity::find()
            .filter(membership::Column::TenantId.eq(tenant_id))
            .filter(membership::Column::Role.eq(Role::Owner.as_str()))
            .count(&txn)
            .await?;
        if owners <= 1 {
            return Err(Error::Conflict(
                "the last owner of a tenant cannot be demoted or removed".into(),
            ));
        }
    }
    let key = (tenant_id.to_owned(), user_id.to_owned());
    match new_role {
        Some(role) => {
            membership::Entity::update_many()
                .col_expr(membership::Column::Role, Expr::value(role.as_str()))
                .filter(membership::Column::TenantId.eq(tenant_id))
                .filter(membership::Column::UserId.eq(user_id))
                .exec(&txn)
                .await?;
        }
        None => {
            membership::Entity::delete_by_id(key).exec(&txn).await?;
            // A member who leaves takes their keys along: re-added later, they get none back.
            crate::apikeys::revoke_all_of(&txn, user_id, Some(tenant_id), now).await?;
        }
    }
    txn.commit().await?;
    let Some(role) = new_role else {
        return Ok(None);
    };
    let email = user::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .map(|u| u.email)
        .unwrap_or_default();
    Ok(Some(Member {
        user_id: user_id.to_owned(),
        email,
        role,
    }))
}

fn forbidden_owner() -> Error {
    Error::Forbidden {
        code: "forbidden",
        message: "only an owner grants, changes or removes the owner role",
    }
}
