//! Provisioner daemons: what the store hands up about one, and the two rules about daemons that
//! every caller shares: liveness (is it online, idle, busy or offline) and matching (may it run
//! a job). Each rule is written here once; its SQL twin sits next to the queries in the store,
//! with a test that proves the two agree.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::job::{JobStatus, Provisioner};
use super::tags::Tags;

/// A registered daemon, as read from the database.
#[derive(Debug, Clone, PartialEq)]
pub struct Daemon {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    /// The owner tag the daemon is unique by (with its organization and name).
    pub owner_tag: String,
    /// The provisioner key it authenticated with, if any.
    pub key_id: Option<Uuid>,
    pub tags: Tags,
    pub provisioners: Vec<Provisioner>,
    pub version: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

impl Daemon {
    /// Whether this daemon may run a job with these (normalised) tags and provisioner (see
    /// [`can_run`]); the organization is the caller's to check.
    pub fn can_run(&self, job_tags: &Tags, provisioner: Provisioner) -> bool {
        can_run(&self.tags, &self.provisioners, job_tags, provisioner)
    }

    /// The provisioners it serves, by name, in the order it registered them.
    pub fn provisioner_names(&self) -> Vec<&'static str> {
        self.provisioners.iter().map(|p| p.as_str()).collect()
    }
}

/// The matching rule: a daemon with these tags and provisioners may run a job with `job_tags`
/// and `provisioner` when it serves the provisioner and the job's tags are satisfied by its own
/// ([`Tags::satisfied_by`]). The SQL twin is the store's `runnable_by` (the claim), proven equal
/// by the `matching_sql` test.
pub fn can_run(
    daemon_tags: &Tags,
    daemon_provisioners: &[Provisioner],
    job_tags: &Tags,
    provisioner: Provisioner,
) -> bool {
    daemon_provisioners.contains(&provisioner)
        // A job's tags must be a subset of the daemon's: a job with more tags fails at once.
        && job_tags.as_map().len() <= daemon_tags.as_map().len()
        && job_tags.satisfied_by(daemon_tags)
}

/// How a daemon is doing, as lists and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DaemonStatus {
    Idle,
    Busy,
    Offline,
}

impl DaemonStatus {
    pub const ALL: [DaemonStatus; 3] = [Self::Idle, Self::Busy, Self::Offline];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }
}

/// The liveness rule at one moment: a daemon is online when it was seen within `stale_after`
/// (`last_seen_at >= now - stale_after`), and then busy when it holds an unfinished job. The SQL
/// twin is `last_seen_at >= online_since()` in the store's daemon queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    online_since: DateTime<Utc>,
}

impl Liveness {
    /// Liveness at `now` for daemons that go stale after `stale_after`.
    pub fn at(now: DateTime<Utc>, stale_after: Duration) -> Self {
        Self {
            online_since: now - stale_after,
        }
    }

    /// Liveness right now.
    pub fn now(stale_after: Duration) -> Self {
        Self::at(super::now(), stale_after)
    }

    /// Liveness from `provisioner.stale_after_secs`.
    pub fn now_secs(stale_after_secs: u64) -> Self {
        Self::now(Duration::seconds(
            i64::try_from(stale_after_secs).unwrap_or(i64::MAX / 1_000),
        ))
    }

    /// The earliest `last_seen_at` of an online daemon.
    pub fn online_since(self) -> DateTime<Utc> {
        self.online_since
    }

    pub fn is_online(self, last_seen_at: DateTime<Utc>) -> bool {
        last_seen_at >= self.online_since
    }

    /// Offline when not seen within `stale_after`; else busy when `busy`, else idle.
    pub fn status(self, last_seen_at: DateTime<Utc>, busy: bool) -> DaemonStatus {
        if !self.is_online(last_seen_at) {
            DaemonStatus::Offline
        } else if busy {
            DaemonStatus::Busy
        } else {
            DaemonStatus::Idle
        }
    }
}

/// A job as shown on a daemon (current or previous).
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonJob {
    pub id: Uuid,
    pub status: JobStatus,
}

/// A daemon as the daemon lists show it: with its key's name, status and jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonView {
    pub daemon: Daemon,
    pub key_name: Option<String>,
    pub status: DaemonStatus,
    pub current_job: Option<DaemonJob>,
    pub previous_job: Option<DaemonJob>,
}

/// A provisioner key: a secret daemons of one organization authenticate with, whose tags they
/// take on.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionerKey {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub hashed_secret: String,
    pub tags: Tags,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(tags: Tags, provisioners: Vec<Provisioner>) -> Daemon {
        let at = Utc::now();
        Daemon {
            id: Uuid::new_v4(),
            organization_id: Uuid::new_v4(),
            name: "d".into(),
            owner_tag: String::new(),
            key_id: None,
            tags,
            provisioners,
            version: String::new(),
            created_at: at,
            last_seen_at: at,
        }
    }

    #[test]
    fn a_daemon_runs_jobs_of_its_provisioners_whose_tags_it_satisfies() {
        let d = daemon(Tags::untagged(), vec![Provisioner::Echo]);
        assert!(d.can_run(&Tags::untagged(), Provisioner::Echo));
        assert!(!d.can_run(&Tags::untagged(), Provisioner::Terraform));
        let linux = Tags::normalize([("os".into(), "linux".into())].into(), None).unwrap();
        assert!(!d.can_run(&linux, Provisioner::Echo));
        assert_eq!(d.provisioner_names(), ["echo"]);
    }

    #[test]
    fn liveness_is_offline_past_stale_after_then_busy_or_idle() {
        let now = Utc::now();
        let live = Liveness::at(now, Duration::seconds(90));
        let edge = now - Duration::seconds(90);
        assert_eq!(live.online_since(), edge);
        assert!(live.is_online(edge));
        assert!(!live.is_online(edge - Duration::microseconds(1)));
        assert_eq!(live.status(now, false), DaemonStatus::Idle);
        assert_eq!(live.status(now, true), DaemonStatus::Busy);
        assert_eq!(
            live.status(edge - Duration::seconds(1), true),
            DaemonStatus::Offline
        );
    }
}
