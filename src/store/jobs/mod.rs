//! Every statement about provisioner jobs: enqueue, claim, heartbeat, finish, cancel, reap and
//! list. State changes are single statements that check the current state in their `WHERE`
//! clause, so a lost race changes nothing instead of corrupting a job.

use std::collections::BTreeMap;

use sea_orm::sea_query::{Expr, ExprTrait, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use serde_json::Value;
use uuid::Uuid;

mod claims;
mod metrics;
mod queue;
mod reap;

pub use claims::{Claimed, MAX_BATCH, Report, group_key};

pub use queue::{AheadQuery, PendingGroup, QueueSnapshot, Ranks};
pub use reap::{ReapPolicy, ReapReason, ReapedJob};

use super::logs::{NewLog, cap_logs, insert_logs};
use super::{Store, StoreError, StoreResult, rows};
use crate::domain::job::{ErrorCode, Job, JobStatus, JobType, Provisioner};
use crate::domain::job_query::JobFilter;
use crate::domain::secrets::hash_secret;
use crate::domain::tags::Tags;
use crate::domain::{PREBUILDS_USER_ID, now};
use crate::entity::provisioner_job::{self as job, Column};

/// Jobs per statement of a bulk cancel (see [`Store::cancel_jobs`]). SQLite's one writer waits
/// for a whole chunk, so its chunks are smaller; PostgreSQL only locks the chunk's rows.
fn cancel_chunk(backend: DbBackend) -> u64 {
    match backend {
        DbBackend::Postgres => 1_000,
        _ => 250,
    }
}

/// Most ids one cancel statement names (`id IN (…)`). Over TLS, a PostgreSQL message larger than
/// one TLS record (16 KiB) goes out in two writes, and with Nagle's algorithm on (sqlx does not
/// set `TCP_NODELAY`) the second waits for the server's delayed ACK, 40 ms: 500 ids stay under
/// it. The walk of pending jobs names no ids at all (see [`Store::cancel_walk_pg`]).
const CANCEL_IDS_PER_STATEMENT: usize = 500;

/// Where a bulk cancel's walk of the pending jobs stands: the dispatch key of the last job it
/// looked at.
type WalkKey = (bool, chrono::DateTime<chrono::Utc>, Uuid);

/// Whether a bulk cancel's walk passes over rows another transaction holds (see
/// [`Store::cancel_jobs`]).
#[derive(Debug, Clone, Copy)]
enum WalkLocks {
    Skip,
    Wait,
}

/// A job about to be enqueued; every field is already validated.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub organization_id: Uuid,
    pub initiator_id: Uuid,
    pub job_type: JobType,
    pub provisioner: Provisioner,
    pub tags: Tags,
    pub input: Value,
    pub file_id: Uuid,
    pub metadata: Value,
}

/// What a daemon may run: its organization, provisioners and (normalised) tags.
#[derive(Debug, Clone)]
pub struct Runnable {
    pub organization_id: Uuid,
    pub provisioners: Vec<Provisioner>,
    pub tags: Tags,
}

/// A claimed job and the lease the daemon must present to report on it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: Job,
    pub lease_token: String,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub canceled: bool,
    pub logs_overflowed: bool,
}

fn pending() -> SimpleExpr {
    Expr::cust(JobStatus::Pending.sql_predicate())
}

/// SQL: a daemon with tags `daemon` may run the job (`Tags::satisfied_by`).
fn runnable_by(backend: DbBackend, daemon: &Tags) -> Condition {
    let d = daemon.to_json();
    let subset = match backend {
        DbBackend::Postgres => {
            Expr::cust_with_values(r#"CAST($1 AS jsonb) @> "provisioner_jobs"."tags""#, [d])
        }
        _ => Expr::cust_with_values(
            r#"NOT EXISTS (SELECT 1 FROM json_each("provisioner_jobs"."tags") AS j WHERE NOT EXISTS (SELECT 1 FROM json_each(?) AS d WHERE d.key = j.key AND d.value = j.value))"#,
            [d],
        ),
    };
    let mut condition = Condition::all().add(subset);
    if !daemon.is_untagged() {
        condition = condition.add(Expr::cust(untagged_sql(backend)).not());
    }
    condition
}

/// SQL: the job's tags are exactly the untagged set.
fn untagged_sql(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => {
            r#""provisioner_jobs"."tags" = '{"scope":"organization","owner":""}'::jsonb"#
        }
        _ => {
            r#"(json_extract("provisioner_jobs"."tags", '$.scope') = 'organization' AND json_extract("provisioner_jobs"."tags", '$.owner') = '' AND (SELECT COUNT(*) FROM json_each("provisioner_jobs"."tags")) = 2)"#
        }
    }
}

