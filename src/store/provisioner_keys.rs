//! Provisioner keys: organization-scoped daemon credentials with fixed tags, stored hashed.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
};
use uuid::Uuid;

use super::{Store, StoreError, StoreResult, is_unique_violation};
use crate::domain::daemon::ProvisionerKey;
use crate::domain::now;
use crate::domain::secrets::{hash_secret, random_secret};
use crate::domain::tags::Tags;
use crate::entity::provisioner_key;

/// Length of a generated key.
const KEY_LEN: usize = 43;

impl Store {
    /// Creates a key; returns it with the secret, which is shown once and never stored.
    pub async fn create_provisioner_key(
        &self,
        organization_id: Uuid,
        name: &str,
        tags: &Tags,
    ) -> StoreResult<(ProvisionerKey, String)> {
        let secret = random_secret(KEY_LEN);
        let model = provisioner_key::ActiveModel {
            id: Set(Uuid::new_v4()),
            organization_id: Set(organization_id),
            name: Set(name.to_string()),
            hashed_secret: Set(hash_secret(&secret)),
            tags: Set(tags.to_json()),
            created_at: Set(now()),
        }
        .insert(self.connection())
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::conflict(
                    "A provisioner key with that name already exists.",
                    Some("name"),
                )
            } else {
                e.into()
            }
        })?;
        Ok((model.try_into()?, secret))
    }

    pub async fn list_provisioner_keys(
        &self,
        organization_id: Uuid,
    ) -> StoreResult<Vec<ProvisionerKey>> {
        let rows = provisioner_key::Entity::find()
            .filter(provisioner_key::Column::OrganizationId.eq(organization_id))
            .order_by_asc(provisioner_key::Column::Name)
            .all(self.connection())
            .await?;
        super::rows::all(rows)
    }

    pub async fn delete_provisioner_key(
        &self,
        organization_id: Uuid,
        name: &str,
    ) -> StoreResult<()> {
        let result = provisioner_key::Entity::delete_many()
            .filter(provisioner_key::Column::OrganizationId.eq(organization_id))
            .filter(provisioner_key::Column::Name.eq(name))
            .exec(self.connection())
            .await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// The key whose secret was presented, if any (looked up by hash: the index is unique).
    pub async fn authenticate_provisioner_key(
        &self,
        secret: &str,
    ) -> StoreResult<Option<ProvisionerKey>> {
        provisioner_key::Entity::find()
            .filter(provisioner_key::Column::HashedSecret.eq(hash_secret(secret)))
            .one(self.connection())
            .await?
            .map(ProvisionerKey::try_from)
            .transpose()
    }
}
