//! Claims: one statement hands a daemon up to *k* jobs, optionally finishing its previous job
//! in the same transaction. Every claim also says whether it saw more runnable jobs than it
//! took, so the dispatcher (`queue::dispatch`) knows when a kind of daemon has nothing left and
//! can skip claims that would find nothing.
//!
//! These are plain statements; batching concurrent claims of one kind of daemon into one
//! statement (SQLite) is the queue's business (`queue::claims`).

use std::sync::atomic::Ordering;

use sea_orm::sea_query::{LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Statement, TransactionTrait, Value,
};
use uuid::Uuid;

use super::{Claim, Runnable, pending, runnable_by};
use crate::domain::job::{ErrorCode, Job};
use crate::domain::now;
use crate::domain::secrets::{hash_secret, random_secret};
use crate::entity::provisioner_job::{self as job, Column};
use crate::store::rows::job_from_query;
use crate::store::{Store, StoreError, StoreResult};

/// Most claims one statement makes, and most jobs one acquire may ask for.
pub const MAX_BATCH: usize = 32;

/// What a claim got, and whether it saw more jobs the daemon could run than it took.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub claims: Vec<Claim>,
    /// More runnable jobs were pending when the claim ran (a hint: `false` means the daemon's
    /// kind had nothing left as of the claim, unless something was enqueued since).
    pub more: bool,
}

/// A finished job a daemon reports together with its next acquire.
#[derive(Debug, Clone)]
pub struct Report {
    pub job_id: Uuid,
    /// A provisioner key's organization: the job must belong to it (404 otherwise).
    pub organization: Option<Uuid>,
    pub lease_token: String,
    /// `None`: completed; otherwise failed with this message and code.
    pub error: Option<(String, Option<ErrorCode>)>,
}

/// Daemons with equal keys may run exactly the same jobs.
pub fn group_key(runnable: &Runnable) -> String {
    let mut provisioners: Vec<&str> = runnable.provisioners.iter().map(|p| p.as_str()).collect();
    provisioners.sort_unstable();
    provisioners.dedup();
    format!(
        "{}|{}|{}",
        runnable.organization_id,
        provisioners.join(","),
        runnable.tags.key()
    )
}

/// The pending jobs a daemon may run, in dispatch order (humans first, then oldest): what a
/// claim takes from and what its look-ahead counts.
fn runnable_jobs(backend: DbBackend, runnable: &Runnable) -> sea_orm::Select<job::Entity> {
    let provisioners: Vec<&str> = runnable.provisioners.iter().map(|p| p.as_str()).collect();
    let one_provisioner = provisioners.len() == 1;
    // A daemon that runs one tag set with one provisioner looks at that set alone, on the
    // index that starts with both (`idx_provisioner_jobs_pending_by_tags`), in dispatch order:
    // without this, a claim stepped over the pending jobs of every other tag set ahead of its
    // next job (18,000 rows, ~20 ms per claim, in the flood benchmark with one tag set's
    // daemons at work). The set's key says all the tag match would (`runnable_keys` lists only
    // sets the daemon runs), and the match is left out: PostgreSQL guesses a containment test
    // keeps almost no rows, and with it chose to read and sort the whole set per claim. With
    // several sets or provisioners the index cannot give the order, so such a claim keeps the
    // dispatch-order index and the match.
    let one_set = match runnable.tags.runnable_keys(1).as_deref() {
        Some([key]) if one_provisioner => Some(key.clone()),
        _ => None,
    };
    let jobs = job::Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::OrganizationId.eq(runnable.organization_id))
        .filter(pending())
        .filter(Column::Provisioner.is_in(provisioners));
    let jobs = match one_set {
        Some(key) => jobs.filter(Column::TagsKey.eq(key)),
        None => jobs.filter(runnable_by(backend, &runnable.tags)),
    };
    jobs.order_by_asc(Column::IsPrebuild)
        .order_by_asc(Column::CreatedAt)
        .order_by_asc(Column::Id)
}

