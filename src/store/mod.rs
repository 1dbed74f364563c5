//! The only code that talks to the database. Each file owns one resource; every statement about
//! provisioner jobs lives in `jobs.rs`.

pub mod console;
pub mod daemons;
pub mod jobs;
pub mod licenses;
pub mod logs;
pub mod notify;
pub mod organizations;
pub mod overview;
pub mod provisioner_keys;
pub mod replicas;
pub(crate) mod rows;
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
    /// A row that does not parse into its domain type (see `rows`): a bug or a hand edit.
    #[error("bad row in {table} ({id}): {reason}")]
    BadRow {
        table: &'static str,
        id: String,
        reason: String,
    },
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

/// Why a statement could not run for reasons of the database's state rather than of the request
/// or of provq: the same request may succeed when retried shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailability {
    /// No pooled connection became free within `database_acquire_timeout_secs` (the pool is
    /// exhausted, or the database accepted no new connection in that time): the statement that
    /// needed it did not run.
    Busy,
    /// The database went away under the statement or refuses to serve: its connection was cut
    /// (a restart, a failover, `pg_terminate_backend`, a proxy), or the server is starting up or
    /// shutting down. The statement may or may not have taken effect.
    Unreachable,
}

/// Whether `error` says the database is busy or unreachable (see [`Unavailability`]); `None` for
/// every other error, which is a bug or a broken invariant rather than a passing condition.
pub fn unavailability(error: &DbErr) -> Option<Unavailability> {
    use sea_orm::sqlx::Error as Sqlx;
    match error {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => Some(Unavailability::Busy),
        // The pool was closed (the server is shutting down).
        DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed) => {
            Some(Unavailability::Unreachable)
        }
        // sea-orm's own word for a connection that was closed.
        DbErr::Conn(RuntimeErr::Internal(message)) if message == "Disconnected" => {
            Some(Unavailability::Unreachable)
        }
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => match &**e {
            Sqlx::PoolTimedOut => Some(Unavailability::Busy),
            // The socket failed (reset, refused, EOF mid-message): the connection is gone.
            Sqlx::PoolClosed | Sqlx::Io(_) => Some(Unavailability::Unreachable),
            // SQLite's codes are numbers, so only PostgreSQL's SQLSTATEs can match.
            Sqlx::Database(db) => db
                .code()
                .filter(|code| is_unavailable_sqlstate(code))
                .map(|_| Unavailability::Unreachable),
            _ => None,
        },
        _ => None,
    }
}

/// PostgreSQL SQLSTATEs that say the server cut or refuses the connection: class 08 (connection
/// exception), 57P01 admin_shutdown (fast shutdown, `pg_terminate_backend`), 57P02
/// crash_shutdown, 57P03 cannot_connect_now (starting up or shutting down).
fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// How long a PostgreSQL connection may sit idle in the pool before it is pinged on checkout.
const IDLE_BEFORE_PING: Duration = Duration::from_millis(250);

/// How to reach the database, and the few facts about daemons the store needs. Built from the
/// configuration by `startup` (the store does not read settings itself).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub database_url: String,
    /// PostgreSQL's pool size (SQLite always uses one connection).
    pub max_connections: u32,
    /// How long a statement waits for a pooled connection before failing as busy.
    pub acquire_timeout: Duration,
    /// A daemon not seen for this long is offline; its `last_seen_at` is written at most about
    /// this often.
    pub daemon_stale_after: Duration,
    /// Most daemons an organization may have registered.
    pub daemons_per_organization: u64,
}

impl StoreOptions {
    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }
}

