//! Background work and waiting: wake-ups for long-polling daemons and log followers, the
//! long-poll itself, and the reaper. Each loop has the shape `run(shutdown)` + `run_once()`.

pub mod acquire;
pub mod dispatch;
pub mod reaper;
pub mod wakeups;

pub use wakeups::Wakeups;