/// A claim statement's parts: the CTEs that lock and assign jobs, the `UPDATE` that claims them
/// (returning the rows and `pending_seen`, how many runnable jobs the claim saw, up to k + 1),
/// and the bound values.
struct ClaimSql {
    ctes: String,
    update: String,
    values: Vec<Value>,
}

/// Builds a claim for one `(daemon, hashed lease)` per job wanted. `guard` is an extra SQL
/// condition on the claimed rows (the report-and-acquire statement claims only if the report
/// matched).
fn claim_sql(
    backend: DbBackend,
    leases: &[(Uuid, String)],
    runnable: &Runnable,
    guard: &str,
) -> ClaimSql {
    let runnable_jobs = runnable_jobs(backend, runnable);
    let next = runnable_jobs
        .clone()
        .limit(leases.len() as u64)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .build(backend);
    let mut values: Vec<Value> = next.values.map(|v| v.0).unwrap_or_default();
    // PostgreSQL: the look-ahead repeats the filter's leading parameters ($1…), which it shares
    // with `next` (same filters, same order). Ordered, so that it reads the index `next` reads:
    // unordered, PostgreSQL chose to scan the whole table for the two rows it wants. SQLite's
    // `?` are positional: its look-ahead runs as a statement of its own (see
    // `Store::lookahead`).
    let lookahead = match backend {
        DbBackend::Postgres => {
            let ahead = runnable_jobs.build(backend);
            format!(
                ", (SELECT COUNT(*) FROM ({} LIMIT {}) AS ahead) AS pending_seen",
                ahead.sql,
                leases.len() + 1
            )
        }
        _ => String::new(),
    };
    let mut param = |v: Value| {
        values.push(v);
        match backend {
            DbBackend::Postgres => format!("${}", values.len()),
            _ => "?".to_string(),
        }
    };
    let rows: Vec<String> = leases
        .iter()
        .enumerate()
        .map(|(i, (daemon_id, hashed_lease))| {
            let daemon = param((*daemon_id).into());
            let lease = param(hashed_lease.clone().into());
            format!("({}, {daemon}, {lease})", i + 1)
        })
        .collect();
    // One parameter per use: SQLite's `?` are positional.
    let at = now();
    let (started, updated) = (param(at.into()), param(at.into()));
    let returning = match backend {
        DbBackend::Postgres => "provisioner_jobs.*",
        _ => "*",
    };
    ClaimSql {
        ctes: format!(
            "locked AS ({inner}), \
             next AS (SELECT id, row_number() OVER () AS rn FROM locked), \
             assign (rn, worker_id, lease_token) AS (VALUES {rows})",
            inner = next.sql,
            rows = rows.join(", "),
        ),
        update: format!(
            "UPDATE provisioner_jobs SET started_at = {started}, updated_at = {updated}, \
             worker_id = assign.worker_id, lease_token = assign.lease_token \
             FROM next JOIN assign ON assign.rn = next.rn \
             WHERE provisioner_jobs.id = next.id{guard} \
             RETURNING {returning}{lookahead}"
        ),
        values,
    }
}

/// Fresh leases: the secrets handed to daemons and the hashes stored.
fn new_leases(daemon_id: Uuid, k: usize) -> (Vec<String>, Vec<(Uuid, String)>) {
    let secrets: Vec<String> = (0..k).map(|_| random_secret(32)).collect();
    let hashed = secrets
        .iter()
        .map(|s| (daemon_id, hash_secret(s)))
        .collect();
    (secrets, hashed)
}

