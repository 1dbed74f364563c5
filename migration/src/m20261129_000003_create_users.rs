//! Users and their organization memberships.
use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261129_000002_create_organizations::Organizations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Users::Table)
                .col(pk_uuid(Users::Id))
                .col(string_uniq(Users::Email))
                .col(string_uniq(Users::Username))
                .col(string(Users::Name))
                // Empty for system users, who cannot log in.
                .col(text(Users::HashedPassword))
                .col(string(Users::Status))
                // Site-wide roles, comma-separated ("owner" or "").
                .col(string(Users::Roles))
                .col(boolean(Users::IsSystem))
                .col(timestamp_with_time_zone(Users::CreatedAt))
                .col(timestamp_with_time_zone(Users::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(OrganizationMembers::Table)
                .col(uuid(OrganizationMembers::OrganizationId))
                .col(uuid(OrganizationMembers::UserId))
                .col(timestamp_with_time_zone(OrganizationMembers::CreatedAt))
                .primary_key(
                    Index::create()
                        .col(OrganizationMembers::OrganizationId)
                        .col(OrganizationMembers::UserId),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(
                            OrganizationMembers::Table,
                            OrganizationMembers::OrganizationId,
                        )
                        .to(Organizations::Table, Organizations::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(OrganizationMembers::Table, OrganizationMembers::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_organization_members_user")
                .table(OrganizationMembers::Table)
                .col(OrganizationMembers::UserId)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(OrganizationMembers::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Users {
    Table,
    Id,
    Email,
    Username,
    Name,
    HashedPassword,
    Status,
    Roles,
    IsSystem,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
pub enum OrganizationMembers {
    Table,
    OrganizationId,
    UserId,
    CreatedAt,
}
