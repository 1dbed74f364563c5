//! Job log lines: appended by daemons through `jobs::update_job` (which enforces the size cap),
//! read back in id order.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::{Store, StoreResult};
use crate::domain::job::{JobLog, LogLevel, LogSource};
use crate::entity::provisioner_job_log;

/// A job keeps at most this many bytes of log output; later lines are dropped.
pub const MAX_LOG_BYTES: i64 = 1 << 20;

/// Most lines one read returns; followers page through longer logs.
pub const MAX_LOGS_PER_READ: u64 = 10_000;

/// A log line as a daemon sends it.
#[derive(Debug, Clone)]
pub struct NewLog {
    pub created_at: DateTime<Utc>,
    pub source: LogSource,
    pub level: LogLevel,
    pub stage: String,
    pub output: String,
}

impl Store {
    /// Lines of a job with id greater than `after`, in id order.
    pub async fn job_logs(&self, job_id: Uuid, after: i64) -> StoreResult<Vec<JobLog>> {
        let rows = provisioner_job_log::Entity::find()
            .filter(provisioner_job_log::Column::JobId.eq(job_id))
            .filter(provisioner_job_log::Column::Id.gt(after))
            .order_by_asc(provisioner_job_log::Column::Id)
            .limit(MAX_LOGS_PER_READ)
            .all(self.connection())
            .await?;
        super::rows::all(rows)
    }
}

/// Inserts lines (already capped) inside the caller's transaction.
pub(crate) async fn insert_logs(
    db: &impl ConnectionTrait,
    job_id: Uuid,
    logs: Vec<NewLog>,
) -> StoreResult<()> {
    if logs.is_empty() {
        return Ok(());
    }
    let rows = logs.into_iter().map(|l| provisioner_job_log::ActiveModel {
        job_id: Set(job_id),
        created_at: Set(l.created_at),
        source: Set(l.source.as_str().to_string()),
        level: Set(l.level.as_str().to_string()),
        stage: Set(l.stage),
        output: Set(l.output),
        ..Default::default()
    });
    provisioner_job_log::Entity::insert_many(rows)
        .exec(db)
        .await?;
    Ok(())
}

/// Splits `logs` into what fits under the cap given `used` bytes, and whether any were dropped.
/// Once a job's logs `overflowed`, every later line is dropped too, however small: a line kept
/// after a dropped one would hide the gap.
pub fn cap_logs(used: i64, overflowed: bool, logs: Vec<NewLog>) -> (Vec<NewLog>, i64, bool) {
    if overflowed {
        return (Vec::new(), 0, !logs.is_empty());
    }
    let mut total = used;
    let mut kept = Vec::with_capacity(logs.len());
    let mut dropped = false;
    for log in logs {
        let size = log.output.len() as i64;
        if dropped || total + size > MAX_LOG_BYTES {
            dropped = true;
            continue;
        }
        total += size;
        kept.push(log);
    }
    (kept, total - used, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> NewLog {
        NewLog {
            created_at: Utc::now(),
            source: LogSource::Provisioner,
            level: LogLevel::Info,
            stage: "plan".into(),
            output: "x".repeat(n),
        }
    }

    #[test]
    fn the_cap_keeps_whole_lines_and_drops_the_rest() {
        let (kept, bytes, dropped) = cap_logs(0, false, vec![line(10), line(20)]);
        assert_eq!((kept.len(), bytes, dropped), (2, 30, false));
        let (kept, bytes, dropped) =
            cap_logs(MAX_LOG_BYTES - 15, false, vec![line(10), line(10), line(1)]);
        assert_eq!((kept.len(), bytes, dropped), (1, 10, true));
    }

    #[test]
    fn after_an_overflow_every_line_is_dropped() {
        let (kept, bytes, dropped) = cap_logs(MAX_LOG_BYTES - 15, true, vec![line(1)]);
        assert_eq!((kept.len(), bytes, dropped), (0, 0, true));
    }
}
