//! This replica's heartbeat and the periodic refresh: one loop, stopped by the shutdown signal.

use std::time::Duration;

use super::{Entitlements, REFRESH_INTERVAL};
use crate::domain::now;
use crate::shutdown::Shutdown;
use crate::store::StoreResult;

/// How often a replica refreshes its row in `replicas`.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// A replica whose row is older than this counts as gone (three missed heartbeats).
pub const LIVE_WINDOW: chrono::Duration = chrono::Duration::seconds(30);

impl Entitlements {
    /// One heartbeat: refreshes this replica's row and recomputes the entitlements when the
    /// number of live replicas changed (a replica started or died).
    pub async fn beat(&self) -> StoreResult<()> {
        let at = self.heartbeat_row().await?;
        let live = self
            .inner
            .store
            .live_replica_count(at - LIVE_WINDOW)
            .await?;
        if live != self.current().live_replicas {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Refreshes this replica's row; returns the time it wrote.
    pub(super) async fn heartbeat_row(&self) -> StoreResult<chrono::DateTime<chrono::Utc>> {
        let at = now();
        self.inner
            .store
            .heartbeat_replica(self.replica_id(), &hostname(), at)
            .await?;
        Ok(at)
    }
}

/// Heartbeats every [`HEARTBEAT_INTERVAL`] and recomputes every [`REFRESH_INTERVAL`].
pub(super) async fn run(entitlements: Entitlements, shutdown: Shutdown) {
    let start = tokio::time::Instant::now();
    let mut heartbeat = tokio::time::interval_at(start + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
    let mut refresh = tokio::time::interval_at(start + REFRESH_INTERVAL, REFRESH_INTERVAL);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = heartbeat.tick() => {
                if let Err(e) = entitlements.beat().await {
                    tracing::warn!(error = %e, "replica heartbeat failed; will retry");
                }
            }
            _ = refresh.tick() => entitlements.refresh_logged("periodic").await,
        }
    }
}

/// The machine's name, for operators reading the `replicas` table.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}