/// Handle to the database, cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// When this replica last wrote each daemon's `last_seen_at` (writes are throttled).
    seen: std::sync::Arc<daemons::SeenDaemons>,
    /// The default organization's id, which never changes once seeded.
    default_org: std::sync::Arc<std::sync::OnceLock<uuid::Uuid>>,
    /// Claim statements this replica ran (exposed on `/metrics`).
    claim_statements: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Store {
    /// Connects with settings that suit each backend: SQLite in WAL mode with a busy timeout and
    /// one connection (SQLite has one writer anyway, and one connection can never see
    /// "database is locked"); PostgreSQL with a pool of `max_connections`.
    pub async fn connect(options: impl Into<StoreOptions>) -> Result<Self, DbErr> {
        let options: StoreOptions = options.into();
        let mut connect = ConnectOptions::new(options.database_url.clone());
        connect
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(options.acquire_timeout);
        if options.is_postgres() {
            connect
                .max_connections(options.max_connections)
                .min_connections(1)
                // A connection that sat idle may have been cut (a restart, a failover, a proxy);
                // ping those before use. Pinging every checkout would add a round trip to every
                // statement of a busy queue, and a hot connection was in use moments ago.
                .test_before_acquire_if_idle_for(IDLE_BEFORE_PING)
                .map_sqlx_postgres_opts(|o| o.application_name("provq"));
        } else {
            connect.max_connections(1).map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        }
        let db = Database::connect(connect).await?;
        Ok(Self {
            db,
            seen: std::sync::Arc::new(
                daemons::SeenDaemons::new(options.daemon_stale_after)
                    .with_cap(options.daemons_per_organization),
            ),
            default_org: Default::default(),
            claim_statements: Default::default(),
        })
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Whether independent reads gain from running at once: PostgreSQL has a pool of
    /// connections, SQLite one (see [`Store::connect`]).
    pub fn has_connection_pool(&self) -> bool {
        self.backend() == DbBackend::Postgres
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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use sea_orm::sqlx;
    use sea_orm::sqlx::error::{DatabaseError, ErrorKind};

    use super::*;

    /// A database error with a SQLSTATE, as the PostgreSQL driver reports one.
    #[derive(Debug)]
    struct WithCode(&'static str);

    impl std::fmt::Display for WithCode {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error with code {}", self.0)
        }
    }

    impl std::error::Error for WithCode {}

    impl DatabaseError for WithCode {
        fn message(&self) -> &str {
            "error"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn sqlx_err(wrap: fn(RuntimeErr) -> DbErr, e: sqlx::Error) -> DbErr {
        wrap(RuntimeErr::SqlxError(Arc::new(e)))
    }

    fn io(kind: std::io::ErrorKind) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(kind, "cut"))
    }

    fn code(c: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(WithCode(c)))
    }

    #[test]
    fn an_exhausted_pool_is_busy() {
        for e in [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            sqlx_err(DbErr::Conn, sqlx::Error::PoolTimedOut),
        ] {
            assert_eq!(unavailability(&e), Some(Unavailability::Busy), "{e}");
        }
    }

    #[test]
    fn a_cut_or_refused_connection_is_unreachable() {
        let wraps: [fn(RuntimeErr) -> DbErr; 3] = [DbErr::Conn, DbErr::Exec, DbErr::Query];
        for wrap in wraps {
            for e in [
                sqlx::Error::PoolClosed,
                io(std::io::ErrorKind::UnexpectedEof),
                io(std::io::ErrorKind::ConnectionReset),
                io(std::io::ErrorKind::ConnectionRefused),
                io(std::io::ErrorKind::BrokenPipe),
                code("08006"), // connection_failure
                code("08003"), // connection_does_not_exist
                code("57P01"), // admin_shutdown: pg_terminate_backend, fast shutdown
                code("57P02"), // crash_shutdown
                code("57P03"), // cannot_connect_now: starting up, shutting down
            ] {
                let e = sqlx_err(wrap, e);
                assert_eq!(unavailability(&e), Some(Unavailability::Unreachable), "{e}");
            }
        }
        for e in [
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            DbErr::Conn(RuntimeErr::Internal("Disconnected".into())),
        ] {
            assert_eq!(unavailability(&e), Some(Unavailability::Unreachable), "{e}");
        }
    }

    #[test]
    fn other_errors_are_neither() {
        for e in [
            sqlx_err(DbErr::Query, code("23505")), // unique_violation
            sqlx_err(DbErr::Query, code("40001")), // serialization_failure
            sqlx_err(DbErr::Query, code("42P01")), // undefined_table
            sqlx_err(DbErr::Query, code("57014")), // query_canceled (statement_timeout)
            sqlx_err(DbErr::Exec, code("5")),      // SQLite's SQLITE_BUSY
            sqlx_err(DbErr::Query, sqlx::Error::RowNotFound),
            sqlx_err(
                DbErr::Query,
                sqlx::Error::Protocol("unexpected message".into()),
            ),
            sqlx_err(DbErr::Conn, sqlx::Error::WorkerCrashed),
            DbErr::Conn(RuntimeErr::Internal("something else".into())),
            DbErr::Custom("Disconnected".into()),
            DbErr::RecordNotFound("job".into()),
        ] {
            assert_eq!(unavailability(&e), None, "{e}");
        }
    }
}
