//! Queue position and size of pending jobs (contract §5): over every online daemon that can run
//! a job, its best rank in that daemon's order and the largest queue among those daemons.
//!
//! The work per answer is bounded by the page and the organization's distinct tag sets, never by
//! the number of pending jobs: sizes are maintained counts, ranks are short index range counts
//! (see `store::jobs::queue`). Daemons are parsed once per answer and grouped by what they can
//! run ([`DaemonIndex`]), so 3,000 daemons with a few tag sets cost a few matches per job.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::ApiError;
use super::job_views::QueueNumbers;
use crate::domain::daemon::{Daemon, Liveness, can_run};
use crate::domain::job::Provisioner;
use crate::domain::tags::Tags;
use crate::store::jobs::{AheadQuery, QueueSnapshot};

/// Daemons that can run exactly the same jobs: same tags and provisioners.
struct DaemonKind {
    tags: Tags,
    provisioners: Vec<Provisioner>,
    /// Whether any daemon of this kind is online.
    online: bool,
}

impl DaemonKind {
    fn runs(&self, job_tags: &Tags, provisioner: Provisioner) -> bool {
        can_run(&self.tags, &self.provisioners, job_tags, provisioner)
    }
}

/// The daemons of one organization, parsed once and grouped by kind.
pub struct DaemonIndex {
    kinds: Vec<DaemonKind>,
    /// `(daemon id, kind)` in the order the daemons were read.
    daemons: Vec<(Uuid, usize)>,
    names: HashMap<Uuid, String>,
}

impl DaemonIndex {
    /// Indexes `daemons`; `liveness` says which are online.
    pub fn new(daemons: Vec<Daemon>, liveness: Liveness) -> Self {
        let mut kinds: Vec<DaemonKind> = Vec::new();
        let mut by_key: HashMap<(String, Vec<&'static str>), usize> = HashMap::new();
        let mut ids = Vec::with_capacity(daemons.len());
        let mut names = HashMap::with_capacity(daemons.len());
        for d in daemons {
            let mut provisioners = d.provisioners;
            provisioners.sort_unstable_by_key(|p| p.as_str());
            provisioners.dedup();
            let online = liveness.is_online(d.last_seen_at);
            let tags = d.tags;
            let serves = provisioners.iter().map(|p| p.as_str()).collect();
            let kind = *by_key.entry((tags.key(), serves)).or_insert_with(|| {
                kinds.push(DaemonKind {
                    tags,
                    provisioners,
                    online: false,
                });
                kinds.len() - 1
            });
            kinds[kind].online |= online;
            ids.push((d.id, kind));
            names.insert(d.id, d.name);
        }
        Self {
            kinds,
            daemons: ids,
            names,
        }
    }

    pub fn name(&self, id: Uuid) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// Ids of the daemons (online or not) that can run a job, in the order they were read.
    pub fn available(&self, job_tags: &Tags, provisioner: Provisioner) -> Vec<Uuid> {
        let runs: Vec<bool> = self
            .kinds
            .iter()
            .map(|k| k.runs(job_tags, provisioner))
            .collect();
        self.daemons
            .iter()
            .filter(|(_, kind)| runs[*kind])
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether any daemon is online: without one, no job has queue numbers.
    pub fn any_online(&self) -> bool {
        self.kinds.iter().any(|k| k.online)
    }
}

/// What queue numbers need of a pending job.
pub struct PendingJob<'a> {
    pub id: Uuid,
    pub tags_key: &'a str,
    pub provisioner: Provisioner,
    pub is_prebuild: bool,
    pub created_at: DateTime<Utc>,
}

/// Queue numbers for `jobs` (all pending; a job that is no longer pending gets none).
pub async fn queue_numbers(
    snapshot: QueueSnapshot,
    jobs: &[PendingJob<'_>],
    daemons: &DaemonIndex,
) -> Result<HashMap<Uuid, QueueNumbers>, ApiError> {
    if jobs.is_empty() || !daemons.any_online() {
        return Ok(HashMap::new());
    }
    let groups = &snapshot.groups;
    // Online kinds that can run the same groups have the same order: one set each.
    let mut sets: Vec<BTreeSet<usize>> = Vec::new();
    for kind in daemons.kinds.iter().filter(|k| k.online) {
        let set: BTreeSet<usize> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.provisioner().is_some_and(|p| kind.runs(&g.tags, p)))
            .map(|(i, _)| i)
            .collect();
        if !set.is_empty() && !sets.contains(&set) {
            sets.push(set);
        }
    }
    // Per job: the sets of the daemons that can run it, and one query per group in them.
    let mut queries: Vec<AheadQuery> = Vec::new();
    let mut plans: Vec<(usize, Vec<usize>, HashMap<usize, usize>)> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let Some(own) = groups
            .iter()
            .position(|g| g.contains(job.tags_key, job.provisioner.as_str()))
        else {
            continue;
        };
        let relevant: Vec<usize> = (0..sets.len())
            .filter(|&s| sets[s].contains(&own))
            .collect();
        let mut query_of = HashMap::new();
        for &s in &relevant {
            for &g in &sets[s] {
                query_of.entry(g).or_insert_with(|| {
                    queries.push(AheadQuery {
                        group: g,
                        is_prebuild: job.is_prebuild,
                        created_at: job.created_at,
                        id: job.id,
                    });
                    queries.len() - 1
                });
            }
        }
        if !relevant.is_empty() {
            plans.push((j, relevant, query_of));
        }
    }
    let ranks = snapshot.ahead(&queries).await?;
    // Sizes in the snapshot the ranks were counted in.
    let size_of = |set: &BTreeSet<usize>| -> i64 {
        set.iter()
            .map(|&g| {
                let (humans, prebuilds) = ranks.sizes[g];
                humans + prebuilds
            })
            .sum()
    };
    let mut numbers = HashMap::with_capacity(plans.len());
    for (j, relevant, query_of) in plans {
        let mut best = QueueNumbers {
            position: i64::MAX,
            size: 0,
        };
        for s in relevant {
            let set = &sets[s];
            let size = size_of(set);
            let rank = 1 + set.iter().map(|g| ranks.ahead[query_of[g]]).sum::<i64>();
            best.position = best.position.min(rank.min(size));
            best.size = best.size.max(size);
        }
        numbers.insert(jobs[j].id, best);
    }
    Ok(numbers)
}
