//! Job status (derived from timestamps, never stored), job types, provisioners, error codes and
//! log levels: the vocabulary of the job lifecycle.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tags::Tags;

/// A value that is not one of a fixed set of names (a status, a job type, a provisioner, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{value}\" is not a valid {what} (one of {allowed})")]
pub struct UnknownName {
    pub value: String,
    /// What the value should have named ("status", "job type", …).
    pub what: &'static str,
    /// The names it may be, comma-separated.
    pub allowed: String,
}

/// A job's status, derived by [`derive_status`] in Rust and by [`STATUS_SQL`] in queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Pending,
    Running,
    Succeeded,
    Canceling,
    Canceled,
    Failed,
    /// Valid as a filter value; no job ever has it.
    Unknown,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        Self::Pending,
        Self::Running,
        Self::Succeeded,
        Self::Canceling,
        Self::Canceled,
        Self::Failed,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Canceling => "canceling",
            Self::Canceled => "canceled",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(value: &str) -> Result<Self, UnknownName> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| UnknownName {
                value: value.to_string(),
                what: "status",
                allowed: Self::ALL.map(Self::as_str).join(", "),
            })
    }

    /// Whether the job will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Canceled | Self::Failed)
    }

    /// The SQL condition selecting jobs of this status (index-friendly, equivalent to
    /// `STATUS_SQL = '<status>'`).
    pub fn sql_predicate(self) -> &'static str {
        match self {
            Self::Pending => {
                "(started_at IS NULL AND canceled_at IS NULL AND completed_at IS NULL AND COALESCE(error, '') = '')"
            }
            Self::Running => {
                "(started_at IS NOT NULL AND canceled_at IS NULL AND completed_at IS NULL AND COALESCE(error, '') = '')"
            }
            Self::Canceling => {
                "(canceled_at IS NOT NULL AND completed_at IS NULL AND COALESCE(error, '') = '')"
            }
            Self::Succeeded => {
                "(completed_at IS NOT NULL AND canceled_at IS NULL AND COALESCE(error, '') = '')"
            }
            Self::Canceled => {
                "(completed_at IS NOT NULL AND canceled_at IS NOT NULL AND COALESCE(error, '') = '')"
            }
            Self::Failed => "(COALESCE(error, '') <> '')",
            Self::Unknown => "(1 = 0)",
        }
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status rule of contract §5, in order: completed → (error → failed; canceled → canceled;
/// else succeeded); not completed → (error → failed; canceled → canceling; not started →
/// pending; else running).
pub fn derive_status(
    started_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    error: Option<&str>,
) -> JobStatus {
    let failed = error.is_some_and(|e| !e.is_empty());
    match (completed_at.is_some(), failed, canceled_at.is_some()) {
        (_, true, _) => JobStatus::Failed,
        (true, false, true) => JobStatus::Canceled,
        (true, false, false) => JobStatus::Succeeded,
        (false, false, true) => JobStatus::Canceling,
        (false, false, false) if started_at.is_none() => JobStatus::Pending,
        (false, false, false) => JobStatus::Running,
    }
}

/// The SQL twin of [`derive_status`] over the columns of `provisioner_jobs`; a table test runs
/// both on every combination of the inputs.
pub const STATUS_SQL: &str = "CASE \
    WHEN COALESCE(error, '') <> '' THEN 'failed' \
    WHEN completed_at IS NOT NULL AND canceled_at IS NOT NULL THEN 'canceled' \
    WHEN completed_at IS NOT NULL THEN 'succeeded' \
    WHEN canceled_at IS NOT NULL THEN 'canceling' \
    WHEN started_at IS NULL THEN 'pending' \
    ELSE 'running' END";

/// A provisioner job, as read from the database: every column already parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The failure message; `None` when empty.
    pub error: Option<String>,
    pub error_code: Option<ErrorCode>,
    pub organization_id: Uuid,
    pub initiator_id: Uuid,
    pub is_prebuild: bool,
    pub provisioner: Provisioner,
    pub job_type: JobType,
    pub input: JobInput,
    pub file_id: Uuid,
    pub tags: Tags,
    /// The tags as canonical text ([`Tags::key`]), for grouping by tag set.
    pub tags_key: String,
    pub metadata: JobMetadata,
    /// The daemon that claimed it.
    pub worker_id: Option<Uuid>,
    /// The hash of the current lease's secret.
    pub lease_token: Option<String>,
    pub logs_length: i64,
    pub logs_overflowed: bool,
}

impl Job {
    pub fn status(&self) -> JobStatus {
        derive_status(
            self.started_at,
            self.canceled_at,
            self.completed_at,
            self.error.as_deref(),
        )
    }
}

/// What a job works on (stored as JSON; absent fields are `None`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_version_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_build_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Names shown to people: which template and workspace a job belongs to (stored as JSON;
/// absent fields are empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobMetadata {
    pub template_version_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<Uuid>,
    pub template_name: String,
    pub template_display_name: String,
    pub template_icon: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<Uuid>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub workspace_name: String,
}

/// One log line of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobLog {
    pub id: i64,
    pub job_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub source: LogSource,
    pub level: LogLevel,
    pub stage: String,
    pub output: String,
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(value: &str) -> Result<Self, UnknownName> {
                match value {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownName {
                        value: other.to_string(),
                        what: $what,
                        allowed: [$($text),+].join(", "),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What a job does.
    JobType, "job type" {
        TemplateVersionImport => "template_version_import",
        WorkspaceBuild => "workspace_build",
        TemplateVersionDryRun => "template_version_dry_run",
    }
);

string_enum!(
    /// Which provisioner runs a job.
    Provisioner, "provisioner" {
        Terraform => "terraform",
        Echo => "echo",
    }
);

string_enum!(
    /// Machine-readable failure reasons.
    ErrorCode, "error code" {
        RequiredTemplateVariables => "REQUIRED_TEMPLATE_VARIABLES",
    }
);

string_enum!(
    /// Severity of a log line.
    LogLevel, "log level" {
        Trace => "trace",
        Debug => "debug",
        Info => "info",
        Warn => "warn",
        Error => "error",
    }
);

string_enum!(
    /// Who wrote a log line.
    LogSource, "log source" {
        ProvisionerDaemon => "provisioner_daemon",
        Provisioner => "provisioner",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_contract_order() {
        let t = Some(Utc::now());
        assert_eq!(derive_status(None, None, None, None), JobStatus::Pending);
        assert_eq!(derive_status(t, None, None, None), JobStatus::Running);
        assert_eq!(derive_status(t, t, None, None), JobStatus::Canceling);
        assert_eq!(derive_status(t, None, t, None), JobStatus::Succeeded);
        assert_eq!(derive_status(t, t, t, None), JobStatus::Canceled);
        assert_eq!(derive_status(None, t, t, None), JobStatus::Canceled);
        assert_eq!(derive_status(t, None, t, Some("boom")), JobStatus::Failed);
        assert_eq!(
            derive_status(t, None, None, Some("boom")),
            JobStatus::Failed
        );
        assert_eq!(derive_status(t, None, t, Some("")), JobStatus::Succeeded);
    }

    #[test]
    fn enums_parse_their_own_names_only() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Ok(s));
        }
        assert!(JobStatus::parse("done").is_err());
        assert_eq!(
            JobType::parse("workspace_build"),
            Ok(JobType::WorkspaceBuild)
        );
        assert!(
            JobType::parse("build")
                .unwrap_err()
                .to_string()
                .contains("workspace_build")
        );
        assert_eq!(Provisioner::parse("echo"), Ok(Provisioner::Echo));
        assert!(Provisioner::parse("ansible").is_err());
    }
}
