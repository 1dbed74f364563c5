//! PostgreSQL: a bulk cancel keeps `provisioner_queue_counts` with one row per group and chunk
//! instead of one trigger call and one row per canceled job. The row trigger that records a job
//! leaving the pending state stays quiet in a transaction that set `provq.counts_by_statement`
//! to `on` (`set_config(…, true)`, so it ends with the transaction); the cancel statement sets
//! it for its own transaction and writes the counts itself (`Store::cancel_jobs`). Every other
//! write keeps the row trigger. SQLite keeps its triggers as they are.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const PENDING_OLD: &str = "OLD.started_at IS NULL AND OLD.canceled_at IS NULL AND OLD.completed_at IS NULL AND COALESCE(OLD.error, '') = ''";
const PENDING_NEW: &str = "NEW.started_at IS NULL AND NEW.canceled_at IS NULL AND NEW.completed_at IS NULL AND COALESCE(NEW.error, '') = ''";
const MOVED: &str = "OLD.organization_id IS DISTINCT FROM NEW.organization_id OR OLD.tags_key IS DISTINCT FROM NEW.tags_key \
     OR OLD.provisioner IS DISTINCT FROM NEW.provisioner OR OLD.is_prebuild IS DISTINCT FROM NEW.is_prebuild";

fn leave_trigger(extra: &str) -> String {
    format!(
        "CREATE TRIGGER provq_pending_leave AFTER UPDATE ON provisioner_jobs FOR EACH ROW \
         WHEN (({PENDING_OLD}) AND (NOT ({PENDING_NEW}) OR {MOVED}){extra}) \
         EXECUTE FUNCTION provq_pending_remove()"
    )
}

async fn replace(m: &SchemaManager<'_>, extra: &str) -> Result<(), DbErr> {
    if m.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    let db = m.get_connection();
    db.execute_unprepared("DROP TRIGGER provq_pending_leave ON provisioner_jobs")
        .await?;
    db.execute_unprepared(&leave_trigger(extra)).await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        replace(
            m,
            " AND current_setting('provq.counts_by_statement', true) IS DISTINCT FROM 'on'",
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        replace(m, "").await
    }
}
