//! The `ProvisionerJob` JSON of Coder, and turning job rows into it.

use chrono::Duration;
use uuid::Uuid;

use super::error::ApiError;
use super::queue_position::{DaemonIndex, PendingJob, queue_numbers};
use super::state::AppState;
use crate::domain::job::{JobStatus, Provisioner};
use crate::domain::tags::{Tags, map_from_json};
use crate::entity::provisioner_job;
use crate::store::jobs::status_of;
pub use crate::wire::jobs::{
    ProvisionerJob, ProvisionerJobInput, ProvisionerJobMetadata, ProvisionerJobStatus,
    ProvisionerJobType,
};

impl From<JobStatus> for ProvisionerJobStatus {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Pending => Self::Pending,
            JobStatus::Running => Self::Running,
            JobStatus::Succeeded => Self::Succeeded,
            JobStatus::Canceling => Self::Canceling,
            JobStatus::Canceled => Self::Canceled,
            JobStatus::Failed => Self::Failed,
            JobStatus::Unknown => Self::Unknown,
        }
    }
}

/// Queue numbers of one pending job (0/0 when not pending or nobody online can run it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueNumbers {
    pub position: i64,
    pub size: i64,
}

fn job_type(raw: &str) -> ProvisionerJobType {
    match raw {
        "workspace_build" => ProvisionerJobType::WorkspaceBuild,
        "template_version_dry_run" => ProvisionerJobType::TemplateVersionDryRun,
        _ => ProvisionerJobType::TemplateVersionImport,
    }
}

/// Builds the JSON of a job given the organization's daemons and its queue numbers. The job's
/// tags are parsed once, for matching and for the answer.
pub fn present(
    j: provisioner_job::Model,
    daemons: &DaemonIndex,
    queue: QueueNumbers,
) -> ProvisionerJob {
    let status = status_of(&j);
    let worker_name = j
        .worker_id
        .and_then(|w| daemons.name(w))
        .map(str::to_string)
        .unwrap_or_default();
    let tags = Tags::from_stored(map_from_json(&j.tags));
    let (available_workers, queue) = if status == JobStatus::Pending {
        (daemons.available(&tags, &j.provisioner), queue)
    } else {
        (Vec::new(), QueueNumbers::default())
    };
    ProvisionerJob {
        id: j.id,
        created_at: j.created_at,
        started_at: j.started_at,
        completed_at: j.completed_at,
        canceled_at: j.canceled_at,
        error: j.error.filter(|e| !e.is_empty()),
        error_code: j.error_code.filter(|e| !e.is_empty()),
        status: status.into(),
        worker_id: j.worker_id,
        worker_name,
        file_id: j.file_id,
        tags: tags.as_map().clone(),
        queue_position: queue.position,
        queue_size: queue.size,
        organization_id: j.organization_id,
        initiator_id: j.initiator_id,
        input: serde_json::from_value(j.input).unwrap_or_default(),
        job_type: job_type(&j.job_type),
        available_workers,
        metadata: serde_json::from_value(j.metadata).unwrap_or_default(),
        logs_overflowed: j.logs_overflowed,
    }
}

/// Presents jobs of one organization: one daemon lookup for the whole page, and queue numbers
/// whose cost does not grow with the backlog (see `queue_position`).
pub async fn present_all(
    state: &AppState,
    organization_id: Uuid,
    jobs: Vec<provisioner_job::Model>,
) -> Result<Vec<ProvisionerJob>, ApiError> {
    let stale = Duration::seconds(state.settings.provisioner.stale_after_secs as i64);
    let daemons = DaemonIndex::new(
        state.store.all_daemons(organization_id).await?,
        crate::domain::now() - stale,
    );
    let pending: Vec<PendingJob<'_>> = jobs
        .iter()
        .filter(|j| status_of(j) == JobStatus::Pending)
        .map(|j| PendingJob {
            id: j.id,
            tags_key: &j.tags_key,
            provisioner: &j.provisioner,
            is_prebuild: j.is_prebuild,
            created_at: j.created_at,
        })
        .collect();
    let queue = queue_numbers(state, organization_id, &pending, &daemons).await?;
    drop(pending);
    Ok(jobs
        .into_iter()
        .map(|j| {
            let numbers = queue.get(&j.id).copied().unwrap_or_default();
            present(j, &daemons, numbers)
        })
        .collect())
}

/// Whether a provisioner name is one a daemon may serve.
pub fn provisioner_names() -> Vec<&'static str> {
    Provisioner::ALL.iter().map(|p| p.as_str()).collect()
}
