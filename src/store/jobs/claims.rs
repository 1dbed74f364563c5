//! Claims, batched. Daemons that ask for work at the same moment with the same organization,
//! provisioners and tags are served by one statement that claims a job for each of them, the way
//! PostgreSQL's group commit folds concurrent commits into one flush. A batch is whatever queued
//! up while the group's statements were busy, so an idle queue sees batches of one and no added
//! wait. Only SQLite batches (see [`ClaimBatcher::new`]).

use std::collections::HashMap;
use std::sync::Mutex;

use sea_orm::sea_query::{LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Statement, Value,
};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Claim, Runnable, pending, runnable_by};
use crate::domain::now;
use crate::domain::secrets::{hash_secret, random_secret};
use crate::entity::provisioner_job::{self as job, Column};
use crate::store::{Store, StoreError, StoreResult};

/// Most claims one statement makes.
const MAX_BATCH: usize = 32;

/// One daemon waiting for its share of the next batch.
struct Waiter {
    daemon_id: Uuid,
    lease_token: String,
    /// What the claim stores (and returns) in place of the lease.
    hashed_lease: String,
    answer: oneshot::Sender<StoreResult<Option<Claim>>>,
}

#[derive(Default)]
struct Group {
    /// A task is running batches for this group; new waiters just queue.
    running: bool,
    waiting: Vec<Waiter>,
}

/// Groups of waiting claims, one per kind of daemon (see the module doc).
pub(crate) struct ClaimBatcher {
    groups: Mutex<HashMap<String, Group>>,
    /// Whether claims are batched at all (see [`ClaimBatcher::new`]).
    batched: bool,
}

impl ClaimBatcher {
    /// SQLite has one writer: a group runs one statement at a time, and every claim that
    /// arrives meanwhile joins the next batch (measured: HTTP drain +55 %, store drain +42 %).
    /// PostgreSQL commits concurrent statements together, and funnelling a group's claims
    /// through fewer statements cost more than it saved (measured: store drain -50 % with one
    /// statement in flight, -8 % with one per pooled connection), so there every claim is its
    /// own statement, made by the caller.
    pub(crate) fn new(backend: DbBackend) -> Self {
        Self {
            groups: Mutex::default(),
            batched: backend != DbBackend::Postgres,
        }
    }
}

impl Default for ClaimBatcher {
    fn default() -> Self {
        Self::new(DbBackend::Sqlite)
    }
}

impl std::fmt::Debug for ClaimBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimBatcher").finish_non_exhaustive()
    }
}

/// The receiving end of a batched claim. A caller that goes away after its claim was sent but
/// before reading it (the other window is covered by the batch) puts the job back.
struct Answer {
    store: Store,
    answered: oneshot::Receiver<StoreResult<Option<Claim>>>,
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Ok(Ok(Some(lost))) = self.answered.try_recv() {
            let store = self.store.clone();
            tokio::spawn(async move { store.release_undelivered(&lost).await });
        }
    }
}

