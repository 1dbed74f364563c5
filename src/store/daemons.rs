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

use super::{Store, StoreError, StoreResult, rows};
use crate::domain::daemon::{Daemon, DaemonJob, DaemonView, Liveness};
use crate::domain::job::Job;
use crate::domain::now;
use crate::entity::{provisioner_daemon as daemon, provisioner_job as job, provisioner_key};

pub use crate::domain::registration::DaemonRegistration;

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
    row: Daemon,
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
    fn recent(&self, reg: &DaemonRegistration) -> Option<Daemon> {
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

    fn remember(&self, reg: DaemonRegistration, row: Daemon) {
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
    pub async fn register_daemon(&self, reg: DaemonRegistration) -> StoreResult<Daemon> {
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
        let row = Daemon::try_from(rows.pop().expect("an upsert returns its row"))?;
        self.seen.remember(remembered, row.clone());
        Ok(row)
    }

    /// Marks a daemon that is shutting down offline at once (its `last_seen_at` moves just
    /// before `liveness` counts it online), so lists do not show it idle until it goes stale.
    pub async fn mark_daemon_offline(
        &self,
        reg: &DaemonRegistration,
        liveness: Liveness,
    ) -> StoreResult<()> {
        self.seen.forget(reg);
        daemon::Entity::update_many()
            .col_expr(
                daemon::Column::LastSeenAt,
                Expr::value(liveness.online_since() - Duration::seconds(1)),
            )
            .filter(daemon::Column::OrganizationId.eq(reg.organization_id))
            .filter(daemon::Column::Name.eq(reg.name.clone()))
            .filter(daemon::Column::OwnerTag.eq(reg.tags.owner().to_string()))
            .exec(self.connection())
            .await?;
        Ok(())
    }

    /// Daemons of an organization with status and jobs.
    pub async fn list_daemons(
        &self,
        organization_id: Uuid,
        liveness: Liveness,
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
        let mut views = Vec::with_capacity(daemons.len());
        for d in daemons {
            let d = Daemon::try_from(d)?;
            let recent: Vec<Job> = rows::all(
                job::Entity::find()
                    .filter(job::Column::WorkerId.eq(d.id))
                    .order_by_desc(job::Column::StartedAt)
                    .limit_jobs(2)
                    .all(db)
                    .await?,
            )?;
            let current = recent.iter().find(|j| j.completed_at.is_none());
            let previous = recent.iter().find(|j| j.completed_at.is_some());
            let status = liveness.status(d.last_seen_at, current.is_some());
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
                    status: j.status(),
                }),
                previous_job: previous.map(|j| DaemonJob {
                    id: j.id,
                    status: j.status(),
                }),
                daemon: d,
            });
        }
        Ok(views)
    }

    /// Every daemon, online or not, of one organization or (`None`, for metrics) of all, in
    /// registration order.
    pub async fn daemons(&self, organization_id: Option<Uuid>) -> StoreResult<Vec<Daemon>> {
        let mut query = daemon::Entity::find();
        if let Some(org) = organization_id {
            query = query.filter(daemon::Column::OrganizationId.eq(org));
        }
        let rows = query
            .order_by_asc(daemon::Column::CreatedAt)
            .all(self.connection())
            .await?;
        rows::all(rows)
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