/// Pairs claimed rows with the secrets whose hashes they carry.
fn pair(secrets: Vec<String>, mut rows: Vec<Job>) -> Vec<Claim> {
    let mut claims = Vec::with_capacity(rows.len());
    for secret in secrets {
        let hashed = hash_secret(&secret);
        if let Some(i) = rows
            .iter()
            .position(|j| j.lease_token.as_deref() == Some(&hashed))
        {
            claims.push(Claim {
                job: rows.swap_remove(i),
                lease_token: secret,
            });
        }
    }
    // Oldest first, as claimed.
    claims.sort_by(|a, b| {
        (a.job.is_prebuild, a.job.created_at, a.job.id).cmp(&(
            b.job.is_prebuild,
            b.job.created_at,
            b.job.id,
        ))
    });
    claims
}

impl Store {
    /// Claim statements this replica has run (each claims up to k jobs).
    pub fn claim_statements(&self) -> u64 {
        self.claim_statements.load(Ordering::Relaxed)
    }

    /// Claims up to `k` (1–[`MAX_BATCH`]) jobs for a daemon in one statement, in dispatch
    /// order: human jobs before prebuild jobs, then oldest first. No job is ever handed out
    /// twice (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the single writer on SQLite). Daemons
    /// claim through `queue::Claims`, which batches single claims on SQLite.
    pub async fn claim_jobs(
        &self,
        daemon_id: Uuid,
        runnable: &Runnable,
        k: usize,
    ) -> StoreResult<Claimed> {
        let k = k.clamp(1, MAX_BATCH);
        let (secrets, leases) = new_leases(daemon_id, k);
        let (rows, more) = self
            .claim_batch(self.connection(), &leases, runnable)
            .await?;
        Ok(Claimed {
            claims: pair(secrets, rows),
            more,
        })
    }

    /// One statement that claims up to one job per `(daemon, hashed lease)` of `leases`, for
    /// daemons of one kind (`runnable`): each claimed job carries one of the hashed leases. Also
    /// whether more runnable jobs were pending.
    pub async fn claim_for_leases(
        &self,
        leases: &[(Uuid, String)],
        runnable: &Runnable,
    ) -> Result<(Vec<Job>, bool), sea_orm::DbErr> {
        self.claim_batch(self.connection(), leases, runnable).await
    }

    /// Finishes the daemon's reported jobs and claims up to `k` more (none when `k` is 0), in
    /// one transaction (one statement on PostgreSQL). The reports are all or nothing: if one
    /// lease does not match, nothing is finished and nothing claimed, and the error is the one
    /// `finish_job` gives for the first such report.
    pub async fn finish_and_claim(
        &self,
        reports: &[Report],
        daemon_id: Uuid,
        runnable: &Runnable,
        k: usize,
    ) -> StoreResult<(Vec<Job>, Claimed)> {
        if reports.is_empty() {
            return Ok((Vec::new(), self.claim_jobs(daemon_id, runnable, k).await?));
        }
        let k = k.min(MAX_BATCH);
        let (secrets, leases) = new_leases(daemon_id, k);
        let outcome = match self.backend() {
            DbBackend::Postgres => self.finish_and_claim_pg(reports, &leases, runnable).await?,
            _ => {
                let txn = self.connection().begin().await?;
                let mut done = Vec::with_capacity(reports.len());
                for report in reports {
                    let finished = super::finish_update(
                        report.job_id,
                        report.organization,
                        &report.lease_token,
                        report.error.clone(),
                    )
                    .exec_with_returning(&txn)
                    .await?
                    .pop();
                    match finished {
                        Some(row) => done.push(Job::try_from(row)?),
                        None => break,
                    }
                }
                if done.len() < reports.len() {
                    txn.rollback().await?;
                    None
                } else {
                    let (rows, more) = if leases.is_empty() {
                        (Vec::new(), false)
                    } else {
                        self.claim_batch(&txn, &leases, runnable).await?
                    };
                    txn.commit().await?;
                    Some((done, rows, more))
                }
            }
        };
        let Some((done, rows, more)) = outcome else {
            return Err(self.report_failure(reports).await);
        };
        if let Some(job) = done.first() {
            self.touch_worker(job.worker_id).await?;
        }
        Ok((
            done,
            Claimed {
                claims: pair(secrets, rows),
                more,
            },
        ))
    }

