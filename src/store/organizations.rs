//! Organizations and memberships.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::{Store, StoreError, StoreResult};
use crate::entity::{organization, organization_member};

impl Store {
    /// The organization every deployment has from its first start.
    pub async fn default_organization(&self) -> StoreResult<organization::Model> {
        organization::Entity::find()
            .filter(organization::Column::IsDefault.eq(true))
            .one(self.connection())
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Ids of the organizations a user belongs to, in a stable order.
    pub async fn organization_ids_of(&self, user_id: Uuid) -> StoreResult<Vec<Uuid>> {
        Ok(organization_member::Entity::find()
            .select_only()
            .column(organization_member::Column::OrganizationId)
            .filter(organization_member::Column::UserId.eq(user_id))
            .order_by_asc(organization_member::Column::CreatedAt)
            .into_tuple()
            .all(self.connection())
            .await?)
    }
}
