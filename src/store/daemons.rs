//! The daemon registry: daemons register (or refresh) on every acquire, any worker call keeps
//! them online, and admins list them with their status and jobs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
};
use uuid::Uuid;

use super::jobs::status_of;
use super::{Store, StoreError, StoreResult};
use crate::domain::job::{JobStatus, Provisioner};
use crate::domain::now;
use crate::domain::tags::Tags;
use crate::entity::{provisioner_daemon as daemon, provisioner_job as job, provisioner_key};

/// What a daemon says about itself when it acquires.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonRegistration {
    pub organization_id: Uuid,
    pub name: String,
    pub key_id: Option<Uuid>,
    pub tags: Tags,
    pub provisioners: Vec<Provisioner>,
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonStatus {
    Idle,
    Busy,
    Offline,
}

impl DaemonStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }
}

/// A job as shown on a daemon (current or previous).
#[derive(Debug, Clone)]
pub struct DaemonJob {
    pub id: Uuid,
    pub status: JobStatus,
}

#[derive(Debug, Clone)]
pub struct DaemonView {
    pub daemon: daemon::Model,
    pub key_name: Option<String>,
    pub status: DaemonStatus,
    pub current_job: Option<DaemonJob>,
    pub previous_job: Option<DaemonJob>,
}

