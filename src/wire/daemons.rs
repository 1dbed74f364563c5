//! The daemon list answer of `/organizations/{organization}/provisionerdaemons`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use uuid::Uuid;

use super::jobs::ProvisionerJobStatus;

#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct DaemonJobView {
    pub id: Uuid,
    pub status: ProvisionerJobStatus,
}

#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct ProvisionerDaemon {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<DateTime<Utc>>,
    pub name: String,
    pub version: String,
    pub provisioners: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub key_name: String,
    /// `idle`, `busy` or `offline`.
    pub status: String,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_job: Option<DaemonJobView>,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_job: Option<DaemonJobView>,
}
