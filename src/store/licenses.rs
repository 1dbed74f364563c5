//! Uploaded licenses and the usage figures entitlements depend on. The JWT is stored as
//! uploaded; its claims are re-verified on every entitlement computation, never trusted from
//! columns (only `exp` is kept, to skip licenses past their grace period cheaply).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder,
};
use uuid::Uuid;

use super::{Store, StoreError, StoreResult, is_unique_violation};
use crate::domain::license::LicenseRecord;
use crate::domain::now;
use crate::entity::{license, user};

/// Shown when the same license is uploaded twice.
pub const DUPLICATE_LICENSE: &str = "This license has already been added.";

/// A verified license about to be stored.
#[derive(Debug, Clone)]
pub struct NewLicense {
    pub uuid: Uuid,
    pub jwt: String,
    /// End of the grace period (`exp`).
    pub exp: DateTime<Utc>,
}

impl Store {
    /// Stores a license; `Conflict` when the same JWT (or license id) is already stored.
    pub async fn insert_license(&self, new: NewLicense) -> StoreResult<LicenseRecord> {
        let duplicate = license::Entity::find()
            .filter(license::Column::Jwt.eq(new.jwt.as_str()))
            .count(self.connection())
            .await?
            > 0;
        if duplicate {
            return Err(StoreError::conflict(DUPLICATE_LICENSE, None));
        }
        license::ActiveModel {
            uuid: Set(new.uuid),
            jwt: Set(new.jwt),
            uploaded_at: Set(now()),
            exp: Set(new.exp),
            ..Default::default()
        }
        .insert(self.connection())
        .await
        .map(LicenseRecord::from)
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::conflict(DUPLICATE_LICENSE, None)
            } else {
                e.into()
            }
        })
    }

    /// Every stored license, oldest first (by id).
    pub async fn list_licenses(&self) -> StoreResult<Vec<LicenseRecord>> {
        let rows = license::Entity::find()
            .order_by_asc(license::Column::Id)
            .all(self.connection())
            .await?;
        Ok(rows.into_iter().map(LicenseRecord::from).collect())
    }

    /// Licenses whose grace period has not ended at `at`, by id.
    pub async fn unexpired_licenses(&self, at: DateTime<Utc>) -> StoreResult<Vec<LicenseRecord>> {
        let rows = license::Entity::find()
            .filter(license::Column::Exp.gt(at))
            .order_by_asc(license::Column::Id)
            .all(self.connection())
            .await?;
        Ok(rows.into_iter().map(LicenseRecord::from).collect())
    }

    /// Deletes a license; `NotFound` when there is none with that id.
    pub async fn delete_license(&self, id: i32) -> StoreResult<()> {
        let result = license::Entity::delete_by_id(id)
            .exec(self.connection())
            .await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Active human users: what `user_limit` counts (system users such as `prebuilds` are
    /// not seats).
    pub async fn active_user_count(&self) -> StoreResult<i64> {
        let count = user::Entity::find()
            .filter(user::Column::Status.eq("active"))
            .filter(user::Column::IsSystem.eq(false))
            .count(self.connection())
            .await?;
        Ok(i64::try_from(count).unwrap_or(i64::MAX))
    }
}
