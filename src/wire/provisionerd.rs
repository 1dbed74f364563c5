//! The worker protocol (`/api/v2/provisionerd/…`): what a daemon sends and what it gets back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use uuid::Uuid;

use super::jobs::{ProvisionerJobInput, ProvisionerJobMetadata};

#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct AcquireRequest {
    /// The daemon's name (1–64 characters), unique per organization and owner.
    pub name: Option<String>,
    /// Provisioners it runs (default `["terraform"]`).
    pub provisioners: Option<Vec<String>>,
    /// Its tags (not with a provisioner key, whose tags are fixed).
    /// A JSON object of string values.
    pub tags: Option<serde_json::Value>,
    /// Organization id or name (PSK and session auth; default: the default organization).
    pub organization: Option<String>,
    pub version: Option<String>,
    /// How long to wait for a job (0–30 s, default 10).
    pub wait_seconds: Option<i64>,
}

/// A job handed to a daemon.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct AcquiredJob {
    pub job_id: Uuid,
    /// Present with every later call about this job.
    pub lease_token: String,
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub job_type: String,
    pub provisioner: String,
    pub organization_id: Uuid,
    pub initiator_id: Uuid,
    pub input: ProvisionerJobInput,
    pub tags: BTreeMap<String, String>,
    pub file_id: Uuid,
    pub metadata: ProvisionerJobMetadata,
    #[serde(serialize_with = "super::rfc3339")]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct AcquireResponse {
    pub daemon_id: Uuid,
    pub job: AcquiredJob,
}

/// Acquire up to `max_jobs` jobs, optionally reporting the daemon's finished jobs first.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct AcquireJobsRequest {
    /// Who the daemon is and how long it waits: the fields of `/provisionerd/acquire`.
    #[oai(flatten)]
    #[serde(flatten)]
    pub daemon: AcquireRequest,
    /// Most jobs to hand out in this call (1–32, default 1): a daemon's free job slots.
    pub max_jobs: Option<i64>,
    /// A job this daemon finished, reported in the same transaction as the acquire.
    pub report: Option<JobReport>,
    /// Jobs this daemon finished (with `report`, at most 32 in all, each job once), reported
    /// in the same transaction as the acquire: all of them, or none if one lease is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<Vec<JobReport>>,
}

/// The outcome of a job, as `/complete` (no `error`) or `/fail` (with `error`) would report it.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct JobReport {
    pub job_id: Uuid,
    pub lease_token: Option<String>,
    /// Present and non-empty: the job failed with this message.
    pub error: Option<String>,
    pub error_code: Option<String>,
}

#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct AcquireJobsResponse {
    pub daemon_id: Uuid,
    /// The jobs handed out, oldest first; empty when none came within `wait_seconds`.
    pub jobs: Vec<AcquiredJob>,
}

#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    pub level: Option<String>,
    pub stage: Option<String>,
    pub output: Option<String>,
    pub source: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct UpdateJobRequest {
    pub lease_token: Option<String>,
    pub logs: Option<Vec<LogLine>>,
}

#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct UpdateJobResponse {
    /// The job was canceled: stop it and complete (or fail) it.
    pub canceled: bool,
    pub logs_overflowed: bool,
}

#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct CompleteJobRequest {
    pub lease_token: Option<String>,
}

#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct FailJobRequest {
    pub lease_token: Option<String>,
    pub error: Option<String>,
    pub error_code: Option<String>,
}

impl AcquireRequest {
    /// A request for daemon `name` with every other field at its default.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            provisioners: None,
            tags: None,
            organization: None,
            version: None,
            wait_seconds: None,
        }
    }
}
