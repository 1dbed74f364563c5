//! Queue position and size of pending jobs (contract §5): over every online daemon that can run
//! a job, its best rank in that daemon's order and the largest queue among those daemons.
//! Daemons that can run the same groups share one ranking query; the rest is arithmetic.

use std::collections::{BTreeSet, HashMap};

use chrono::Duration;
use uuid::Uuid;

use super::error::ApiError;
use super::job_views::QueueNumbers;
use super::state::AppState;
use crate::domain::job::JobStatus;
use crate::entity::{provisioner_daemon, provisioner_job};
use crate::store::daemons::daemon_runs;
use crate::store::jobs::{PendingGroup, status_of};

/// What one online daemon can run: indexes into the pending groups.
fn runnable_groups(d: &provisioner_daemon::Model, groups: &[PendingGroup]) -> BTreeSet<usize> {
    groups
        .iter()
        .enumerate()
        .filter(|(_, g)| daemon_runs(d, &g.tags, &g.provisioner))
        .map(|(i, _)| i)
        .collect()
}

/// Queue numbers for the pending jobs among `jobs` (others are absent: 0/0).
pub async fn queue_numbers(
    state: &AppState,
    organization_id: Uuid,
    jobs: &[provisioner_job::Model],
    daemons: &[provisioner_daemon::Model],
) -> Result<HashMap<Uuid, QueueNumbers>, ApiError> {
    let pending: Vec<&provisioner_job::Model> = jobs
        .iter()
        .filter(|j| status_of(j) == JobStatus::Pending)
        .collect();
    let stale = Duration::seconds(state.settings.provisioner.stale_after_secs as i64);
    let cutoff = crate::domain::now() - stale;
    let online: Vec<&provisioner_daemon::Model> = daemons
        .iter()
        .filter(|d| d.last_seen_at >= cutoff)
        .collect();
    if pending.is_empty() || online.is_empty() {
        return Ok(HashMap::new());
    }
    let groups = state.store.pending_groups(organization_id).await?;
    let group_of = |j: &provisioner_job::Model| {
        groups
            .iter()
            .position(|g| g.contains(&j.tags_key, &j.provisioner))
    };

    // Daemons that can run the same groups have the same order: rank once per distinct set.
    let mut sets: HashMap<BTreeSet<usize>, i64> = HashMap::new();
    for d in &online {
        let set = runnable_groups(d, &groups);
        if !set.is_empty() {
            let size = set.iter().map(|&i| groups[i].count).sum();
            sets.insert(set, size);
        }
    }
    let mut numbers: HashMap<Uuid, QueueNumbers> = HashMap::new();
    for (set, size) in &sets {
        let members: Vec<Uuid> = pending
            .iter()
            .filter(|j| group_of(j).is_some_and(|g| set.contains(&g)))
            .map(|j| j.id)
            .collect();
        if members.is_empty() {
            continue;
        }
        let chosen: Vec<&PendingGroup> = set.iter().map(|&i| &groups[i]).collect();
        let ranks = state
            .store
            .pending_ranks(organization_id, &chosen, &members)
            .await?;
        for (id, rank) in ranks {
            let entry = numbers.entry(id).or_insert(QueueNumbers {
                position: rank,
                size: *size,
            });
            entry.position = entry.position.min(rank);
            entry.size = entry.size.max(*size);
        }
    }
    Ok(numbers)
}
