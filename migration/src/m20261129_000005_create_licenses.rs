//! Uploaded license JWTs. The claims are re-verified from the JWT, never trusted from columns.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Licenses::Table)
                .col(pk_auto(Licenses::Id))
                .col(uuid_uniq(Licenses::Uuid))
                .col(text_uniq(Licenses::Jwt))
                .col(timestamp_with_time_zone(Licenses::UploadedAt))
                .col(timestamp_with_time_zone(Licenses::Exp))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Licenses::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Licenses {
    Table,
    Id,
    Uuid,
    Jwt,
    UploadedAt,
    Exp,
}
