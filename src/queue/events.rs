//! Every job state change with its side effects, in one place (River's completer owns finishing
//! a job the same way): each operation runs the store's statement, then records its metrics,
//! wakes whoever waits on the job (a daemon that could run it, a log follower) and logs one
//! line. Handlers, the long-poll, the reaper and the claim batcher change jobs only through
//! here, so none of them can forget a part. An enqueue and an
//! acquire also record the job's id on the current span (a handler's empty `job_id` field), so
//! the lines the rest of the request causes carry it.

use std::sync::Arc;

use uuid::Uuid;

use super::Wakeups;
use crate::domain::job::{ErrorCode, Job, JobStatus};
use crate::domain::job_query::JobFilter;
use crate::metrics::Metrics;
use crate::store::jobs::{Heartbeat, NewJob, ReapPolicy, ReapedJob};
use crate::store::logs::NewLog;
use crate::store::{Store, StoreResult};

/// Cheap to clone; shared by every handler and background loop of a replica.
#[derive(Clone)]
pub struct JobEvents {
    store: Store,
    metrics: Arc<Metrics>,
    wakeups: Wakeups,
}

impl JobEvents {
    pub fn new(store: Store, metrics: Arc<Metrics>, wakeups: Wakeups) -> Self {
        Self {
            store,
            metrics,
            wakeups,
        }
    }

    pub fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    /// Enqueues a job and offers it to one waiting daemon (here and on every replica).
    pub async fn enqueue(&self, new: NewJob) -> StoreResult<Job> {
        let job = self.store.enqueue_job(new).await?;
        self.enqueued(&job);
        Ok(job)
    }

    /// A daemon's heartbeat with optional log lines (see `Store::heartbeat_job`).
    pub async fn update(
        &self,
        job_id: Uuid,
        organization: Option<Uuid>,
        lease_token: &str,
        logs: Vec<NewLog>,
    ) -> StoreResult<Heartbeat> {
        let lines = logs.len();
        let beat = self
            .store
            .heartbeat_job(job_id, organization, lease_token, logs)
            .await?;
        self.updated(job_id, lines);
        Ok(beat)
    }

    /// A daemon completes (`error: None`) or fails its job (see `Store::finish_job`).
    pub async fn finish(
        &self,
        job_id: Uuid,
        organization: Option<Uuid>,
        lease_token: &str,
        error: Option<(String, Option<ErrorCode>)>,
    ) -> StoreResult<Job> {
        let job = self
            .store
            .finish_job(job_id, organization, lease_token, error)
            .await?;
        self.finished(&job);
        Ok(job)
    }

    /// A user cancels a job (pending → canceled, running → canceling); `by` names them.
    pub async fn cancel(
        &self,
        organization_id: Uuid,
        job_id: Uuid,
        expect: Option<JobStatus>,
        by: &str,
    ) -> StoreResult<Job> {
        let job = self
            .store
            .cancel_job(organization_id, job_id, expect)
            .await?;
        self.canceled(&job, by);
        Ok(job)
    }

    /// A user cancels every pending or running job `filter` matches; each chunk's jobs wake
    /// their waiters as soon as it is committed. The ids of the canceled jobs.
    pub async fn cancel_many(
        &self,
        organization_id: Uuid,
        filter: &JobFilter,
        by: &str,
    ) -> StoreResult<Vec<Uuid>> {
        let canceled = self
            .store
            .cancel_jobs(organization_id, filter, |chunk| {
                for job in chunk {
                    self.metrics.job_finished(job);
                    self.wakeups.job_event(job.id);
                }
            })
            .await?;
        tracing::info!(organization_id = %organization_id, count = canceled.len(), by = %by, "jobs canceled in bulk");
        Ok(canceled)
    }

    /// One reaper pass as if the time were `at`.
    pub async fn reap(
        &self,
        at: chrono::DateTime<chrono::Utc>,
        policy: ReapPolicy,
    ) -> StoreResult<Vec<ReapedJob>> {
        let reaped = self.store.reap_jobs(at, policy).await?;
        for job in &reaped {
            self.reaped(job);
        }
        Ok(reaped)
    }

    /// A job was enqueued.
    fn enqueued(&self, job: &Job) {
        record_job(job.id);
        self.metrics.jobs_enqueued.inc();
        self.wakeups.job_enqueued(job);
        tracing::info!(job_id = %job.id, organization_id = %job.organization_id, initiator_id = %job.initiator_id, job_type = %job.job_type, "job enqueued");
    }

    /// A daemon acquired a job (claims are made by `queue::claims`, which batches them).
    pub(super) fn acquired(&self, job: &Job, daemon_name: &str, daemon_id: Uuid) {
        record_job(job.id);
        self.metrics.job_acquired(job);
        self.wakeups.job_event(job.id);
        tracing::info!(job_id = %job.id, organization_id = %job.organization_id, daemon = %daemon_name, daemon_id = %daemon_id, "job acquired");
    }

    /// A daemon reported progress; `logs`: how many log lines it appended (followers wake only
    /// for new lines).
    fn updated(&self, job_id: Uuid, logs: usize) {
        if logs > 0 {
            self.wakeups.job_event(job_id);
        }
        tracing::debug!(job_id = %job_id, logs, "job updated");
    }

    /// A daemon completed or failed a job (a job being canceled completes as canceled); also
    /// the report of a report-and-acquire (`queue::acquire`).
    pub(super) fn finished(&self, job: &Job) {
        self.metrics.job_finished(job);
        self.wakeups.job_event(job.id);
        match job.status() {
            JobStatus::Failed => {
                tracing::info!(job_id = %job.id, organization_id = %job.organization_id, error = %job.error.as_deref().unwrap_or_default(), "job failed")
            }
            status => {
                tracing::info!(job_id = %job.id, organization_id = %job.organization_id, status = %status, "job completed")
            }
        }
    }

    fn canceled(&self, job: &Job, by: &str) {
        self.metrics.job_finished(job);
        self.wakeups.job_event(job.id);
        tracing::info!(job_id = %job.id, organization_id = %job.organization_id, by = %by, "job canceled");
    }

    /// The reaper failed a job that stopped reporting or that nobody picked up.
    fn reaped(&self, job: &ReapedJob) {
        self.metrics.job_reaped(job);
        self.wakeups.job_event(job.id);
        tracing::warn!(
            job_id = %job.id,
            organization_id = %job.organization_id,
            reason = job.reason.as_str(),
            "job reaped: {}",
            job.error
        );
    }

    /// A claimed job nobody received went back to the queue: every kind of waiting daemon
    /// looks once, so one that can run it takes it now rather than at its backup poll.
    pub(super) fn put_back(&self, job_id: Uuid) {
        self.wakeups.job_available();
        self.wakeups.job_event(job_id);
        tracing::info!(job_id = %job_id, "undelivered claim put back in the queue");
    }
}

/// Puts `job_id` on the current span, if it has that field: for handlers that learn the job
/// only from the state change (enqueue, acquire), which declare the field empty. Handlers with
/// the job in their path set it themselves; recording it again would print it twice.
fn record_job(job_id: Uuid) {
    tracing::Span::current().record("job_id", tracing::field::display(job_id));
}