/// SQL: the job's tags contain every pair of `filter` (the list/cancel `tags` filter).
fn tags_contain(backend: DbBackend, filter: &BTreeMap<String, String>) -> SimpleExpr {
    if Tags::from_stored(filter.clone()).is_untagged() {
        return Expr::cust(untagged_sql(backend));
    }
    let f = serde_json::to_value(filter).expect("a string map serialises");
    match backend {
        DbBackend::Postgres => {
            Expr::cust_with_values(r#""provisioner_jobs"."tags" @> CAST($1 AS jsonb)"#, [f])
        }
        _ => Expr::cust_with_values(
            r#"NOT EXISTS (SELECT 1 FROM json_each(?) AS f WHERE NOT EXISTS (SELECT 1 FROM json_each("provisioner_jobs"."tags") AS j WHERE j.key = f.key AND j.value = f.value))"#,
            [f],
        ),
    }
}

/// The finish statement: completes (or fails) the job under this lease, if not finished yet.
fn finish_update(
    id: Uuid,
    organization: Option<Uuid>,
    lease_token: &str,
    error: Option<(String, Option<ErrorCode>)>,
) -> sea_orm::UpdateMany<job::Entity> {
    let at = now();
    let mut update = job::Entity::update_many()
        .col_expr(Column::CompletedAt, Expr::value(at))
        .col_expr(Column::UpdatedAt, Expr::value(at));
    if let Some((message, code)) = error {
        update = update
            .col_expr(Column::Error, Expr::value(message))
            .col_expr(
                Column::ErrorCode,
                Expr::value(code.map(|c| c.as_str().to_string())),
            );
    }
    update.filter(Store::leased(id, organization, lease_token))
}

/// The CTEs of a PostgreSQL cancel chunk (see [`Store::cancel_chunk`]): set
/// `provq.counts_by_statement`, run `update` (a cancel whose `WHERE` the caller built) as
/// `canceled`, and write the chunk's `provisioner_queue_counts` rows as `counted`. `walk`: CTEs
/// the update refers to, each followed by `, `.
fn counted_cancel_ctes(walk: &str, update: &str) -> String {
    debug_assert!(update.contains(" WHERE "), "a cancel always filters");
    format!(
        "flag AS MATERIALIZED (SELECT set_config('provq.counts_by_statement', 'on', true)), \
         {walk}canceled AS ({update} AND EXISTS (SELECT 1 FROM flag) RETURNING *), \
         counted AS (INSERT INTO provisioner_queue_counts \
         (organization_id, tags_key, provisioner, is_prebuild, n) \
         SELECT organization_id, tags_key, provisioner, is_prebuild, -COUNT(*) FROM canceled \
         WHERE started_at IS NULL GROUP BY organization_id, tags_key, provisioner, is_prebuild)"
    )
}

/// [`Store::lease_failure`] for a job already read (`found`).
fn lease_error(found: StoreResult<Job>, organization: Option<Uuid>) -> StoreError {
    match found {
        Ok(job) if organization.is_some_and(|org| org != job.organization_id) => {
            StoreError::NotFound
        }
        Ok(_) => StoreError::conflict(
            "The lease is not this job's current lease: the job was finished, canceled or reaped.",
            None,
        ),
        Err(e) => e,
    }
}

impl Store {
    /// Inserts a pending job. A prebuild job while prebuilds are paused is a conflict.
    pub async fn enqueue_job(&self, new: NewJob) -> StoreResult<Job> {
        let is_prebuild = new.initiator_id == PREBUILDS_USER_ID;
        if is_prebuild && self.prebuilds_paused().await? {
            return Err(StoreError::conflict(
                "Prebuilds are paused: prebuild jobs are not accepted until they are resumed.",
                None,
            ));
        }
        let at = now();
        let model = job::ActiveModel {
            // Time-ordered (UUIDv7): jobs enqueued together sit together in the primary key, so
            // every rewrite of them (claim, finish, a bulk cancel's chunk) touches a few index
            // pages instead of one per job: a 1,000-job cancel chunk wrote 1.3 MB of WAL instead
            // of 5.5 MB (123 full-page images instead of 935).
            id: Set(Uuid::now_v7()),
            created_at: Set(at),
            updated_at: Set(at),
            started_at: Set(None),
            canceled_at: Set(None),
            completed_at: Set(None),
            error: Set(None),
            error_code: Set(None),
            organization_id: Set(new.organization_id),
            initiator_id: Set(new.initiator_id),
            is_prebuild: Set(is_prebuild),
            provisioner: Set(new.provisioner.as_str().to_string()),
            job_type: Set(new.job_type.as_str().to_string()),
            input: Set(new.input),
            file_id: Set(new.file_id),
            tags: Set(new.tags.to_json()),
            tags_key: Set(new.tags.key()),
            metadata: Set(new.metadata),
            worker_id: Set(None),
            lease_token: Set(None),
            logs_length: Set(0),
            logs_overflowed: Set(false),
        };
        Job::try_from(model.insert(self.connection()).await?)
    }

    /// A job of an organization.
    pub async fn job(&self, organization_id: Uuid, id: Uuid) -> StoreResult<Job> {
        job::Entity::find_by_id(id)
            .filter(Column::OrganizationId.eq(organization_id))
            .one(self.connection())
            .await?
            .ok_or(StoreError::NotFound)?
            .try_into()
    }

    /// A job by id alone (worker calls carry no organization).
    pub async fn job_by_id(&self, id: Uuid) -> StoreResult<Job> {
        job::Entity::find_by_id(id)
            .one(self.connection())
            .await?
            .ok_or(StoreError::NotFound)?
            .try_into()
    }

    pub(crate) fn filter_condition(&self, organization_id: Uuid, f: &JobFilter) -> Condition {
        let mut c = Condition::all().add(Column::OrganizationId.eq(organization_id));
        let nothing = || Expr::cust(JobStatus::Unknown.sql_predicate());
        match &f.ids {
            Some(ids) if ids.is_empty() => c = c.add(nothing()),
            Some(ids) => c = c.add(Column::Id.is_in(ids.clone())),
            None => {}
        }
        match &f.statuses {
            Some(statuses) if statuses.is_empty() => c = c.add(nothing()),
            Some(statuses) => {
                let any = statuses.iter().fold(Condition::any(), |any, s| {
                    any.add(Expr::cust(s.sql_predicate()))
                });
                c = c.add(any);
            }
            None => {}
        }
        if let Some(tags) = &f.tags {
            c = c.add(tags_contain(self.backend(), tags));
        }
        if let Some(initiator) = f.initiator {
            c = c.add(Column::InitiatorId.eq(initiator));
        }
        c
    }

    /// Jobs of an organization matching `filter`, newest first.
    pub async fn list_jobs(
        &self,
        organization_id: Uuid,
        filter: &JobFilter,
        limit: u64,
    ) -> StoreResult<Vec<Job>> {
        let rows = job::Entity::find()
            .filter(self.filter_condition(organization_id, filter))
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::Id)
            .limit(limit)
            .all(self.connection())
            .await?;
        rows::all(rows)
    }

    /// Why a lease-guarded write matched nothing: the job is missing (or belongs to another
    /// organization than the caller's), or the lease is stale.
    async fn lease_failure(&self, id: Uuid, organization: Option<Uuid>) -> StoreError {
        lease_error(self.job_by_id(id).await, organization)
    }

    /// The lease-guarded rows a daemon's report may change: this job, under this lease, not
    /// finished, and (for a provisioner key) in the key's organization.
    fn leased(id: Uuid, organization: Option<Uuid>, lease_token: &str) -> Condition {
        let mut c = Condition::all()
            .add(Column::Id.eq(id))
            .add(Column::LeaseToken.eq(hash_secret(lease_token)))
            .add(Column::CompletedAt.is_null());
        if let Some(org) = organization {
            c = c.add(Column::OrganizationId.eq(org));
        }
        c
    }

    /// A daemon's heartbeat with optional log lines: refreshes the job's liveness, appends what
    /// fits under the log cap, and tells the daemon whether the job was canceled. `organization`
    /// restricts the job to a provisioner key's organization (404 otherwise).
    pub async fn heartbeat_job(
        &self,
        id: Uuid,
        organization: Option<Uuid>,
        lease_token: &str,
        logs: Vec<NewLog>,
    ) -> StoreResult<Heartbeat> {
        let at = now();
        let beat = job::Entity::update_many()
            .col_expr(Column::UpdatedAt, Expr::value(at))
            .filter(Self::leased(id, organization, lease_token));
        if logs.is_empty() {
            let Some(job) = beat.exec_with_returning(self.connection()).await?.pop() else {
                return Err(self.lease_failure(id, organization).await);
            };
            self.touch_worker(job.worker_id).await?;
            return Ok(Heartbeat {
                canceled: job.canceled_at.is_some(),
                logs_overflowed: job.logs_overflowed,
            });
        }
        let txn = self.connection().begin().await?;
        let Some(job) = beat.exec_with_returning(&txn).await?.pop() else {
            txn.rollback().await?;
            return Err(self.lease_failure(id, organization).await);
        };
        let (kept, bytes, dropped) = cap_logs(job.logs_length, job.logs_overflowed, logs);
        insert_logs(&txn, id, kept).await?;
        let overflowed = job.logs_overflowed || dropped;
        if bytes > 0 || overflowed != job.logs_overflowed {
            job::Entity::update_many()
                .col_expr(Column::LogsLength, Expr::col(Column::LogsLength).add(bytes))
                .col_expr(Column::LogsOverflowed, Expr::value(overflowed))
                .filter(Column::Id.eq(id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        self.touch_worker(job.worker_id).await?;
        Ok(Heartbeat {
            canceled: job.canceled_at.is_some(),
            logs_overflowed: overflowed,
        })
    }

    /// Finishes a job the daemon holds: successfully (`error` None) or failed, in one
    /// statement. A job that was being canceled ends `canceled` on success, as the status rule
    /// says. `organization` as for [`Store::heartbeat_job`].
    pub async fn finish_job(
        &self,
        id: Uuid,
        organization: Option<Uuid>,
        lease_token: &str,
        error: Option<(String, Option<ErrorCode>)>,
    ) -> StoreResult<Job> {
        let Some(job) = finish_update(id, organization, lease_token, error)
            .exec_with_returning(self.connection())
            .await?
            .pop()
        else {
            return Err(self.lease_failure(id, organization).await);
        };
        self.touch_worker(job.worker_id).await?;
        job.try_into()
    }

    /// Cancels one job atomically: pending → canceled at once (it is never handed out
    /// afterwards), running → canceling until its daemon finishes it. `expect` makes the cancel
    /// conditional on the current status (412 otherwise).
    pub async fn cancel_job(
        &self,
        organization_id: Uuid,
        id: Uuid,
        expect: Option<JobStatus>,
    ) -> StoreResult<Job> {
        let mut condition = Condition::all()
            .add(Column::OrganizationId.eq(organization_id))
            .add(Column::Id.eq(id));
        condition = match expect {
            Some(JobStatus::Pending) => condition.add(pending()),
            Some(JobStatus::Running) => {
                condition.add(Expr::cust(JobStatus::Running.sql_predicate()))
            }
            _ => condition,
        };
        if let Some(job) = self.cancel_where(condition).await?.pop() {
            return Ok(job);
        }
        let status = self.job(organization_id, id).await?.status();
        Err(match status {
            JobStatus::Canceled | JobStatus::Canceling => {
                StoreError::Invalid("Job has already been marked as canceled!".into())
            }
            s if s.is_terminal() => StoreError::Invalid("Job has already completed!".into()),
            s => StoreError::PreconditionFailed(format!(
                "Job status is \"{s}\", not \"{}\".",
                expect.map(JobStatus::as_str).unwrap_or("cancelable")
            )),
        })
    }

    /// Cancels every pending or running job matching `filter`, each atomically, and returns
    /// their ids. The work goes in chunks (see [`cancel_chunk`]), each its own short statement
    /// (a flood of 100,000 jobs never holds locks or the SQLite writer for long, so daemons,
    /// enqueues and the reaper carry on in between); `on_chunk` sees each chunk's canceled jobs.
    /// A job a daemon claims meanwhile is either canceled first (and never handed out) or
    /// claimed first (and then canceled only if the filter still matches it, as `canceling`).
    pub async fn cancel_jobs(
        &self,
        organization_id: Uuid,
        filter: &JobFilter,
        mut on_chunk: impl FnMut(&[Job]),
    ) -> StoreResult<Vec<Uuid>> {
        let mut canceled = Vec::new();
        let chunk_size = cancel_chunk(self.backend());
        let filtered = |ids: Vec<Uuid>| {
            self.filter_condition(organization_id, filter)
                .add(Column::Id.is_in(ids))
        };
        // Named jobs: just those, a chunk at a time.
        let per_statement = (chunk_size as usize).min(CANCEL_IDS_PER_STATEMENT);
        if let Some(ids) = &filter.ids {
            for ids in ids.chunks(per_statement) {
                let chunk = self.cancel_chunk(filtered(ids.to_vec())).await?;
                on_chunk(&chunk);
                canceled.extend(chunk.iter().map(|j| j.id));
            }
            return Ok(canceled);
        }
        let wants = |status: JobStatus| {
            filter
                .statuses
                .as_ref()
                .is_none_or(|statuses| statuses.contains(&status))
        };
        // Pending jobs: a keyset walk over the pending index alone, an index-only range scan
        // that starts where the last chunk ended. The filter is applied by each chunk's
        // `UPDATE`, not by the walk: with it, the planners misjudge how many rows match and scan
        // and sort the whole table per chunk.
        //
        // On PostgreSQL the walk goes back to front (reverse dispatch order), because daemons
        // claim at the front. A chunk that meets a job a daemon claimed after the chunk's
        // statement began re-checks it, leaves it alone, and PostgreSQL keeps that row locked
        // until the chunk ends: the daemon finishing the job waited for the whole chunk
        // (25-40 ms per chunk, measured, when the walk started at the front and chased the
        // daemons). From the back, the walk meets them once, at the end. For that end, the first
        // walk skips rows another transaction holds (`SKIP LOCKED`) rather than wait for them.
        // A skipped row is being claimed, or a claim that changed nothing (a refused report)
        // holds it for a moment: a second walk, which waits, catches whatever is still pending
        // afterwards (the canceled jobs are no longer pending: it reads past them without
        // locking them). SQLite walks front to back once (see [`Store::cancel_walk`]).
        let passes: &[WalkLocks] = if self.backend() == DbBackend::Postgres {
            &[WalkLocks::Skip, WalkLocks::Wait]
        } else {
            &[WalkLocks::Wait]
        };
        for &locks in passes {
            let mut after: Option<WalkKey> = None;
            while wants(JobStatus::Pending) {
                let (chunk, last, more) = if self.backend() == DbBackend::Postgres {
                    self.cancel_walk_pg(organization_id, filter, after, chunk_size, locks)
                        .await?
                } else {
                    self.cancel_walk(organization_id, filter, after, chunk_size)
                        .await?
                };
                on_chunk(&chunk);
                canceled.extend(chunk.iter().map(|j| j.id));
                match last {
                    Some(key) if more => after = Some(key),
                    _ => break,
                }
            }
        }
        // Running jobs (at most one per busy daemon slot) on the running index, read at once;
        // a job claimed during the walk above is among them.
        if wants(JobStatus::Running) {
            let running: Vec<Uuid> = job::Entity::find()
                .select_only()
                .column(Column::Id)
                .filter(Column::OrganizationId.eq(organization_id))
                .filter(Column::StartedAt.is_not_null())
                .filter(Column::CompletedAt.is_null())
                .filter(Column::CanceledAt.is_null())
                .into_tuple()
                .all(self.connection())
                .await?;
            for ids in running.chunks(per_statement) {
                let chunk = self.cancel_chunk(filtered(ids.to_vec())).await?;
                on_chunk(&chunk);
                canceled.extend(chunk.iter().map(|j| j.id));
            }
        }
        Ok(canceled)
    }

    /// The one cancel statement: only jobs not finished and not already canceled match, and a
    /// job that never started is completed in the same write.
    fn cancel_update(&self, condition: Condition) -> sea_orm::UpdateMany<job::Entity> {
        let at = now();
        job::Entity::update_many()
            .col_expr(Column::CanceledAt, Expr::value(at))
            .col_expr(Column::UpdatedAt, Expr::value(at))
            .col_expr(
                Column::CompletedAt,
                Expr::cust_with_values(
                    match self.backend() {
                        DbBackend::Postgres => {
                            "CASE WHEN started_at IS NULL THEN $1 ELSE completed_at END"
                        }
                        _ => "CASE WHEN started_at IS NULL THEN ? ELSE completed_at END",
                    },
                    [at],
                ),
            )
            .filter(condition)
            .filter(Column::CompletedAt.is_null())
            .filter(Column::CanceledAt.is_null())
            .filter(Expr::cust("COALESCE(error, '') = ''"))
    }

    async fn cancel_where(&self, condition: Condition) -> StoreResult<Vec<Job>> {
        let rows = self
            .cancel_update(condition)
            .exec_with_returning(self.connection())
            .await?;
        rows::all(rows)
    }

    /// One chunk of a bulk cancel's walk (SQLite): the next `chunk_size` pending jobs after
    /// `after` in dispatch order on the pending index (front to back: SQLite has no row locks
    /// for the walk to meet, and its backward range scan measured twice as slow), then the
    /// cancel of those `filter` matches. Returns what [`Store::cancel_walk_pg`] does.
    async fn cancel_walk(
        &self,
        organization_id: Uuid,
        filter: &JobFilter,
        after: Option<WalkKey>,
        chunk_size: u64,
    ) -> StoreResult<(Vec<Job>, Option<WalkKey>, bool)> {
        let mut next = job::Entity::find()
            .select_only()
            .column(Column::Id)
            .column(Column::IsPrebuild)
            .column(Column::CreatedAt)
            .filter(Column::OrganizationId.eq(organization_id))
            .filter(Column::StartedAt.is_null())
            .filter(Column::CanceledAt.is_null())
            .filter(Column::CompletedAt.is_null())
            .order_by_asc(Column::IsPrebuild)
            .order_by_asc(Column::CreatedAt)
            .order_by_asc(Column::Id)
            .limit(chunk_size);
        if let Some((prebuild, at, id)) = after {
            next = next.filter(Expr::cust_with_values(
                "(is_prebuild, created_at, id) > (?, ?, ?)",
                [sea_orm::Value::from(prebuild), at.into(), id.into()],
            ));
        }
        let rows: Vec<(Uuid, bool, chrono::DateTime<chrono::Utc>)> =
            next.into_tuple().all(self.connection()).await?;
        let last = rows.last().map(|&(id, prebuild, at)| (prebuild, at, id));
        let more = rows.len() as u64 == chunk_size;
        if rows.is_empty() {
            return Ok((Vec::new(), last, more));
        }
        let ids: Vec<Uuid> = rows.into_iter().map(|r| r.0).collect();
        let condition = self
            .filter_condition(organization_id, filter)
            .add(Column::Id.is_in(ids));
        Ok((self.cancel_chunk(condition).await?, last, more))
    }

    /// One chunk of a bulk cancel's walk on PostgreSQL, in one statement: the next `chunk_size`
    /// pending jobs after `after` in reverse dispatch order (an index-only range scan of the pending
    /// index, unfiltered: see [`Store::cancel_jobs`]), the cancel of those `filter` matches
    /// (with their queue counts, as [`Store::cancel_chunk`]), and where the walk stands. No id
    /// goes over the wire, so the statement stays small. Returns the canceled jobs, the last
    /// walked job's key, and whether the walk was a full chunk (there may be more).
    async fn cancel_walk_pg(
        &self,
        organization_id: Uuid,
        filter: &JobFilter,
        after: Option<WalkKey>,
        chunk_size: u64,
        locks: WalkLocks,
    ) -> StoreResult<(Vec<Job>, Option<WalkKey>, bool)> {
        let walked = || {
            self.filter_condition(organization_id, filter)
                .add(Expr::cust("provisioner_jobs.id IN (SELECT id FROM walk)"))
        };
        let condition = match locks {
            WalkLocks::Wait => walked(),
            // The walked jobs the filter matches, locked here, passing over those another
            // transaction holds (the walk itself locks nothing: it passes humans' jobs too).
            WalkLocks::Skip => Condition::all().add(
                Column::Id.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(Column::Id)
                        .from(job::Entity)
                        .cond_where(walked())
                        .lock_with_behavior(
                            sea_orm::sea_query::LockType::Update,
                            sea_orm::sea_query::LockBehavior::SkipLocked,
                        )
                        .to_owned(),
                ),
            ),
        };
        let update =
            sea_orm::QueryTrait::build(&self.cancel_update(condition), DbBackend::Postgres);
        let mut values = update.values.map(|v| v.0).unwrap_or_default();
        let mut param = |v: sea_orm::Value| {
            values.push(v);
            format!("${}", values.len())
        };
        let org = param(organization_id.into());
        let start = match after {
            Some((prebuild, at, id)) => format!(
                " AND (is_prebuild, created_at, id) < ({}, {}, {})",
                param(prebuild.into()),
                param(at.into()),
                param(id.into())
            ),
            None => String::new(),
        };
        let walk = format!(
            "walk AS MATERIALIZED (SELECT id, is_prebuild, created_at FROM provisioner_jobs \
             WHERE organization_id = {org} AND started_at IS NULL AND canceled_at IS NULL \
             AND completed_at IS NULL{start} ORDER BY is_prebuild DESC, created_at DESC, id DESC \
             LIMIT {chunk_size}), "
        );
        let sql = format!(
            "WITH {ctes}, \
             last AS (SELECT (SELECT COUNT(*) FROM walk) AS walked, w.is_prebuild AS walk_prebuild, \
             w.created_at AS walk_created_at, w.id AS walk_id FROM (SELECT 1) AS one LEFT JOIN \
             (SELECT * FROM walk ORDER BY is_prebuild, created_at, id LIMIT 1) AS w \
             ON true) \
             SELECT last.*, canceled.* FROM last LEFT JOIN canceled ON true",
            ctes = counted_cancel_ctes(&walk, &update.sql),
        );
        let rows = sea_orm::ConnectionTrait::query_all_raw(
            self.connection(),
            sea_orm::Statement::from_sql_and_values(DbBackend::Postgres, sql, values),
        )
        .await?;
        let mut chunk = Vec::with_capacity(rows.len());
        let (mut last, mut more) = (None, false);
        for row in rows {
            let walked: i64 = row.try_get("", "walked")?;
            more = walked as u64 == chunk_size;
            let key: Option<Uuid> = row.try_get("", "walk_id")?;
            if let Some(id) = key {
                last = Some((
                    row.try_get("", "walk_prebuild")?,
                    row.try_get("", "walk_created_at")?,
                    id,
                ));
            }
            let canceled: Option<Uuid> = row.try_get("", "id")?;
            if canceled.is_some() {
                chunk.push(rows::job_from_query(&row)?);
            }
        }
        Ok((chunk, last, more))
    }

    /// A chunk of a bulk cancel. On PostgreSQL the statement also records the jobs that left
    /// the pending state in `provisioner_queue_counts`, one row per group, and sets
    /// `provq.counts_by_statement` for its own (implicit) transaction so that the row trigger
    /// that would add one row per job stays quiet (migration
    /// `m20261202_000032_bulk_cancel_counts`). The flag is read in the `WHERE`, so it is set
    /// before the first row is written; one statement, so the chunk's row locks end with it
    /// (a daemon finishing a job the chunk touched waits for no extra round trip). A canceled
    /// job was pending exactly when it never started: the `WHERE` only matches jobs not
    /// finished, not canceled and not failed.
    async fn cancel_chunk(&self, condition: Condition) -> StoreResult<Vec<Job>> {
        if self.backend() != DbBackend::Postgres {
            return self.cancel_where(condition).await;
        }
        let update =
            sea_orm::QueryTrait::build(&self.cancel_update(condition), DbBackend::Postgres);
        let sql = format!(
            "WITH {} SELECT * FROM canceled",
            counted_cancel_ctes("", &update.sql)
        );
        let values = update.values.map(|v| v.0).unwrap_or_default();
        let rows = <job::Model as sea_orm::FromQueryResult>::find_by_statement(
            sea_orm::Statement::from_sql_and_values(DbBackend::Postgres, sql, values),
        )
        .all(self.connection())
        .await?;
        rows::all(rows)
    }
}
