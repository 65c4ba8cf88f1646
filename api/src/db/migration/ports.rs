//! Node port ranges, one port per server, and templates whose console input is sensitive.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Nodes {
    Table,
    PortStart,
    PortEnd,
}

#[derive(DeriveIden)]
enum Servers {
    Table,
    NodeId,
    Port,
}

#[derive(DeriveIden)]
enum Templates {
    Table,
    SensitiveInput,
}

/// Adds the columns and the one-port-per-server index.
pub struct AddPorts;

impl MigrationName for AddPorts {
    fn name(&self) -> &str {
        "m20261123_000006_ports"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddPorts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [Nodes::PortStart, Nodes::PortEnd] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Nodes::Table)
                        .add_column(integer_null(column))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Templates::Table)
                    .add_column(boolean(Templates::SensitiveInput).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_servers_node_port")
                    .table(Servers::Table)
                    .col(Servers::NodeId)
                    .col(Servers::Port)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("idx_servers_node_port").to_owned())
            .await
    }
}
