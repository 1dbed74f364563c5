//! One shutdown signal shared by every task: the HTTP server, background loops, long-polls.
//!
//! Processes wire SIGTERM and SIGINT to it in one place, [`on_termination`], which drives two
//! [`Stages`]: the first signal begins a graceful shutdown (stop taking work, let what runs
//! finish); a second signal, or a deadline passing, forces it (stop now). `provq serve` exits at
//! the forced stage ([`Stages::exit_when_forced`]); the daemon runner stops its running jobs.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Exit status after a second signal or a shutdown that overran its deadline.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Why the forced stage began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forced {
    /// A second SIGTERM or SIGINT.
    SecondSignal,
    /// The graceful stage outlasted its deadline.
    Deadline,
}

/// The two stages of a shutdown. Pass `graceful` down to everything that should stop taking
/// work; `forced` to what must stop at once when the graceful stage is cut short.
#[derive(Clone, Debug, Default)]
pub struct Stages {
    /// Cancelled by the first SIGTERM or SIGINT.
    pub graceful: Shutdown,
    /// Cancelled by a second signal, or when the deadline passes after the first.
    pub forced: Shutdown,
    forced_by: Arc<OnceLock<Forced>>,
}

impl Stages {
    /// Why the forced stage began; `None` while it has not.
    pub fn forced_by(&self) -> Option<Forced> {
        self.forced_by.get().copied()
    }

    /// `provq serve`'s forced stage: logs the graceful stage's start, then ends the process
    /// with [`FORCED_EXIT_CODE`] when the forced stage begins.
    pub fn exit_when_forced(&self) {
        let stages = self.clone();
        tokio::spawn(async move {
            stages.graceful.cancelled().await;
            tracing::info!(
                "shutdown signal received; finishing in-flight requests (a second signal exits at once)"
            );
            stages.forced.cancelled().await;
            match stages.forced_by() {
                Some(Forced::Deadline) => {
                    tracing::error!("shutdown overran its deadline: exiting now")
                }
                _ => tracing::warn!("second shutdown signal: exiting now"),
            }
            std::process::exit(FORCED_EXIT_CODE);
        });
    }
}

/// The one signal-to-shutdown wiring, installed now: the first SIGTERM or SIGINT cancels
/// [`Stages::graceful`]; a second one, or `deadline` (if any) passing after the first, cancels
/// [`Stages::forced`].
///
/// Tokens are cancelled before anything is logged, so a log line that cannot be written can
/// never stand between a signal and the shutdown it asks for.
pub fn on_termination(deadline: Option<Duration>) -> std::io::Result<Stages> {
    let mut signals = Signals::install()?;
    let stages = Stages::default();
    let wired = stages.clone();
    tokio::spawn(async move {
        signals.next().await;
        wired.graceful.cancel();
        let overrun = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            () = signals.next() => Forced::SecondSignal,
            () = overrun => Forced::Deadline,
        };
        let _ = wired.forced_by.set(why);
        wired.forced.cancel();
    });
    Ok(stages)
}

/// SIGTERM and SIGINT as one stream.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {},
                _ = self.int.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