/// Daemons with equal keys may run exactly the same jobs.
fn group_key(runnable: &Runnable) -> String {
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

impl Store {
    /// Claims the next job a daemon may run: human jobs before prebuild jobs, then oldest
    /// first. No job is ever handed out twice (one statement claims, with `FOR UPDATE SKIP
    /// LOCKED` on PostgreSQL and the single writer on SQLite). On SQLite, concurrent calls for
    /// the same kind of daemon share one statement.
    pub async fn claim_job(
        &self,
        daemon_id: Uuid,
        runnable: &Runnable,
    ) -> StoreResult<Option<Claim>> {
        let lease_token = random_secret(32);
        if !self.claims.batched {
            // PostgreSQL: each claim is its own statement (see `ClaimBatcher::new`).
            let mut claimed = self
                .claim_batch(&[(daemon_id, hash_secret(&lease_token))], runnable)
                .await?;
            return Ok(claimed.pop().map(|job| Claim { job, lease_token }));
        }
        let (answer, answered) = oneshot::channel();
        let waiter = Waiter {
            daemon_id,
            hashed_lease: hash_secret(&lease_token),
            lease_token,
            answer,
        };
        let key = group_key(runnable);
        let lead = {
            let mut groups = self.claims.groups.lock().expect("not poisoned");
            let group = groups.entry(key.clone()).or_default();
            group.waiting.push(waiter);
            !std::mem::replace(&mut group.running, true)
        };
        if lead {
            // A task of its own: a caller that goes away must not strand the others.
            tokio::spawn(self.clone().run_batches(key, runnable.clone()));
        }
        let mut answer = Answer {
            store: self.clone(),
            answered,
        };
        (&mut answer.answered).await.unwrap_or_else(|_| {
            Err(StoreError::Database(sea_orm::DbErr::Custom(
                "the claim batch stopped before answering".into(),
            )))
        })
    }

    /// Runs batches for one group until nobody is waiting.
    async fn run_batches(self, key: String, runnable: Runnable) {
        loop {
            let batch: Vec<Waiter> = {
                let mut groups = self.claims.groups.lock().expect("not poisoned");
                let group = groups.get_mut(&key).expect("a running group stays");
                // Callers that went away (a daemon hung up) get no job.
                group.waiting.retain(|w| !w.answer.is_closed());
                if group.waiting.is_empty() {
                    groups.remove(&key);
                    return;
                }
                let take = group.waiting.len().min(MAX_BATCH);
                group.waiting.drain(..take).collect()
            };
            let leases: Vec<(Uuid, String)> = batch
                .iter()
                .map(|w| (w.daemon_id, w.hashed_lease.clone()))
                .collect();
            match self.claim_batch(&leases, &runnable).await {
                Ok(mut claims) => {
                    for waiter in batch {
                        let job = claims
                            .iter()
                            .position(|j| j.lease_token.as_ref() == Some(&waiter.hashed_lease))
                            .map(|i| claims.swap_remove(i));
                        let claim = job.map(|job| Claim {
                            job,
                            lease_token: waiter.lease_token,
                        });
                        if let Err(Ok(Some(lost))) = waiter.answer.send(Ok(claim)) {
                            // The caller left while its job was being claimed: put it back.
                            self.release_undelivered(&lost).await;
                        }
                    }
                }
                Err(e) => {
                    for waiter in batch {
                        let _ = waiter.answer.send(Err(StoreError::Database(e.clone())));
                    }
                }
            }
        }
    }

    /// One statement that claims up to one job per `(daemon, hashed lease)` and gives each
    /// claimed job one of them.
    async fn claim_batch(
        &self,
        batch: &[(Uuid, String)],
        runnable: &Runnable,
    ) -> Result<Vec<job::Model>, sea_orm::DbErr> {
        let backend = self.backend();
        let provisioners: Vec<&str> = runnable.provisioners.iter().map(|p| p.as_str()).collect();
        let next = job::Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::OrganizationId.eq(runnable.organization_id))
            .filter(pending())
            .filter(Column::Provisioner.is_in(provisioners))
            .filter(runnable_by(backend, &runnable.tags))
            .order_by_asc(Column::IsPrebuild)
            .order_by_asc(Column::CreatedAt)
            .order_by_asc(Column::Id)
            .limit(batch.len() as u64)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .build(backend);
        let mut values: Vec<Value> = next.values.map(|v| v.0).unwrap_or_default();
        let mut param = |v: Value| {
            values.push(v);
            match backend {
                DbBackend::Postgres => format!("${}", values.len()),
                _ => "?".to_string(),
            }
        };
        let rows: Vec<String> = batch
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
        let sql = format!(
            "WITH locked AS ({inner}), \
             next AS (SELECT id, row_number() OVER () AS rn FROM locked), \
             assign (rn, worker_id, lease_token) AS (VALUES {rows}) \
             UPDATE provisioner_jobs SET started_at = {started}, updated_at = {updated}, \
             worker_id = assign.worker_id, lease_token = assign.lease_token \
             FROM next JOIN assign ON assign.rn = next.rn \
             WHERE provisioner_jobs.id = next.id \
             RETURNING {returning}",
            inner = next.sql,
            rows = rows.join(", "),
        );
        job::Model::find_by_statement(Statement::from_sql_and_values(backend, sql, values))
            .all(self.connection())
            .await
    }

    async fn release_undelivered(&self, claim: &Claim) {
        if let Err(e) = self.release_claim(claim).await {
            tracing::warn!(job_id = %claim.job.id, error = %e, "could not release an undelivered claim; the reaper will fail it as hung");
        }
    }

    /// Puts a claimed job nobody received back in the queue, as if never claimed.
    async fn release_claim(&self, claim: &Claim) -> StoreResult<()> {
        job::Entity::update_many()
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
        Ok(())
    }
}
