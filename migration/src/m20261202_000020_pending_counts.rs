//! `provisioner_queue_counts`: pending jobs counted per (organization, tags, provisioner, human or
//! prebuild), kept by triggers in the same transaction as the job change. Queue sizes, the ranks
//! of jobs deep in a flood and the backlog gauges read a handful of rows instead of counting
//! every pending job (100,000 during a prebuild flood).
//!
//! Triggers only append `+1`/`-1` rows, so concurrent enqueues and claims never wait on a shared
//! counter row; a background fold (`Store::fold_pending_counts`) sums the appended rows back into
//! one row per group. Readers sum whatever rows a group has, so the fold never changes an answer.
use sea_orm_migration::sea_orm::DatabaseBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The pending predicate of the job store (`JobStatus::Pending`), over a trigger's row.
fn pending(row: &str) -> String {
    format!(
        "({row}.started_at IS NULL AND {row}.canceled_at IS NULL AND {row}.completed_at IS NULL \
         AND COALESCE({row}.error, '') = '')"
    )
}

/// Whether the grouping columns differ between OLD and NEW (`neq`: the backend's null-safe `<>`).
fn regrouped(neq: &str) -> String {
    ["organization_id", "tags_key", "provisioner", "is_prebuild"]
        .iter()
        .map(|c| format!("OLD.{c} {neq} NEW.{c}"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

const INSERT_ROW: &str = "INSERT INTO provisioner_queue_counts \
    (organization_id, tags_key, provisioner, is_prebuild, n) VALUES";

fn sqlite_triggers() -> Vec<String> {
    let (old, new) = (pending("OLD"), pending("NEW"));
    let moved = regrouped("IS NOT");
    let add = |row: &str, n: i32| {
        format!(
            "{INSERT_ROW} ({row}.organization_id, {row}.tags_key, {row}.provisioner, {row}.is_prebuild, {n});"
        )
    };
    vec![
        format!(
            "CREATE TRIGGER provq_pending_insert AFTER INSERT ON provisioner_jobs WHEN {new} \
             BEGIN {} END",
            add("NEW", 1)
        ),
        format!(
            "CREATE TRIGGER provq_pending_leave AFTER UPDATE ON provisioner_jobs \
             WHEN {old} AND (NOT {new} OR {moved}) BEGIN {} END",
            add("OLD", -1)
        ),
        format!(
            "CREATE TRIGGER provq_pending_enter AFTER UPDATE ON provisioner_jobs \
             WHEN {new} AND (NOT {old} OR {moved}) BEGIN {} END",
            add("NEW", 1)
        ),
        format!(
            "CREATE TRIGGER provq_pending_delete AFTER DELETE ON provisioner_jobs WHEN {old} \
             BEGIN {} END",
            add("OLD", -1)
        ),
    ]
}

fn postgres_triggers() -> Vec<String> {
    let (old, new) = (pending("OLD"), pending("NEW"));
    let moved = regrouped("IS DISTINCT FROM");
    let function = |name: &str, row: &str, n: i32| {
        format!(
            "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             {INSERT_ROW} ({row}.organization_id, {row}.tags_key, {row}.provisioner, {row}.is_prebuild, {n}); \
             RETURN NULL; END $$"
        )
    };
    vec![
        function("provq_pending_add", "NEW", 1),
        function("provq_pending_remove", "OLD", -1),
        format!(
            "CREATE TRIGGER provq_pending_insert AFTER INSERT ON provisioner_jobs \
             FOR EACH ROW WHEN {new} EXECUTE FUNCTION provq_pending_add()"
        ),
        format!(
            "CREATE TRIGGER provq_pending_leave AFTER UPDATE ON provisioner_jobs \
             FOR EACH ROW WHEN ({old} AND (NOT {new} OR {moved})) \
             EXECUTE FUNCTION provq_pending_remove()"
        ),
        format!(
            "CREATE TRIGGER provq_pending_enter AFTER UPDATE ON provisioner_jobs \
             FOR EACH ROW WHEN ({new} AND (NOT {old} OR {moved})) \
             EXECUTE FUNCTION provq_pending_add()"
        ),
        format!(
            "CREATE TRIGGER provq_pending_delete AFTER DELETE ON provisioner_jobs \
             FOR EACH ROW WHEN {old} EXECUTE FUNCTION provq_pending_remove()"
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(QueueCounts::Table)
                .col(uuid(QueueCounts::OrganizationId))
                .col(text(QueueCounts::TagsKey))
                .col(string(QueueCounts::Provisioner))
                .col(boolean(QueueCounts::IsPrebuild))
                .col(big_integer(QueueCounts::N))
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        let triggers = match m.get_database_backend() {
            DatabaseBackend::Postgres => postgres_triggers(),
            _ => sqlite_triggers(),
        };
        for sql in triggers {
            db.execute_unprepared(&sql).await?;
        }
        // Jobs pending before this migration.
        db.execute_unprepared(&format!(
            "{} SELECT organization_id, tags_key, provisioner, is_prebuild, COUNT(*) \
             FROM provisioner_jobs WHERE {} GROUP BY organization_id, tags_key, provisioner, is_prebuild",
            INSERT_ROW.trim_end_matches(" VALUES"),
            pending("provisioner_jobs")
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for t in [
            "provq_pending_insert",
            "provq_pending_leave",
            "provq_pending_enter",
            "provq_pending_delete",
        ] {
            let sql = match m.get_database_backend() {
                DatabaseBackend::Postgres => {
                    format!("DROP TRIGGER IF EXISTS {t} ON provisioner_jobs")
                }
                _ => format!("DROP TRIGGER IF EXISTS {t}"),
            };
            db.execute_unprepared(&sql).await?;
        }
        if m.get_database_backend() == DatabaseBackend::Postgres {
            db.execute_unprepared(
                "DROP FUNCTION IF EXISTS provq_pending_add(); DROP FUNCTION IF EXISTS provq_pending_remove()",
            )
            .await?;
        }
        m.drop_table(Table::drop().table(QueueCounts::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum QueueCounts {
    #[sea_orm(iden = "provisioner_queue_counts")]
    Table,
    OrganizationId,
    TagsKey,
    Provisioner,
    IsPrebuild,
    N,
}
