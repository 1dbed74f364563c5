//! Databases for a run: a fresh SQLite file or a fresh PostgreSQL database, and bulk fills that
//! write rows straight through sea-orm (filling through HTTP would measure the fill).

use std::path::PathBuf;

use chrono::Duration;
use provq::domain::PREBUILDS_USER_ID;
use provq::domain::job::Provisioner;
use provq::domain::tags::Tags;
use provq::entity::provisioner_job;
use provq::store::Store;
use provq::store::daemons::DaemonRegistration;
use sea_orm::{ActiveValue::Set, ConnectionTrait, Database, EntityTrait};
use uuid::Uuid;

/// Where a benchmark runs: the same flags for every benchmark.
#[derive(clap::Args)]
pub struct Targets {
    /// Backends to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sqlite,postgres"
    )]
    pub backends: Vec<Backend>,
    /// PostgreSQL server to create throwaway databases on.
    #[arg(
        long,
        env = "PROVQ_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        }
    }
}

/// A throwaway database; removed on drop (PostgreSQL) or with its temp dir (SQLite).
pub struct BenchDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl BenchDb {
    pub async fn create(backend: Backend, postgres_admin_url: &str) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let path: PathBuf = dir.path().join("bench.db");
                Ok(Self {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    _dir: Some(dir),
                    pg: None,
                })
            }
            Backend::Postgres => {
                let name = format!("provq_bench_{}", Uuid::new_v4().simple());
                let admin = Database::connect(postgres_admin_url).await?;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await?;
                admin.close().await?;
                let base = postgres_admin_url
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .unwrap_or(postgres_admin_url);
                Ok(Self {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    pg: Some((postgres_admin_url.to_string(), name)),
                })
            }
        }
    }

    pub async fn drop_now(&mut self) {
        if let Some((admin_url, name)) = self.pg.take()
            && let Ok(admin) = Database::connect(&admin_url).await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
            let _ = admin.close().await;
        }
    }
}

/// Tag set `i` of the fixture: `{"pool": "p<i>"}` (normalised).
pub fn tag_set(i: usize) -> Tags {
    Tags::normalize([("pool".to_string(), format!("p{i}"))].into(), None).expect("valid tags")
}

/// What to fill: `total` jobs, the newest `pending` of them pending, spread over `tag_sets`
/// tag sets; `prebuild_share` of the pending ones are prebuild jobs.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    pub total: usize,
    pub pending: usize,
    pub tag_sets: usize,
    pub prebuild_share: f64,
}

/// Inserts the jobs of `fill` for `initiator` (the oldest are finished).
pub async fn fill_jobs(
    store: &Store,
    organization_id: Uuid,
    initiator: Uuid,
    fill: Fill,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let Fill {
        total,
        pending,
        tag_sets,
        prebuild_share,
    } = fill;
    let start = provq::domain::now() - Duration::seconds(total as i64);
    let finished = total - pending;
    let mut batch = Vec::with_capacity(1000);
    for i in 0..total {
        let at = start + Duration::seconds(i as i64);
        let is_pending = i >= finished;
        let prebuild = is_pending && ((i - finished) as f64) < pending as f64 * prebuild_share;
        let prebuild = prebuild || (!is_pending && i % 2 == 0);
        batch.push(provisioner_job::ActiveModel {
            // Time-ordered ids, as the store gives them (UUIDv7 of the creation time).
            id: Set(Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                at.timestamp() as u64,
                at.timestamp_subsec_nanos(),
            ))),
            created_at: Set(at),
            updated_at: Set(at),
            started_at: Set((!is_pending).then_some(at)),
            canceled_at: Set(None),
            completed_at: Set((!is_pending).then_some(at)),
            error: Set(None),
            error_code: Set(None),
            organization_id: Set(organization_id),
            initiator_id: Set(if prebuild {
                PREBUILDS_USER_ID
            } else {
                initiator
            }),
            is_prebuild: Set(prebuild),
            provisioner: Set("terraform".into()),
            job_type: Set("workspace_build".into()),
            input: Set(serde_json::json!({})),
            file_id: Set(Uuid::nil()),
            tags: Set(tag_set(i % tag_sets).to_json()),
            tags_key: Set(tag_set(i % tag_sets).key()),
            metadata: Set(serde_json::json!({"template_name": "bench"})),
            worker_id: Set(None),
            lease_token: Set(None),
            logs_length: Set(0),
            logs_overflowed: Set(false),
        });
        if batch.len() == 1000 || i + 1 == total {
            let n = batch.len() as u64;
            provisioner_job::Entity::insert_many(std::mem::take(&mut batch))
                .exec(store.connection())
                .await?;
            progress.inc(n);
        }
    }
    Ok(())
}

/// Registers `count` online daemons; daemon `i` serves tag set `i % tag_sets`.
pub async fn fill_daemons(
    store: &Store,
    organization_id: Uuid,
    count: usize,
    tag_sets: usize,
) -> anyhow::Result<()> {
    for i in 0..count {
        store
            .register_daemon(DaemonRegistration {
                organization_id,
                name: format!("bench-daemon-{i}"),
                key_id: None,
                tags: tag_set(i % tag_sets),
                provisioners: vec![Provisioner::Terraform],
                version: "bench".into(),
            })
            .await?;
    }
    Ok(())
}
