//! The entitlements this replica serves: a snapshot computed from the stored licenses, recomputed
//! at start, every [`REFRESH_INTERVAL`], when the number of live replicas changes, when it is
//! shown and the number of active users changed, after a license is added or deleted (here, and
//! on every other replica through PostgreSQL `NOTIFY provq_entitlements`), and on
//! `POST /licenses/refresh-entitlements`.
//!
//! Requests read the snapshot (a cheap `Arc` clone), so gating never waits for the database.

mod notify;
mod replica;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::domain::license::entitlements::USER_LIMIT;
use crate::domain::license::{LicenseKeys, Snapshot, StoredLicense, Usage, compute};
use crate::domain::now;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreResult};

pub use replica::{HEARTBEAT_INTERVAL, LIVE_WINDOW};

/// How often every replica recomputes even without a change (licenses expire by themselves).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Rows of replicas gone for this long are deleted when a replica starts.
const FORGET_REPLICAS_AFTER: chrono::Duration = chrono::Duration::days(1);

/// The most [`Entitlements::stop`] takes at shutdown.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// `refresh-entitlements` may be forced at most this often per replica (as in Coder).
pub const FORCED_REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Handle to this replica's entitlements; cheap to clone.
#[derive(Clone)]
pub struct Entitlements {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    keys: LicenseKeys,
    replica_id: Uuid,
    /// Whether other replicas may exist and must be told about license changes.
    postgres: bool,
    /// What the replica's listener hears on [`notify::CHANNEL`] (PostgreSQL), until `start`.
    heard: Mutex<Option<crate::queue::notifier::Subscription>>,
    snapshot: RwLock<Arc<Snapshot>>,
    last_forced: Mutex<Option<Instant>>,
    /// Serialises recomputations so an older result never overwrites a newer one.
    recompute: tokio::sync::Mutex<()>,
    background: Mutex<Option<JoinHandle<()>>>,
}

impl Entitlements {
    /// A handle serving the unlicensed snapshot until [`Entitlements::start`] runs. With the
    /// replica's `notifier` (PostgreSQL), license changes travel between replicas.
    pub fn new(
        store: Store,
        keys: LicenseKeys,
        notifier: Option<&mut crate::queue::notifier::Notifier>,
    ) -> Self {
        let heard = notifier.map(|n| n.subscribe(&[notify::CHANNEL]));
        Self {
            inner: Arc::new(Inner {
                store,
                keys,
                replica_id: Uuid::new_v4(),
                postgres: heard.is_some(),
                heard: Mutex::new(heard),
                snapshot: RwLock::new(Arc::new(compute(now(), &[], Usage::default()))),
                last_forced: Mutex::new(None),
                recompute: tokio::sync::Mutex::new(()),
                background: Mutex::new(None),
            }),
        }
    }

    pub fn keys(&self) -> &LicenseKeys {
        &self.inner.keys
    }

    pub fn replica_id(&self) -> Uuid {
        self.inner.replica_id
    }

