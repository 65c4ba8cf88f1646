//! Locking an account for incident response (`api user lock`): `users.locked_at`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Users {
    Table,
    LockedAt,
}

/// Adds `users.locked_at` (null: not locked).
pub struct AddUserLock;

impl MigrationName for AddUserLock {
    fn name(&self) -> &str {
        "m20261128_000010_user_lock"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddUserLock {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(timestamp_with_time_zone_null(Users::LockedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::LockedAt)
                    .to_owned(),
            )
            .await
    }
}
