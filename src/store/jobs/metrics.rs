//! Aggregates behind the Prometheus gauges: a handful of grouped queries, run at most once per
//! scrape interval, never a row-by-row scan in Rust.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};
use uuid::Uuid;

use super::super::{Store, StoreError, StoreResult};
use super::pending;
use crate::domain::job::{Provisioner, STATUS_SQL};
use crate::domain::tags::Tags;
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

    /// The creation time of the oldest pending job of each organization that has one: per
    /// organization with pending jobs (from the maintained counts), the first entry of each
    /// class on the pending index, so a flood costs two index probes, not a scan.
    pub async fn oldest_pending(&self) -> StoreResult<Vec<(Uuid, DateTime<Utc>)>> {
        let mut orgs: Vec<Uuid> = self
            .pending_counts_everywhere()
            .await?
            .into_iter()
            .filter(|row| row.4 > 0)
            .map(|row| row.0)
            .collect();
        orgs.sort_unstable();
        orgs.dedup();
        let mut out = Vec::with_capacity(orgs.len());
        for org in orgs {
            let mut oldest: Option<DateTime<Utc>> = None;
            for prebuild in [false, true] {
                let first: Option<DateTime<Utc>> = job::Entity::find()
                    .select_only()
                    .column(Column::CreatedAt)
                    .filter(Column::OrganizationId.eq(org))
                    .filter(Column::IsPrebuild.eq(prebuild))
                    .filter(pending())
                    .order_by_asc(Column::CreatedAt)
                    .limit(1)
                    .into_tuple()
                    .one(self.connection())
                    .await?;
                oldest = match (oldest, first) {
                    (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                    (a, b) => a.or(b),
                };
            }
            if let Some(at) = oldest {
                out.push((org, at));
            }
        }
        Ok(out)
    }

    /// Pending jobs counted per organization, tags and provisioner (maintained counts). A
    /// group whose tags key or provisioner does not parse is a [`StoreError::BadRow`].
    pub async fn pending_groups_everywhere(
        &self,
    ) -> StoreResult<Vec<(Uuid, Tags, Provisioner, i64)>> {
        let mut out: Vec<(Uuid, String, String, i64)> = Vec::new();
        for (org, key, provisioner, _, n) in self.pending_counts_everywhere().await? {
            match out
                .iter_mut()
                .find(|(o, k, p, _)| *o == org && *k == key && *p == provisioner)
            {
                Some(row) => row.3 += n,
                None => out.push((org, key, provisioner, n)),
            }
        }
        out.retain(|row| row.3 > 0);
        out.into_iter()
            .map(|(org, key, provisioner, n)| {
                let bad = |reason: String| StoreError::BadRow {
                    table: "provisioner_queue_counts",
                    id: format!("{org} {key} {provisioner}"),
                    reason,
                };
                let tags = Tags::from_key(&key).map_err(|e| bad(e.to_string()))?;
                let provisioner =
                    Provisioner::parse(&provisioner).map_err(|e| bad(e.to_string()))?;
                Ok((org, tags, provisioner, n))
            })
            .collect()
    }

    /// Ids of the daemons holding an unfinished job (busy daemons), of one organization or of
    /// all. Shared by the metrics gauges and the queue overview.
    pub async fn busy_worker_ids(
        &self,
        organization_id: Option<Uuid>,
    ) -> StoreResult<std::collections::HashSet<Uuid>> {
        let mut query = job::Entity::find()
            .select_only()
            .column(Column::WorkerId)
            .filter(Column::StartedAt.is_not_null())
            .filter(Column::CompletedAt.is_null());
        if let Some(org) = organization_id {
            query = query.filter(Column::OrganizationId.eq(org));
        }
        let ids: Vec<Option<Uuid>> = query.distinct().into_tuple().all(self.connection()).await?;
        Ok(ids.into_iter().flatten().collect())
    }
}
