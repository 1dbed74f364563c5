//! The daemon registry: one row per (organization, name, owner tag), refreshed on every call.
use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261129_000002_create_organizations::Organizations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ProvisionerDaemons::Table)
                .col(pk_uuid(ProvisionerDaemons::Id))
                .col(uuid(ProvisionerDaemons::OrganizationId))
                .col(string(ProvisionerDaemons::Name))
                // The `owner` tag ("" for organization-scoped daemons): part of the identity.
                .col(string(ProvisionerDaemons::OwnerTag))
                .col(uuid_null(ProvisionerDaemons::KeyId))
                .col(json_binary(ProvisionerDaemons::Tags))
                .col(json_binary(ProvisionerDaemons::Provisioners))
                .col(string(ProvisionerDaemons::Version))
                .col(timestamp_with_time_zone(ProvisionerDaemons::CreatedAt))
                .col(timestamp_with_time_zone(ProvisionerDaemons::LastSeenAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(
                            ProvisionerDaemons::Table,
                            ProvisionerDaemons::OrganizationId,
                        )
                        .to(Organizations::Table, Organizations::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_provisioner_daemons_identity")
                .table(ProvisionerDaemons::Table)
                .col(ProvisionerDaemons::OrganizationId)
                .col(ProvisionerDaemons::Name)
                .col(ProvisionerDaemons::OwnerTag)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_provisioner_daemons_last_seen")
                .table(ProvisionerDaemons::Table)
                .col(ProvisionerDaemons::OrganizationId)
                .col(ProvisionerDaemons::LastSeenAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ProvisionerDaemons::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum ProvisionerDaemons {
    Table,
    Id,
    OrganizationId,
    Name,
    OwnerTag,
    KeyId,
    Tags,
    Provisioners,
    Version,
    CreatedAt,
    LastSeenAt,
}
