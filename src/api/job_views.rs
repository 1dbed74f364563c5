//! The `ProvisionerJob` JSON of Coder, and turning job rows into it.

use std::collections::HashMap;

use uuid::Uuid;

use super::error::ApiError;
use super::queue_position::{DaemonIndex, PendingJob, queue_numbers};
use super::state::AppState;
use crate::domain::daemon::Liveness;
use crate::domain::job::{Job, JobInput, JobMetadata, JobStatus, JobType};
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

impl From<JobType> for ProvisionerJobType {
    fn from(t: JobType) -> Self {
        match t {
            JobType::TemplateVersionImport => Self::TemplateVersionImport,
            JobType::WorkspaceBuild => Self::WorkspaceBuild,
            JobType::TemplateVersionDryRun => Self::TemplateVersionDryRun,
        }
    }
}

impl From<JobInput> for ProvisionerJobInput {
    fn from(i: JobInput) -> Self {
        Self {
            template_version_id: i.template_version_id,
            workspace_build_id: i.workspace_build_id,
            error: i.error,
        }
    }
}

impl From<JobMetadata> for ProvisionerJobMetadata {
    fn from(m: JobMetadata) -> Self {
        Self {
            template_version_name: m.template_version_name,
            template_id: m.template_id,
            template_name: m.template_name,
            template_display_name: m.template_display_name,
            template_icon: m.template_icon,
            workspace_id: m.workspace_id,
            workspace_name: m.workspace_name,
        }
    }
}

/// Queue numbers of one pending job (0/0 when not pending or nobody online can run it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueNumbers {
    pub position: i64,
    pub size: i64,
}

/// Builds the JSON of a job given the organization's daemons and its queue numbers.
pub fn present(j: Job, daemons: &DaemonIndex, queue: QueueNumbers) -> ProvisionerJob {
    let status = j.status();
    let worker_name = j
        .worker_id
        .and_then(|w| daemons.name(w))
        .map(str::to_string)
        .unwrap_or_default();
    let (available_workers, queue) = if status == JobStatus::Pending {
        (daemons.available(&j.tags, j.provisioner), queue)
    } else {
        (Vec::new(), QueueNumbers::default())
    };
    ProvisionerJob {
        id: j.id,
        created_at: j.created_at,
        started_at: j.started_at,
        completed_at: j.completed_at,
        canceled_at: j.canceled_at,
        error: j.error,
        error_code: j.error_code.map(|c| c.as_str().to_string()),
        status: status.into(),
        worker_id: j.worker_id,
        worker_name,
        file_id: j.file_id,
        tags: j.tags.as_map().clone(),
        queue_position: queue.position,
        queue_size: queue.size,
        organization_id: j.organization_id,
        initiator_id: j.initiator_id,
        input: j.input.into(),
        job_type: j.job_type.into(),
        available_workers,
        metadata: j.metadata.into(),
        logs_overflowed: j.logs_overflowed,
    }
}

/// Presents jobs of one organization: one daemon lookup for the whole page, and queue numbers
/// whose cost does not grow with the backlog (see `queue_position`).
pub async fn present_all(
    state: &AppState,
    organization_id: Uuid,
    jobs: Vec<Job>,
) -> Result<Vec<ProvisionerJob>, ApiError> {
    // The daemons and the queue's groups are independent reads. On a pool of connections
    // (PostgreSQL) they run at once: one round trip of waiting, not two. SQLite's one
    // connection would run them one after the other anyway, so there the groups are read only
    // when an online daemon can give them a use: the extra statement cost 15-30 % of the HTTP
    // enqueue rate with no daemon online.
    let any_pending = jobs.iter().any(|j| j.status() == JobStatus::Pending);
    let liveness = Liveness::now_secs(state.settings.provisioner.stale_after_secs);
    let groups = || async {
        match any_pending {
            true => state.store.queue_snapshot(organization_id).await.map(Some),
            false => Ok(None),
        }
    };
    let (daemons, snapshot) = if state.store.has_connection_pool() {
        let (daemons, snapshot) =
            tokio::try_join!(state.store.daemons(Some(organization_id)), groups())?;
        (DaemonIndex::new(daemons, liveness), snapshot)
    } else {
        let daemons = DaemonIndex::new(state.store.daemons(Some(organization_id)).await?, liveness);
        let snapshot = match daemons.any_online() {
            true => groups().await?,
            false => None,
        };
        (daemons, snapshot)
    };
    let pending: Vec<PendingJob<'_>> = jobs
        .iter()
        .filter(|j| j.status() == JobStatus::Pending)
        .map(|j| PendingJob {
            id: j.id,
            tags_key: &j.tags_key,
            provisioner: j.provisioner,
            is_prebuild: j.is_prebuild,
            created_at: j.created_at,
        })
        .collect();
    let queue = match snapshot {
        Some(snapshot) => queue_numbers(snapshot, &pending, &daemons).await?,
        None => HashMap::new(),
    };
    drop(pending);
    Ok(jobs
        .into_iter()
        .map(|j| {
            let numbers = queue.get(&j.id).copied().unwrap_or_default();
            present(j, &daemons, numbers)
        })
        .collect())
}
