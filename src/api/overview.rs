//! `GET /organizations/{organization}/queue`: the queue at a glance, for `provq status` and the
//! console's overview page. Counts only, so members of the organization may read it too.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::access::org_for_member;
use super::auth::Caller;
use super::error::ApiError;
use super::state::AppState;
use crate::domain::daemon::Liveness;
use crate::domain::job::JobStatus;
use crate::store::overview::QueueOverview;

pub struct OverviewApi;

/// The organization an overview describes.
#[derive(Object)]
pub struct OverviewOrganization {
    id: Uuid,
    name: String,
}

/// Jobs by status.
#[derive(Object)]
pub struct JobCounts {
    pending: i64,
    running: i64,
    succeeded: i64,
    canceling: i64,
    canceled: i64,
    failed: i64,
}

/// Daemons by status; offline means not seen within `stale_after_secs`.
#[derive(Object)]
pub struct DaemonCounts {
    idle: i64,
    busy: i64,
    offline: i64,
}

/// The queue of one organization at one moment.
#[derive(Object)]
pub struct QueueOverviewView {
    organization: OverviewOrganization,
    jobs: JobCounts,
    /// Pending jobs that no online daemon can run (they wait for a daemon with matching tags).
    pending_unmatched: i64,
    /// Age of the oldest pending job; null when nothing is pending.
    #[oai(nullable)]
    oldest_pending_age_seconds: Option<i64>,
    /// Jobs created in the last 5 minutes.
    enqueued_last_5m: i64,
    /// Jobs that succeeded, failed or were canceled in the last 5 minutes.
    finished_last_5m: i64,
    daemons: DaemonCounts,
    /// Whether new prebuild jobs are refused (`provq prebuilds pause`).
    prebuilds_paused: bool,
}

impl QueueOverviewView {
    fn new(org: OverviewOrganization, o: QueueOverview) -> Self {
        let job = |s: JobStatus| o.jobs.get(&s).copied().unwrap_or(0);
        let daemon = |s: &str| o.daemons.get(s).copied().unwrap_or(0);
        Self {
            organization: org,
            jobs: JobCounts {
                pending: job(JobStatus::Pending),
                running: job(JobStatus::Running),
                succeeded: job(JobStatus::Succeeded),
                canceling: job(JobStatus::Canceling),
                canceled: job(JobStatus::Canceled),
                failed: job(JobStatus::Failed),
            },
            pending_unmatched: o.pending_unmatched,
            oldest_pending_age_seconds: o
                .oldest_pending
                .map(|at| (crate::domain::now() - at).num_seconds().max(0)),
            enqueued_last_5m: o.enqueued_recently,
            finished_last_5m: o.finished_recently,
            daemons: DaemonCounts {
                idle: daemon("idle"),
                busy: daemon("busy"),
                offline: daemon("offline"),
            },
            prebuilds_paused: o.prebuilds_paused,
        }
    }
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl OverviewApi {
    /// The organization's queue at a glance (owners, or members of the organization).
    #[oai(path = "/organizations/:organization/queue", method = "get")]
    async fn queue(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
    ) -> Result<Json<QueueOverviewView>, ApiError> {
        let org = org_for_member(state, &caller, &organization.0).await?;
        let liveness = Liveness::now_secs(state.settings.provisioner.stale_after_secs);
        let overview = state.store.queue_overview(org.id, liveness).await?;
        Ok(Json(QueueOverviewView::new(
            OverviewOrganization {
                id: org.id,
                name: org.name,
            },
            overview,
        )))
    }
}
