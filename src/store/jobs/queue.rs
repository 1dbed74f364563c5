//! Statements behind queue positions. Pending jobs usually share a handful of distinct
//! (tags, provisioner) groups, so the work is per group, never per job × daemon: one grouped
//! count, then one ranking query per distinct set of groups a daemon can run.

use std::collections::HashMap;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect,
};
use serde_json::Value;
use uuid::Uuid;

use super::super::{Store, StoreResult};
use super::pending;
use crate::domain::tags::{Tags, map_from_json};
use crate::entity::provisioner_job::{self as job, Column};

/// Pending jobs of one organization sharing tags and provisioner.
#[derive(Debug, Clone)]
pub struct PendingGroup {
    pub tags: Tags,
    /// The tags exactly as stored, to select the group again.
    pub stored_tags: Value,
    pub provisioner: String,
    pub count: i64,
}

impl PendingGroup {
    /// Whether a job with these tags and provisioner belongs to this group.
    pub fn contains(&self, tags: &Value, provisioner: &str) -> bool {
        self.provisioner == provisioner && Tags::from_stored(map_from_json(tags)) == self.tags
    }
}

/// SQL: the job's stored tags equal `stored` (jsonb equality; canonical text on SQLite, where
/// provq always writes tags with sorted keys).
fn tags_equal(backend: DbBackend, stored: &Value) -> sea_orm::sea_query::SimpleExpr {
    match backend {
        DbBackend::Postgres => {
            Expr::cust_with_values(r#""tags" = CAST($1 AS jsonb)"#, [stored.clone()])
        }
        _ => Expr::cust_with_values(r#""tags" = ?"#, [stored.to_string()]),
    }
}

impl Store {
    /// Pending jobs of an organization counted per (tags, provisioner).
    pub async fn pending_groups(&self, organization_id: Uuid) -> StoreResult<Vec<PendingGroup>> {
        let rows: Vec<(Value, String, i64)> = job::Entity::find()
            .select_only()
            .column(Column::Tags)
            .column(Column::Provisioner)
            .column_as(Expr::col(Column::Id).count(), "n")
            .filter(Column::OrganizationId.eq(organization_id))
            .filter(pending())
            .group_by(Column::Tags)
            .group_by(Column::Provisioner)
            .into_tuple()
            .all(self.connection())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(stored_tags, provisioner, count)| PendingGroup {
                tags: Tags::from_stored(map_from_json(&stored_tags)),
                stored_tags,
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
                    "ROW_NUMBER() OVER (PARTITION BY tags, provisioner ORDER BY is_prebuild, created_at, id)",
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
        let backend = self.backend();
        let in_groups = groups.iter().fold(Condition::any(), |any, g| {
            any.add(
                Condition::all()
                    .add(Column::Provisioner.eq(g.provisioner.clone()))
                    .add(tags_equal(backend, &g.stored_tags)),
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
        let outer = Query::select()
            .column(Alias::new("id"))
            .column(Alias::new("rn"))
            .from_subquery(ranked, Alias::new("ranked"))
            .and_where(Expr::col(Alias::new("id")).is_in(ids.iter().copied()))
            .to_owned();
        let rows = self
            .connection()
            .query_all_raw(backend.build(&outer))
            .await?;
        let mut ranks = HashMap::with_capacity(rows.len());
        for row in rows {
            let id: Uuid = row.try_get("", "id")?;
            let rn: i64 = row.try_get("", "rn")?;
            ranks.insert(id, rn);
        }
        Ok(ranks)
    }
}
