//! Wake-ups: a new job is offered to one waiting daemon that can run it (`queue::dispatch`), a
//! job event (new logs, finished) wakes log followers. In-process they are function calls and
//! tokio channels; with PostgreSQL they also travel between replicas over `LISTEN/NOTIFY` (the
//! replica's one listener, `queue::notifier`), so each replica offers a new job to one of its
//! own waiting daemons.
//!
//! NOTIFY is sent outside the enqueue transaction (PostgreSQL serialises the commits of
//! transactions that notify) and coalesced: the job hints queued while one NOTIFY is on its way
//! travel together in the next. Wake-ups are hints; waiters also poll slowly in case one is
//! lost (a listener reconnecting, say).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use super::dispatch::{Dispatcher, Hint, JobHint};
use super::notifier::{Heard, Notifier, Subscription};
use crate::domain::job::Job;
use crate::domain::tags::Tags;
use crate::shutdown::Shutdown;
use crate::store::Store;

const JOBS_CHANNEL: &str = "provq_jobs";
const EVENTS_CHANNEL: &str = "provq_job_events";
/// Job ids per event NOTIFY: 37 bytes each stays well under PostgreSQL's 8000-byte payload.
const EVENTS_PER_NOTIFY: usize = 150;
/// Bytes of job hints per NOTIFY, under PostgreSQL's 8000-byte payload.
const HINT_BYTES_PER_NOTIFY: usize = 7000;

#[derive(Clone)]
pub struct Wakeups {
    inner: Arc<Inner>,
}

struct Inner {
    dispatcher: Arc<Dispatcher>,
    events: broadcast::Sender<Uuid>,
    /// Set when a NOTIFY should be sent to the other replicas (PostgreSQL only).
    remote: Option<Remote>,
}

struct Remote {
    /// Names this replica in its own NOTIFYs, which its listener then skips.
    replica: Uuid,
    jobs_pending: Mutex<Vec<Hint>>,
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
                dispatcher: Arc::new(Dispatcher::default()),
                events,
                remote,
            }),
        }
    }

    /// Wake-ups shared by every replica on one PostgreSQL database: subscribes to the replica's
    /// listener and starts the coalescing sender, both stopped by `shutdown`.
    pub fn postgres(store: Store, notifier: &mut Notifier, shutdown: Shutdown) -> Self {
        let wakeups = Self::build(Some(Remote {
            replica: Uuid::new_v4(),
            jobs_pending: Mutex::new(Vec::new()),
            events_pending: Mutex::new(HashSet::new()),
            kick: Notify::new(),
        }));
        let heard = notifier.subscribe(&[JOBS_CHANNEL, EVENTS_CHANNEL]);
        tokio::spawn(wakeups.clone().listen(heard, shutdown.clone()));
        tokio::spawn(wakeups.clone().notify_loop(store, shutdown));
        wakeups
    }

    /// A job was enqueued: offer it to one waiting daemon here, and to one on every other
    /// replica.
    pub fn job_enqueued(&self, job: &Job) {
        self.offer(Hint::Job(JobHint::of(job)));
    }

    /// Something may have become claimable that no job hint describes (a job put back): every
    /// kind of waiting daemon looks once.
    pub fn job_available(&self) {
        self.offer(Hint::Any);
    }

    fn offer(&self, hint: Hint) {
        self.inner.dispatcher.offer(hint.clone());
        if let Some(remote) = &self.inner.remote {
            remote.jobs_pending.lock().expect("not poisoned").push(hint);
            remote.kick.notify_one();
        }
    }

    /// The waiting daemons of this replica.
    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.inner.dispatcher
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

    pub fn subscribe_events(&self) -> broadcast::Receiver<Uuid> {
        self.inner.events.subscribe()
    }

    async fn notify_loop(self, store: Store, shutdown: Shutdown) {
        let Some(remote) = &self.inner.remote else {
            return;
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = remote.kick.notified() => {}
            }
            // Coalesce: the hints queued meanwhile travel together.
            loop {
                let hints = std::mem::take(&mut *remote.jobs_pending.lock().expect("not poisoned"));
                if hints.is_empty() {
                    break;
                }
                for payload in hint_payloads(remote.replica, &hints) {
                    send_notify(&store, JOBS_CHANNEL, &payload).await;
                }
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
                send_notify(&store, EVENTS_CHANNEL, &join_ids(chunk)).await;
            }
        }
    }

    /// Hands what the listener hears to this replica's waiters until shutdown.
    async fn listen(self, mut heard: Subscription, shutdown: Shutdown) {
        let own = self.inner.remote.as_ref().map(|r| r.replica);
        loop {
            let heard = tokio::select! {
                () = shutdown.cancelled() => return,
                h = heard.recv() => h,
            };
            match heard {
                None => return,
                // Anything sent while nobody listened is lost: every kind of waiter looks again.
                Some(Heard::Listening | Heard::Lost) => self.inner.dispatcher.offer(Hint::Any),
                Some(Heard::Message(n)) if n.channel == JOBS_CHANNEL => {
                    for hint in parse_hints(&n.payload, own) {
                        self.inner.dispatcher.offer(hint);
                    }
                }
                Some(Heard::Message(n)) => {
                    for id in n.payload.split(',') {
                        if let Ok(id) = Uuid::parse_str(id) {
                            let _ = self.inner.events.send(id);
                        }
                    }
                }
            }
        }
    }
}

