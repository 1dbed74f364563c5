//! Reads only the web console needs: a page of jobs older than a cursor (the API's list has a
//! limit but no cursor), and how many jobs a filter matches, in all and among those a bulk cancel
//! would cancel (the count a confirmation states).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::{Store, StoreResult};
use crate::domain::job::Job;
use crate::domain::job_query::JobFilter;
use crate::entity::provisioner_job::{self as job, Column};

/// Where a page of the newest-first job list continues: strictly older than this job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl From<&Job> for JobCursor {
    fn from(j: &Job) -> Self {
        Self {
            created_at: j.created_at,
            id: j.id,
        }
    }
}

/// SQL: 1 for a job `cancel_jobs` would cancel (not finished, not canceled, not failed).
const CANCELABLE: &str = "CASE WHEN completed_at IS NULL AND canceled_at IS NULL \
    AND COALESCE(error, '') = '' THEN 1 ELSE 0 END";

impl Store {
    /// Jobs matching `filter`, newest first (the order of `list_jobs`), after `before`.
    pub async fn jobs_page(
        &self,
        organization_id: Uuid,
        filter: &JobFilter,
        before: Option<JobCursor>,
        limit: u64,
    ) -> StoreResult<Vec<Job>> {
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
        let rows = job::Entity::find()
            .filter(condition)
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::Id)
            .limit(limit)
            .all(self.connection())
            .await?;
        super::rows::all(rows)
    }

    /// How many jobs match `filter`, and how many of them a bulk cancel would cancel (one scan).
    pub async fn count_jobs(
        &self,
        organization_id: Uuid,
        filter: &JobFilter,
    ) -> StoreResult<(u64, u64)> {
        let counts: Option<(i64, Option<i64>)> = job::Entity::find()
            .select_only()
            .column_as(Expr::col(Column::Id).count(), "matching")
            .column_as(Expr::cust(format!("SUM({CANCELABLE})")), "cancelable")
            .filter(self.filter_condition(organization_id, filter))
            .into_tuple()
            .one(self.connection())
            .await?;
        let (matching, cancelable) = counts.unwrap_or_default();
        Ok((matching as u64, cancelable.unwrap_or(0) as u64))
    }
}
