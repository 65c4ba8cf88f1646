//! Schema migrations, written with sea-query so they run on SQLite and PostgreSQL alike.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

mod accounts;
mod backups;
mod fleet;
mod identity;
mod limits;
mod node_identity;
pub mod node_notify;
mod ports;
mod secrets;
mod session_details;
mod sweep;
mod tenancy;
mod totp;
mod user_lock;

/// All migrations, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateNodesAndAudit),
            Box::new(identity::CreateIdentity),
            Box::new(tenancy::CreateTenancy),
            Box::new(secrets::CreateSecrets),
            Box::new(backups::CreateBackups),
            Box::new(ports::AddPorts),
            Box::new(limits::AddLimits),
            Box::new(sweep::AddCommandSweepIndex),
            Box::new(session_details::AddSessionDetails),
            Box::new(user_lock::AddUserLock),
            Box::new(accounts::CreateInvitations),
            Box::new(accounts::CreateApiKeys),
            Box::new(totp::CreateTotp),
            Box::new(node_identity::AddNodeIdentity),
            Box::new(node_notify::AddNodeNotify),
            Box::new(fleet::AddFleet),
            Box::new(node_notify::AnnounceAddedNodes),
        ]
    }
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Id,
    Fqdn,
    Name,
    Enabled,
    Fingerprint,
    CertNotAfter,
    LastSeen,
    Online,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    At,
    Actor,
    Action,
    Target,
    Outcome,
    Ip,
    Details,
    TenantId,
}

struct CreateNodesAndAudit;

impl MigrationName for CreateNodesAndAudit {
    fn name(&self) -> &str {
        "m20261123_000001_nodes_and_audit"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateNodesAndAudit {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Nodes::Table)
                    .col(string_len(Nodes::Id, 63).primary_key())
                    .col(string_len(Nodes::Fqdn, 253))
                    .col(string_len(Nodes::Name, 255))
                    .col(boolean(Nodes::Enabled).default(true))
                    .col(string_len_null(Nodes::Fingerprint, 64))
                    .col(timestamp_with_time_zone_null(Nodes::CertNotAfter))
                    .col(timestamp_with_time_zone_null(Nodes::LastSeen))
                    .col(boolean(Nodes::Online).default(false))
                    .col(timestamp_with_time_zone(Nodes::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(string_len(AuditLog::Id, 36).primary_key())
                    .col(timestamp_with_time_zone(AuditLog::At))
                    .col(string(AuditLog::Actor))
                    .col(string(AuditLog::Action))
                    .col(string_null(AuditLog::Target))
                    .col(string(AuditLog::Outcome))
                    .col(string_null(AuditLog::Ip))
                    .col(json(AuditLog::Details))
                    .col(string_len_null(AuditLog::TenantId, 36))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_tenant_at")
                    .table(AuditLog::Table)
                    .col(AuditLog::TenantId)
                    .col(AuditLog::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditLog::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Nodes::Table).to_owned())
            .await
    }
}
