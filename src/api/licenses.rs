//! `/licenses` and `/entitlements`: uploading, listing and deleting licenses (owners), the
//! entitlements snapshot (anyone signed in), a throttled forced refresh, and the feature gate
//! other handlers call.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::state::AppState;
use super::users::{Created, Message};
use crate::domain::Validations;
use crate::domain::license::{
    self, LicenseError, LicenseRecord, Snapshot, decode_claims_unverified, humanize,
};
use crate::domain::now;
use crate::store::licenses::NewLicense;

pub struct LicensesApi;

/// 403 unless `feature` is entitled or in its grace period (as Coder words it).
pub fn require_feature(state: &AppState, feature: &str) -> Result<(), ApiError> {
    if state.entitlements.usable(feature) {
        return Ok(());
    }
    Err(ApiError::Forbidden(Json(ErrorBody::new(format!(
        "{} is a Premium feature. Contact sales!",
        humanize(feature)
    )))))
}

#[derive(Object)]
pub struct AddLicenseRequest {
    /// The license: a compact JWS.
    license: Option<String>,
}

/// A stored license. The token itself is never shown again (it is a bearer credential); its
/// claims are, decoded as uploaded.
#[derive(Object)]
pub struct License {
    id: i32,
    uuid: Uuid,
    uploaded_at: DateTime<Utc>,
    claims: serde_json::Value,
}

impl From<LicenseRecord> for License {
    fn from(row: LicenseRecord) -> Self {
        Self {
            claims: decode_claims_unverified(&row.jwt).unwrap_or_else(|| serde_json::json!({})),
            id: row.id,
            uuid: row.uuid,
            uploaded_at: row.uploaded_at,
        }
    }
}

#[derive(Enum, Clone, Copy)]
#[oai(rename_all = "snake_case")]
pub enum EntitlementKind {
    Entitled,
    GracePeriod,
    NotEntitled,
}

#[derive(Object)]
pub struct Feature {
    entitlement: EntitlementKind,
    enabled: bool,
    #[oai(skip_serializing_if_is_none)]
    limit: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    actual: Option<i64>,
}

#[derive(Object)]
pub struct Entitlements {
    features: BTreeMap<String, Feature>,
    warnings: Vec<String>,
    errors: Vec<String>,
    has_license: bool,
    trial: bool,
    require_telemetry: bool,
    refreshed_at: DateTime<Utc>,
}

impl From<&Snapshot> for Entitlements {
    fn from(s: &Snapshot) -> Self {
        let kind = |e| match e {
            license::Entitlement::Entitled => EntitlementKind::Entitled,
            license::Entitlement::GracePeriod => EntitlementKind::GracePeriod,
            license::Entitlement::NotEntitled => EntitlementKind::NotEntitled,
        };
        Self {
            features: s
                .features
                .iter()
                .map(|(name, f)| {
                    let feature = Feature {
                        entitlement: kind(f.entitlement),
                        enabled: f.enabled,
                        limit: f.limit,
                        actual: f.actual,
                    };
                    (name.clone(), feature)
                })
                .collect(),
            warnings: s.warnings.clone(),
            errors: s.errors.clone(),
            has_license: s.has_license,
            trial: s.trial,
            require_telemetry: s.require_telemetry,
            refreshed_at: s.refreshed_at,
        }
    }
}

/// Answers of `POST /licenses/refresh-entitlements`: its 400 carries `Retry-After`, which the
/// shared error type has no room for.
#[derive(ApiResponse)]
pub enum RefreshAnswer {
    /// Recomputed here; the other replicas were told to recompute too.
    #[oai(status = 200)]
    Updated(Json<Message>),
    /// Forced less than 60 s ago on this replica; retry after the given seconds.
    #[oai(status = 400)]
    Throttled(Json<ErrorBody>, #[oai(header = "Retry-After")] String),
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database is busy or unreachable for now; retry after `Retry-After` seconds.
    #[oai(status = 503)]
    ServiceUnavailable(Json<ErrorBody>, #[oai(header = "Retry-After")] String),
}

impl From<ApiError> for RefreshAnswer {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Forbidden(body) => Self::Forbidden(body),
            ApiError::Internal(body) => Self::Internal(body),
            ApiError::ServiceUnavailable(body, retry) => Self::ServiceUnavailable(body, retry),
            other => Self::Internal(other.undeclared()),
        }
    }
}

