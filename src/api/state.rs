//! What every handler can reach: the store, wake-ups, settings and the shutdown signal.

use std::sync::Arc;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::net::Connections;
use crate::queue::Wakeups;
use crate::shutdown::Shutdown;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub wakeups: Wakeups,
    pub settings: Arc<Settings>,
    /// Cancelled when the server starts shutting down: long-polls and log follows end early.
    pub shutdown: Shutdown,
    /// Lets long-polls notice that their client went away.
    pub connections: Connections,
    pub metrics: Arc<Metrics>,
    /// The licensed features this replica serves (gates organization changes).
    pub entitlements: crate::entitlements::Entitlements,
}
