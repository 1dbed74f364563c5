//! Session tokens: `<id>-<secret>`; only the SHA-256 of the secret is stored.
use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261129_000003_create_users::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ApiKeys::Table)
                .col(string(ApiKeys::Id).primary_key())
                .col(string(ApiKeys::HashedSecret))
                .col(uuid(ApiKeys::UserId))
                .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                .col(timestamp_with_time_zone(ApiKeys::LastUsed))
                .col(timestamp_with_time_zone(ApiKeys::ExpiresAt))
                .col(big_integer(ApiKeys::LifetimeSeconds))
                .foreign_key(
                    ForeignKey::create()
                        .from(ApiKeys::Table, ApiKeys::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_api_keys_user")
                .table(ApiKeys::Table)
                .col(ApiKeys::UserId)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum ApiKeys {
    Table,
    Id,
    HashedSecret,
    UserId,
    CreatedAt,
    LastUsed,
    ExpiresAt,
    LifetimeSeconds,
}
