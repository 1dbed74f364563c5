//! Fewer index writes per job. Three indexes of `provisioner_jobs` are rebuilt so that fewer
//! writes of a job's life touch them (issue 15, point 4; figures in `docs/performance.md`):
//!
//! - `idx_provisioner_jobs_worker` (a daemon's jobs, newest first) covers only jobs a daemon
//!   took (`worker_id IS NOT NULL`): an enqueue and the cancel of a pending job no longer add
//!   an entry for a job no daemon ever had.
//! - `idx_provisioner_jobs_running` (the reaper's hung sweep, busy daemons) is keyed by
//!   `worker_id` instead of `updated_at`, and the reaper's stale-pending index becomes
//!   `idx_provisioner_jobs_pending_created`, keyed by `created_at` (a pending job's `updated_at`
//!   is never older than its `created_at`, so the sweep bounds it by both). With `updated_at` in
//!   no index, a heartbeat changes no indexed column: on PostgreSQL it is a HOT update (no index
//!   entry at all) and on SQLite it maintains no index. The hung sweep reads every running job
//!   (at most one per busy daemon slot) and sorts those few rows itself.
//! - PostgreSQL: the table's fillfactor drops to 90 so a HOT update finds room on the row's page.
//!
//! No row changes: the rebuilt indexes cover existing rows as they are created.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `(drop, create)` pairs, SQL both databases share.
const UP: &[(&str, &str)] = &[
    (
        "DROP INDEX idx_provisioner_jobs_worker",
        "CREATE INDEX idx_provisioner_jobs_worker ON provisioner_jobs (worker_id, started_at) \
         WHERE worker_id IS NOT NULL",
    ),
    (
        "DROP INDEX idx_provisioner_jobs_running",
        "CREATE INDEX idx_provisioner_jobs_running ON provisioner_jobs (worker_id) \
         WHERE started_at IS NOT NULL AND completed_at IS NULL",
    ),
    (
        "DROP INDEX idx_provisioner_jobs_pending_updated",
        "CREATE INDEX idx_provisioner_jobs_pending_created ON provisioner_jobs (created_at) \
         WHERE started_at IS NULL AND completed_at IS NULL",
    ),
];

/// The indexes as `m20261129_000006_create_provisioner_jobs` made them.
const DOWN: &[(&str, &str)] = &[
    (
        "DROP INDEX idx_provisioner_jobs_worker",
        "CREATE INDEX idx_provisioner_jobs_worker ON provisioner_jobs (worker_id, started_at)",
    ),
    (
        "DROP INDEX idx_provisioner_jobs_running",
        "CREATE INDEX idx_provisioner_jobs_running ON provisioner_jobs (updated_at) \
         WHERE started_at IS NOT NULL AND completed_at IS NULL",
    ),
    (
        "DROP INDEX idx_provisioner_jobs_pending_created",
        "CREATE INDEX idx_provisioner_jobs_pending_updated ON provisioner_jobs (updated_at) \
         WHERE started_at IS NULL AND completed_at IS NULL",
    ),
];

async fn rebuild(m: &SchemaManager<'_>, pairs: &[(&str, &str)]) -> Result<(), DbErr> {
    let db = m.get_connection();
    for (drop, create) in pairs {
        db.execute_unprepared(drop).await?;
        db.execute_unprepared(create).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        rebuild(m, UP).await?;
        if m.get_database_backend() == DatabaseBackend::Postgres {
            m.get_connection()
                .execute_unprepared("ALTER TABLE provisioner_jobs SET (fillfactor = 90)")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == DatabaseBackend::Postgres {
            m.get_connection()
                .execute_unprepared("ALTER TABLE provisioner_jobs RESET (fillfactor)")
                .await?;
        }
        rebuild(m, DOWN).await
    }
}
