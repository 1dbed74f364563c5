//! The replica's one `LISTEN` connection (River's notifier is the model): wake-ups and
//! entitlements subscribe to their channels before it starts; it listens on all of them at once,
//! hands each notification to the subscribers of its channel, and reconnects with backoff when
//! the connection is lost. Subscribers hear when listening (re)starts and when it stopped, so
//! they can catch up on what may have been sent while nobody listened.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::store::notify::Notification;

/// First wait before reconnecting; it doubles after each failed attempt, up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between reconnection attempts.
const MAX_RETRY: Duration = Duration::from_secs(8);

/// What a subscriber hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Listening (again): notifications sent before now may have been missed.
    Listening,
    /// The connection was lost; notifications are missed until the next `Listening`.
    Lost,
    /// A notification on one of the subscribed channels.
    Message(Notification),
}

pub type Subscription = mpsc::UnboundedReceiver<Heard>;

/// Built at start-up, subscribed to, then run once.
pub struct Notifier {
    store: Store,
    subscribers: BTreeMap<&'static str, Vec<mpsc::UnboundedSender<Heard>>>,
}

impl Notifier {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            subscribers: BTreeMap::new(),
        }
    }

    /// Hears the notifications of `channels` once [`Notifier::run`] runs.
    pub fn subscribe(&mut self, channels: &[&'static str]) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        for channel in channels {
            self.subscribers
                .entry(channel)
                .or_default()
                .push(tx.clone());
        }
        rx
    }

    /// Listens until shutdown, reconnecting after a lost connection.
    pub async fn run(self, shutdown: Shutdown) {
        if self.subscribers.is_empty() {
            return;
        }
        let mut retry = FIRST_RETRY;
        loop {
            let (listened, error) = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.listen_once() => outcome,
            };
            if listened {
                retry = FIRST_RETRY;
            }
            self.tell_all(&Heard::Lost);
            tracing::warn!(error = %error, retry_secs = retry.as_secs_f64(), "LISTEN connection lost; reconnecting");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// Listens until the connection fails; says whether listening had begun.
    async fn listen_once(&self) -> (bool, sea_orm::DbErr) {
        let channels: Vec<&str> = self.subscribers.keys().copied().collect();
        let mut listener = match self.store.listen(&channels).await {
            Ok(listener) => listener,
            Err(e) => return (false, e),
        };
        self.tell_all(&Heard::Listening);
        loop {
            match listener.recv().await {
                Ok(n) => {
                    for tx in self
                        .subscribers
                        .get(n.channel.as_str())
                        .into_iter()
                        .flatten()
                    {
                        let _ = tx.send(Heard::Message(n.clone()));
                    }
                }
                Err(e) => return (true, e),
            }
        }
    }

    /// Tells every subscriber once (a subscriber of several channels has one sender per
    /// channel, all into one receiver: tell each receiver once).
    fn tell_all(&self, heard: &Heard) {
        let mut told: Vec<&mpsc::UnboundedSender<Heard>> = Vec::new();
        for tx in self.subscribers.values().flatten() {
            if told.iter().any(|t| t.same_channel(tx)) {
                continue;
            }
            let _ = tx.send(heard.clone());
            told.push(tx);
        }
    }
}
