//! What every handler can reach: the store, wake-ups, settings and the shutdown signal.

use std::sync::Arc;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::net::Connections;
use crate::queue::{Claims, JobEvents, Wakeups};
use crate::shutdown::Shutdown;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub wakeups: Wakeups,
    /// The side effects of every job state change (metrics, wake-ups, the log line).
    pub events: JobEvents,
    /// Claims for daemons (batched on SQLite).
    pub claims: Claims,
    pub settings: Arc<Settings>,
    /// Cancelled when the server starts shutting down: long-polls and log follows end early.
    pub shutdown: Shutdown,
    /// Lets long-polls notice that their client went away.
    pub connections: Connections,
    pub metrics: Arc<Metrics>,
    /// The licensed features this replica serves (gates organization changes).
    pub entitlements: crate::entitlements::Entitlements,
}
