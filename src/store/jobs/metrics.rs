//! Aggregates behind the Prometheus gauges: a handful of grouped queries, run at most once per
//! scrape interval, never a row-by-row scan in Rust.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Statement};
use uuid::Uuid;

use super::super::{Store, StoreResult};
use super::pending;
use crate::domain::job::STATUS_SQL;
use crate::entity::provisioner_job::{self as job, Column};

impl Store {
    /// `(organization, status, count)` for every status present.
    pub async fn job_status_counts(&self) -> StoreResult<Vec<(Uuid, String, i64)>> {
        let sql = format!(
            "SELECT organization_id, {STATUS_SQL} AS status, COUNT(*) AS n FROM provisioner_jobs GROUP BY 1, 2"
        );
        let rows = self
            .connection()
            .query_all_raw(Statement::from_string(self.backend(), sql))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push((
                row.try_get("", "organization_id")?,
                row.try_get("", "status")?,
                row.try_get("", "n")?,
            ));
        }
        Ok(out)
    }

    /// The creation time of the oldest pending job of each organization that has one.
    pub async fn oldest_pending(&self) -> StoreResult<Vec<(Uuid, DateTime<Utc>)>> {
        Ok(job::Entity::find()
            .select_only()
            .column(Column::OrganizationId)
            .column_as(Expr::col(Column::CreatedAt).min(), "oldest")
            .filter(pending())
            .group_by(Column::OrganizationId)
            .into_tuple()
            .all(self.connection())
            .await?)
    }

    /// Pending jobs counted per organization, tags and provisioner.
    pub async fn pending_groups_everywhere(&self) -> StoreResult<Vec<(Uuid, String, String, i64)>> {
        Ok(job::Entity::find()
            .select_only()
            .column(Column::OrganizationId)
            .column(Column::TagsKey)
            .column(Column::Provisioner)
            .column_as(Expr::col(Column::Id).count(), "n")
            .filter(pending())
            .group_by(Column::OrganizationId)
            .group_by(Column::TagsKey)
            .group_by(Column::Provisioner)
            .into_tuple()
            .all(self.connection())
            .await?)
    }

    /// Ids of the daemons holding an unfinished job (busy daemons).
    pub async fn busy_worker_ids(&self) -> StoreResult<Vec<Uuid>> {
        let ids: Vec<Option<Uuid>> = job::Entity::find()
            .select_only()
            .column(Column::WorkerId)
            .filter(Column::StartedAt.is_not_null())
            .filter(Column::CompletedAt.is_null())
            .distinct()
            .into_tuple()
            .all(self.connection())
            .await?;
        Ok(ids.into_iter().flatten().collect())
    }
}