    /// The snapshot served right now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.inner.snapshot.read().expect("not poisoned").clone()
    }

    /// The snapshot for `GET /entitlements`: recomputed first when the number of active users
    /// changed since it was computed (one COUNT), so `user_limit.actual` and its warning are
    /// never stale; licenses are not re-verified otherwise.
    pub async fn current_for_display(&self) -> StoreResult<Arc<Snapshot>> {
        let snapshot = self.current();
        let users = self.inner.store.active_user_count().await?;
        if snapshot.feature(USER_LIMIT).actual == Some(users) {
            return Ok(snapshot);
        }
        self.refresh().await
    }

    /// Whether `feature` is entitled or in its grace period.
    pub fn usable(&self, feature: &str) -> bool {
        self.current().feature(feature).usable()
    }

    /// Registers this replica, computes the first snapshot and starts the background loops
    /// (heartbeat and periodic refresh; with PostgreSQL also the listener), all stopped by
    /// `shutdown`.
    pub async fn start(&self, shutdown: Shutdown) -> StoreResult<()> {
        let at = self.heartbeat_row().await?;
        self.inner
            .store
            .prune_replicas(at - FORGET_REPLICAS_AFTER)
            .await?;
        self.refresh().await?;
        let mut tasks = vec![tokio::spawn(replica::run(self.clone(), shutdown.clone()))];
        let heard = self.inner.heard.lock().expect("not poisoned").take();
        if let Some(heard) = heard {
            tasks.push(tokio::spawn(notify::listen(self.clone(), heard, shutdown)));
        }
        let all = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
        });
        *self.inner.background.lock().expect("not poisoned") = Some(all);
        Ok(())
    }

    /// After shutdown: waits for the loops, then removes this replica's row so the others (and
    /// this replica's successor) stop counting it at once. Bounded by [`STOP_TIMEOUT`] in all:
    /// a database that does not answer leaves the row to age out of [`LIVE_WINDOW`] instead.
    pub async fn stop(&self) {
        let background = self.inner.background.lock().expect("not poisoned").take();
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        if let Some(handle) = background {
            let _ = tokio::time::timeout_at(deadline, handle).await;
        }
        let removed =
            tokio::time::timeout_at(deadline, self.inner.store.remove_replica(self.replica_id()))
                .await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot remove this replica's row; it ages out instead")
            }
            Err(_) => tracing::warn!("removing this replica's row timed out; it ages out instead"),
        }
    }

    /// Recomputes the snapshot from the database.
    pub async fn refresh(&self) -> StoreResult<Arc<Snapshot>> {
        let _one_at_a_time = self.inner.recompute.lock().await;
        let store = &self.inner.store;
        let at = now();
        let licenses: Vec<StoredLicense> = store
            .unexpired_licenses(at)
            .await?
            .into_iter()
            .map(|row| StoredLicense {
                uuid: row.uuid,
                verdict: self.inner.keys.verify(&row.jwt, at),
            })
            .collect();
        let usage = Usage {
            active_users: store.active_user_count().await?,
            live_replicas: store.live_replica_count(at - LIVE_WINDOW).await?,
        };
        let snapshot = Arc::new(compute(at, &licenses, usage));
        *self.inner.snapshot.write().expect("not poisoned") = snapshot.clone();
        Ok(snapshot)
    }

    /// Called after a license was added or deleted: recompute here, tell the other replicas.
    /// The change is already stored, so a failed recompute is logged, not reported: the next
    /// refresh catches up.
    pub async fn licenses_changed(&self) {
        self.refresh_logged("licenses changed").await;
        self.announce().await;
    }

    /// Claims the forced-refresh slot; `Err(wait)` when the last forced refresh on this replica
    /// was less than [`FORCED_REFRESH_EVERY`] ago.
    pub fn try_force(&self) -> Result<(), Duration> {
        let mut last = self.inner.last_forced.lock().expect("not poisoned");
        let now = Instant::now();
        if let Some(at) = *last {
            let elapsed = now.duration_since(at);
            if elapsed < FORCED_REFRESH_EVERY {
                return Err(FORCED_REFRESH_EVERY - elapsed);
            }
        }
        *last = Some(now);
        Ok(())
    }

    /// `refresh-entitlements`: heartbeat now (so the replica count is fresh), recompute, and
    /// have every other replica recompute too.
    pub async fn force_refresh(&self) -> StoreResult<Arc<Snapshot>> {
        self.beat().await?;
        let snapshot = self.refresh().await?;
        self.announce().await;
        Ok(snapshot)
    }

    async fn announce(&self) {
        if self.inner.postgres {
            notify::announce(self).await;
        }
    }

    /// Logs instead of failing: a background refresh retries at the next occasion.
    async fn refresh_logged(&self, why: &str) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, why, "entitlements refresh failed; serving the previous snapshot");
        }
    }
}
