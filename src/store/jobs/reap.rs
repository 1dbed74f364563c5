//! The reaper's statements: find hung and stale jobs and fail each at most once.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait};
use uuid::Uuid;

use super::super::logs::{NewLog, insert_logs};
use super::super::{Store, StoreResult};
use crate::domain::job::{LogLevel, LogSource};
use crate::entity::provisioner_job::{self as job, Column};

/// Why the reaper failed a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapReason {
    Hung,
    Pending,
}

impl ReapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hung => "hung",
            Self::Pending => "pending",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReapedJob {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub reason: ReapReason,
    pub error: String,
    /// When the job was acquired (running jobs only): its run time ends at `completed_at`.
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: DateTime<Utc>,
}

/// Limits the reaper works with.
#[derive(Debug, Clone, Copy)]
pub struct ReapPolicy {
    pub hung_after: Duration,
    pub pending_after: Duration,
    pub max_jobs: u64,
}

impl Store {
    /// Fails hung running jobs and stale pending jobs, at most `policy.max_jobs` per call. Each
    /// write re-checks the job in its `WHERE` clause, and PostgreSQL skips rows another replica
    /// is reaping, so no job is reaped twice.
    pub async fn reap_jobs(
        &self,
        at: DateTime<Utc>,
        policy: ReapPolicy,
    ) -> StoreResult<Vec<ReapedJob>> {
        let txn = self.connection().begin().await?;
        let hung_cutoff = at - policy.hung_after;
        let pending_cutoff = at - policy.pending_after;
        let candidates = |reason: ReapReason, limit: u64| {
            // Hung: every running job (at most one per busy daemon slot) on the running
            // index, the stale ones sorted here. Pending: the oldest first on the
            // `created_at` index; a pending job's `updated_at` is never older than its
            // `created_at`, so the bound on `created_at` only narrows the range. `updated_at`
            // is in no index, so heartbeats stay HOT updates (see the lean-indexes migration).
            let query = job::Entity::find()
                .filter(Column::CompletedAt.is_null())
                .limit(limit)
                .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
            match reason {
                ReapReason::Hung => query
                    .filter(Column::StartedAt.is_not_null())
                    .filter(Column::UpdatedAt.lt(hung_cutoff))
                    .order_by_asc(Column::UpdatedAt),
                ReapReason::Pending => query
                    .filter(Column::StartedAt.is_null())
                    .filter(Column::CreatedAt.lt(pending_cutoff))
                    .filter(Column::UpdatedAt.lt(pending_cutoff))
                    .order_by_asc(Column::CreatedAt),
            }
            .all(&txn)
        };
        let mut found: Vec<(job::Model, ReapReason)> =
            candidates(ReapReason::Hung, policy.max_jobs)
                .await?
                .into_iter()
                .map(|j| (j, ReapReason::Hung))
                .collect();
        let room = policy.max_jobs.saturating_sub(found.len() as u64);
        if room > 0 {
            found.extend(
                candidates(ReapReason::Pending, room)
                    .await?
                    .into_iter()
                    .map(|j| (j, ReapReason::Pending)),
            );
        }
        let mut reaped = Vec::new();
        for (job, reason) in found {
            let (after, cutoff) = match reason {
                ReapReason::Hung => (policy.hung_after, hung_cutoff),
                ReapReason::Pending => (policy.pending_after, pending_cutoff),
            };
            let error = format!(
                "Job has been detected as {} for {} and was failed by the reaper.",
                reason.as_str(),
                describe_minutes(after)
            );
            let result = job::Entity::update_many()
                .col_expr(Column::Error, Expr::value(error.clone()))
                .col_expr(Column::CompletedAt, Expr::value(at))
                .col_expr(Column::UpdatedAt, Expr::value(at))
                .filter(Column::Id.eq(job.id))
                .filter(Column::CompletedAt.is_null())
                .filter(Column::UpdatedAt.lt(cutoff))
                .exec(&txn)
                .await?;
            if result.rows_affected != 1 {
                continue;
            }
            let line = NewLog {
                created_at: at,
                source: LogSource::ProvisionerDaemon,
                level: LogLevel::Error,
                stage: "Cleaning Up".into(),
                output: error.clone(),
            };
            insert_logs(&txn, job.id, vec![line]).await?;
            reaped.push(ReapedJob {
                id: job.id,
                organization_id: job.organization_id,
                reason,
                error,
                started_at: job.started_at,
                completed_at: at,
            });
        }
        txn.commit().await?;
        Ok(reaped)
    }
}

/// "5 minutes", "1 minute", "0.5 minutes": how long, in the reaper's error text.
fn describe_minutes(d: Duration) -> String {
    let secs = d.num_seconds();
    if secs % 60 == 0 {
        let m = secs / 60;
        format!("{m} minute{}", if m == 1 { "" } else { "s" })
    } else {
        format!("{:.2} minutes", secs as f64 / 60.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn minutes_read_naturally() {
        use chrono::Duration;
        assert_eq!(super::describe_minutes(Duration::seconds(300)), "5 minutes");
        assert_eq!(super::describe_minutes(Duration::seconds(60)), "1 minute");
        assert_eq!(
            super::describe_minutes(Duration::seconds(30)),
            "0.50 minutes"
        );
    }
}
