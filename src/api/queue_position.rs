//! Queue position and size of pending jobs (contract §5). Filled in by the listing issue; until
//! then every job reports 0/0.

use std::collections::HashMap;

use uuid::Uuid;

use super::error::ApiError;
use super::job_views::QueueNumbers;
use super::state::AppState;
use crate::entity::{provisioner_daemon, provisioner_job};

pub async fn queue_numbers(
    _state: &AppState,
    _organization_id: Uuid,
    _jobs: &[provisioner_job::Model],
    _daemons: &[provisioner_daemon::Model],
) -> Result<HashMap<Uuid, QueueNumbers>, ApiError> {
    Ok(HashMap::new())
}
