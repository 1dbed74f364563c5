//! Admin views of daemons and their credentials: the daemon list and provisioner keys.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::access::org_for_owner;
use super::auth::Caller;
use super::daemon_auth::builtin_key_name;
use super::error::ApiError;
use super::state::AppState;
use crate::domain::Validations;
use crate::domain::daemon::{DaemonJob, Liveness};
use crate::domain::names::{NameError, Username};
use crate::domain::tags::Tags;
use crate::wire::daemons::{DaemonJobView, ProvisionerDaemon};

pub struct DaemonsApi;

impl From<DaemonJob> for DaemonJobView {
    fn from(j: DaemonJob) -> Self {
        Self {
            id: j.id,
            status: j.status.into(),
        }
    }
}

#[derive(Object)]
pub struct CreateProvisionerKeyRequest {
    name: Option<String>,
    /// A JSON object of string values.
    tags: Option<serde_json::Value>,
}

#[derive(Object)]
pub struct CreateProvisionerKeyResponse {
    /// The key: shown once, stored hashed.
    key: String,
}

#[derive(Object)]
pub struct ProvisionerKey {
    id: Uuid,
    created_at: DateTime<Utc>,
    organization: Uuid,
    name: String,
    tags: BTreeMap<String, String>,
}

#[derive(ApiResponse)]
pub enum KeyCreated {
    #[oai(status = 201)]
    Created(Json<CreateProvisionerKeyResponse>),
}

#[derive(ApiResponse)]
pub enum Deleted {
    #[oai(status = 204)]
    NoContent,
}

/// Names provq gives the built-in credentials; keys may not take them.
const RESERVED_KEY_NAMES: &[&str] = &["built-in", "user-auth", "psk"];

#[OpenApi(tag = "ApiTags::Daemons")]
impl DaemonsApi {
    /// The organization's daemons with their status (`idle`, `busy`, `offline`).
    #[oai(
        path = "/organizations/:organization/provisionerdaemons",
        method = "get"
    )]
    async fn list(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
    ) -> Result<Json<Vec<ProvisionerDaemon>>, ApiError> {
        let org = org_for_owner(state, &caller, &organization.0).await?;
        let liveness = Liveness::now_secs(state.settings.provisioner.stale_after_secs);
        let views = state.store.list_daemons(org.id, liveness).await?;
        Ok(Json(
            views
                .into_iter()
                .map(|v| {
                    let key_name = v
                        .key_name
                        .or_else(|| builtin_key_name(v.daemon.key_id).map(str::to_string))
                        .unwrap_or_default();
                    let provisioners = v
                        .daemon
                        .provisioner_names()
                        .into_iter()
                        .map(str::to_string)
                        .collect();
                    ProvisionerDaemon {
                        id: v.daemon.id,
                        organization_id: v.daemon.organization_id,
                        key_id: v.daemon.key_id,
                        created_at: v.daemon.created_at,
                        last_seen_at: Some(v.daemon.last_seen_at),
                        name: v.daemon.name,
                        version: v.daemon.version,
                        provisioners,
                        tags: v.daemon.tags.as_map().clone(),
                        key_name,
                        status: v.status.as_str().to_string(),
                        current_job: v.current_job.map(Into::into),
                        previous_job: v.previous_job.map(Into::into),
                    }
                })
                .collect(),
        ))
    }

    /// Creates a provisioner key; the key is in the answer only.
    #[oai(path = "/organizations/:organization/provisionerkeys", method = "post")]
    async fn create_key(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
        body: Json<CreateProvisionerKeyRequest>,
    ) -> Result<KeyCreated, ApiError> {
        let org = org_for_owner(state, &caller, &organization.0).await?;
        let mut v = Validations::new();
        let name = v.required("name", body.0.name, |n| {
            if RESERVED_KEY_NAMES.contains(&n.to_ascii_lowercase().as_str()) {
                return Err(NameError::ReservedUsername(n));
            }
            Username::parse(n).map(|u| u.as_str().to_string())
        });
        let raw = super::jobs::parse_tags(
            &mut v,
            "tags",
            body.0.tags.or_else(|| Some(serde_json::json!({}))),
        );
        let tags = raw.and_then(|t| v.check("tags", Tags::normalize(t, None)));
        v.finish()?;
        let (Some(name), Some(tags)) = (name, tags) else {
            unreachable!("validated above")
        };
        let (key, secret) = state
            .store
            .create_provisioner_key(org.id, &name, &tags)
            .await?;
        tracing::info!(organization_id = %org.id, key = %key.name, by = %caller.user.username, "provisioner key created");
        Ok(KeyCreated::Created(Json(CreateProvisionerKeyResponse {
            key: secret,
        })))
    }

    /// The organization's provisioner keys (never the secrets).
    #[oai(path = "/organizations/:organization/provisionerkeys", method = "get")]
    async fn list_keys(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
    ) -> Result<Json<Vec<ProvisionerKey>>, ApiError> {
        let org = org_for_owner(state, &caller, &organization.0).await?;
        let keys = state.store.list_provisioner_keys(org.id).await?;
        Ok(Json(
            keys.into_iter()
                .map(|k| ProvisionerKey {
                    id: k.id,
                    created_at: k.created_at,
                    organization: k.organization_id,
                    name: k.name,
                    tags: k.tags.as_map().clone(),
                })
                .collect(),
        ))
    }

    /// Deletes a provisioner key by name; daemons using it can no longer authenticate.
    #[oai(
        path = "/organizations/:organization/provisionerkeys/:name",
        method = "delete"
    )]
    async fn delete_key(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
        name: Path<String>,
    ) -> Result<Deleted, ApiError> {
        let org = org_for_owner(state, &caller, &organization.0).await?;
        state.store.delete_provisioner_key(org.id, &name.0).await?;
        tracing::info!(organization_id = %org.id, key = %name.0, by = %caller.user.username, "provisioner key deleted");
        Ok(Deleted::NoContent)
    }
}
