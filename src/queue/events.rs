//! The side effects of every job state change, in one place (River's completer owns finishing a
//! job the same way): each event records its metrics, wakes whoever waits on the job (a daemon
//! that could run it, a log follower) and logs one line. Handlers, the reaper and the claim
//! batcher call one method per state change, so none of them can forget a part. Each event also
//! records its job's id on the current span (a handler's `job_id` field), so the lines the rest
//! of the request causes carry it.

use std::sync::Arc;

use uuid::Uuid;

use super::Wakeups;
use crate::domain::job::JobStatus;
use crate::entity::provisioner_job;
use crate::metrics::Metrics;
use crate::store::jobs::{ReapedJob, status_of};

/// Cheap to clone; shared by every handler and background loop of a replica.
#[derive(Clone)]
pub struct JobEvents {
    metrics: Arc<Metrics>,
    wakeups: Wakeups,
}

impl JobEvents {
    pub fn new(metrics: Arc<Metrics>, wakeups: Wakeups) -> Self {
        Self { metrics, wakeups }
    }

    pub fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    /// A job was enqueued: offered to one waiting daemon (here and on every replica).
    pub fn enqueued(&self, job: &provisioner_job::Model) {
        record_job(job.id);
        self.metrics.jobs_enqueued.inc();
        self.wakeups.job_enqueued(job);
        tracing::info!(job_id = %job.id, organization_id = %job.organization_id, initiator_id = %job.initiator_id, job_type = %job.job_type, "job enqueued");
    }

    /// A daemon acquired a job.
    pub fn acquired(&self, job: &provisioner_job::Model, daemon_name: &str, daemon_id: Uuid) {
        record_job(job.id);
        self.metrics.job_acquired(job);
        self.wakeups.job_event(job.id);
        tracing::info!(job_id = %job.id, organization_id = %job.organization_id, daemon = %daemon_name, daemon_id = %daemon_id, "job acquired");
    }

    /// A daemon reported progress; `logs`: how many log lines it appended (followers wake only
    /// for new lines).
    pub fn updated(&self, job_id: Uuid, logs: usize) {
        if logs > 0 {
            self.wakeups.job_event(job_id);
        }
        tracing::debug!(job_id = %job_id, logs, "job updated");
    }

    /// A daemon completed or failed a job (a job being canceled completes as canceled).
    pub fn finished(&self, job: &provisioner_job::Model) {
        record_job(job.id);
        self.metrics.job_finished(job);
        self.wakeups.job_event(job.id);
        match status_of(job) {
            JobStatus::Failed => {
                tracing::info!(job_id = %job.id, organization_id = %job.organization_id, error = %job.error.as_deref().unwrap_or_default(), "job failed")
            }
            status => {
                tracing::info!(job_id = %job.id, organization_id = %job.organization_id, status = %status, "job completed")
            }
        }
    }

    /// A user canceled a job (pending → canceled, running → canceling).
    pub fn canceled(&self, job: &provisioner_job::Model, by: &str) {
        record_job(job.id);
        self.canceled_quietly(job);
        tracing::info!(job_id = %job.id, organization_id = %job.organization_id, by = %by, "job canceled");
    }

    /// One job of a bulk cancel: metrics and wake-ups; the bulk cancel logs one line for all
    /// of them ([`JobEvents::canceled_in_bulk`]).
    pub fn canceled_quietly(&self, job: &provisioner_job::Model) {
        self.metrics.job_finished(job);
        self.wakeups.job_event(job.id);
    }

    /// The line of a bulk cancel, after its jobs' [`JobEvents::canceled_quietly`].
    pub fn canceled_in_bulk(&self, organization_id: Uuid, count: usize, by: &str) {
        tracing::info!(organization_id = %organization_id, count, by = %by, "jobs canceled in bulk");
    }

    /// The reaper failed a job that stopped reporting or that nobody picked up.
    pub fn reaped(&self, job: &ReapedJob) {
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
    pub fn put_back(&self, job_id: Uuid) {
        self.wakeups.job_available();
        self.wakeups.job_event(job_id);
        tracing::info!(job_id = %job_id, "undelivered claim put back in the queue");
    }
}

/// Puts `job_id` on the current span, if it has that field (handlers about a job declare it).
fn record_job(job_id: Uuid) {
    tracing::Span::current().record("job_id", tracing::field::display(job_id));
}
