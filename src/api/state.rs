//! What every handler can reach: the store and the settings.

use std::sync::Arc;

use crate::config::Settings;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub settings: Arc<Settings>,
}
