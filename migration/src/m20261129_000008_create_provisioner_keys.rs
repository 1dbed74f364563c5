//! Provisioner keys: per-organization daemon credentials with fixed tags; stored hashed.
use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261129_000002_create_organizations::Organizations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ProvisionerKeys::Table)
                .col(pk_uuid(ProvisionerKeys::Id))
                .col(uuid(ProvisionerKeys::OrganizationId))
                .col(string(ProvisionerKeys::Name))
                .col(string_uniq(ProvisionerKeys::HashedSecret))
                .col(json_binary(ProvisionerKeys::Tags))
                .col(timestamp_with_time_zone(ProvisionerKeys::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(ProvisionerKeys::Table, ProvisionerKeys::OrganizationId)
                        .to(Organizations::Table, Organizations::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_provisioner_keys_org_name")
                .table(ProvisionerKeys::Table)
                .col(ProvisionerKeys::OrganizationId)
                .col(ProvisionerKeys::Name)
                .unique()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ProvisionerKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum ProvisionerKeys {
    Table,
    Id,
    OrganizationId,
    Name,
    HashedSecret,
    Tags,
    CreatedAt,
}
