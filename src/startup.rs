//! Builds the application: database, migrations, HTTP listener. `provq serve` and the
//! integration tests both go through [`Application::build`], so tests run the real thing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::endpoint::BoxEndpoint;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::{Endpoint, IntoResponse, Request, Response, Server};
use poem_openapi::payload::Json;

use crate::api::error::{ApiError, ErrorBody};
use crate::api::{self, AppState};
use crate::config::Settings;
use crate::domain::license::LicenseKeys;
use crate::entitlements::Entitlements;
use crate::metrics::Metrics;
use crate::net::{Connections, WatchedAcceptor};
use crate::queue::notifier::Notifier;
use crate::queue::reaper::Reaper;
use crate::queue::{Claims, JobEvents, Wakeups};
use crate::shutdown::Shutdown;
use crate::slow_clients::Deadlines;
use crate::store::{Store, StoreOptions};

/// How long in-flight requests get to finish after a shutdown signal.
const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(7);

/// When a shutdown must be over: the in-flight requests' time, then up to
/// [`crate::entitlements::STOP_TIMEOUT`] to stop the background loops and remove this replica's
/// row, and some slack. Past it the process exits at once (see [`crate::shutdown::Stages::exit_when_forced`]),
/// so a shutdown never takes more than 10 s.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(9_500);

pub struct Application {
    state: AppState,
    acceptor: WatchedAcceptor,
    local_addr: SocketAddr,
    metrics_acceptor: Option<TcpAcceptor>,
    metrics_addr: Option<SocketAddr>,
    /// The replica's LISTEN connection (PostgreSQL), started by `run`.
    notifier: Option<Notifier>,
}

impl Application {
    /// Connects, migrates and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        let license_keys = LicenseKeys::from_config(&settings.licenses.keys)
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let store = Store::connect(&settings).await.with_context(|| {
            format!(
                "cannot connect to the database ({})",
                redact_url(&settings.database_url)
            )
        })?;
        store
            .migrate_up()
            .await
            .context("cannot apply migrations")?;
        let addr = settings.listen_addr()?;
        let connections = Connections::default();
        let acceptor = WatchedAcceptor::bind(addr, connections.clone())
            .await
            .with_context(|| format!("cannot listen on {addr}"))?
            .with_deadlines(Deadlines::from_settings(&settings.limits));
        let local_addr = acceptor.local_addr()?;
        let (metrics_acceptor, metrics_addr) = if settings.prometheus.listen.is_empty() {
            (None, None)
        } else {
            let listen = settings.prometheus.listen.clone();
            let acceptor = TcpListener::bind(listen.clone())
                .into_acceptor()
                .await
                .with_context(|| format!("cannot listen on {listen} (prometheus.listen)"))?;
            let addr = acceptor
                .local_addr()
                .first()
                .and_then(|a| a.as_socket_addr())
                .copied();
            (Some(acceptor), addr)
        };
        let shutdown = Shutdown::new();
        // One LISTEN connection per replica (PostgreSQL) carries every topic.
        let mut notifier = settings.is_postgres().then(|| Notifier::new(store.clone()));
        let wakeups = match notifier.as_mut() {
            Some(notifier) => Wakeups::postgres(store.clone(), notifier, shutdown.clone()),
            None => Wakeups::local(),
        };
        let entitlements = Entitlements::new(store.clone(), license_keys, notifier.as_mut());
        let metrics = Arc::new(Metrics::new());
        let events = JobEvents::new(store.clone(), metrics.clone(), wakeups.clone());
        let state = AppState {
            claims: Claims::new(store.clone(), events.clone()),
            store,
            wakeups,
            events,
            settings: Arc::new(settings),
            shutdown,
            connections,
            metrics,
            entitlements,
        };
        Ok(Self {
            state,
            acceptor,
            local_addr,
            metrics_acceptor,
            metrics_addr,
            notifier,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served, when the Prometheus listener is enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Starts the background loops and serves until `signal` resolves (the caller's SIGTERM,
    /// a test's stop); then the one shutdown token every task holds (`AppState::shutdown`) is
    /// cancelled: long-polls and log follows end at once and other in-flight requests get time
    /// to finish.
    pub async fn run(
        self,
        signal: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let shutdown = self.state.shutdown.clone();
        // First, so a failure leaves nothing running; it registers this replica and computes the
        // entitlements before the first request is served.
        if let Some(notifier) = self.notifier {
            tokio::spawn(notifier.run(shutdown.clone()));
        }
        let entitlements = self.state.entitlements.clone();
        entitlements
            .start(shutdown.clone())
            .await
            .context("cannot compute the entitlements")?;
        let reaper = Reaper::new(
            self.state.store.clone(),
            self.state.events.clone(),
            &self.state.settings.reaper,
        );
        tokio::spawn(reaper.run(shutdown.clone()));
        tokio::spawn(
            self.state
                .store
                .clone()
                .keep_pending_counts_folded(shutdown.clone()),
        );
        if let Some(acceptor) = self.metrics_acceptor {
            let app = crate::metrics::endpoint(crate::metrics::Scrape {
                metrics: self.state.metrics.clone(),
                store: self.state.store.clone(),
                stale_after: chrono::Duration::seconds(
                    self.state.settings.provisioner.stale_after_secs as i64,
                ),
            });
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let served = Server::new_with_acceptor(acceptor)
                    .run_with_graceful_shutdown(
                        app,
                        async move { stop.cancelled().await },
                        Some(GRACEFUL_SHUTDOWN),
                    )
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            });
        }
        let app = RefuseWhileDraining {
            inner: api::app(self.state.clone()),
            shutdown: shutdown.clone(),
        };
        let on_signal = shutdown.clone();
        let result = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(
                app,
                async move {
                    signal.await;
                    on_signal.cancel();
                },
                Some(GRACEFUL_SHUTDOWN),
            )
            .await;
        shutdown.cancel();
        entitlements.stop().await;
        Ok(result?)
    }
}

/// Answers a request that starts after the shutdown began with 503 in the error shape (with
/// `Retry-After`, so clients and balancers retry elsewhere or later) instead of starting work
/// the process may not live to finish. Requests already running are not affected.
struct RefuseWhileDraining {
    inner: BoxEndpoint<'static>,
    shutdown: Shutdown,
}

/// The message of that 503.
pub const SHUTTING_DOWN_MESSAGE: &str = "The server is shutting down; retry shortly.";

impl Endpoint for RefuseWhileDraining {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if !self.shutdown.is_cancelled() {
            return self.inner.call(req).await;
        }
        let body = ErrorBody::new(SHUTTING_DOWN_MESSAGE).with_detail(
            "This replica stopped taking new requests; another replica or its restart will.",
        );
        Ok(ApiError::ServiceUnavailable(Json(body), "1".into()).into_response())
    }
}

/// The store's options from the configuration: the one place the store's settings are read.
impl From<&Settings> for StoreOptions {
    fn from(settings: &Settings) -> Self {
        Self {
            database_url: settings.database_url.clone(),
            max_connections: settings.database_max_connections,
            acquire_timeout: Duration::from_secs(settings.database_acquire_timeout_secs),
            daemon_stale_after: Duration::from_secs(settings.provisioner.stale_after_secs),
            daemons_per_organization: settings.limits.daemons_per_organization,
        }
    }
}

/// Hides the password of a database URL for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            super::redact_url("sqlite://provq.db?mode=rwc"),
            "sqlite://provq.db?mode=rwc"
        );
    }
}
