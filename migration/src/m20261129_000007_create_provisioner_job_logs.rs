//! Job log lines, read back in id order (`after=ID`).
use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261129_000006_create_provisioner_jobs::ProvisionerJobs;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ProvisionerJobLogs::Table)
                .col(big_pk_auto(ProvisionerJobLogs::Id))
                .col(uuid(ProvisionerJobLogs::JobId))
                .col(timestamp_with_time_zone(ProvisionerJobLogs::CreatedAt))
                .col(string(ProvisionerJobLogs::Source))
                .col(string(ProvisionerJobLogs::Level))
                .col(string(ProvisionerJobLogs::Stage))
                .col(text(ProvisionerJobLogs::Output))
                .foreign_key(
                    ForeignKey::create()
                        .from(ProvisionerJobLogs::Table, ProvisionerJobLogs::JobId)
                        .to(ProvisionerJobs::Table, ProvisionerJobs::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_provisioner_job_logs_job")
                .table(ProvisionerJobLogs::Table)
                .col(ProvisionerJobLogs::JobId)
                .col(ProvisionerJobLogs::Id)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ProvisionerJobLogs::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum ProvisionerJobLogs {
    Table,
    Id,
    JobId,
    CreatedAt,
    Source,
    Level,
    Stage,
    Output,
}
