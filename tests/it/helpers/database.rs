//! A database per test, copied from a template migrated once per schema (crates.io's
//! `crates_io_test_db`): migrating from empty costs far more than copying.
//!
//! nextest runs every test in a process of its own, so "once" has to hold across processes. The
//! template's name carries a hash of the migrations (their names and sources), so a changed
//! schema gets a template of its own; it is built under a lock (a PostgreSQL advisory lock, a
//! file lock for SQLite) under a temporary name and renamed when complete, so a build that died
//! half-way leaves nothing that passes for a template, and the next build removes its remains.
//! Rows the migrations seed (the deployment id, the default organization) are the same in every
//! copy; each test still has a database of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use migration::MigratorTrait;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use sha2::{Digest, Sha256};

use super::{Backend, DEFAULT_POSTGRES_URL, test_settings};

/// The PostgreSQL advisory lock held while a template is built (any schema: builds are rare).
const TEMPLATE_LOCK: i64 = 0x7072_6f76_715f_7470; // "provq_tp"

/// A database that exists for one test and is removed afterwards.
pub enum TestDatabase {
    /// The directory holding the file, removed on drop.
    Sqlite {
        _dir: tempfile::TempDir,
    },
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl TestDatabase {
    /// A migrated database (a copy of the template) and its URL.
    pub async fn create(backend: Backend) -> (Self, String) {
        Self::make(backend, true).await
    }

    /// An empty database and its URL, for tests of migrating itself.
    pub async fn empty(backend: Backend) -> (Self, String) {
        Self::make(backend, false).await
    }

    async fn make(backend: Backend, migrated: bool) -> (Self, String) {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let file = dir.path().join("provq.db");
                if migrated {
                    let template = sqlite_template().await;
                    std::fs::copy(template, &file).expect("copy the SQLite template");
                }
                let url = format!("sqlite://{}?mode=rwc", file.display());
                (Self::Sqlite { _dir: dir }, url)
            }
            Backend::Postgres => {
                let admin_url = std::env::var("PROVQ_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string());
                let name = format!("provq_test_{}", uuid::Uuid::new_v4().simple());
                let admin = admin(&admin_url).await;
                if migrated {
                    let template = postgres_template(&admin, &admin_url).await;
                    create_from_template(&admin, &name, template).await;
                } else {
                    admin
                        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                        .await
                        .expect("create test database");
                }
                admin.close().await.ok();
                drop_retired(admin_url.clone());
                let url = with_database(&admin_url, &name);
                (Self::Postgres { admin_url, name }, url)
            }
        }
    }
}

impl Drop for TestDatabase {
    /// Retires a PostgreSQL database at once and leaves the slow `DROP DATABASE` (PostgreSQL 15
    /// forces a checkpoint for each) to a later test, in the background: see `drop_retired`.
    fn drop(&mut self) {
        if let Self::Postgres { admin_url, name } = self {
            let (url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside any runtime guarantee; use a private one on its own thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(admin) = Database::connect(&url).await {
                        for sql in [
                            format!("ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false"),
                            format!(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                                 WHERE datname = '{name}'"
                            ),
                        ] {
                            let _ = admin.execute_unprepared(&sql).await;
                        }
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// Drops up to two retired test databases (closed to connections) on a task of its own, which
/// nothing waits for. A `DROP DATABASE` already sent completes on the server even if this test
/// process exits first; what is left is dropped by a later test, or the next run.
fn drop_retired(admin_url: String) {
    tokio::spawn(async move {
        let Ok(admin) = Database::connect(&admin_url).await else {
            return;
        };
        let retired = admin
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT datname FROM pg_database WHERE datname LIKE 'provq\\_test\\_%' \
                 AND NOT datallowconn ORDER BY random() LIMIT 2",
            ))
            .await
            .unwrap_or_default();
        for row in retired {
            if let Ok(name) = row.try_get::<String>("", "datname") {
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            }
        }
        let _ = admin.close().await;
    });
}

/// `admin_url` with its database name replaced.
pub fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

/// 16 hex digits naming the schema: the migrations' names and the sources of the migration
/// crate, so an edited migration is never served from an old template.
fn schema_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let mut hash = Sha256::new();
        for m in migration::Migrator::migrations() {
            hash.update(m.name());
            hash.update([0]);
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migration/src");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        files.sort();
        for file in files {
            hash.update(file.file_name().unwrap().as_encoded_bytes());
            hash.update(std::fs::read(&file).expect("read a migration source"));
        }
        hex::encode(hash.finalize())[..16].to_string()
    })
}

/// Applies every migration to the database at `url` the way the server does.
async fn migrate(url: &str) {
    let store = provq::store::Store::connect(&test_settings(url))
        .await
        .expect("connect to the template being built");
    store.migrate_up().await.expect("migrate the template");
    if url.starts_with("sqlite:") {
        // Back to a rollback journal: the template is then one self-contained file to copy.
        store
            .connection()
            .execute_unprepared("PRAGMA journal_mode = DELETE")
            .await
            .expect("leave WAL mode");
    }
    store.close().await.expect("close the template");
}

/// The migrated SQLite template in the temp dir, built by the first process that needs it.
async fn sqlite_template() -> &'static Path {
    static TEMPLATE: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let dir = std::env::temp_dir().join("provq-test-templates");
            std::fs::create_dir_all(&dir).expect("template dir");
            let prefix = format!("sqlite-{}", schema_hash());
            let template = dir.join(format!("{prefix}.db"));
            if template.exists() {
                return template; // renamed into place complete
            }
            let lock = std::fs::File::create(dir.join(format!("{prefix}.lock"))).expect("lock");
            lock.lock().expect("lock the SQLite template");
            if !template.exists() {
                // Whatever a crashed build of this schema left: nobody else builds it now.
                for entry in std::fs::read_dir(&dir).expect("template dir").flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with(&format!("{prefix}.building-")) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
                let building = dir.join(format!(
                    "{prefix}.building-{}",
                    uuid::Uuid::new_v4().simple()
                ));
                migrate(&format!("sqlite://{}?mode=rwc", building.display())).await;
                std::fs::rename(&building, &template).expect("put the template in place");
            }
            template
        })
        .await
}

