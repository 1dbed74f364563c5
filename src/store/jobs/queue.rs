//! Statements behind queue positions. Pending jobs usually share a handful of distinct
//! (tags, provisioner) groups, so the work is per group, never per job × daemon: one grouped
//! count, then one ranking query per distinct set of groups a daemon can run.

use std::collections::HashMap;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use super::super::{Store, StoreResult};
use super::pending;
use crate::domain::tags::{Tags, map_from_json};
use crate::entity::provisioner_job::{self as job, Column};

/// Pending jobs of one organization sharing tags and provisioner.
#[derive(Debug, Clone)]
pub struct PendingGroup {
    pub tags: Tags,
    /// The canonical tags text (`tags_key`), to select the group again.
    pub key: String,
    pub provisioner: String,
    pub count: i64,
}

impl PendingGroup {
    /// Whether a job with this tags key and provisioner belongs to this group.
    pub fn contains(&self, tags_key: &str, provisioner: &str) -> bool {
        self.provisioner == provisioner && self.key == tags_key
    }
}

impl Store {
    /// Pending jobs of an organization counted per (tags, provisioner).
    pub async fn pending_groups(&self, organization_id: Uuid) -> StoreResult<Vec<PendingGroup>> {
        let rows: Vec<(String, String, i64)> = job::Entity::find()
            .select_only()
            .column(Column::TagsKey)
            .column(Column::Provisioner)
            .column_as(Expr::col(Column::Id).count(), "n")
            .filter(Column::OrganizationId.eq(organization_id))
            .filter(pending())
            .group_by(Column::TagsKey)
            .group_by(Column::Provisioner)
            .into_tuple()
            .all(self.connection())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(key, provisioner, count)| PendingGroup {
                tags: Tags::from_stored(map_from_json(
                    &serde_json::from_str(&key).unwrap_or_default(),
                )),
                key,
                provisioner,
                count,
            })
            .collect())
    }

    /// 1-based ranks of `ids` within their own (tags, provisioner) group, for every group at
    /// once: one scan of the pending jobs, whatever the number of groups.
    pub async fn pending_ranks_within_groups(
        &self,
        organization_id: Uuid,
        ids: &[Uuid],
    ) -> StoreResult<HashMap<Uuid, i64>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ranked = Query::select()
            .column(Column::Id)
            .expr_as(
                Expr::cust(
                    "ROW_NUMBER() OVER (PARTITION BY tags_key, provisioner ORDER BY is_prebuild, created_at, id)",
                ),
                Alias::new("rn"),
            )
            .from(job::Entity)
            .and_where(Column::OrganizationId.eq(organization_id))
            .and_where(pending())
            .to_owned();
        self.ranks_of(ranked, ids).await
    }

    /// Runs `ranked` (yielding `id`, `rn`) and keeps the rows of `ids`.
    async fn ranks_of(
        &self,
        ranked: sea_orm::sea_query::SelectStatement,
        ids: &[Uuid],
    ) -> StoreResult<HashMap<Uuid, i64>> {
        let outer = Query::select()
            .column(Alias::new("id"))
            .column(Alias::new("rn"))
            .from_subquery(ranked, Alias::new("ranked"))
            .and_where(Expr::col(Alias::new("id")).is_in(ids.iter().copied()))
            .to_owned();
        let rows = self
            .connection()
            .query_all_raw(self.backend().build(&outer))
            .await?;
        let mut ranks = HashMap::with_capacity(rows.len());
        for row in rows {
            let id: Uuid = row.try_get("", "id")?;
            let rn: i64 = row.try_get("", "rn")?;
            ranks.insert(id, rn);
        }
        Ok(ranks)
    }

    /// 1-based ranks of `ids` among the pending jobs of `groups`, in dispatch order (human
    /// before prebuild, then oldest first). Ids not pending in those groups are absent.
    pub async fn pending_ranks(
        &self,
        organization_id: Uuid,
        groups: &[&PendingGroup],
        ids: &[Uuid],
    ) -> StoreResult<HashMap<Uuid, i64>> {
        if groups.is_empty() || ids.is_empty() {
            return Ok(HashMap::new());
        }
        let in_groups = groups.iter().fold(Condition::any(), |any, g| {
            any.add(
                Condition::all()
                    .add(Column::Provisioner.eq(g.provisioner.clone()))
                    .add(Column::TagsKey.eq(g.key.clone())),
            )
        });
        let ranked = Query::select()
            .column(Column::Id)
            .expr_as(
                Expr::cust("ROW_NUMBER() OVER (ORDER BY is_prebuild, created_at, id)"),
                Alias::new("rn"),
            )
            .from(job::Entity)
            .and_where(Column::OrganizationId.eq(organization_id))
            .and_where(pending())
            .cond_where(in_groups)
            .to_owned();
        self.ranks_of(ranked, ids).await
    }
}
