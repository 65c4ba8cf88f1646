//! Node identity lifecycle (issue 15): one-time join tokens (stored hashed), and on each node
//! the next pin beside the current one, the renewal state and the last renewal.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Nodes {
    Table,
    NextFingerprint,
    Renewal,
    RenewalError,
    LastRenewedAt,
}

#[derive(DeriveIden)]
enum NodeJoinTokens {
    Table,
    Id,
    NodeId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

/// Creates `node_join_tokens` and adds the renewal columns to `nodes`.
pub struct AddNodeIdentity;

impl MigrationName for AddNodeIdentity {
    fn name(&self) -> &str {
        "m20261128_000020_node_identity"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddNodeIdentity {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(NodeJoinTokens::Table)
                    .col(string_len(NodeJoinTokens::Id, 36).primary_key())
                    .col(string_len(NodeJoinTokens::NodeId, 63))
                    .col(string_len(NodeJoinTokens::TokenHash, 64).unique_key())
                    .col(timestamp_with_time_zone(NodeJoinTokens::CreatedAt))
                    .col(timestamp_with_time_zone(NodeJoinTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(NodeJoinTokens::UsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_node_join_tokens_node")
                    .table(NodeJoinTokens::Table)
                    .col(NodeJoinTokens::NodeId)
                    .to_owned(),
            )
            .await?;
        // One column per statement: SQLite alters one at a time.
        let columns = [
            string_len_null(Nodes::NextFingerprint, 64),
            string_len(Nodes::Renewal, 16).default("ok").to_owned(),
            string_len_null(Nodes::RenewalError, 64),
            timestamp_with_time_zone_null(Nodes::LastRenewedAt),
        ];
        for column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Nodes::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Nodes::NextFingerprint,
            Nodes::Renewal,
            Nodes::RenewalError,
            Nodes::LastRenewedAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Nodes::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(NodeJoinTokens::Table).to_owned())
            .await
    }
}
