//! The `ProvisionerJob` JSON of Coder, as `/provisionerjobs` serves it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum ProvisionerJobStatus {
    Pending,
    Running,
    Succeeded,
    Canceling,
    Canceled,
    Failed,
    Unknown,
}

impl ProvisionerJobStatus {
    /// The status as the JSON writes it.
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ProvisionerJobType {
    TemplateVersionImport,
    WorkspaceBuild,
    TemplateVersionDryRun,
}

/// What the job works on.
#[derive(Debug, Clone, Default, Object, serde::Serialize, serde::Deserialize)]
pub struct ProvisionerJobInput {
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_version_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_build_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Names shown to people: which template and workspace the job belongs to.
#[derive(Debug, Clone, Default, Object, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ProvisionerJobMetadata {
    // Defaults field by field: a struct-level default documents `"default": null` for the
    // optional UUIDs, which OpenAPI 3.0 forbids on non-nullable fields.
    #[oai(default)]
    pub template_version_name: String,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<Uuid>,
    #[oai(default)]
    pub template_name: String,
    #[oai(default)]
    pub template_display_name: String,
    #[oai(default)]
    pub template_icon: String,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_empty, default)]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub workspace_name: String,
}

/// A provisioner job, field for field as Coder shows it.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct ProvisionerJob {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canceled_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    pub status: ProvisionerJobStatus,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<Uuid>,
    pub worker_name: String,
    pub file_id: Uuid,
    pub tags: BTreeMap<String, String>,
    pub queue_position: i64,
    pub queue_size: i64,
    pub organization_id: Uuid,
    pub initiator_id: Uuid,
    pub input: ProvisionerJobInput,
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub job_type: ProvisionerJobType,
    #[oai(skip_serializing_if_is_empty)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub available_workers: Vec<Uuid>,
    pub metadata: ProvisionerJobMetadata,
    pub logs_overflowed: bool,
}

/// One log line of a job.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct ProvisionerJobLog {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub log_source: String,
    pub log_level: String,
    pub stage: String,
    pub output: String,
}
