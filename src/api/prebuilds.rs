//! `/prebuilds/settings`: pausing prebuilds stops new prebuild jobs from being accepted while an
//! operator cleans up a flooded queue.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;
use super::auth::Caller;
use super::error::ApiError;
use super::state::AppState;
use crate::domain::Validations;

pub struct PrebuildsApi;

#[derive(Object)]
pub struct PrebuildsSettings {
    /// While true, enqueueing a job initiated by the `prebuilds` user answers 409.
    reconciliation_paused: bool,
}

#[derive(Object)]
pub struct PrebuildsSettingsRequest {
    reconciliation_paused: Option<bool>,
}

#[OpenApi(tag = "ApiTags::Prebuilds")]
impl PrebuildsApi {
    /// Whether prebuilds are paused (owners only).
    #[oai(path = "/prebuilds/settings", method = "get")]
    async fn get(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
    ) -> Result<Json<PrebuildsSettings>, ApiError> {
        caller.require_owner()?;
        Ok(Json(PrebuildsSettings {
            reconciliation_paused: state.store.prebuilds_paused().await?,
        }))
    }

    /// Pauses or resumes prebuilds (owners only).
    #[oai(path = "/prebuilds/settings", method = "put")]
    async fn put(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        body: Json<PrebuildsSettingsRequest>,
    ) -> Result<Json<PrebuildsSettings>, ApiError> {
        caller.require_owner()?;
        let Some(paused) = body.0.reconciliation_paused else {
            let mut v = Validations::new();
            v.push("reconciliation_paused", "is required (true or false)");
            return Err(v.into());
        };
        state.store.set_prebuilds_paused(paused).await?;
        tracing::info!(paused, by = %caller.user.username, "prebuilds reconciliation {}", if paused { "paused" } else { "resumed" });
        Ok(Json(PrebuildsSettings {
            reconciliation_paused: paused,
        }))
    }
}
