//! One shutdown signal shared by every task: the HTTP server, background loops, long-polls.

use std::future::Future;

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Installs SIGTERM and SIGINT handlers now (so a signal that arrives right after start-up is
/// not fatal) and returns a future that resolves on the first of them.
pub fn termination_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
