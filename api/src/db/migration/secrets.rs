//! Envelope-encrypted secrets and the master keys' check values.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Secrets {
    Table,
    Id,
    TenantId,
    Name,
    Version,
    Algorithm,
    KekId,
    Nonce,
    Ciphertext,
    Tag,
    DekNonce,
    WrappedDek,
    DekTag,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum EncryptionKeys {
    Table,
    Id,
    CheckValue,
    CreatedAt,
}

/// Creates `secrets` and `encryption_keys`.
pub struct CreateSecrets;

impl MigrationName for CreateSecrets {
    fn name(&self) -> &str {
        "m20261123_000004_secrets"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSecrets {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Secrets::Table)
                    .col(string_len(Secrets::Id, 36).primary_key())
                    .col(string_len(Secrets::TenantId, 36))
                    .col(string_len(Secrets::Name, 64))
                    .col(integer(Secrets::Version))
                    .col(string_len(Secrets::Algorithm, 32))
                    .col(string_len(Secrets::KekId, 32))
                    .col(blob(Secrets::Nonce))
                    .col(blob(Secrets::Ciphertext))
                    .col(blob(Secrets::Tag))
                    .col(blob(Secrets::DekNonce))
                    .col(blob(Secrets::WrappedDek))
                    .col(blob(Secrets::DekTag))
                    .col(timestamp_with_time_zone(Secrets::CreatedAt))
                    .col(timestamp_with_time_zone(Secrets::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_secrets_tenant_name")
                    .table(Secrets::Table)
                    .col(Secrets::TenantId)
                    .col(Secrets::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_secrets_kek")
                    .table(Secrets::Table)
                    .col(Secrets::KekId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(EncryptionKeys::Table)
                    .col(string_len(EncryptionKeys::Id, 32).primary_key())
                    .col(string_len(EncryptionKeys::CheckValue, 32))
                    .col(timestamp_with_time_zone(EncryptionKeys::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EncryptionKeys::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Secrets::Table).to_owned())
            .await
    }
}
