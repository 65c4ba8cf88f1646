//! The fleet's tables: `node_owners`, which replica holds each node's stream, under which
//! epoch and until when (one row per node, taken by one conditional write), and the
//! arguments a command needs beyond its server (`commands.args`), so the replica holding the
//! node can build it again from the row, and an index for the commands a node still owes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum NodeOwners {
    Table,
    NodeId,
    ReplicaId,
    Epoch,
    LeaseUntil,
}

#[derive(DeriveIden)]
enum Commands {
    Table,
    NodeId,
    State,
    Args,
}

/// The index of a node's commands by state.
const INDEX: &str = "idx_commands_node_state";

/// Creates `node_owners` and adds `commands.args`.
pub struct AddFleet;

impl MigrationName for AddFleet {
    fn name(&self) -> &str {
        "m20261129_000014_fleet"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddFleet {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(NodeOwners::Table)
                    .col(string_len(NodeOwners::NodeId, 63).primary_key())
                    .col(string_len(NodeOwners::ReplicaId, 64))
                    .col(big_integer(NodeOwners::Epoch))
                    .col(timestamp_with_time_zone(NodeOwners::LeaseUntil))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Commands::Table)
                    .add_column(json_null(Commands::Args))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Commands::Table)
                    .col(Commands::NodeId)
                    .col(Commands::State)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Commands::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Commands::Table)
                    .drop_column(Commands::Args)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(NodeOwners::Table).to_owned())
            .await
    }
}
