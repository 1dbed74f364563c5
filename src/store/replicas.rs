//! Replicas: every `provq serve` process sharing the database keeps a row fresh, so each can
//! count how many are live (what the `high_availability` entitlement is about).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use uuid::Uuid;

use super::{Store, StoreResult};
use crate::entity::replica;

impl Store {
    /// Records that replica `id` is alive at `at`: inserts its row the first time (or after
    /// someone removed it), refreshes `updated_at` afterwards.
    pub async fn heartbeat_replica(
        &self,
        id: Uuid,
        hostname: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        replica::Entity::insert(replica::ActiveModel {
            id: Set(id),
            hostname: Set(hostname.to_string()),
            version: Set(env!("CARGO_PKG_VERSION").to_string()),
            started_at: Set(at),
            updated_at: Set(at),
            stopped_at: Set(None),
        })
        .on_conflict(
            OnConflict::column(replica::Column::Id)
                .update_columns([replica::Column::UpdatedAt, replica::Column::StoppedAt])
                .to_owned(),
        )
        .exec(self.connection())
        .await?;
        Ok(())
    }

    /// Removes replica `id` at a clean exit, so no replica counts it any more.
    pub async fn remove_replica(&self, id: Uuid) -> StoreResult<()> {
        replica::Entity::delete_by_id(id)
            .exec(self.connection())
            .await?;
        Ok(())
    }

    /// Forgets replicas not seen since `before` (each process start adds a row).
    pub async fn prune_replicas(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let result = replica::Entity::delete_many()
            .filter(replica::Column::UpdatedAt.lt(before))
            .exec(self.connection())
            .await?;
        Ok(result.rows_affected)
    }

    /// Replicas not stopped that heartbeated after `since`.
    pub async fn live_replica_count(&self, since: DateTime<Utc>) -> StoreResult<u64> {
        Ok(replica::Entity::find()
            .filter(replica::Column::StoppedAt.is_null())
            .filter(replica::Column::UpdatedAt.gt(since))
            .count(self.connection())
            .await?)
    }
}
