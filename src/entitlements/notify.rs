//! Cross-replica refresh over PostgreSQL `NOTIFY` on the `provq_entitlements` channel, heard
//! through the replica's one listener (`queue::notifier`): a replica that changed the licenses
//! sends its replica id; every other replica recomputes. Notifications are hints: a lost one is
//! caught by the periodic refresh, and every (re)connection recomputes in case something
//! happened while nobody listened.

use super::Entitlements;
use crate::queue::notifier::{Heard, Subscription};
use crate::shutdown::Shutdown;

pub const CHANNEL: &str = "provq_entitlements";

/// Tells every replica listening on the database that the licenses changed.
pub(super) async fn announce(entitlements: &Entitlements) {
    let sender = entitlements.replica_id().to_string();
    if let Err(e) = entitlements.inner.store.notify(CHANNEL, &sender).await {
        tracing::warn!(error = %e, "NOTIFY failed; other replicas catch up at their next refresh");
    }
}

/// Recomputes on what the listener hears until shutdown.
pub(super) async fn listen(
    entitlements: Entitlements,
    mut heard: Subscription,
    shutdown: Shutdown,
) {
    let me = entitlements.replica_id().to_string();
    loop {
        let heard = tokio::select! {
            () = shutdown.cancelled() => return,
            h = heard.recv() => h,
        };
        match heard {
            None => return,
            Some(Heard::Listening) => entitlements.refresh_logged("listener connected").await,
            Some(Heard::Lost) => {}
            // The sender already recomputed its own snapshot.
            Some(Heard::Message(n)) if n.payload == me => {}
            Some(Heard::Message(_)) => {
                entitlements
                    .refresh_logged("another replica changed the licenses")
                    .await
            }
        }
    }
}
