//! Tenants, members, invitations, API keys, audit rows and secrets; the role and permission
//! names of `authz` as schemas.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::apikeys::KeyView;
use crate::db::entities::{audit_log, invitation, tenant};

/// The schema of [`authz::Role`] (`authz` knows no OpenAPI): its names, strongest first.
pub struct RoleName;

impl PartialSchema for RoleName {
    fn schema() -> RefOr<Schema> {
        let names = authz::Role::ALL.iter().map(|r| r.as_str());
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl ToSchema for RoleName {
    fn name() -> Cow<'static, str> {
        "Role".into()
    }
}

/// The schema of [`authz::Permission`]: every permission's name.
pub struct PermissionName;

impl PartialSchema for PermissionName {
    fn schema() -> RefOr<Schema> {
        let names: Vec<String> = authz::Permission::ALL
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl ToSchema for PermissionName {
    fn name() -> Cow<'static, str> {
        "Permission".into()
    }
}

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tenant {
    /// The tenant's id.
    #[schema(format = Uuid)]
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// The caller's role (not in the answer to creation).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RoleName>, nullable = false)]
    pub role: Option<authz::Role>,
}

impl Tenant {
    /// `tenant` as the caller with `role` sees it.
    pub fn new(tenant: &tenant::Model, role: Option<authz::Role>) -> Tenant {
        Tenant {
            id: tenant.id.clone(),
            name: tenant.name.clone(),
            created_at: tenant.created_at,
            role,
        }
    }
}

/// A member of a tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    /// The member's user id.
    #[schema(format = Uuid)]
    pub user_id: String,
    /// Their email address.
    pub email: String,
    /// Their role.
    #[schema(value_type = RoleName)]
    pub role: authz::Role,
}

impl From<crate::tenancy::Member> for Member {
    fn from(member: crate::tenancy::Member) -> Member {
        Member {
            user_id: member.user_id,
            email: member.email,
            role: member.role,
        }
    }
}

/// A pending invitation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invitation {
    /// The invitation's id.
    #[schema(format = Uuid)]
    pub id: String,
    /// The invited address.
    pub email: String,
    /// The role it gives.
    #[schema(value_type = RoleName)]
    pub role: String,
    /// Who invited.
    #[schema(format = Uuid)]
    pub invited_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When its link stops working.
    pub expires_at: DateTime<Utc>,
}

impl From<invitation::Model> for Invitation {
    fn from(i: invitation::Model) -> Invitation {
        Invitation {
            id: i.id,
            email: i.email,
            role: i.role,
            invited_by: i.invited_by,
            created_at: i.created_at,
            expires_at: i.expires_at,
        }
    }
}

/// A live API key (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKey {
    /// The key's id.
    #[schema(pattern = "^[0-9a-f]{16}$")]
    pub id: String,
    /// What a secret scanner or a log shows of the key.
    #[schema(pattern = "^mhp_[0-9a-f]{16}$")]
    pub prefix: String,
    /// Its name.
    pub name: String,
    /// What it may do (never more than its maker's role grants).
    #[schema(value_type = Vec<PermissionName>)]
    pub permissions: Vec<authz::Permission>,
    /// Its maker.
    #[schema(format = Uuid)]
    pub created_by: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last used.
    #[schema(required = true)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it expires; null: never.
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<KeyView> for ApiKey {
    fn from(key: KeyView) -> ApiKey {
        ApiKey {
            prefix: key.prefix(),
            id: key.row.id,
            name: key.row.name,
            permissions: key.permissions,
            created_by: key.row.user_id,
            created_at: key.row.created_at,
            last_used_at: key.row.last_used_at,
            expires_at: key.row.expires_at,
        }
    }
}

/// A new API key, with the whole key shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewApiKey {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The whole key, shown this once.
    #[schema(pattern = "^mhp_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")]
    #[serde(rename = "key")]
    pub secret: String,
}

/// An audit row.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// The row's id.
    #[schema(format = Uuid)]
    pub id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// A user id; on the node channel the presented CN or `unknown`.
    pub actor: String,
    /// What, e.g. `node.connect`.
    pub action: String,
    /// On what.
    #[schema(required = true)]
    pub target: Option<String>,
    /// `ok`, `accepted`, `rejected: <reason>` and the like.
    pub outcome: String,
    /// The client's address.
    #[schema(required = true)]
    pub ip: Option<String>,
    /// More, never secrets.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<audit_log::Model> for AuditEntry {
    fn from(row: audit_log::Model) -> AuditEntry {
        AuditEntry {
            id: row.id,
            at: row.at,
            actor: row.actor,
            action: row.action,
            target: row.target,
            outcome: row.outcome,
            ip: row.ip,
            details: row.details,
        }
    }
}

/// A secret's name and times (never its value).
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
}

/// A secret's value (an audited read).
#[derive(Debug, Serialize, ToSchema)]
pub struct Secret {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// Each role's permissions (`authz`'s table).
#[derive(Debug, Serialize)]
pub struct RolePermissions(pub BTreeMap<authz::Role, &'static [authz::Permission]>);

impl PartialSchema for RolePermissions {
    fn schema() -> RefOr<Schema> {
        let mut object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("Each role's permissions."));
        for role in authz::Role::ALL {
            let list = utoipa::openapi::schema::ArrayBuilder::new().items(PermissionName::schema());
            object = object.property(role.as_str(), list).required(role.as_str());
        }
        object.into()
    }
}

impl ToSchema for RolePermissions {
    fn name() -> Cow<'static, str> {
        "RolePermissions".into()
    }
}