fn invalid_license(e: &LicenseError) -> ApiError {
    ApiError::bad_request("Invalid license").with_detail(e.to_string())
}

#[OpenApi(tag = "ApiTags::Licenses")]
impl LicensesApi {
    /// Adds a license (owners). Its signature and claims are checked; a license for a term that
    /// has not started yet is accepted and grants its features from `nbf` on.
    #[oai(path = "/licenses", method = "post")]
    async fn add_license(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        body: Json<AddLicenseRequest>,
    ) -> Result<Created<License>, ApiError> {
        caller.require_owner()?;
        let mut v = Validations::new();
        let jwt = v.required("license", body.0.license, |l| {
            let l = l.trim().to_string();
            if l.is_empty() {
                Err("must not be empty".to_string())
            } else {
                Ok(l)
            }
        });
        v.finish()?;
        let jwt = jwt.expect("validated above");
        let verified = state
            .entitlements
            .keys()
            .verify(&jwt, now())
            .map_err(|e| invalid_license(&e))?;
        let deployment_id = state.store.deployment_id().await?.to_string();
        if !verified.allows_deployment(&deployment_id) {
            return Err(
                ApiError::bad_request("License cannot be used on this deployment!").with_detail(
                    format!(
                        "The license is locked to the deployments {:?}; this deployment is {deployment_id:?}.",
                        verified.deployment_ids
                    ),
                ),
            );
        }
        let row = state
            .store
            .insert_license(NewLicense {
                uuid: verified.id.unwrap_or_else(Uuid::new_v4),
                jwt,
                exp: verified.expires,
            })
            .await?;
        tracing::info!(license_id = row.id, uuid = %row.uuid, by = %caller.user.username, "license added");
        state.entitlements.licenses_changed().await;
        Ok(Created::Created(Json(row.into())))
    }

    /// Every stored license, by id (owners).
    #[oai(path = "/licenses", method = "get")]
    async fn list_licenses(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
    ) -> Result<Json<Vec<License>>, ApiError> {
        caller.require_owner()?;
        let rows = state.store.list_licenses().await?;
        Ok(Json(rows.into_iter().map(Into::into).collect()))
    }

    /// Deletes a license by id (owners); its features go at once, on every replica.
    #[oai(path = "/licenses/:id", method = "delete")]
    async fn delete_license(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<Message>, ApiError> {
        caller.require_owner()?;
        let Ok(license_id) = id.0.parse::<i32>() else {
            return Err(ApiError::not_found().with_detail("A license id is an integer."));
        };
        state.store.delete_license(license_id).await?;
        tracing::info!(license_id, by = %caller.user.username, "license deleted");
        state.entitlements.licenses_changed().await;
        Ok(Json(Message {
            message: "License has been deleted.".into(),
        }))
    }

    /// Recomputes the entitlements now, on every replica (owners; once a minute per replica).
    #[oai(path = "/licenses/refresh-entitlements", method = "post")]
    async fn refresh_entitlements(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
    ) -> RefreshAnswer {
        if let Err(e) = caller.require_owner() {
            return e.into();
        }
        if let Err(wait) = state.entitlements.try_force() {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            return RefreshAnswer::Throttled(
                Json(ErrorBody::new(format!(
                    "Entitlements already recently refreshed, please wait {secs} seconds to force a new refresh"
                ))),
                secs.to_string(),
            );
        }
        match state.entitlements.force_refresh().await {
            Ok(_) => RefreshAnswer::Updated(Json(Message {
                message: "Entitlements updated".into(),
            })),
            Err(e) => ApiError::from(e).into(),
        }
    }

    /// What the licenses grant this deployment right now.
    #[oai(path = "/entitlements", method = "get")]
    async fn entitlements(
        &self,
        Data(state): Data<&AppState>,
        _caller: Caller,
    ) -> Result<Json<Entitlements>, ApiError> {
        let snapshot = state.entitlements.current_for_display().await?;
        Ok(Json(Entitlements::from(snapshot.as_ref())))
    }
}
