//! Reads only the web console needs: a page of jobs older than a cursor (the API's list has a
//! limit but no cursor), and how many jobs a filter matches, in all and among those a bulk cancel
//! would cancel (the count a confirmation states).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use uuid::Uuid;

use super::daemons::daemon_runs;
use super::jobs::JobFilter;
use super::{Store, StoreResult};
use crate::domain::job::{JobStatus, STATUS_SQL};
use crate::domain::now;
use crate::entity::provisioner_job::{self as job, Column};

/// Where a page of the newest-first job list continues: strictly older than this job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl From<&job::Model> for JobCursor {
    fn from(j: &job::Model) -> Self {
        Self {
            created_at: j.created_at,
            id: j.id,
        }
    }
}

/// The jobs `cancel_jobs` would cancel: not finished, not canceled, not failed.
fn cancelable() -> Condition {
    Condition::all()
        .add(Column::CompletedAt.is_null())
        .add(Column::CanceledAt.is_null())
        .add(Expr::cust("COALESCE(error, '') = ''"))
}

impl Store {
    /// Jobs matching `filter`, newest first (the order of `list_jobs`), after `before`.
    pub async fn jobs_page(
        &self,
        organization_id: Uuid,
        filter: &JobFilter,
        before: Option<JobCursor>,
        limit: u64,
    ) -> StoreResult<Vec<job::Model>> {
        let mut condition = self.filter_condition(organization_id, filter);
        if let Some(c) = before {
            condition = condition.add(
                Condition::any()
                    .add(Column::CreatedAt.lt(c.created_at))
                    .add(
                        Condition::all()
                            .add(Column::CreatedAt.eq(c.created_at))
                            .add(Column::Id.lt(c.id)),
                    ),
            );
        }
        Ok(job::Entity::find()
            .filter(condition)
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::Id)
            .limit(limit)
            .all(self.connection())
            .await?)
    }

    /// How many jobs match `filter`, and how many of them a bulk cancel would cancel.
    pub async fn count_jobs(
        &self,
        organization_id: Uuid,
        filter: &JobFilter,
    ) -> StoreResult<(u64, u64)> {
        let matching = job::Entity::find()
            .filter(self.filter_condition(organization_id, filter))
            .count(self.connection())
            .await?;
        let cancelable = job::Entity::find()
            .filter(self.filter_condition(organization_id, filter))
            .filter(cancelable())
            .count(self.connection())
            .await?;
        Ok((matching, cancelable))
    }
}

/// Daemons of an organization by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaemonCounts {
    pub idle: i64,
    pub busy: i64,
    pub offline: i64,
}

/// The overview's numbers for one organization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueOverview {
    pub jobs: BTreeMap<String, i64>,
    pub pending_unmatched: i64,
    pub oldest_pending_age_seconds: Option<i64>,
    pub enqueued_last_5m: i64,
    pub finished_last_5m: i64,
    pub daemons: DaemonCounts,
}

impl QueueOverview {
    pub fn count(&self, status: JobStatus) -> i64 {
        self.jobs.get(status.as_str()).copied().unwrap_or(0)
    }
}

impl Store {
    /// The overview of one organization's queue; `stale_after` decides which daemons are
    /// offline.
    pub async fn console_overview(
        &self,
        organization_id: Uuid,
        stale_after: Duration,
    ) -> StoreResult<QueueOverview> {
        let db = self.connection();
        let at = now();
        let sql = format!(
            "SELECT {STATUS_SQL} AS status, COUNT(*) AS n FROM provisioner_jobs WHERE organization_id = {} GROUP BY 1",
            match self.backend() {
                DbBackend::Postgres => "$1",
                _ => "?",
            }
        );
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                self.backend(),
                sql,
                [organization_id.into()],
            ))
            .await?;
        let mut jobs = BTreeMap::new();
        for row in rows {
            jobs.insert(row.try_get::<String>("", "status")?, row.try_get("", "n")?);
        }
        let in_org = || job::Entity::find().filter(Column::OrganizationId.eq(organization_id));
        let oldest: Option<DateTime<Utc>> = in_org()
            .select_only()
            .column_as(Expr::col(Column::CreatedAt).min(), "oldest")
            .filter(Expr::cust(JobStatus::Pending.sql_predicate()))
            .into_tuple()
            .one(db)
            .await?
            .flatten();
        let since = at - Duration::minutes(5);
        let enqueued = in_org()
            .filter(Column::CreatedAt.gte(since))
            .count(db)
            .await?;
        let finished = in_org()
            .filter(Column::CompletedAt.gte(since))
            .count(db)
            .await?;
        let cutoff = at - stale_after;
        let daemons = self.all_daemons(organization_id).await?;
        let online: Vec<_> = daemons
            .iter()
            .filter(|d| d.last_seen_at >= cutoff)
            .collect();
        let busy_ids = self.busy_worker_ids().await?;
        let busy = online.iter().filter(|d| busy_ids.contains(&d.id)).count() as i64;
        let unmatched = self
            .pending_groups(organization_id)
            .await?
            .iter()
            .filter(|g| {
                !online
                    .iter()
                    .any(|d| daemon_runs(d, &g.tags, &g.provisioner))
            })
            .map(|g| g.count)
            .sum();
        Ok(QueueOverview {
            jobs,
            pending_unmatched: unmatched,
            oldest_pending_age_seconds: oldest.map(|t| Ord::max((at - t).num_seconds(), 0)),
            enqueued_last_5m: enqueued as i64,
            finished_last_5m: finished as i64,
            daemons: DaemonCounts {
                idle: online.len() as i64 - busy,
                busy,
                offline: (daemons.len() - online.len()) as i64,
            },
        })
    }
}
