//! The daemon long-poll: claim jobs now, or wait for the dispatcher to offer one (or for the
//! slow backup poll) and try again until the daemon's `wait_seconds` run out or the server
//! shuts down. A waiting daemon claims only when offered a job it can run, or when its kind of
//! daemon is not known to have nothing to run (see `queue::dispatch`).

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::claims::Claims;
use super::dispatch::{Attempt, BACKUP_POLL, Waiter};
use crate::shutdown::Shutdown;
use crate::store::StoreResult;
use crate::store::jobs::{Claim, Claimed, Report, Runnable};

/// What a daemon asks for: up to `max_jobs` jobs, waiting up to `wait`.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub daemon_id: Uuid,
    /// The daemon's name, for the log line of each job it acquires.
    pub daemon_name: &'a str,
    pub runnable: &'a Runnable,
    pub max_jobs: usize,
    pub wait: Duration,
}

/// Claims one job for the asking daemon, waiting up to `ask.wait` for one to appear (each job
/// handed out is a [`super::JobEvents`] acquire). `None`: nothing came,
/// the server is shutting down, or `gone` resolved (the daemon hung up: a job claimed now could
/// never reach it).
pub async fn acquire(
    claims: &Claims,
    shutdown: &Shutdown,
    gone: impl std::future::Future<Output = ()>,
    ask: &Ask<'_>,
) -> StoreResult<Option<Claim>> {
    let one = Ask {
        max_jobs: 1,
        ..ask.clone()
    };
    Ok(acquire_many(claims, shutdown, gone, &one, Vec::new())
        .await?
        .1
        .claims
        .pop())
}

/// Claims up to `ask.max_jobs` jobs, first finishing `reports` in the same transaction (their
/// jobs are returned). Waits as [`acquire`] does when nothing is claimable; the reports are
/// committed before any wait.
#[tracing::instrument(skip_all, fields(daemon_id = %ask.daemon_id))]
pub async fn acquire_many(
    claims: &Claims,
    shutdown: &Shutdown,
    gone: impl std::future::Future<Output = ()>,
    ask: &Ask<'_>,
    reports: Vec<Report>,
) -> StoreResult<(Vec<crate::domain::job::Job>, Claimed)> {
    tokio::pin!(gone);
    let deadline = Instant::now() + ask.wait;
    let waiter = claims
        .events()
        .wakeups()
        .dispatcher()
        .register(ask.runnable);
    let mut finished = Vec::new();
    let mut reports = reports;
    loop {
        let mut attempt = waiter.begin();
        // A daemon that will not wait gets an answer from the database, not from the hints.
        attempt.claim |= ask.wait.is_zero();
        let claimed = if !reports.is_empty() {
            // Report and claim in one statement; or, when this kind of daemon is known to have
            // nothing to run, the reports alone (a claim would find nothing; the daemon then
            // waits for a hint).
            let k = if attempt.claim { ask.max_jobs } else { 0 };
            let (done, claimed) = claims
                .store()
                .finish_and_claim(&reports, ask.daemon_id, ask.runnable, k)
                .await?;
            reports.clear();
            for job in &done {
                claims.events().finished(job);
            }
            finished = done;
            attempt.claim.then_some(claimed)
        } else if attempt.claim {
            Some(
                claims
                    .claim_jobs(ask.daemon_id, ask.runnable, ask.max_jobs)
                    .await?,
            )
        } else {
            None
        };
        if let Some(claimed) = claimed {
            let ids: Vec<Uuid> = claimed.claims.iter().map(|c| c.job.id).collect();
            waiter.end(&mut attempt, &ids, claimed.more);
            if !ids.is_empty() {
                for claim in &claimed.claims {
                    claims
                        .events()
                        .acquired(&claim.job, ask.daemon_name, ask.daemon_id);
                }
                return Ok((finished, claimed));
            }
        }
        if !sleep(&waiter, &attempt, deadline, shutdown, &mut gone).await {
            return Ok((finished, Claimed::default()));
        }
    }
}

/// Sleeps until offered a hint, the backup poll, the deadline, shutdown or hang-up; returns at
/// once if a hint arrived since `attempt` began. `false`: stop (deadline, shutdown, hang-up).
async fn sleep(
    waiter: &Waiter,
    attempt: &Attempt,
    deadline: Instant,
    shutdown: &Shutdown,
    gone: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    let Some(notified) = waiter.sleep(attempt) else {
        return true;
    };
    let nap = (deadline - now).min(BACKUP_POLL);
    let keep_going = tokio::select! {
        () = notified => true,
        () = tokio::time::sleep(nap) => Instant::now() < deadline,
        () = shutdown.cancelled() => false,
        () = gone.as_mut() => false,
    };
    waiter.wake_up();
    keep_going
}
