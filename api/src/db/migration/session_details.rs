//! What the session list shows: where a session was opened (`ip`, `user_agent`, both bounded
//! at login) and when it was last used (`last_used_at`, written at most once a minute).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Ip,
    UserAgent,
    LastUsedAt,
}

/// Adds `sessions.ip`, `sessions.user_agent` and `sessions.last_used_at` (null for sessions
/// opened before).
pub struct AddSessionDetails;

impl MigrationName for AddSessionDetails {
    fn name(&self) -> &str {
        "m20261128_000009_session_details"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddSessionDetails {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [
            string_len_null(Sessions::Ip, 64),
            string_len_null(Sessions::UserAgent, 255),
            timestamp_with_time_zone_null(Sessions::LastUsedAt),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(Sessions::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Sessions::LastUsedAt, Sessions::UserAgent, Sessions::Ip] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Sessions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
