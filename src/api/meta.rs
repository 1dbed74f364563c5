//! Unauthenticated facts about the deployment.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::error::ApiError;
use super::state::AppState;

pub struct MetaApi;

#[derive(Object)]
pub struct BuildInfo {
    /// provq's version.
    version: String,
    /// A UUID made once per database: the same on every replica.
    deployment_id: Uuid,
}

#[OpenApi(tag = "ApiTags::General")]
impl MetaApi {
    /// Version and deployment id.
    #[oai(path = "/buildinfo", method = "get")]
    async fn buildinfo(&self, Data(state): Data<&AppState>) -> Result<Json<BuildInfo>, ApiError> {
        Ok(Json(BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            deployment_id: state.store.deployment_id().await?,
        }))
    }
}