/// A single-connection admin session on `admin_url` (session-level advisory locks need one).
async fn admin(admin_url: &str) -> DatabaseConnection {
    let mut options = ConnectOptions::new(admin_url.to_string());
    options.max_connections(1).sqlx_logging(false);
    Database::connect(options).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is unreachable at {admin_url}: {e}. The tests need it \
             (set PROVQ_TEST_POSTGRES_URL); they never skip silently."
        )
    })
}

async fn database_exists(admin: &DatabaseConnection, name: &str) -> bool {
    let row = admin
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_database WHERE datname = $1",
            [name.into()],
        ))
        .await
        .expect("look for the template")
        .expect("a count");
    row.try_get::<i64>("", "n").expect("count") > 0
}

/// The name of the migrated PostgreSQL template, built by the first process that needs it.
async fn postgres_template(admin: &DatabaseConnection, admin_url: &str) -> &'static str {
    static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let template = format!("provq_tpl_{}", schema_hash());
            if database_exists(admin, &template).await {
                return template; // renamed into place complete
            }
            admin
                .execute_unprepared(&format!("SELECT pg_advisory_lock({TEMPLATE_LOCK})"))
                .await
                .expect("take the template lock");
            if !database_exists(admin, &template).await {
                drop_stale_builds(admin).await;
                let building = format!(
                    "{template}_building_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                );
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{building}\""))
                    .await
                    .expect("create the template");
                migrate(&with_database(admin_url, &building)).await;
                // Nobody connects to a template: a copy cannot start while anyone is.
                retry_in_use(admin, &format!(
                    "ALTER DATABASE \"{building}\" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
                ))
                .await;
                retry_in_use(
                    admin,
                    &format!("ALTER DATABASE \"{building}\" RENAME TO \"{template}\""),
                )
                .await;
            }
            admin
                .execute_unprepared(&format!("SELECT pg_advisory_unlock({TEMPLATE_LOCK})"))
                .await
                .expect("release the template lock");
            template
        })
        .await
}

/// Drops templates whose build died before the rename (the caller holds the template lock, so
/// no build is under way).
async fn drop_stale_builds(admin: &DatabaseConnection) {
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT datname FROM pg_database WHERE datname LIKE 'provq\\_tpl\\_%\\_building\\_%'",
        ))
        .await
        .expect("list stale template builds");
    for row in rows {
        let name: String = row.try_get("", "datname").expect("datname");
        admin
            .execute_unprepared(&format!("ALTER DATABASE \"{name}\" WITH IS_TEMPLATE false"))
            .await
            .expect("unmark a stale template");
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
            .expect("drop a stale template");
    }
}

/// `CREATE DATABASE name TEMPLATE template`.
async fn create_from_template(admin: &DatabaseConnection, name: &str, template: &str) {
    retry_in_use(
        admin,
        &format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""),
    )
    .await;
}

/// Runs `sql`, retrying while PostgreSQL answers that the database it names is in use (a
/// connection that was just closed can linger for a moment on the server side).
async fn retry_in_use(admin: &DatabaseConnection, sql: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match admin.execute_unprepared(sql).await {
            Ok(_) => return,
            Err(e)
                if e.to_string().contains("is being accessed by other users")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

#[test]
fn with_database_replaces_only_the_database_name() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
}
