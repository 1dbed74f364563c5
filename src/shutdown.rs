//! One shutdown signal shared by every task: the HTTP server, background loops, long-polls.

use std::future::Future;
use std::time::Duration;

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Exit status after a second signal or a shutdown that overran its deadline.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Installs SIGTERM and SIGINT handlers now (so a signal that arrives right after start-up is
/// not fatal) and returns a future that resolves on the first of them.
pub fn termination_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut signals = Signals::install()?;
    Ok(async move { signals.next().await })
}

/// `provq serve`'s signal handling, installed now: the first SIGTERM or SIGINT cancels
/// `shutdown` (one graceful shutdown); a second one, or `deadline` passing without the process
/// having exited, ends the process at once with [`FORCED_EXIT_CODE`].
///
/// The token is cancelled before anything is logged, so a log line that cannot be written can
/// never stand between a signal and the shutdown it asks for.
pub fn on_termination(shutdown: Shutdown, deadline: Duration) -> std::io::Result<()> {
    let mut signals = Signals::install()?;
    tokio::spawn(async move {
        signals.next().await;
        shutdown.cancel();
        tracing::info!(
            "shutdown signal received; finishing in-flight requests (a second signal exits at once)"
        );
        tokio::select! {
            () = signals.next() => {
                tracing::warn!("second shutdown signal: exiting now");
            }
            () = tokio::time::sleep(deadline) => {
                tracing::error!(deadline_secs = deadline.as_secs_f64(), "shutdown overran its deadline: exiting now");
            }
        }
        std::process::exit(FORCED_EXIT_CODE);
    });
    Ok(())
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
