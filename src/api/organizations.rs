//! `/organizations`: list and read (members see theirs), create, update and delete (owners,
//! and only with the `multiple_organizations` entitlement).

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;
use super::access::org_for_member;
use super::auth::Caller;
use super::error::ApiError;
use super::licenses::require_feature;
use super::state::AppState;
use super::users::{Created, Message};
use crate::domain::license::entitlements::MULTIPLE_ORGANIZATIONS;
use crate::domain::organization;
use crate::domain::organization::OrganizationFields;
use crate::store::organizations::{DeleteBlockers, OrganizationDeletion};
pub use crate::wire::organizations::Organization;

pub struct OrganizationsApi;

impl From<organization::Organization> for Organization {
    fn from(o: organization::Organization) -> Self {
        Self {
            id: o.id,
            name: o.name,
            display_name: o.display_name,
            description: o.description,
            icon: o.icon,
            created_at: o.created_at,
            updated_at: o.updated_at,
            is_default: o.is_default,
        }
    }
}

/// Body of `POST` (`name` required) and `PATCH` (everything optional).
#[derive(Object)]
pub struct OrganizationRequest {
    name: Option<String>,
    display_name: Option<String>,
    description: Option<String>,
    icon: Option<String>,
}

impl From<OrganizationRequest> for OrganizationFields {
    fn from(r: OrganizationRequest) -> Self {
        Self {
            name: r.name,
            display_name: r.display_name,
            description: r.description,
            icon: r.icon,
        }
    }
}

/// "1 unfinished provisioner job and 2 provisioner keys".
fn describe(blockers: DeleteBlockers) -> String {
    let count = |n: u64, what: &str| match n {
        0 => None,
        1 => Some(format!("1 {what}")),
        n => Some(format!("{n} {what}s")),
    };
    [
        count(blockers.unfinished_jobs, "unfinished provisioner job"),
        count(blockers.provisioner_keys, "provisioner key"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" and ")
}

impl OrganizationsApi {
    /// The gate every change passes, in Coder's order: the entitlement, then visibility (404),
    /// then the role (403).
    async fn org_for_change(
        &self,
        state: &AppState,
        caller: &Caller,
        ident: &str,
    ) -> Result<organization::Organization, ApiError> {
        require_feature(state, MULTIPLE_ORGANIZATIONS)?;
        let org = org_for_member(state, caller, ident).await?;
        caller.require_owner()?;
        Ok(org)
    }
}

#[OpenApi(tag = "ApiTags::Organizations")]
impl OrganizationsApi {
    /// Organizations by name: owners see all, members theirs.
    #[oai(path = "/organizations", method = "get")]
    async fn list(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
    ) -> Result<Json<Vec<Organization>>, ApiError> {
        let member = (!caller.is_owner()).then_some(caller.user.id);
        let orgs = state.store.list_organizations(member).await?;
        Ok(Json(orgs.into_iter().map(Into::into).collect()))
    }

    /// Creates an organization; the caller becomes its first member.
    #[oai(path = "/organizations", method = "post")]
    async fn create(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        body: Json<OrganizationRequest>,
    ) -> Result<Created<Organization>, ApiError> {
        require_feature(state, MULTIPLE_ORGANIZATIONS)?;
        caller.require_owner()?;
        let new = OrganizationFields::from(body.0)
            .into_new()
            .map_err(ApiError::from)?;
        let org = state.store.create_organization(new, caller.user.id).await?;
        tracing::info!(organization_id = %org.id, name = %org.name, by = %caller.user.username, "organization created");
        Ok(Created::Created(Json(org.into())))
    }

    /// An organization by id, name or `default`.
    #[oai(path = "/organizations/:organization", method = "get")]
    async fn get(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
    ) -> Result<Json<Organization>, ApiError> {
        let org = org_for_member(state, &caller, &organization.0).await?;
        Ok(Json(org.into()))
    }

    /// Renames or redescribes an organization (the default one too).
    #[oai(path = "/organizations/:organization", method = "patch")]
    async fn update(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
        body: Json<OrganizationRequest>,
    ) -> Result<Json<Organization>, ApiError> {
        let org = self.org_for_change(state, &caller, &organization.0).await?;
        let patch = OrganizationFields::from(body.0)
            .into_patch()
            .map_err(ApiError::from)?;
        let updated = state.store.update_organization(org.id, patch).await?;
        tracing::info!(organization_id = %org.id, name = %updated.name, by = %caller.user.username, "organization updated");
        Ok(Json(updated.into()))
    }

    /// Deletes an organization that has no unfinished jobs and no provisioner keys; never the
    /// default one.
    #[oai(path = "/organizations/:organization", method = "delete")]
    async fn delete(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
    ) -> Result<Json<Message>, ApiError> {
        let org = self.org_for_change(state, &caller, &organization.0).await?;
        if org.is_default {
            return Err(ApiError::bad_request(
                "Default organization cannot be deleted.",
            ));
        }
        match state.store.delete_organization(org.id).await? {
            OrganizationDeletion::Deleted => {
                tracing::info!(organization_id = %org.id, name = %org.name, by = %caller.user.username, "organization deleted");
                Ok(Json(Message {
                    message: "Organization has been deleted.".into(),
                }))
            }
            OrganizationDeletion::Blocked(blockers) => Err(ApiError::conflict(
                "Organization cannot be deleted while it has unfinished jobs or provisioner keys.",
            )
            .with_detail(format!(
                "This organization has {}; cancel or finish the jobs and delete the keys first.",
                describe(blockers)
            ))),
        }
    }
}
