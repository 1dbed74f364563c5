//! Key/value settings of the whole deployment: the deployment id, the prebuilds pause flag.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SiteConfigs::Table)
                .col(string(SiteConfigs::Key).primary_key())
                .col(text(SiteConfigs::Value))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(SiteConfigs::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum SiteConfigs {
    Table,
    Key,
    Value,
}