    /// Why a set of reports was refused: the error of the first report whose lease is not its
    /// job's current one (naming the job when there were several).
    async fn report_failure(&self, reports: &[Report]) -> StoreError {
        for report in reports {
            let found = self.job_by_id(report.job_id).await;
            let held = found.as_ref().is_ok_and(|job| {
                job.lease_token.as_deref() == Some(hash_secret(&report.lease_token).as_str())
                    && job.completed_at.is_none()
                    && report.organization.is_none_or(|o| o == job.organization_id)
            });
            if held {
                continue;
            }
            return match super::lease_error(found, report.organization) {
                StoreError::Conflict { message, field } if reports.len() > 1 => {
                    StoreError::Conflict {
                        message: format!("Job {}: {message}", report.job_id),
                        field,
                    }
                }
                e => e,
            };
        }
        // Every lease matches now: a report raced a change and lost; the daemon may resend.
        StoreError::conflict(
            "A reported job changed while the report was applied; nothing was changed.",
            None,
        )
    }

    /// PostgreSQL's report-and-acquire: one statement that locks the reported jobs under their
    /// leases, finishes them only if every one matched, and then claims (only if they did).
    async fn finish_and_claim_pg(
        &self,
        reports: &[Report],
        leases: &[(Uuid, String)],
        runnable: &Runnable,
    ) -> StoreResult<Option<(Vec<Job>, Vec<Job>, bool)>> {
        let backend = DbBackend::Postgres;
        let claim = (!leases.is_empty())
            .then(|| claim_sql(backend, leases, runnable, " AND (SELECT all_held FROM ok)"));
        let mut values = claim.as_ref().map(|c| c.values.clone()).unwrap_or_default();
        let mut param = |v: Value| {
            values.push(v);
            format!("${}", values.len())
        };
        let rows: Vec<String> = reports
            .iter()
            .map(|r| {
                let (error, code) = match &r.error {
                    Some((message, code)) => {
                        (Some(message.clone()), code.map(|c| c.as_str().to_string()))
                    }
                    None => (None, None),
                };
                format!(
                    "({}::uuid, {}::text, {}::text, {}::text)",
                    param(r.job_id.into()),
                    param(hash_secret(&r.lease_token).into()),
                    param(Value::String(error)),
                    param(Value::String(code)),
                )
            })
            .collect();
        // A provisioner key's reports all carry its organization.
        let organization = match reports.iter().find_map(|r| r.organization) {
            Some(org) => format!(" AND j.organization_id = {}", param(org.into())),
            None => String::new(),
        };
        let at = now();
        let (completed, updated) = (param(at.into()), param(at.into()));
        let held = format!(
            "want (id, lease, error, code) AS (VALUES {rows}), \
             held AS (SELECT j.id FROM provisioner_jobs j JOIN want \
             ON j.id = want.id AND j.lease_token = want.lease \
             WHERE j.completed_at IS NULL{organization} FOR UPDATE OF j), \
             ok AS (SELECT count(*) = {n} AS all_held FROM held), \
             finished AS (UPDATE provisioner_jobs SET completed_at = {completed}, \
             updated_at = {updated}, \
             error = CASE WHEN want.error IS NULL THEN provisioner_jobs.error ELSE want.error END, \
             error_code = CASE WHEN want.error IS NULL THEN provisioner_jobs.error_code \
             ELSE want.code END \
             FROM want JOIN held ON held.id = want.id \
             WHERE provisioner_jobs.id = want.id AND (SELECT all_held FROM ok) \
             RETURNING provisioner_jobs.*)",
            rows = rows.join(", "),
            n = reports.len(),
        );
        let sql = match &claim {
            Some(claim) => format!(
                "WITH {held}, {ctes}, claimed AS ({update}) \
                 SELECT 'finished' AS kind, finished.*, 0 AS pending_seen FROM finished \
                 UNION ALL SELECT 'claimed' AS kind, claimed.* FROM claimed",
                ctes = claim.ctes,
                update = claim.update,
            ),
            None => format!(
                "WITH {held} SELECT 'finished' AS kind, finished.*, 0 AS pending_seen \
                 FROM finished"
            ),
        };
        if claim.is_some() {
            self.claim_statements.fetch_add(1, Ordering::Relaxed);
        }
        let rows = self
            .connection()
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let mut done = Vec::with_capacity(reports.len());
        let mut claimed = Vec::new();
        let mut seen = 0i64;
        for row in rows {
            let kind: String = row.try_get("", "kind")?;
            let model = job_from_query(&row)?;
            if kind == "finished" {
                done.push(model);
            } else {
                seen = seen.max(row.try_get("", "pending_seen")?);
                claimed.push(model);
            }
        }
        if done.len() < reports.len() {
            return Ok(None);
        }
        // In report order, as the daemon sent them.
        done.sort_by_key(|j| reports.iter().position(|r| r.job_id == j.id));
        let more = seen > claimed.len() as i64;
        Ok(Some((done, claimed, more)))
    }

