//! Wake-ups: a new job wakes waiting daemons, a job event (new logs, finished) wakes log
//! followers. In-process they are tokio notifications; with PostgreSQL they also travel between
//! replicas over `LISTEN/NOTIFY`.
//!
//! NOTIFY is sent outside the enqueue transaction (PostgreSQL serialises the commits of
//! transactions that notify) and coalesced: however many jobs are enqueued while one NOTIFY is
//! on its way, one more follows. Wake-ups are hints; waiters also poll slowly in case one is
//! lost (a listener reconnecting, say).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use crate::shutdown::Shutdown;

const JOBS_CHANNEL: &str = "provq_jobs";
const EVENTS_CHANNEL: &str = "provq_job_events";
/// Job ids per event NOTIFY: 37 bytes each stays well under PostgreSQL's 8000-byte payload.
const EVENTS_PER_NOTIFY: usize = 150;

#[derive(Clone)]
pub struct Wakeups {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Notify,
    events: broadcast::Sender<Uuid>,
    /// Set when a NOTIFY should be sent to the other replicas (PostgreSQL only).
    remote: Option<Remote>,
}

struct Remote {
    job_pending: AtomicBool,
    events_pending: Mutex<HashSet<Uuid>>,
    kick: Notify,
}

impl Wakeups {
    /// Wake-ups within this process only (SQLite: one process owns the database).
    pub fn local() -> Self {
        Self::build(None)
    }

    fn build(remote: Option<Remote>) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Inner {
                jobs: Notify::new(),
                events,
                remote,
            }),
        }
    }

    /// Wake-ups shared by every replica on one PostgreSQL database: starts the listener and the
    /// coalescing notifier, both stopped by `shutdown`.
    pub fn postgres(db: DatabaseConnection, shutdown: Shutdown) -> Self {
        let wakeups = Self::build(Some(Remote {
            job_pending: AtomicBool::new(false),
            events_pending: Mutex::new(HashSet::new()),
            kick: Notify::new(),
        }));
        tokio::spawn(wakeups.clone().listen(db.clone(), shutdown.clone()));
        tokio::spawn(wakeups.clone().notify_loop(db, shutdown));
        wakeups
    }

    /// A job was enqueued (or became claimable): wake waiting daemons here and elsewhere.
    pub fn job_available(&self) {
        self.inner.jobs.notify_waiters();
        if let Some(remote) = &self.inner.remote {
            remote.job_pending.store(true, Ordering::Release);
            remote.kick.notify_one();
        }
    }

    /// Something happened to a job (logs appended, finished, canceled).
    pub fn job_event(&self, id: Uuid) {
        let _ = self.inner.events.send(id);
        if let Some(remote) = &self.inner.remote {
            remote
                .events_pending
                .lock()
                .expect("not poisoned")
                .insert(id);
            remote.kick.notify_one();
        }
    }

    /// A future resolved by the next `job_available`. Create it (and `enable` it) *before*
    /// checking for work, so a job enqueued in between is not missed.
    pub fn job_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.jobs.notified()
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<Uuid> {
        self.inner.events.subscribe()
    }

    async fn notify_loop(self, db: DatabaseConnection, shutdown: Shutdown) {
        let Some(remote) = &self.inner.remote else {
            return;
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = remote.kick.notified() => {}
            }
            // Coalesce: one NOTIFY covers every enqueue that happened before it was sent.
            while remote.job_pending.swap(false, Ordering::AcqRel) {
                send_notify(&db, JOBS_CHANNEL, "").await;
            }
            let events: Vec<Uuid> = remote
                .events_pending
                .lock()
                .expect("not poisoned")
                .drain()
                .collect();
            // Many events per NOTIFY: each one is a commit that serialises with every other
            // NOTIFY, so one per event would cap the whole queue's throughput.
            for chunk in events.chunks(EVENTS_PER_NOTIFY) {
                send_notify(&db, EVENTS_CHANNEL, &join_ids(chunk)).await;
            }
        }
    }

    async fn listen(self, db: DatabaseConnection, shutdown: Shutdown) {
        loop {
            match self.listen_once(&db, &shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    // Anything sent meanwhile is lost: let every waiter look again.
                    self.inner.jobs.notify_waiters();
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn listen_once(
        &self,
        db: &DatabaseConnection,
        shutdown: &Shutdown,
    ) -> Result<(), sea_orm::sqlx::Error> {
        let mut listener = PgListener::connect_with(db.get_postgres_connection_pool()).await?;
        listener.ignore_pool_close_event(true);
        listener.listen_all([JOBS_CHANNEL, EVENTS_CHANNEL]).await?;
        // Jobs may have arrived while we were not listening.
        self.inner.jobs.notify_waiters();
        loop {
            let notification = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                n = listener.recv() => n?,
            };
            if notification.channel() == JOBS_CHANNEL {
                self.inner.jobs.notify_waiters();
            } else {
                for id in notification.payload().split(',') {
                    if let Ok(id) = Uuid::parse_str(id) {
                        let _ = self.inner.events.send(id);
                    }
                }
            }
        }
    }
}

/// Comma-separated ids: one event NOTIFY payload.
fn join_ids(ids: &[Uuid]) -> String {
    let mut out = String::with_capacity(ids.len() * 37);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out
}

async fn send_notify(db: &DatabaseConnection, channel: &str, payload: &str) {
    let stmt = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [channel.into(), payload.into()],
    );
    if let Err(e) = db.execute_raw(stmt).await {
        tracing::warn!(error = %e, channel, "NOTIFY failed; waiters fall back to polling");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_event_batch_fits_one_notify_payload() {
        let ids: Vec<Uuid> = (0..EVENTS_PER_NOTIFY).map(|_| Uuid::new_v4()).collect();
        let payload = join_ids(&ids);
        assert!(payload.len() < 8000, "{} bytes", payload.len());
        let back: Vec<Uuid> = payload.split(',').map(|s| s.parse().unwrap()).collect();
        assert_eq!(back, ids);
    }
}
