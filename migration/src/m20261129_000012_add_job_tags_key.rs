//! `tags_key`: the job's tags as canonical text. Grouping and ranking pending jobs by tag set
//! (queue positions, metrics) compares this short string instead of JSON values, and the
//! partial index hands pending jobs over already ordered per tag set.
use std::collections::BTreeMap;

use sea_orm_migration::sea_orm::prelude::Uuid;
use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261129_000006_create_provisioner_jobs::ProvisionerJobs;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(ProvisionerJobs::Table)
                .add_column(text(TagsKey).default(""))
                .to_owned(),
        )
        .await?;
        backfill(m).await?;
        m.get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_provisioner_jobs_pending_by_tags ON provisioner_jobs \
             (organization_id, tags_key, provisioner, is_prebuild, created_at, id) \
             WHERE started_at IS NULL AND canceled_at IS NULL AND completed_at IS NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("DROP INDEX idx_provisioner_jobs_pending_by_tags")
            .await?;
        m.alter_table(
            Table::alter()
                .table(ProvisionerJobs::Table)
                .drop_column(TagsKey)
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden)]
struct TagsKey;

/// The canonical key of a tag map: compact JSON with sorted keys (what provq writes).
fn canonical(tags: &serde_json::Value) -> String {
    let map: BTreeMap<String, String> = tags
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default();
    serde_json::to_string(&map).expect("a string map serialises")
}

/// Fills `tags_key` for jobs written before this migration.
async fn backfill(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = m.get_connection();
    let select = Query::select()
        .columns([ProvisionerJobs::Id, ProvisionerJobs::Tags])
        .from(ProvisionerJobs::Table)
        .to_owned();
    let rows = db.query_all(&select).await?;
    for row in rows {
        let id: Uuid = row.try_get("", "id")?;
        let tags: serde_json::Value = row.try_get("", "tags")?;
        let update = Query::update()
            .table(ProvisionerJobs::Table)
            .value(TagsKey, canonical(&tags))
            .and_where(Expr::col(ProvisionerJobs::Id).eq(id))
            .to_owned();
        db.execute(&update).await?;
    }
    Ok(())
}
