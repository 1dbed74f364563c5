//! Cross-replica refresh over PostgreSQL `LISTEN/NOTIFY` on the `provq_entitlements` channel:
//! a replica that changed the licenses sends its replica id; every other replica recomputes.
//! Notifications are hints: a lost one is caught by the periodic refresh, and every
//! (re)connection recomputes in case something happened while nobody listened.

use std::time::Duration;

use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use uuid::Uuid;

use super::Entitlements;
use crate::shutdown::Shutdown;

pub const CHANNEL: &str = "provq_entitlements";

/// Tells every replica listening on the database that the licenses changed.
pub(super) async fn announce(db: &DatabaseConnection, sender: Uuid) {
    let stmt = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [CHANNEL.into(), sender.to_string().into()],
    );
    if let Err(e) = db.execute_raw(stmt).await {
        tracing::warn!(error = %e, "NOTIFY failed; other replicas catch up at their next refresh");
    }
}

/// Listens until shutdown, reconnecting after a lost connection.
pub(super) async fn listen(entitlements: Entitlements, db: DatabaseConnection, shutdown: Shutdown) {
    loop {
        match listen_once(&entitlements, &db, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "entitlements LISTEN connection lost; reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn listen_once(
    entitlements: &Entitlements,
    db: &DatabaseConnection,
    shutdown: &Shutdown,
) -> Result<(), sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect_with(db.get_postgres_connection_pool()).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    entitlements.refresh_logged("listener connected").await;
    let me = entitlements.replica_id().to_string();
    loop {
        let notification = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            n = listener.recv() => n?,
        };
        // The sender already recomputed its own snapshot.
        if notification.payload() != me {
            entitlements
                .refresh_logged("another replica changed the licenses")
                .await;
        }
    }
}