    /// One statement that claims up to one job per `(daemon, hashed lease)` and gives each
    /// claimed job one of them; also whether more runnable jobs were pending.
    async fn claim_batch(
        &self,
        db: &impl ConnectionTrait,
        batch: &[(Uuid, String)],
        runnable: &Runnable,
    ) -> Result<(Vec<Job>, bool), sea_orm::DbErr> {
        let backend = self.backend();
        let claim = claim_sql(backend, batch, runnable, "");
        let sql = format!("WITH {} {}", claim.ctes, claim.update);
        self.claim_statements.fetch_add(1, Ordering::Relaxed);
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, claim.values))
            .await?;
        let mut seen = 0i64;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            if backend == DbBackend::Postgres {
                seen = seen.max(row.try_get("", "pending_seen")?);
            }
            claimed.push(job_from_query(&row)?);
        }
        let more = match backend {
            DbBackend::Postgres => seen > claimed.len() as i64,
            // Nothing claimed: nothing was left. Otherwise look (in-process, no round trip).
            _ if claimed.is_empty() => false,
            _ => self.lookahead(db, runnable).await?,
        };
        Ok((claimed, more))
    }

    /// SQLite: whether a runnable job is still pending (after a claim).
    async fn lookahead(
        &self,
        db: &impl ConnectionTrait,
        runnable: &Runnable,
    ) -> Result<bool, sea_orm::DbErr> {
        Ok(runnable_jobs(self.backend(), runnable)
            .limit(1)
            .into_tuple::<Uuid>()
            .one(db)
            .await?
            .is_some())
    }

    /// Puts a claimed job nobody received back in the queue, as if never claimed. `false`: it
    /// was no longer claimed under that lease (finished, canceled, already put back).
    pub async fn release_claim(&self, claim: &Claim) -> StoreResult<bool> {
        let released = job::Entity::update_many()
            .col_expr(
                Column::StartedAt,
                sea_orm::sea_query::Expr::value(Value::ChronoDateTimeUtc(None)),
            )
            .col_expr(
                Column::WorkerId,
                sea_orm::sea_query::Expr::value(Value::Uuid(None)),
            )
            .col_expr(
                Column::LeaseToken,
                sea_orm::sea_query::Expr::value(Value::String(None)),
            )
            .filter(Column::Id.eq(claim.job.id))
            .filter(Column::LeaseToken.eq(hash_secret(&claim.lease_token)))
            .filter(Column::CompletedAt.is_null())
            .filter(Column::CanceledAt.is_null())
            .exec(self.connection())
            .await?;
        Ok(released.rows_affected > 0)
    }
}
