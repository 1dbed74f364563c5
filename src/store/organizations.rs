//! Organizations and memberships.

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
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

    /// Resolves `{organization}` in a path: an id, a name, or the keyword `default`.
    pub async fn resolve_organization(&self, ident: &str) -> StoreResult<organization::Model> {
        if ident == "default" {
            return self.default_organization().await;
        }
        let query = match Uuid::parse_str(ident) {
            Ok(id) => organization::Entity::find_by_id(id),
            Err(_) => organization::Entity::find().filter(organization::Column::Name.eq(ident)),
        };
        query
            .one(self.connection())
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Every organization, for labelling metrics.
    pub async fn all_organizations(&self) -> StoreResult<Vec<organization::Model>> {
        Ok(organization::Entity::find()
            .order_by_asc(organization::Column::Name)
            .all(self.connection())
            .await?)
    }

    pub async fn is_member(&self, organization_id: Uuid, user_id: Uuid) -> StoreResult<bool> {
        Ok(organization_member::Entity::find()
            .filter(organization_member::Column::OrganizationId.eq(organization_id))
            .filter(organization_member::Column::UserId.eq(user_id))
            .count(self.connection())
            .await?
            > 0)
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
