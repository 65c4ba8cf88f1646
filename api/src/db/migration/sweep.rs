//! An index for the sweep of overdue commands (`state = 'pending' AND created_at < …`), which
//! runs at start and on every node-watcher tick.

use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Commands {
    Table,
    State,
    CreatedAt,
}

/// The index name.
const INDEX: &str = "idx_commands_state_created_at";

/// Adds an index on `commands (state, created_at)`.
pub struct AddCommandSweepIndex;

impl MigrationName for AddCommandSweepIndex {
    fn name(&self) -> &str {
        "m20261128_000008_command_sweep_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddCommandSweepIndex {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Commands::Table)
                    .col(Commands::State)
                    .col(Commands::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Commands::Table).to_owned())
            .await
    }
}
