//! PostgreSQL `NOTIFY` and `LISTEN`: the statements behind the replica's one notifier
//! (`queue::notifier`). SQLite has one process per database and nothing to notify.

use std::sync::Arc;

use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, RuntimeErr, Statement};

use super::Store;

/// One notification received on a listened channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub channel: String,
    pub payload: String,
}

/// A dedicated connection that `LISTEN`s on some channels.
pub struct Listener {
    inner: PgListener,
}

fn sqlx_error(e: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e)))
}

impl Store {
    /// `NOTIFY channel, payload`, outside any transaction (PostgreSQL only).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), DbErr> {
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [channel.into(), payload.into()],
        );
        self.connection().execute_raw(stmt).await.map(|_| ())
    }

    /// Opens a connection of its own (outside the pool's count) and `LISTEN`s on `channels`
    /// (PostgreSQL only).
    pub async fn listen(&self, channels: &[&str]) -> Result<Listener, DbErr> {
        let mut inner = PgListener::connect_with(self.connection().get_postgres_connection_pool())
            .await
            .map_err(sqlx_error)?;
        // The pool closing at shutdown is not a reason to stop: shutdown stops the listener.
        inner.ignore_pool_close_event(true);
        inner
            .listen_all(channels.iter().copied())
            .await
            .map_err(sqlx_error)?;
        Ok(Listener { inner })
    }
}

impl Listener {
    /// The next notification; an error means the connection is lost (open a new listener).
    pub async fn recv(&mut self) -> Result<Notification, DbErr> {
        let n = self.inner.recv().await.map_err(sqlx_error)?;
        Ok(Notification {
            channel: n.channel().to_string(),
            payload: n.payload().to_string(),
        })
    }
}
