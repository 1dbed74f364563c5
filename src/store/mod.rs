//! The only code that talks to the database. Each file owns one resource; every statement about
//! provisioner jobs lives in `jobs.rs`.

pub mod daemons;
pub mod jobs;
pub mod licenses;
pub mod logs;
pub mod organizations;
pub mod provisioner_keys;
pub mod replicas;
pub mod sessions;
pub mod site;
pub mod users;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnAcquireErr, ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr,
    SqlErr,
};

use crate::config::Settings;

/// Errors of the store layer; `api::error` maps each to an HTTP answer in one place.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The write conflicts with existing state (a taken name, an existing first user, …).
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<&'static str>,
    },
    /// The request contradicts the resource's state (400), e.g. canceling a completed job.
    #[error("{0}")]
    Invalid(String),
    /// A condition the caller set does not hold (412), e.g. `expect_status`.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("database error: {0}")]
    Database(#[from] DbErr),
}

impl StoreError {
    pub fn conflict(message: impl Into<String>, field: Option<&'static str>) -> Self {
        Self::Conflict {
            message: message.into(),
            field,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Whether a database error is a unique-constraint violation (a lost race for a name).
pub(crate) fn is_unique_violation(error: &DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Whether a database error means no pooled connection became free within
/// `database_acquire_timeout_secs` (the pool is exhausted, or the database is not accepting
/// connections yet): the statement that needed it did not run.
pub fn is_pool_timeout(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => true,
        DbErr::Conn(RuntimeErr::SqlxError(e)) => matches!(**e, sea_orm::sqlx::Error::PoolTimedOut),
        _ => false,
    }
}

/// How long a PostgreSQL connection may sit idle in the pool before it is pinged on checkout.
const IDLE_BEFORE_PING: Duration = Duration::from_millis(250);

/// Handle to the database, cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// When this replica last wrote each daemon's `last_seen_at` (writes are throttled).
    seen: std::sync::Arc<daemons::SeenDaemons>,
    /// The default organization's id, which never changes once seeded.
    default_org: std::sync::Arc<std::sync::OnceLock<uuid::Uuid>>,
    /// Concurrent claims waiting to share a statement.
    claims: std::sync::Arc<jobs::ClaimBatcher>,
}

impl Store {
    /// Connects with settings that suit each backend: SQLite in WAL mode with a busy timeout and
    /// one connection (SQLite has one writer anyway, and one connection can never see
    /// "database is locked"); PostgreSQL with a pool sized by `database_max_connections`.
    pub async fn connect(settings: &Settings) -> Result<Self, DbErr> {
        let mut options = ConnectOptions::new(settings.database_url.clone());
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(settings.database_acquire_timeout_secs));
        if settings.is_postgres() {
            options
                .max_connections(settings.database_max_connections)
                .min_connections(1)
                // A connection that sat idle may have been cut (a restart, a failover, a proxy);
                // ping those before use. Pinging every checkout would add a round trip to every
                // statement of a busy queue, and a hot connection was in use moments ago.
                .test_before_acquire_if_idle_for(IDLE_BEFORE_PING)
                .map_sqlx_postgres_opts(|o| o.application_name("provq"));
        } else {
            options.max_connections(1).map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        }
        let db = Database::connect(options).await?;
        let stale_after = Duration::from_secs(settings.provisioner.stale_after_secs);
        let claims = jobs::ClaimBatcher::new(db.get_database_backend());
        Ok(Self {
            db,
            seen: std::sync::Arc::new(daemons::SeenDaemons::new(stale_after)),
            default_org: Default::default(),
            claims: std::sync::Arc::new(claims),
        })
    }

    pub fn from_connection(db: DatabaseConnection) -> Self {
        Self {
            db,
            seen: Default::default(),
            default_org: Default::default(),
            claims: Default::default(),
        }
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Applies every pending migration.
    pub async fn migrate_up(&self) -> Result<(), DbErr> {
        Migrator::up(&self.db, None).await
    }

    /// A cheap round trip, for `/healthz`.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.db.ping().await
    }

    pub async fn close(self) -> Result<(), DbErr> {
        self.db.close().await
    }
}
