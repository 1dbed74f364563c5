//! The acquire loop and the job slots it fills. Each call to `POST /provisionerd/acquire-jobs`
//! asks for as many jobs as slots are free and carries the reports of every job that finished
//! since the last call, so a daemon whose slots are busy makes at most one call per job, and
//! one call per batch when jobs end together. A job that ends while a call is already
//! waiting for work is reported on its own (the waiting call cannot carry it), as is a report
//! whose call got no answer: `/complete` and `/fail` with their retries.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinError, JoinSet};

use super::Daemon;
use super::job::Finished;
use super::reporter::{Failure, brief, classify};
use crate::cli::client::ClientError;
use crate::cli::worker_client::{AcquireJobsRequest, AcquireRequest, AcquiredJob};
use crate::shutdown::Shutdown;

/// First and longest wait between acquire attempts while the server is unreachable.
const ACQUIRE_RETRY_FIRST: Duration = Duration::from_secs(1);
const ACQUIRE_RETRY_MAX: Duration = Duration::from_secs(60);
/// Most jobs the server hands out in one call (`max_jobs`).
const MAX_JOBS_PER_CALL: usize = 32;
/// How long a call may be out before it counts as waiting for work: a call that finds jobs
/// answers within milliseconds, and the reports of jobs that end meanwhile ride on the next one
/// instead of going alone.
const REPORT_GRACE: Duration = Duration::from_millis(50);

/// `base` with ±25 % of random jitter, so a fleet of daemons does not retry in step.
fn jittered(base: Duration) -> Duration {
    use rand::Rng;
    base.mul_f64(rand::rng().random_range(0.75..1.25))
}

/// The daemon's job slots: the jobs running, the reports waiting for the next acquire, and the
/// reports sent on their own.
pub struct Slots {
    daemon: Arc<Daemon>,
    concurrency: usize,
    /// One task per running job; it ends with the job's report (`None`: lease lost).
    running: JoinSet<Option<Finished>>,
    /// Finished jobs whose report rides on the next acquire, oldest first.
    pending: VecDeque<Finished>,
    /// Reports sent on their own (`/complete`, `/fail`).
    reporting: JoinSet<()>,
}

impl Slots {
    pub fn new(daemon: Arc<Daemon>, concurrency: usize) -> Self {
        Self {
            daemon,
            concurrency,
            running: JoinSet::new(),
            pending: VecDeque::new(),
            reporting: JoinSet::new(),
        }
    }

    fn free(&self) -> usize {
        self.concurrency.saturating_sub(self.running.len())
    }

    fn start(&mut self, job: AcquiredJob) {
        let daemon = self.daemon.clone();
        self.running
            .spawn(async move { daemon.run_job(job.into()).await });
    }

    /// A job task ended: its report, if it has one to send.
    fn ended(result: Result<Option<Finished>, JoinError>) -> Option<Finished> {
        match result {
            Ok(finished) => finished,
            Err(e) => {
                say!("a job task ended abnormally: {e}");
                None
            }
        }
    }

    /// Reports `finished` on its own, with retries.
    fn report_alone(&mut self, finished: Finished, maybe_applied: bool) {
        let daemon = self.daemon.clone();
        self.reporting.spawn(async move {
            daemon.reporter.finish(&finished, maybe_applied).await;
        });
    }

    /// Takes what ended without waiting.
    fn collect(&mut self) {
        while let Some(result) = self.running.try_join_next() {
            if let Some(finished) = Self::ended(result) {
                self.pending.push_back(finished);
            }
        }
        while self.reporting.try_join_next().is_some() {}
    }

