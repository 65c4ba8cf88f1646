//! Backups of servers, made and kept by their nodes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Backups {
    Table,
    Id,
    ServerId,
    TenantId,
    NodeId,
    Name,
    State,
    SizeBytes,
    Sha256,
    Error,
    RestoreState,
    RestoreError,
    CreatedAt,
    CompletedAt,
}

/// Creates `backups`.
pub struct CreateBackups;

impl MigrationName for CreateBackups {
    fn name(&self) -> &str {
        "m20261123_000005_backups"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateBackups {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Backups::Table)
                    .col(string_len(Backups::Id, 36).primary_key())
                    .col(string_len(Backups::ServerId, 36))
                    .col(string_len(Backups::TenantId, 36))
                    .col(string_len(Backups::NodeId, 63))
                    .col(string_len(Backups::Name, 100))
                    .col(string_len(Backups::State, 16))
                    .col(big_integer_null(Backups::SizeBytes))
                    .col(string_len_null(Backups::Sha256, 64))
                    .col(string_null(Backups::Error))
                    .col(string_len_null(Backups::RestoreState, 16))
                    .col(string_null(Backups::RestoreError))
                    .col(timestamp_with_time_zone(Backups::CreatedAt))
                    .col(timestamp_with_time_zone_null(Backups::CompletedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_backups_server")
                    .table(Backups::Table)
                    .col(Backups::ServerId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Backups::Table).to_owned())
            .await
    }
}
