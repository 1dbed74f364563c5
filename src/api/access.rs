//! Who may see which organization's resources. Not being allowed to see something answers 404,
//! as if it did not exist.

use super::auth::Caller;
use super::error::ApiError;
use super::state::AppState;
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