/// The provisioners a daemon row serves.
pub fn provisioners_of(d: &daemon::Model) -> Vec<String> {
    d.provisioners
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a daemon may run a job with these (normalised) tags and provisioner; the
/// organization is the caller's to check.
pub fn daemon_runs(d: &daemon::Model, job_tags: &Tags, provisioner: &str) -> bool {
    provisioners_of(d).iter().any(|p| p == provisioner)
        && job_tags.satisfied_by(&Tags::from_stored(crate::domain::tags::map_from_json(
            &d.tags,
        )))
}

/// Most daemons one replica remembers before it forgets the idle ones.
const SEEN_CAPACITY: usize = 10_000;

/// Throttles daemon liveness writes. A busy daemon calls several times a second, and writing
/// `last_seen_at` on every call would cost a commit per call, while "offline" is decided only
/// after `stale_after`. So each replica writes a daemon's liveness at most once per `every`
/// (a tenth of `stale_after`, at most a second), and answers a repeated, identical registration
/// from memory in between.
#[derive(Debug)]
pub(crate) struct SeenDaemons {
    every: std::time::Duration,
    /// Most daemons an organization may have registered (`limits.daemons_per_organization`).
    cap: u64,
    touched: Mutex<HashMap<Uuid, Instant>>,
    registered: Mutex<HashMap<(Uuid, String, String), Registered>>,
}

#[derive(Debug, Clone)]
struct Registered {
    registration: DaemonRegistration,
    row: daemon::Model,
    at: Instant,
}

impl SeenDaemons {
    pub(crate) fn new(stale_after: std::time::Duration) -> Self {
        Self {
            every: (stale_after / 10).min(std::time::Duration::from_secs(1)),
            cap: u64::MAX,
            touched: Mutex::default(),
            registered: Mutex::default(),
        }
    }

    /// Caps registrations per organization (see [`Store::register_daemon`]).
    pub(crate) fn with_cap(mut self, cap: u64) -> Self {
        self.cap = cap;
        self
    }

    /// Whether this replica registered that daemon before (so it exists unless purged since).
    fn known(&self, reg: &DaemonRegistration) -> bool {
        self.registered
            .lock()
            .expect("not poisoned")
            .contains_key(&registration_key(reg))
    }

    /// Whether the daemon's liveness is due for a write; if so, counts it as written now.
    fn due(&self, id: Uuid) -> bool {
        let now = Instant::now();
        let mut touched = self.touched.lock().expect("not poisoned");
        if touched
            .get(&id)
            .is_some_and(|at| now.duration_since(*at) < self.every)
        {
            return false;
        }
        if touched.len() >= SEEN_CAPACITY {
            touched.retain(|_, at| now.duration_since(*at) < self.every);
        }
        touched.insert(id, now);
        true
    }

    /// The row of an identical registration written moments ago, if any.
    fn recent(&self, reg: &DaemonRegistration) -> Option<daemon::Model> {
        let registered = self.registered.lock().expect("not poisoned");
        let hit = registered.get(&registration_key(reg))?;
        (hit.registration == *reg && hit.at.elapsed() < self.every).then(|| hit.row.clone())
    }

    /// Forgets a registration, so the next one is written (after a deregistration).
    fn forget(&self, reg: &DaemonRegistration) {
        let removed = self
            .registered
            .lock()
            .expect("not poisoned")
            .remove(&registration_key(reg));
        if let Some(r) = removed {
            self.touched.lock().expect("not poisoned").remove(&r.row.id);
        }
    }

    fn remember(&self, reg: DaemonRegistration, row: daemon::Model) {
        let now = Instant::now();
        let mut registered = self.registered.lock().expect("not poisoned");
        if registered.len() >= SEEN_CAPACITY {
            registered.retain(|_, r| now.duration_since(r.at) < self.every);
        }
        self.touched
            .lock()
            .expect("not poisoned")
            .insert(row.id, now);
        registered.insert(
            registration_key(&reg),
            Registered {
                registration: reg,
                row,
                at: now,
            },
        );
    }
}

fn registration_key(reg: &DaemonRegistration) -> (Uuid, String, String) {
    (
        reg.organization_id,
        reg.name.clone(),
        reg.tags.owner().to_string(),
    )
}

impl Store {
    /// Marks the daemon that reported on a job as seen now, at most once per throttle period
    /// (see [`SeenDaemons`]): a small write of its own, since liveness is a hint and not part of
    /// the report.
    pub(crate) async fn touch_worker(&self, worker: Option<Uuid>) -> StoreResult<()> {
        let Some(id) = worker.filter(|id| self.seen.due(*id)) else {
            return Ok(());
        };
        daemon::Entity::update_many()
            .col_expr(daemon::Column::LastSeenAt, Expr::value(now()))
            .filter(daemon::Column::Id.eq(id))
            .exec(self.connection())
            .await?;
        Ok(())
    }
}

impl Store {
    /// Creates or refreshes a daemon, unique per organization, name and owner tag. An identical
    /// registration moments after the last one is answered from memory (see [`SeenDaemons`]).
    /// A new daemon in an organization that has `limits.daemons_per_organization` already is
    /// refused with a conflict; existing daemons keep working.
    pub async fn register_daemon(&self, reg: DaemonRegistration) -> StoreResult<daemon::Model> {
        if let Some(row) = self.seen.recent(&reg) {
            return Ok(row);
        }
        if !self.seen.known(&reg) {
            self.check_room_for_daemon(&reg).await?;
        }
        let remembered = reg.clone();
        let at = now();
        let provisioners: Vec<&str> = reg.provisioners.iter().map(|p| p.as_str()).collect();
        let row = daemon::ActiveModel {
            id: Set(Uuid::new_v4()),
            organization_id: Set(reg.organization_id),
            name: Set(reg.name),
            owner_tag: Set(reg.tags.owner().to_string()),
            key_id: Set(reg.key_id),
            tags: Set(reg.tags.to_json()),
            provisioners: Set(serde_json::json!(provisioners)),
            version: Set(reg.version),
            created_at: Set(at),
            last_seen_at: Set(at),
        };
        let mut rows = daemon::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    daemon::Column::OrganizationId,
                    daemon::Column::Name,
                    daemon::Column::OwnerTag,
                ])
                .update_columns([
                    daemon::Column::KeyId,
                    daemon::Column::Tags,
                    daemon::Column::Provisioners,
                    daemon::Column::Version,
                    daemon::Column::LastSeenAt,
                ])
                .to_owned(),
            )
            .exec_with_returning_many(self.connection())
            .await?;
        let row = rows.pop().expect("an upsert returns its row");
        self.seen.remember(remembered, row.clone());
        Ok(row)
    }

    /// Marks a daemon that is shutting down offline at once (its `last_seen_at` moves just past
    /// `stale_after`), so lists do not show it idle until it goes stale.
    pub async fn mark_daemon_offline(
        &self,
        reg: &DaemonRegistration,
        stale_after: Duration,
    ) -> StoreResult<()> {
        self.seen.forget(reg);
        daemon::Entity::update_many()
            .col_expr(
                daemon::Column::LastSeenAt,
                Expr::value(now() - stale_after - Duration::seconds(1)),
            )
            .filter(daemon::Column::OrganizationId.eq(reg.organization_id))
            .filter(daemon::Column::Name.eq(reg.name.clone()))
            .filter(daemon::Column::OwnerTag.eq(reg.tags.owner().to_string()))
            .exec(self.connection())
            .await?;
        Ok(())
    }

    pub async fn daemon_by_id(&self, id: Uuid) -> StoreResult<Option<daemon::Model>> {
        Ok(daemon::Entity::find_by_id(id)
            .one(self.connection())
            .await?)
    }

    /// Daemons of an organization with status and jobs; `stale_after` decides "offline".
    pub async fn list_daemons(
        &self,
        organization_id: Uuid,
        stale_after: Duration,
    ) -> StoreResult<Vec<DaemonView>> {
        let db = self.connection();
        let daemons = daemon::Entity::find()
            .filter(daemon::Column::OrganizationId.eq(organization_id))
            .order_by_asc(daemon::Column::CreatedAt)
            .all(db)
            .await?;
        let keys = provisioner_key::Entity::find()
            .filter(provisioner_key::Column::OrganizationId.eq(organization_id))
            .all(db)
            .await?;
        let cutoff = now() - stale_after;
        let mut views = Vec::with_capacity(daemons.len());
        for d in daemons {
            let recent = job::Entity::find()
                .filter(job::Column::WorkerId.eq(d.id))
                .order_by_desc(job::Column::StartedAt)
                .limit_jobs(2)
                .all(db)
                .await?;
            let current = recent.iter().find(|j| j.completed_at.is_none());
            let previous = recent.iter().find(|j| j.completed_at.is_some());
            let status = if d.last_seen_at < cutoff {
                DaemonStatus::Offline
            } else if current.is_some() {
                DaemonStatus::Busy
            } else {
                DaemonStatus::Idle
            };
            let key_name = d.key_id.and_then(|k| {
                keys.iter()
                    .find(|key| key.id == k)
                    .map(|key| key.name.clone())
            });
            views.push(DaemonView {
                key_name,
                status,
                current_job: current.map(|j| DaemonJob {
                    id: j.id,
                    status: status_of(j),
                }),
                previous_job: previous.map(|j| DaemonJob {
                    id: j.id,
                    status: status_of(j),
                }),
                daemon: d,
            });
        }
        Ok(views)
    }

    /// Daemons of an organization seen since `since` (the online ones).
    pub async fn online_daemons(
        &self,
        organization_id: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<daemon::Model>> {
        Ok(daemon::Entity::find()
            .filter(daemon::Column::OrganizationId.eq(organization_id))
            .filter(daemon::Column::LastSeenAt.gte(since))
            .all(self.connection())
            .await?)
    }

    /// Every daemon of every organization (for metrics).
    pub async fn daemons_everywhere(&self) -> StoreResult<Vec<daemon::Model>> {
        Ok(daemon::Entity::find().all(self.connection()).await?)
    }

    /// Every daemon of an organization, online or not.
    pub async fn all_daemons(&self, organization_id: Uuid) -> StoreResult<Vec<daemon::Model>> {
        Ok(daemon::Entity::find()
            .filter(daemon::Column::OrganizationId.eq(organization_id))
            .order_by_asc(daemon::Column::CreatedAt)
            .all(self.connection())
            .await?)
    }
}

