//! The reaper: fails running jobs that stopped reporting and pending jobs nobody picked up, so
//! nothing waits forever, and deletes daemons gone for `daemon_purge_after_secs`, so the
//! registry does not grow forever.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::JobEvents;
use crate::config::ReaperSettings;
use crate::shutdown::Shutdown;
use crate::store::jobs::{ReapPolicy, ReapedJob};
use crate::store::{Store, StoreError, StoreResult, unavailability};

#[derive(Clone)]
pub struct Reaper {
    store: Store,
    events: JobEvents,
    policy: ReapPolicy,
    interval: Duration,
    daemon_purge_after: chrono::Duration,
}

impl Reaper {
    /// Reaps through `events`, so each reaped job has the side effects of any other failure.
    pub fn new(store: Store, events: JobEvents, settings: &ReaperSettings) -> Self {
        // At most a century, so `at - after` can never overflow.
        let secs = |s: u64| chrono::Duration::seconds(s.min(100 * 365 * 24 * 3600) as i64);
        Self {
            events,
            store,
            policy: ReapPolicy {
                hung_after: secs(settings.hung_after_secs),
                pending_after: secs(settings.pending_after_secs),
                max_jobs: settings.max_jobs_per_run,
            },
            interval: Duration::from_secs(settings.interval_secs),
            daemon_purge_after: secs(settings.daemon_purge_after_secs),
        }
    }

    /// One pass as if the time were `at` (tests inject a clock this way).
    pub async fn run_once(&self, at: DateTime<Utc>) -> StoreResult<Vec<ReapedJob>> {
        self.events.reap(at, self.policy).await
    }

    /// Deletes the daemons not seen for `daemon_purge_after_secs` as if the time were `at`.
    pub async fn purge_daemons(&self, at: DateTime<Utc>) -> StoreResult<u64> {
        let purged = self
            .store
            .purge_daemons(at - self.daemon_purge_after)
            .await?;
        if purged > 0 {
            tracing::info!(
                purged,
                "daemons not seen for {} s removed",
                self.daemon_purge_after.num_seconds()
            );
        }
        Ok(purged)
    }

    /// Runs every `interval_secs` until shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let at = crate::domain::now();
            let pass = match self.run_once(at).await {
                Ok(_) => self.purge_daemons(at).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match pass {
                Ok(()) => {}
                // A busy or restarting database passes; the next tick tries again.
                Err(StoreError::Database(db)) if unavailability(&db).is_some() => {
                    tracing::warn!(error = %db, "reaper pass skipped: the database is unavailable; will retry");
                }
                Err(e) => tracing::error!(error = %e, "reaper pass failed; will retry"),
            }
        }
    }
}
