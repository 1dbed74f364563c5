//! Job flow above the store: job events (every state change with its side effects), claims
//! (batched on SQLite), wake-ups for long-polling daemons and log followers over the replica's
//! one LISTEN connection (the notifier), the long-poll itself, and the reaper. Each loop has
//! the shape `run(shutdown)` + `run_once()`.

pub mod acquire;
pub mod claims;
pub mod dispatch;
pub mod events;
pub mod notifier;
pub mod reaper;
pub mod wakeups;

pub use claims::Claims;
pub use events::JobEvents;
pub use wakeups::Wakeups;
