//! Who may see which organization's resources. Not being allowed to see something answers 404,
//! as if it did not exist.

use super::auth::Caller;
use super::error::ApiError;
use super::state::AppState;
use uuid::Uuid;

use crate::domain::organization::Organization;

/// The organization in the path, if the caller is an owner or one of its members.
pub async fn org_for_member(
    state: &AppState,
    caller: &Caller,
    ident: &str,
) -> Result<Organization, ApiError> {
    let org = state.store.resolve_organization(ident).await?;
    if caller.is_owner() || state.store.is_member(org.id, caller.user.id).await? {
        Ok(org)
    } else {
        Err(ApiError::not_found())
    }
}

/// The id of the organization in the path, if the caller is an owner or one of its members
/// (as [`org_for_member`], without reading the organization when the path says `default`).
pub async fn org_id_for_member(
    state: &AppState,
    caller: &Caller,
    ident: &str,
) -> Result<Uuid, ApiError> {
    let id = state.store.resolve_organization_id(ident).await?;
    if caller.is_owner() || state.store.is_member(id, caller.user.id).await? {
        Ok(id)
    } else {
        Err(ApiError::not_found())
    }
}

/// The id of the organization in the path, for owner-only routes (as [`org_for_owner`]).
pub async fn org_id_for_owner(
    state: &AppState,
    caller: &Caller,
    ident: &str,
) -> Result<Uuid, ApiError> {
    if !caller.is_owner() {
        return Err(ApiError::not_found());
    }
    Ok(state.store.resolve_organization_id(ident).await?)
}

/// The organization in the path, for owner-only (admin) routes; members get 404.
pub async fn org_for_owner(
    state: &AppState,
    caller: &Caller,
    ident: &str,
) -> Result<Organization, ApiError> {
    if !caller.is_owner() {
        return Err(ApiError::not_found());
    }
    Ok(state.store.resolve_organization(ident).await?)
}