    /// Acquires and runs jobs until `stop`; returns then (running jobs go on: see
    /// [`Slots::drain`]). Fails on an answer that retrying cannot fix (e.g. a 401).
    pub async fn run(
        &mut self,
        request: &AcquireRequest,
        url: &str,
        stop: &Shutdown,
    ) -> anyhow::Result<()> {
        // While the server is unreachable: the next wait, and the reason last reported (one line
        // per change, not one per attempt).
        let mut retry = ACQUIRE_RETRY_FIRST;
        let mut outage: Option<String> = None;
        loop {
            self.collect();
            if self.free() == 0 {
                // Every slot is busy: wait for a job to end.
                tokio::select! {
                    Some(result) = self.running.join_next() => {
                        if let Some(finished) = Self::ended(result) {
                            self.pending.push_back(finished);
                        }
                        continue;
                    }
                    () = stop.cancelled() => return Ok(()),
                }
            }
            // Every finished job waiting rides on this call (up to the server's limit).
            let take = self.pending.len().min(MAX_JOBS_PER_CALL);
            let reports: Vec<Finished> = self.pending.drain(..take).collect();
            let mut ask = AcquireJobsRequest {
                daemon: request.clone(),
                max_jobs: Some(self.free().min(MAX_JOBS_PER_CALL) as i64),
                report: None,
                reports: (!reports.is_empty())
                    .then(|| reports.iter().map(Finished::report).collect()),
            };
            if !self.pending.is_empty() {
                // More reports to deliver: take what is there and come back at once.
                ask.daemon.wait_seconds = Some(0);
            }
            let Some(answer) = self.call(&ask, stop).await else {
                for finished in reports {
                    self.report_alone(finished, true);
                }
                return Ok(());
            };
            if answer.is_ok()
                && let Some(reason) = outage.take()
            {
                say!("the server answers again (it was: {reason}); waiting for jobs");
                retry = ACQUIRE_RETRY_FIRST;
            }
            let error = match answer {
                Ok(answer) => {
                    for f in &reports {
                        say!(
                            "job {} reported ({}) with the next acquire",
                            f.job_id,
                            f.action()
                        );
                    }
                    for job in answer.jobs {
                        self.start(job);
                    }
                    continue;
                }
                Err(e) => e,
            };
            let failure = classify(&error);
            if !reports.is_empty() {
                match failure {
                    // All or nothing: one stale lease refused every report of the call. Each
                    // goes alone now, so the others still land and the stale one is dropped.
                    Failure::LeaseLost | Failure::Rejected => {
                        for finished in reports {
                            self.report_alone(finished, false);
                        }
                        continue;
                    }
                    Failure::Transient(_) => {
                        for finished in reports {
                            self.report_alone(finished, true);
                        }
                    }
                }
            }
            let Failure::Transient(_) = failure else {
                return Err(error.into());
            };
            // The server is away: every waiting report retries on its own until its deadline.
            while let Some(finished) = self.pending.pop_front() {
                self.report_alone(finished, false);
            }
            let reason = brief(&error);
            if outage.as_deref() != Some(reason.as_str()) {
                say!(
                    "cannot acquire from {url}: {reason}; retrying with backoff (up to {}s)",
                    ACQUIRE_RETRY_MAX.as_secs()
                );
                outage = Some(reason);
            }
            let delay = jittered(retry);
            retry = (retry * 2).min(ACQUIRE_RETRY_MAX);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return Ok(()),
            }
        }
    }

    /// One acquire; `None` when `stop` came first (the call is abandoned). A job that ends
    /// while the call is out is kept for the next call; once the call has been out for
    /// [`REPORT_GRACE`] it is waiting for work, and what ended (and ends) meanwhile is reported
    /// on its own. A call that does not wait keeps everything for the next one.
    async fn call(
        &mut self,
        ask: &AcquireJobsRequest,
        stop: &Shutdown,
    ) -> Option<Result<crate::cli::worker_client::AcquireJobsResponse, ClientError>> {
        let worker = self.daemon.worker.clone();
        let waits = ask.daemon.wait_seconds.unwrap_or(super::WAIT_SECONDS) > 0;
        let call = worker.acquire_jobs(ask);
        tokio::pin!(call);
        let grace = tokio::time::sleep(REPORT_GRACE);
        tokio::pin!(grace);
        let mut waiting = false;
        loop {
            tokio::select! {
                answer = &mut call => return Some(answer),
                Some(result) = self.running.join_next() => {
                    let Some(finished) = Self::ended(result) else { continue };
                    if waiting {
                        self.report_alone(finished, false);
                    } else {
                        self.pending.push_back(finished);
                    }
                }
                () = &mut grace, if waits && !waiting => {
                    waiting = true;
                    while let Some(finished) = self.pending.pop_front() {
                        self.report_alone(finished, false);
                    }
                }
                () = stop.cancelled() => return None,
            }
        }
    }

    /// After the loop: reports what waits, lets running jobs end and report, and waits for every
    /// report. Cancel-safe: a timed-out drain can be called again.
    pub async fn drain(&mut self) {
        while let Some(finished) = self.pending.pop_front() {
            self.report_alone(finished, false);
        }
        while let Some(result) = self.running.join_next().await {
            if let Some(finished) = Self::ended(result) {
                self.report_alone(finished, false);
            }
        }
        while self.reporting.join_next().await.is_some() {}
    }
}
