//! Who may see which organization's resources. Not being allowed to see something answers 404,
//! as if it did not exist.

use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::state::AppState;
use crate::domain::organization::Organization;

/// The one membership rule: owners see every organization, members their own; others get 404.
async fn require_member(state: &AppState, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    if caller.is_owner() || state.store.is_member(id, caller.user.id).await? {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// The one owner rule for admin routes: members get 404.
fn require_owner(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_owner() {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// The organization in the path, if the caller is an owner or one of its members.
pub async fn org_for_member(
    state: &AppState,
    caller: &Caller,
    ident: &str,
) -> Result<Organization, ApiError> {
    let org = state.store.resolve_organization(ident).await?;
    require_member(state, caller, org.id).await?;
    Ok(org)
}

/// The id of the organization in the path, if the caller is an owner or one of its members
/// (as [`org_for_member`], without reading the organization when the path says `default`).
pub async fn org_id_for_member(
    state: &AppState,
    caller: &Caller,
    ident: &str,
) -> Result<Uuid, ApiError> {
    let id = state.store.resolve_organization_id(ident).await?;
    require_member(state, caller, id).await?;
    Ok(id)
}

/// The id of the organization in the path, for owner-only routes (as [`org_for_owner`]).
pub async fn org_id_for_owner(
    state: &AppState,
    caller: &Caller,
    ident: &str,
) -> Result<Uuid, ApiError> {
    require_owner(caller)?;
    Ok(state.store.resolve_organization_id(ident).await?)
}

/// The organization in the path, for owner-only (admin) routes; members get 404.
pub async fn org_for_owner(
    state: &AppState,
    caller: &Caller,
    ident: &str,
) -> Result<Organization, ApiError> {
    require_owner(caller)?;
    Ok(state.store.resolve_organization(ident).await?)
}
