//! Live `provq serve` processes sharing the database; each heartbeats its row so the
//! `high_availability` entitlement can count replicas.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Replicas::Table)
                .col(pk_uuid(Replicas::Id))
                .col(string(Replicas::Hostname))
                .col(string(Replicas::Version))
                .col(timestamp_with_time_zone(Replicas::StartedAt))
                .col(timestamp_with_time_zone(Replicas::UpdatedAt))
                .col(timestamp_with_time_zone_null(Replicas::StoppedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_replicas_updated")
                .table(Replicas::Table)
                .col(Replicas::UpdatedAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Replicas::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Replicas {
    Table,
    Id,
    Hostname,
    Version,
    StartedAt,
    UpdatedAt,
    StoppedAt,
}
