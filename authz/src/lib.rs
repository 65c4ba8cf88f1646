//! Authorisation of Mamba: tenant roles, the permissions they grant, and [`can`].
//!
//! The role → permission table is data ([`Role::permissions`]), served as-is at
//! `GET /api/permissions`. Nothing here does I/O: callers pass what the database says about the
//! caller's membership *now* ([`Principal`]), so a demoted admin loses access on the very next
//! request, and the tenant always comes from the request path, never from a token.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A role in a tenant, strongest first (but for files: a member writes them, support only
/// reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including deleting the tenant and granting `owner`.
    Owner,
    /// Everything but deleting the tenant and granting `owner`.
    Admin,
    /// Reads everything but secrets; starts, stops, console, creates backups.
    Support,
    /// Reads servers; starts, stops, console.
    Member,
}

/// Something a member of a tenant may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// `tenant:read`
    #[serde(rename = "tenant:read")]
    TenantRead,
    /// `tenant:update`
    #[serde(rename = "tenant:update")]
    TenantUpdate,
    /// `tenant:delete`
    #[serde(rename = "tenant:delete")]
    TenantDelete,
    /// `member:read`
    #[serde(rename = "member:read")]
    MemberRead,
    /// `member:manage`
    #[serde(rename = "member:manage")]
    MemberManage,
    /// `server:create`
    #[serde(rename = "server:create")]
    ServerCreate,
    /// `server:read`
    #[serde(rename = "server:read")]
    ServerRead,
    /// `server:update`
    #[serde(rename = "server:update")]
    ServerUpdate,
    /// `server:delete`
    #[serde(rename = "server:delete")]
    ServerDelete,
    /// `server:start`
    #[serde(rename = "server:start")]
    ServerStart,
    /// `server:stop`
    #[serde(rename = "server:stop")]
    ServerStop,
    /// `server:console`
    #[serde(rename = "server:console")]
    ServerConsole,
    /// `backup:create`
    #[serde(rename = "backup:create")]
    BackupCreate,
    /// `backup:read`
    #[serde(rename = "backup:read")]
    BackupRead,
    /// `backup:restore`
    #[serde(rename = "backup:restore")]
    BackupRestore,
    /// `backup:delete`
    #[serde(rename = "backup:delete")]
    BackupDelete,
    /// `secret:read`
    #[serde(rename = "secret:read")]
    SecretRead,
    /// `secret:write`
    #[serde(rename = "secret:write")]
    SecretWrite,
    /// `audit:read`
    #[serde(rename = "audit:read")]
    AuditRead,
    /// `file:read`: list and download a server's files.
    #[serde(rename = "file:read")]
    FileRead,
    /// `file:write`: upload, edit, move, delete, chmod, compress and decompress them.
    #[serde(rename = "file:write")]
    FileWrite,
}

use Permission as P;

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 21] = [
        P::TenantRead,
        P::TenantUpdate,
        P::TenantDelete,
        P::MemberRead,
        P::MemberManage,
        P::ServerCreate,
        P::ServerRead,
        P::ServerUpdate,
        P::ServerDelete,
        P::ServerStart,
        P::ServerStop,
        P::ServerConsole,
        P::BackupCreate,
        P::BackupRead,
        P::BackupRestore,
        P::BackupDelete,
        P::SecretRead,
        P::SecretWrite,
        P::AuditRead,
        P::FileRead,
        P::FileWrite,
    ];
}

const OWNER: &[Permission] = &Permission::ALL;
const ADMIN: &[Permission] = &[
    P::TenantRead,
    P::TenantUpdate,
    P::MemberRead,
    P::MemberManage,
    P::ServerCreate,
    P::ServerRead,
    P::ServerUpdate,
    P::ServerDelete,
    P::ServerStart,
    P::ServerStop,
    P::ServerConsole,
    P::BackupCreate,
    P::BackupRead,
    P::BackupRestore,
    P::BackupDelete,
    P::SecretRead,
    P::SecretWrite,
    P::AuditRead,
    P::FileRead,
    P::FileWrite,
];
const SUPPORT: &[Permission] = &[
    P::TenantRead,
    P::MemberRead,
    P::ServerRead,
    P::ServerStart,
    P::ServerStop,
    P::ServerConsole,
    P::BackupCreate,
    P::BackupRead,
    P::AuditRead,
    P::FileRead,
];
/// A member edits the files of the servers they run (support only reads them).
const MEMBER: &[Permission] = &[
    P::ServerRead,
    P::ServerStart,
    P::ServerStop,
    P::ServerConsole,
    P::FileRead,
    P::FileWrite,
];

