//! Tenants, memberships, templates, servers and the commands sent to their nodes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    TenantId,
    UserId,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Templates {
    Table,
    Id,
    Name,
    Command,
    Args,
    Variables,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Servers {
    Table,
    Id,
    TenantId,
    NodeId,
    Name,
    TemplateId,
    Variables,
    State,
    StateReason,
    Port,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Commands {
    Table,
    Id,
    ServerId,
    NodeId,
    Action,
    State,
    Error,
    CreatedAt,
    CompletedAt,
}

/// Creates the tenancy tables.
pub struct CreateTenancy;

impl MigrationName for CreateTenancy {
    fn name(&self) -> &str {
        "m20261123_000003_tenancy"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTenancy {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(string_len(Tenants::Id, 36).primary_key())
                    .col(string_len(Tenants::Name, 100))
                    .col(timestamp_with_time_zone(Tenants::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Memberships::Table)
                    .col(string_len(Memberships::TenantId, 36))
                    .col(string_len(Memberships::UserId, 36))
                    .col(string_len(Memberships::Role, 16))
                    .col(timestamp_with_time_zone(Memberships::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(Memberships::TenantId)
                            .col(Memberships::UserId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_memberships_user")
                    .table(Memberships::Table)
                    .col(Memberships::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Templates::Table)
                    .col(string_len(Templates::Id, 36).primary_key())
                    .col(string_len_uniq(Templates::Name, 64))
                    .col(string_len(Templates::Command, 1024))
                    .col(json(Templates::Args))
                    .col(json(Templates::Variables))
                    .col(timestamp_with_time_zone(Templates::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Servers::Table)
                    .col(string_len(Servers::Id, 36).primary_key())
                    .col(string_len(Servers::TenantId, 36))
                    .col(string_len(Servers::NodeId, 63))
                    .col(string_len(Servers::Name, 100))
                    .col(string_len(Servers::TemplateId, 36))
                    .col(json(Servers::Variables))
                    .col(string_len(Servers::State, 16))
                    .col(string_null(Servers::StateReason))
                    .col(integer_null(Servers::Port))
                    .col(timestamp_with_time_zone(Servers::CreatedAt))
                    .col(timestamp_with_time_zone(Servers::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_servers_tenant", Servers::TenantId),
            ("idx_servers_node", Servers::NodeId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Servers::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Commands::Table)
                    .col(string_len(Commands::Id, 36).primary_key())
                    .col(string_len(Commands::ServerId, 36))
                    .col(string_len(Commands::NodeId, 63))
                    .col(string_len(Commands::Action, 16))
                    .col(string_len(Commands::State, 16))
                    .col(string_null(Commands::Error))
                    .col(timestamp_with_time_zone(Commands::CreatedAt))
                    .col(timestamp_with_time_zone_null(Commands::CompletedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Commands::Table.into_iden(),
            Servers::Table.into_iden(),
            Templates::Table.into_iden(),
            Memberships::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
