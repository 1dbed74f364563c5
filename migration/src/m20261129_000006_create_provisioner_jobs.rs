//! Provisioner jobs. Status is never stored: it is derived from the timestamps and `error`.
//! The partial indexes match the predicates the job store uses for acquiring, queue positions
//! and reaping, so those queries touch only unfinished jobs however long the history grows.
use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261129_000002_create_organizations::Organizations;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Raw statements shared verbatim by SQLite and PostgreSQL (both support partial indexes).
const PARTIAL_INDEXES: &[&str] = &[
    // Acquire and queue positions: pending jobs of an organization in dispatch order.
    "CREATE INDEX idx_provisioner_jobs_pending ON provisioner_jobs \
     (organization_id, is_prebuild, created_at) \
     WHERE started_at IS NULL AND canceled_at IS NULL AND completed_at IS NULL",
    // Reaper: pending jobs untouched for too long.
    "CREATE INDEX idx_provisioner_jobs_pending_updated ON provisioner_jobs (updated_at) \
     WHERE started_at IS NULL AND completed_at IS NULL",
    // Reaper and daemon status: running jobs by last update.
    "CREATE INDEX idx_provisioner_jobs_running ON provisioner_jobs (updated_at) \
     WHERE started_at IS NOT NULL AND completed_at IS NULL",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ProvisionerJobs::Table)
                .col(pk_uuid(ProvisionerJobs::Id))
                .col(timestamp_with_time_zone(ProvisionerJobs::CreatedAt))
                .col(timestamp_with_time_zone(ProvisionerJobs::UpdatedAt))
                .col(timestamp_with_time_zone_null(ProvisionerJobs::StartedAt))
                .col(timestamp_with_time_zone_null(ProvisionerJobs::CanceledAt))
                .col(timestamp_with_time_zone_null(ProvisionerJobs::CompletedAt))
                .col(text_null(ProvisionerJobs::Error))
                .col(string_null(ProvisionerJobs::ErrorCode))
                .col(uuid(ProvisionerJobs::OrganizationId))
                .col(uuid(ProvisionerJobs::InitiatorId))
                .col(boolean(ProvisionerJobs::IsPrebuild))
                .col(string(ProvisionerJobs::Provisioner))
                .col(string(ProvisionerJobs::JobType))
                .col(json_binary(ProvisionerJobs::Input))
                .col(uuid(ProvisionerJobs::FileId))
                .col(json_binary(ProvisionerJobs::Tags))
                .col(json_binary(ProvisionerJobs::Metadata))
                .col(uuid_null(ProvisionerJobs::WorkerId))
                .col(string_null(ProvisionerJobs::LeaseToken))
                .col(big_integer(ProvisionerJobs::LogsLength))
                .col(boolean(ProvisionerJobs::LogsOverflowed))
                .foreign_key(
                    ForeignKey::create()
                        .from(ProvisionerJobs::Table, ProvisionerJobs::OrganizationId)
                        .to(Organizations::Table, Organizations::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_provisioner_jobs_org_created")
                .table(ProvisionerJobs::Table)
                .col(ProvisionerJobs::OrganizationId)
                .col(ProvisionerJobs::CreatedAt)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_provisioner_jobs_initiator")
                .table(ProvisionerJobs::Table)
                .col(ProvisionerJobs::InitiatorId)
                .col(ProvisionerJobs::CreatedAt)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_provisioner_jobs_worker")
                .table(ProvisionerJobs::Table)
                .col(ProvisionerJobs::WorkerId)
                .col(ProvisionerJobs::StartedAt)
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        for sql in PARTIAL_INDEXES {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ProvisionerJobs::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum ProvisionerJobs {
    Table,
    Id,
    CreatedAt,
    UpdatedAt,
    StartedAt,
    CanceledAt,
    CompletedAt,
    Error,
    ErrorCode,
    OrganizationId,
    InitiatorId,
    IsPrebuild,
    Provisioner,
    #[sea_orm(iden = "type")]
    JobType,
    Input,
    FileId,
    Tags,
    Metadata,
    WorkerId,
    LeaseToken,
    LogsLength,
    LogsOverflowed,
}