impl Role {
    /// Every role, strongest first.
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Support, Role::Member];

    /// The permissions this role grants: the table.
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            Role::Owner => OWNER,
            Role::Admin => ADMIN,
            Role::Support => SUPPORT,
            Role::Member => MEMBER,
        }
    }

    /// Whether this role grants `permission`.
    pub fn grants(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }

    /// Whether a holder of this role may give `role` to someone (or take it away): only an
    /// owner touches `owner`; `member:manage` covers the rest.
    pub fn may_assign(self, role: Role) -> bool {
        self.grants(P::MemberManage) && (role != Role::Owner || self == Role::Owner)
    }

    /// The role's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Support => "support",
            Role::Member => "member",
        }
    }

    /// Parses `owner`, `admin`, `support`, `member`.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// What the database says about a caller now: their role in each tenant they belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    memberships: HashMap<String, Role>,
}

impl Principal {
    /// A caller with these `(tenant id, role)` memberships.
    pub fn new(memberships: impl IntoIterator<Item = (String, Role)>) -> Principal {
        Principal {
            memberships: memberships.into_iter().collect(),
        }
    }

    /// The caller's role in `tenant`, if a member.
    pub fn role_in(&self, tenant: &str) -> Option<Role> {
        self.memberships.get(tenant).copied()
    }
}

/// Whether `principal` may do `permission` in `tenant`. Not a member: never.
pub fn can(principal: &Principal, permission: Permission, tenant: &str) -> bool {
    principal
        .role_in(tenant)
        .is_some_and(|role| role.grants(permission))
}

/// The whole table, as served at `GET /api/permissions`: `{role: [permission, …]}`.
pub fn table() -> Vec<(Role, &'static [Permission])> {
    Role::ALL
        .into_iter()
        .map(|r| (r, r.permissions()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_the_issue() {
        assert_eq!(Role::Owner.permissions().len(), 21, "owner: everything");
        let admin_lacks: Vec<_> = Permission::ALL
            .into_iter()
            .filter(|p| !Role::Admin.grants(*p))
            .collect();
        assert_eq!(
            admin_lacks,
            vec![P::TenantDelete],
            "admin: everything but deleting the tenant"
        );
        for p in [
            P::SecretRead,
            P::SecretWrite,
            P::ServerCreate,
            P::ServerDelete,
            P::MemberManage,
            P::TenantDelete,
            P::FileWrite,
        ] {
            assert!(!Role::Support.grants(p), "support must not {p:?}");
        }
        for p in [
            P::TenantRead,
            P::MemberRead,
            P::ServerRead,
            P::BackupRead,
            P::AuditRead,
            P::ServerStart,
            P::ServerStop,
            P::ServerConsole,
            P::BackupCreate,
            P::FileRead,
        ] {
            assert!(Role::Support.grants(p), "support must {p:?}");
        }
        assert_eq!(
            Role::Member.permissions(),
            &[
                P::ServerRead,
                P::ServerStart,
                P::ServerStop,
                P::ServerConsole,
                P::FileRead,
                P::FileWrite,
            ]
        );
        for role in Role::ALL {
            assert!(role.grants(P::FileRead), "{role:?} reads files");
            assert_eq!(role.grants(P::FileWrite), role != Role::Support);
        }
    }

    #[test]
    fn roles_are_nested_but_for_file_writes() {
        for pair in Role::ALL.windows(2) {
            let (strong, weak) = (pair[0], pair[1]);
            assert!(
                weak.permissions()
                    .iter()
                    .all(|p| strong.grants(*p) || (strong == Role::Support && *p == P::FileWrite)),
                "{strong:?} ⊇ {weak:?}"
            );
        }
    }

    #[test]
    fn only_owners_touch_owner() {
        assert!(Role::Owner.may_assign(Role::Owner));
        assert!(!Role::Admin.may_assign(Role::Owner));
        assert!(Role::Admin.may_assign(Role::Admin));
        assert!(!Role::Support.may_assign(Role::Member));
        assert!(!Role::Member.may_assign(Role::Member));
    }

    #[test]
    fn can_reads_the_path_tenant_only() {
        let alice = Principal::new([
            ("t-a".to_owned(), Role::Admin),
            ("t-b".to_owned(), Role::Member),
        ]);
        assert!(can(&alice, P::ServerCreate, "t-a"));
        assert!(!can(&alice, P::ServerCreate, "t-b"));
        assert!(can(&alice, P::ServerStart, "t-b"));
        assert!(!can(&alice, P::ServerRead, "t-c"), "not a member: nothing");
        assert!(!can(&Principal::default(), P::ServerRead, "t-a"));
    }

    #[test]
    fn names_round_trip_and_serialise_as_the_contract_spells_them() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
        let json = serde_json::to_string(&(Role::Support, Role::Support.permissions())).unwrap();
        assert!(
            json.starts_with("[\"support\",[\"tenant:read\",\"member:read\""),
            "{json}"
        );
    }
}
