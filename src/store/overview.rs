//! The queue of one organization at a glance (`provq status`, the console's overview): a few
//! grouped queries whose cost depends on the number of statuses, tag groups and daemons, never on
//! the number of jobs handled row by row in Rust.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, ConnectionTrait};
use uuid::Uuid;

use super::{Store, StoreResult};
use crate::domain::daemon::{DaemonStatus, Liveness};
use crate::domain::job::{JobStatus, STATUS_SQL};
use crate::entity::provisioner_job::{self as job, Column};

/// How far back "recent" throughput looks.
pub const RECENT: Duration = Duration::minutes(5);

/// The queue of one organization at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueOverview {
    /// Jobs by status; every status a job can have is present (0 when none).
    pub jobs: BTreeMap<JobStatus, i64>,
    /// Pending jobs that no online daemon can run (same matching as queue positions).
    pub pending_unmatched: i64,
    /// Creation time of the oldest pending job.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Jobs created within [`RECENT`].
    pub enqueued_recently: i64,
    /// Jobs completed (succeeded, failed or canceled) within [`RECENT`].
    pub finished_recently: i64,
    /// Daemons by status; idle, busy and offline are always present.
    pub daemons: BTreeMap<&'static str, i64>,
    pub prebuilds_paused: bool,
}

/// One row of the per-status aggregate.
struct StatusRow {
    status: String,
    count: i64,
    enqueued: i64,
    finished: i64,
    oldest: Option<DateTime<Utc>>,
}

impl Store {
    /// The overview of an organization's queue; `liveness` decides which daemons are online.
    pub async fn queue_overview(
        &self,
        organization_id: Uuid,
        liveness: Liveness,
    ) -> StoreResult<QueueOverview> {
        let now = crate::domain::now();
        let since = now - RECENT;
        let mut jobs: BTreeMap<JobStatus, i64> = JobStatus::ALL
            .into_iter()
            .filter(|s| *s != JobStatus::Unknown)
            .map(|s| (s, 0))
            .collect();
        let (mut enqueued_recently, mut finished_recently, mut oldest_pending) = (0, 0, None);
        for row in self.status_rows(organization_id, since).await? {
            let status =
                JobStatus::parse(&row.status).map_err(|e| sea_orm::DbErr::Type(e.to_string()))?;
            jobs.insert(status, row.count);
            enqueued_recently += row.enqueued;
            finished_recently += row.finished;
            if status == JobStatus::Pending {
                oldest_pending = row.oldest;
            }
        }

        let daemons = self.daemons(Some(organization_id)).await?;
        let busy = self.busy_worker_ids(Some(organization_id)).await?;
        let mut by_status: BTreeMap<&'static str, i64> = DaemonStatus::ALL
            .into_iter()
            .map(|s| (s.as_str(), 0))
            .collect();
        let mut online = Vec::new();
        for d in &daemons {
            let status = liveness.status(d.last_seen_at, busy.contains(&d.id));
            *by_status.entry(status.as_str()).or_default() += 1;
            if status != DaemonStatus::Offline {
                online.push(d);
            }
        }

        let pending_unmatched = if jobs[&JobStatus::Pending] == 0 {
            0
        } else {
            self.pending_groups(organization_id)
                .await?
                .iter()
                .filter(|g| {
                    !g.provisioner()
                        .is_some_and(|p| online.iter().any(|d| d.can_run(&g.tags, p)))
                })
                .map(|g| g.count())
                .sum()
        };

        Ok(QueueOverview {
            jobs,
            pending_unmatched,
            oldest_pending,
            enqueued_recently,
            finished_recently,
            daemons: by_status,
            prebuilds_paused: self.prebuilds_paused().await?,
        })
    }

    /// One scan of the organization's jobs: per status, the count, how many were created and
    /// completed since `since`, and the oldest creation time.
    async fn status_rows(
        &self,
        organization_id: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<StatusRow>> {
        let recent = |column: Column| Expr::case(Expr::col(column).gte(since), 1).finally(0).sum();
        let query = Query::select()
            .expr_as(Expr::cust(STATUS_SQL), Alias::new("status"))
            .expr_as(Expr::col(Column::Id).count(), Alias::new("n"))
            .expr_as(recent(Column::CreatedAt), Alias::new("enqueued"))
            .expr_as(recent(Column::CompletedAt), Alias::new("finished"))
            .expr_as(Expr::col(Column::CreatedAt).min(), Alias::new("oldest"))
            .from(job::Entity)
            .and_where(Column::OrganizationId.eq(organization_id))
            .add_group_by([Expr::cust(STATUS_SQL)])
            .to_owned();
        let rows = self
            .connection()
            .query_all_raw(self.backend().build(&query))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(StatusRow {
                status: row.try_get("", "status")?,
                count: row.try_get("", "n")?,
                enqueued: row.try_get("", "enqueued")?,
                finished: row.try_get("", "finished")?,
                oldest: row.try_get("", "oldest")?,
            });
        }
        Ok(out)
    }
}
