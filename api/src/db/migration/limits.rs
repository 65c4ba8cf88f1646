//! Resource limits per template.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Templates {
    Table,
    Limits,
}

/// Adds `templates.limits` (JSON; absent fields take the platform defaults).
pub struct AddLimits;

impl MigrationName for AddLimits {
    fn name(&self) -> &str {
        "m20261123_000007_limits"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddLimits {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Templates::Table)
                    .add_column(json_null(Templates::Limits))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Templates::Table)
                    .drop_column(Templates::Limits)
                    .to_owned(),
            )
            .await
    }
}
