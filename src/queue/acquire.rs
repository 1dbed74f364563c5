//! The daemon long-poll: claim a job now, or wait for a wake-up (or the slow backup poll) and
//! try again until the daemon's `wait_seconds` run out or the server shuts down.

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::Wakeups;
use crate::shutdown::Shutdown;
use crate::store::jobs::{Claim, Runnable};
use crate::store::{Store, StoreResult};

/// How often a waiting daemon looks for work even without a wake-up (lost notifications).
pub const BACKUP_POLL: Duration = Duration::from_secs(5);

/// Claims a job for `daemon_id`, waiting up to `wait` for one to appear. `None`: nothing came,
/// the server is shutting down, or `gone` resolved (the daemon hung up: a job claimed now could
/// never reach it).
pub async fn acquire(
    store: &Store,
    wakeups: &Wakeups,
    shutdown: &Shutdown,
    gone: impl std::future::Future<Output = ()>,
    daemon_id: Uuid,
    runnable: &Runnable,
    wait: Duration,
) -> StoreResult<Option<Claim>> {
    tokio::pin!(gone);
    let deadline = Instant::now() + wait;
    loop {
        let notified = wakeups.job_notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(claim) = store.claim_job(daemon_id, runnable).await? {
            return Ok(Some(claim));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let nap = (deadline - now).min(BACKUP_POLL);
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(nap) => {}
            () = shutdown.cancelled() => return Ok(None),
            () = &mut gone => return Ok(None),
        }
    }
}