impl Store {
    /// `Err(Conflict)` when `reg` would be a new daemon in an organization at its cap. Concurrent
    /// first registrations may pass together, so the cap can be exceeded by the few of them.
    async fn check_room_for_daemon(&self, reg: &DaemonRegistration) -> StoreResult<()> {
        let db = self.connection();
        let in_org = daemon::Column::OrganizationId.eq(reg.organization_id);
        let exists = daemon::Entity::find()
            .filter(in_org.clone())
            .filter(daemon::Column::Name.eq(reg.name.as_str()))
            .filter(daemon::Column::OwnerTag.eq(reg.tags.owner()))
            .count(db)
            .await?
            > 0;
        if exists {
            return Ok(());
        }
        let registered = daemon::Entity::find().filter(in_org).count(db).await?;
        if registered < self.seen.cap {
            return Ok(());
        }
        Err(StoreError::conflict(
            format!(
                "This organization has {registered} provisioner daemons registered, the most \
                 allowed (limits.daemons_per_organization = {}). Daemons not seen for \
                 reaper.daemon_purge_after_secs are removed; reuse a daemon name or ask an \
                 operator to raise the limit.",
                self.seen.cap
            ),
            Some("name"),
        ))
    }

    /// Deletes daemons not seen since `before` (the reaper's purge); returns how many. Their
    /// jobs keep the worker id.
    pub async fn purge_daemons(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let result = daemon::Entity::delete_many()
            .filter(daemon::Column::LastSeenAt.lt(before))
            .exec(self.connection())
            .await?;
        Ok(result.rows_affected)
    }
}

/// `limit` under a name that does not clash with `QuerySelect::limit` imports.
trait LimitJobs {
    fn limit_jobs(self, n: u64) -> Self;
}

impl LimitJobs for sea_orm::Select<job::Entity> {
    fn limit_jobs(self, n: u64) -> Self {
        sea_orm::QuerySelect::limit(self, n)
    }
}
