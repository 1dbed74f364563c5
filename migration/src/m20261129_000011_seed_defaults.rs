//! Rows every deployment has from its first start: the deployment id, the prebuilds pause
//! flag, the default organization and the `prebuilds` system user (a member of it).
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::prelude::{ChronoUtc, Uuid};

use crate::PREBUILDS_USER_ID;
use crate::m20261129_000001_create_site_configs::SiteConfigs;
use crate::m20261129_000002_create_organizations::Organizations;
use crate::m20261129_000003_create_users::{OrganizationMembers, Users};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let now = ChronoUtc::now();
        let org_id = uuid::Uuid::new_v4();
        let prebuilds = Uuid::parse_str(PREBUILDS_USER_ID).expect("constant uuid");
        let statements = [
            Query::insert()
                .into_table(SiteConfigs::Table)
                .columns([SiteConfigs::Key, SiteConfigs::Value])
                .values_panic([
                    "deployment_id".into(),
                    uuid::Uuid::new_v4().to_string().into(),
                ])
                .values_panic(["prebuilds_reconciliation_paused".into(), "false".into()])
                .to_owned(),
            Query::insert()
                .into_table(Organizations::Table)
                .columns([
                    Organizations::Id,
                    Organizations::Name,
                    Organizations::DisplayName,
                    Organizations::Description,
                    Organizations::Icon,
                    Organizations::IsDefault,
                    Organizations::CreatedAt,
                    Organizations::UpdatedAt,
                ])
                .values_panic([
                    org_id.into(),
                    "first-organization".into(),
                    "First Organization".into(),
                    "Builtin default organization.".into(),
                    "".into(),
                    true.into(),
                    now.into(),
                    now.into(),
                ])
                .to_owned(),
            Query::insert()
                .into_table(Users::Table)
                .columns([
                    Users::Id,
                    Users::Email,
                    Users::Username,
                    Users::Name,
                    Users::HashedPassword,
                    Users::Status,
                    Users::Roles,
                    Users::IsSystem,
                    Users::CreatedAt,
                    Users::UpdatedAt,
                ])
                .values_panic([
                    prebuilds.into(),
                    "prebuilds@system".into(),
                    "prebuilds".into(),
                    "Prebuilds Owner".into(),
                    "".into(),
                    "active".into(),
                    "".into(),
                    true.into(),
                    now.into(),
                    now.into(),
                ])
                .to_owned(),
            Query::insert()
                .into_table(OrganizationMembers::Table)
                .columns([
                    OrganizationMembers::OrganizationId,
                    OrganizationMembers::UserId,
                    OrganizationMembers::CreatedAt,
                ])
                .values_panic([org_id.into(), prebuilds.into(), now.into()])
                .to_owned(),
        ];
        for statement in statements {
            m.exec_stmt(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let prebuilds = Uuid::parse_str(PREBUILDS_USER_ID).expect("constant uuid");
        m.exec_stmt(
            Query::delete()
                .from_table(OrganizationMembers::Table)
                .and_where(Expr::col(OrganizationMembers::UserId).eq(prebuilds))
                .to_owned(),
        )
        .await?;
        m.exec_stmt(
            Query::delete()
                .from_table(Users::Table)
                .and_where(Expr::col(Users::Id).eq(prebuilds))
                .to_owned(),
        )
        .await?;
        m.exec_stmt(
            Query::delete()
                .from_table(Organizations::Table)
                .and_where(Expr::col(Organizations::IsDefault).eq(true))
                .to_owned(),
        )
        .await?;
        m.exec_stmt(Query::delete().from_table(SiteConfigs::Table).to_owned())
            .await
    }
}