/// One job hint on the wire: id, organization, provisioner, tags.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireHint(Uuid, Uuid, String, BTreeMap<String, String>);

/// A job-hint NOTIFY payload: the sending replica and its hints (`any`: look once).
#[derive(serde::Serialize, serde::Deserialize)]
struct WireHints {
    replica: Uuid,
    #[serde(default)]
    any: bool,
    #[serde(default)]
    jobs: Vec<WireHint>,
}

/// NOTIFY payloads for `hints`, each under [`HINT_BYTES_PER_NOTIFY`]. A hint too large for a
/// payload of its own travels as `any`.
fn hint_payloads(replica: Uuid, hints: &[Hint]) -> Vec<String> {
    let mut out = Vec::new();
    let empty = || WireHints {
        replica,
        any: false,
        jobs: Vec::new(),
    };
    let mut batch = empty();
    let mut bytes = 0;
    for hint in hints {
        let wire = match hint {
            Hint::Any => None,
            Hint::Job(j) => Some(WireHint(
                j.id,
                j.organization_id,
                j.provisioner.clone(),
                j.tags.as_map().clone(),
            )),
        };
        let size = wire
            .as_ref()
            .and_then(|w| serde_json::to_string(w).ok())
            .map_or(usize::MAX, |s| s.len() + 1);
        match wire {
            Some(w) if size < HINT_BYTES_PER_NOTIFY => {
                if bytes + size > HINT_BYTES_PER_NOTIFY {
                    out.push(serde_json::to_string(&batch).expect("serialisable"));
                    (batch, bytes) = (empty(), 0);
                }
                batch.jobs.push(w);
                bytes += size;
            }
            _ => batch.any = true,
        }
    }
    if batch.any || !batch.jobs.is_empty() {
        out.push(serde_json::to_string(&batch).expect("serialisable"));
    }
    out
}

/// The hints of a job-hint payload, unless this replica sent it. An unreadable payload (an
/// older replica's) is one `Any`.
fn parse_hints(payload: &str, own: Option<Uuid>) -> Vec<Hint> {
    let Ok(wire) = serde_json::from_str::<WireHints>(payload) else {
        return vec![Hint::Any];
    };
    if Some(wire.replica) == own {
        return Vec::new();
    }
    let mut hints: Vec<Hint> = wire
        .jobs
        .into_iter()
        .map(|WireHint(id, organization_id, provisioner, tags)| {
            Hint::Job(JobHint {
                id,
                organization_id,
                provisioner,
                tags: Tags::from_stored(tags),
            })
        })
        .collect();
    if wire.any {
        hints.push(Hint::Any);
    }
    hints
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

async fn send_notify(store: &Store, channel: &str, payload: &str) {
    if let Err(e) = store.notify(channel, payload).await {
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

    #[test]
    fn job_hints_travel_in_payloads_under_the_limit_and_skip_their_sender() {
        let hints: Vec<Hint> = (0..500)
            .map(|i| {
                Hint::Job(JobHint {
                    id: Uuid::new_v4(),
                    organization_id: Uuid::new_v4(),
                    provisioner: "terraform".into(),
                    tags: Tags::from_stored([("pool".to_string(), format!("p{i}"))].into()),
                })
            })
            .collect();
        let me = Uuid::new_v4();
        let payloads = hint_payloads(me, &hints);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() < 8000));
        let back: Vec<Hint> = payloads
            .iter()
            .flat_map(|p| parse_hints(p, Some(Uuid::new_v4())))
            .collect();
        assert_eq!(back, hints);
        assert!(payloads.iter().all(|p| parse_hints(p, Some(me)).is_empty()));
        assert_eq!(parse_hints("", None), [Hint::Any]);
    }
}
