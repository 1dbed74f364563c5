//! Deployment-wide settings kept in the database so every replica agrees on them.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, EntityTrait};
use uuid::Uuid;

use super::{Store, StoreError, StoreResult};
use crate::entity::site_config;

const DEPLOYMENT_ID: &str = "deployment_id";
const PREBUILDS_PAUSED: &str = "prebuilds_reconciliation_paused";

impl Store {
    async fn site_value(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(site_config::Entity::find_by_id(key.to_string())
            .one(self.connection())
            .await?
            .map(|row| row.value))
    }

    async fn set_site_value(&self, key: &str, value: String) -> StoreResult<()> {
        site_config::Entity::insert(site_config::ActiveModel {
            key: Set(key.to_string()),
            value: Set(value),
        })
        .on_conflict(
            OnConflict::column(site_config::Column::Key)
                .update_column(site_config::Column::Value)
                .to_owned(),
        )
        .exec(self.connection())
        .await?;
        Ok(())
    }

    /// The UUID made once per database by the seed migration.
    pub async fn deployment_id(&self) -> StoreResult<Uuid> {
        let raw = self
            .site_value(DEPLOYMENT_ID)
            .await?
            .ok_or(StoreError::NotFound)?;
        Uuid::parse_str(&raw).map_err(|_| StoreError::NotFound)
    }

    pub async fn prebuilds_paused(&self) -> StoreResult<bool> {
        Ok(self.site_value(PREBUILDS_PAUSED).await?.as_deref() == Some("true"))
    }

    pub async fn set_prebuilds_paused(&self, paused: bool) -> StoreResult<()> {
        self.set_site_value(PREBUILDS_PAUSED, paused.to_string())
            .await
    }
}
