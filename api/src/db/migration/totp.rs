//! The TOTP second factor: each account's envelope-encrypted secret with its state and the last
//! time step accepted, its hashed recovery codes, and the short-lived challenges a login with
//! TOTP on answers with.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum TotpCredentials {
    Table,
    UserId,
    State,
    Version,
    Algorithm,
    KekId,
    Nonce,
    Ciphertext,
    Tag,
    DekNonce,
    WrappedDek,
    DekTag,
    LastStep,
    CreatedAt,
    ConfirmedAt,
}

#[derive(DeriveIden)]
enum RecoveryCodes {
    Table,
    Id,
    UserId,
    CodeHash,
    CreatedAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum MfaChallenges {
    Table,
    Id,
    UserId,
    TokenHash,
    PasswordTag,
    TenantId,
    Attempts,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

/// Creates `totp_credentials`, `recovery_codes` and `mfa_challenges`.
pub struct CreateTotp;

impl MigrationName for CreateTotp {
    fn name(&self) -> &str {
        "m20261128_000016_totp"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTotp {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TotpCredentials::Table)
                    .col(string_len(TotpCredentials::UserId, 36).primary_key())
                    .col(string_len(TotpCredentials::State, 16))
                    .col(integer(TotpCredentials::Version))
                    .col(string_len(TotpCredentials::Algorithm, 32))
                    .col(string_len(TotpCredentials::KekId, 32))
                    .col(blob(TotpCredentials::Nonce))
                    .col(blob(TotpCredentials::Ciphertext))
                    .col(blob(TotpCredentials::Tag))
                    .col(blob(TotpCredentials::DekNonce))
                    .col(blob(TotpCredentials::WrappedDek))
                    .col(blob(TotpCredentials::DekTag))
                    .col(big_integer_null(TotpCredentials::LastStep))
                    .col(timestamp_with_time_zone(TotpCredentials::CreatedAt))
                    .col(timestamp_with_time_zone_null(TotpCredentials::ConfirmedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RecoveryCodes::Table)
                    .col(string_len(RecoveryCodes::Id, 36).primary_key())
                    .col(string_len(RecoveryCodes::UserId, 36))
                    .col(string_len(RecoveryCodes::CodeHash, 64))
                    .col(timestamp_with_time_zone(RecoveryCodes::CreatedAt))
                    .col(timestamp_with_time_zone_null(RecoveryCodes::UsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_recovery_codes_user_hash")
                    .table(RecoveryCodes::Table)
                    .col(RecoveryCodes::UserId)
                    .col(RecoveryCodes::CodeHash)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MfaChallenges::Table)
                    .col(string_len(MfaChallenges::Id, 36).primary_key())
                    .col(string_len(MfaChallenges::UserId, 36))
                    .col(string_len(MfaChallenges::TokenHash, 64))
                    .col(string_len(MfaChallenges::PasswordTag, 64))
                    .col(string_len_null(MfaChallenges::TenantId, 36))
                    .col(integer(MfaChallenges::Attempts).default(0))
                    .col(timestamp_with_time_zone(MfaChallenges::CreatedAt))
                    .col(timestamp_with_time_zone(MfaChallenges::ExpiresAt))
                    .col(timestamp_with_time_zone_null(MfaChallenges::UsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_mfa_challenges_token")
                    .table(MfaChallenges::Table)
                    .col(MfaChallenges::TokenHash)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_mfa_challenges_user")
                    .table(MfaChallenges::Table)
                    .col(MfaChallenges::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            MfaChallenges::Table.into_iden(),
            RecoveryCodes::Table.into_iden(),
            TotpCredentials::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
