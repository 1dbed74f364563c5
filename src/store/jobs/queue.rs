//! Statements behind queue positions, built so that their cost does not grow with the backlog.
//!
//! - Queue sizes come from `provisioner_queue_counts`, which triggers keep per (organization,
//!   tags, provisioner, human or prebuild) in the same transaction as every job change: a
//!   handful of rows, however many jobs are pending.
//! - A job's rank is, per group a daemon runs, the number of pending jobs of that group ahead of
//!   it. The group's total is known, so the store counts the shorter side: the jobs *behind* the
//!   job, bounded by [`SHORT_SIDE`] on the `(organization, tags, provisioner, is_prebuild,
//!   created_at, id)` partial index, and only when that bound is hit the jobs ahead. The newest
//!   jobs (what a list shows first, and the whole flood of prebuilds) and the humans at the front
//!   cost a few index entries each.
//!
//! Sizes and ranks come from one snapshot without a transaction: the statement that counts the
//! jobs behind the page's jobs re-reads the group sizes too (a single statement sees one
//! snapshot on both backends). The groups are read first only to plan that statement; a group
//! that appears in between is not part of the answer, one that empties counts zero.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait, Value};
use uuid::Uuid;

use super::super::{Store, StoreError, StoreResult};
use crate::domain::job::JobStatus;
use crate::domain::tags::Tags;

/// At most this many index entries are counted behind a job before counting the ones ahead.
const SHORT_SIDE: i64 = 500;

/// Pending jobs of one organization sharing tags and provisioner, humans and prebuilds apart.
#[derive(Debug, Clone)]
pub struct PendingGroup {
    pub tags: Tags,
    /// The canonical tags text (`tags_key`), to select the group again.
    pub key: String,
    pub provisioner: String,
    pub humans: i64,
    pub prebuilds: i64,
}

impl PendingGroup {
    pub fn count(&self) -> i64 {
        self.humans + self.prebuilds
    }

    /// The group's provisioner; `None` for a name no daemon can serve (no daemon runs it).
    pub fn provisioner(&self) -> Option<crate::domain::job::Provisioner> {
        crate::domain::job::Provisioner::parse(&self.provisioner).ok()
    }

    /// Whether a job with this tags key and provisioner belongs to this group.
    pub fn contains(&self, tags_key: &str, provisioner: &str) -> bool {
        self.provisioner == provisioner && self.key == tags_key
    }
}

/// "How many pending jobs of this group come before this job in dispatch order?"
#[derive(Debug, Clone)]
pub struct AheadQuery {
    pub group: usize,
    pub is_prebuild: bool,
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// An organization's pending groups, read to plan the rank statements; the numbers themselves
/// come from [`QueueSnapshot::ahead`], whose statements re-read the counts they are answered
/// against (see the module doc).
pub struct QueueSnapshot {
    store: Store,
    organization_id: Uuid,
    pub groups: Vec<PendingGroup>,
}

/// Ranks and the group sizes they were counted against.
#[derive(Debug, Clone, Default)]
pub struct Ranks {
    /// Per query: pending jobs of its group ahead of the job, in dispatch order.
    pub ahead: Vec<i64>,
    /// Per group of the snapshot (same index): `(humans, prebuilds)` pending in the statement's
    /// snapshot; a group that emptied since the plan has `(0, 0)`.
    pub sizes: Vec<(i64, i64)>,
}

/// Sums of `provisioner_queue_counts` rows, optionally for one organization.
fn counts_sql(backend: DbBackend, one_org: bool) -> String {
    let filter = if one_org {
        match backend {
            DbBackend::Postgres => "WHERE organization_id = $1",
            _ => "WHERE organization_id = ?",
        }
    } else {
        ""
    };
    format!(
        "SELECT organization_id, tags_key, provisioner, is_prebuild, CAST(SUM(n) AS BIGINT) AS n \
         FROM provisioner_queue_counts {filter} \
         GROUP BY organization_id, tags_key, provisioner, is_prebuild HAVING SUM(n) <> 0"
    )
}

/// `(organization, tags_key, provisioner, is_prebuild, count)` rows.
async fn read_counts(
    conn: &impl ConnectionTrait,
    organization_id: Option<Uuid>,
) -> StoreResult<Vec<(Uuid, String, String, bool, i64)>> {
    let backend = conn.get_database_backend();
    let sql = counts_sql(backend, organization_id.is_some());
    let values: Vec<Value> = organization_id.map(Into::into).into_iter().collect();
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push((
            row.try_get("", "organization_id")?,
            row.try_get("", "tags_key")?,
            row.try_get("", "provisioner")?,
            row.try_get("", "is_prebuild")?,
            row.try_get("", "n")?,
        ));
    }
    Ok(out)
}

/// Folds `(organization, key, provisioner, is_prebuild, n)` rows into groups; a tags key that
/// does not parse is a bad row.
pub(crate) fn into_groups(
    rows: Vec<(String, String, bool, i64)>,
) -> StoreResult<Vec<PendingGroup>> {
    let mut groups: Vec<PendingGroup> = Vec::new();
    for (key, provisioner, is_prebuild, n) in rows {
        let i = match groups.iter().position(|g| g.contains(&key, &provisioner)) {
            Some(i) => i,
            None => {
                let tags = Tags::from_key(&key).map_err(|e| StoreError::BadRow {
                    table: "provisioner_queue_counts",
                    id: key.clone(),
                    reason: e.to_string(),
                })?;
                groups.push(PendingGroup {
                    tags,
                    key,
                    provisioner,
                    humans: 0,
                    prebuilds: 0,
                });
                groups.len() - 1
            }
        };
        if is_prebuild {
            groups[i].prebuilds += n;
        } else {
            groups[i].humans += n;
        }
    }
    Ok(groups)
}

impl QueueSnapshot {
    /// Pending jobs of each `query`'s group (and class) ahead of the job, in dispatch order
    /// (humans before prebuilds, then oldest first), and the group sizes in the same snapshot.
    /// One statement (one snapshot on both backends, no transaction) when every job has fewer
    /// than [`SHORT_SIDE`] jobs behind it; a second one counts ahead of the deeper jobs, and
    /// the sizes are then those of the second.
    pub async fn ahead(&self, queries: &[AheadQuery]) -> StoreResult<Ranks> {
        if queries.is_empty() {
            return Ok(Ranks::default());
        }
        let mut answers = vec![0; queries.len()];
        let (behind, mut sizes) = self.count(queries, true).await?;
        let mut far: Vec<usize> = Vec::new();
        for (i, (q, behind)) in queries.iter().zip(behind).enumerate() {
            let (humans, prebuilds) = sizes[q.group];
            if behind < SHORT_SIDE {
                let class = if q.is_prebuild { prebuilds } else { humans };
                // Every human job of the group comes before a prebuild.
                let first = if q.is_prebuild { humans } else { 0 };
                answers[i] = first + (class - behind).max(0);
            } else {
                far.push(i);
            }
        }
        if !far.is_empty() {
            let deep: Vec<AheadQuery> = far.iter().map(|&i| queries[i].clone()).collect();
            let (ahead, later) = self.count(&deep, false).await?;
            for (&i, n) in far.iter().zip(ahead) {
                let q = &queries[i];
                answers[i] = n + if q.is_prebuild { later[q.group].0 } else { 0 };
            }
            sizes = later;
        }
        Ok(Ranks {
            ahead: answers,
            sizes,
        })
    }

    /// Per query, the pending jobs of its group and class at or after the job (`behind`,
    /// bounded by [`SHORT_SIDE`]) or strictly before it (unbounded), and every planned group's
    /// `(humans, prebuilds)`: one statement, so one snapshot.
    async fn count(
        &self,
        queries: &[AheadQuery],
        behind: bool,
    ) -> StoreResult<(Vec<i64>, Vec<(i64, i64)>)> {
        let mut values: Vec<Value> = Vec::with_capacity(queries.len() * 6 + 2);
        let backend = self.store.backend();
        let mut param = |v: Value| {
            values.push(v);
            match backend {
                DbBackend::Postgres => format!("${}", values.len()),
                _ => "?".to_string(),
            }
        };
        let pending = JobStatus::Pending.sql_predicate();
        // One row per query in a `VALUES` list and one correlated count over it: the planner
        // plans the count once, however many queries the page needs (a `UNION ALL` of one
        // count per query took ~9 ms to plan for a page in a flood). Parameters in text order
        // (SQLite's `?` are positional).
        let rows: Vec<String> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let g = &self.groups[q.group];
                format!(
                    "(CAST({} AS BIGINT), {}, {}, {}, {}, {})",
                    param((i as i64).into()),
                    param(g.key.clone().into()),
                    param(g.provisioner.clone().into()),
                    param(q.is_prebuild.into()),
                    param(q.created_at.into()),
                    param(q.id.into()),
                )
            })
            .collect();
        let sizes_org = param(self.organization_id.into());
        let org = param(self.organization_id.into());
        // Row values and the index order steer both planners (also PostgreSQL's generic plans)
        // to the `(…, created_at, id)` pending index, whatever the statistics say.
        let (side, limit) = if behind {
            (
                "(created_at, id) >= (v.at, v.id)",
                format!(" ORDER BY created_at, id LIMIT {SHORT_SIDE}"),
            )
        } else {
            (
                "(created_at, id) < (v.at, v.id)",
                " ORDER BY created_at, id".to_string(),
            )
        };
        // The sizes first: their typed columns name the union's types.
        let sql = format!(
            "WITH v (q, tags, prov, prebuild, at, id) AS (VALUES {rows}) \
             SELECT CAST(-1 AS BIGINT) AS q, CAST(SUM(n) AS BIGINT) AS n, tags_key, \
             provisioner, is_prebuild FROM provisioner_queue_counts \
             WHERE organization_id = {sizes_org} GROUP BY tags_key, provisioner, is_prebuild \
             UNION ALL SELECT v.q, (SELECT COUNT(*) FROM (SELECT 1 FROM provisioner_jobs \
             WHERE organization_id = {org} AND tags_key = v.tags AND provisioner = v.prov \
             AND is_prebuild = v.prebuild AND {pending} AND {side}{limit}) AS s) AS n, \
             NULL, NULL, NULL FROM v",
            rows = rows.join(", "),
        );
        let rows = self
            .store
            .connection()
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let mut counts = vec![0; queries.len()];
        let mut sizes = vec![(0, 0); self.groups.len()];
        for row in rows {
            let q: i64 = row.try_get("", "q")?;
            let n: i64 = row.try_get("", "n")?;
            if q >= 0 {
                counts[q as usize] = n;
                continue;
            }
            let key: String = row.try_get("", "tags_key")?;
            let provisioner: String = row.try_get("", "provisioner")?;
            let prebuild: bool = row.try_get("", "is_prebuild")?;
            if let Some(g) = self
                .groups
                .iter()
                .position(|g| g.contains(&key, &provisioner))
            {
                if prebuild {
                    sizes[g].1 += n;
                } else {
                    sizes[g].0 += n;
                }
            }
        }
        Ok((counts, sizes))
    }
}

impl Store {
    /// Reads an organization's pending groups, to plan the rank statements of an answer.
    pub async fn queue_snapshot(&self, organization_id: Uuid) -> StoreResult<QueueSnapshot> {
        let groups = self.pending_groups(organization_id).await?;
        Ok(QueueSnapshot {
            store: self.clone(),
            organization_id,
            groups,
        })
    }

    /// Pending jobs of an organization per (tags, provisioner), from the maintained counts: a
    /// handful of rows whatever the backlog.
    pub async fn pending_groups(&self, organization_id: Uuid) -> StoreResult<Vec<PendingGroup>> {
        let rows = read_counts(self.connection(), Some(organization_id)).await?;
        into_groups(
            rows.into_iter()
                .map(|(_, key, provisioner, prebuild, n)| (key, provisioner, prebuild, n))
                .collect(),
        )
    }

    /// Pending jobs per organization, tags key, provisioner and class (human or prebuild).
    pub async fn pending_counts_everywhere(
        &self,
    ) -> StoreResult<Vec<(Uuid, String, String, bool, i64)>> {
        read_counts(self.connection(), None).await
    }

    /// Sums the rows the triggers appended to `provisioner_queue_counts` into one row per group,
    /// atomically, so readers keep reading a handful of rows. Returns the rows folded.
    pub async fn fold_pending_counts(&self) -> StoreResult<u64> {
        let cols = "organization_id, tags_key, provisioner, is_prebuild";
        // Nothing to fold (one row per group, none zero): write nothing.
        let untidy = self
            .connection()
            .query_one_raw(Statement::from_string(
                self.backend(),
                format!(
                    "SELECT COUNT(*) AS n FROM (SELECT 1 FROM provisioner_queue_counts \
                     GROUP BY {cols} HAVING COUNT(*) > 1 OR SUM(n) = 0) AS t"
                ),
            ))
            .await?
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        if untidy == 0 {
            return Ok(0);
        }
        match self.backend() {
            DbBackend::Postgres => {
                // One statement: the rows deleted are exactly the rows summed.
                let sql = format!(
                    "WITH moved AS (DELETE FROM provisioner_queue_counts RETURNING {cols}, n), \
                     summed AS (INSERT INTO provisioner_queue_counts ({cols}, n) \
                     SELECT {cols}, SUM(n) FROM moved GROUP BY {cols} HAVING SUM(n) <> 0 RETURNING 1) \
                     SELECT (SELECT COUNT(*) FROM moved) AS n"
                );
                let row = self
                    .connection()
                    .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
                    .await?;
                Ok(row
                    .map(|r| r.try_get::<i64>("", "n"))
                    .transpose()?
                    .unwrap_or(0) as u64)
            }
            backend => {
                // SQLite has one writer: the transaction sees every row it deletes.
                let txn = self.connection().begin().await?;
                let last: Option<i64> = txn
                    .query_one_raw(Statement::from_string(
                        backend,
                        "SELECT MAX(rowid) AS m FROM provisioner_queue_counts",
                    ))
                    .await?
                    .and_then(|r| r.try_get("", "m").ok());
                let Some(last) = last else {
                    txn.rollback().await?;
                    return Ok(0);
                };
                txn.execute_raw(Statement::from_string(
                    backend,
                    format!(
                        "INSERT INTO provisioner_queue_counts ({cols}, n) SELECT {cols}, SUM(n) \
                         FROM provisioner_queue_counts WHERE rowid <= {last} GROUP BY {cols} \
                         HAVING SUM(n) <> 0"
                    ),
                ))
                .await?;
                let deleted = txn
                    .execute_raw(Statement::from_string(
                        backend,
                        format!("DELETE FROM provisioner_queue_counts WHERE rowid <= {last}"),
                    ))
                    .await?
                    .rows_affected();
                txn.commit().await?;
                Ok(deleted)
            }
        }
    }
}

impl Store {
    /// Folds the queue counts every second until shutdown (every replica may; folds of
    /// different replicas never double-count, see [`Store::fold_pending_counts`]). On
    /// PostgreSQL every fold leaves the rows it moved behind as dead tuples, which each read of
    /// the counts must step over until a vacuum removes them; with autovacuum off, or behind,
    /// a flood of 100,000 jobs left ten times as many and made every read of the counts tens of
    /// milliseconds. So the folder vacuums the table itself once enough rows have moved.
    pub async fn keep_pending_counts_folded(self, shutdown: crate::shutdown::Shutdown) {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut moved_since_vacuum = 0u64;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.fold_pending_counts().await {
                Ok(moved) => moved_since_vacuum += moved,
                Err(e) => {
                    tracing::debug!(error = %e, "folding the queue counts failed; will retry")
                }
            }
            if moved_since_vacuum >= VACUUM_COUNTS_AFTER {
                match self.vacuum_pending_counts().await {
                    Ok(()) => moved_since_vacuum = 0,
                    Err(e) => {
                        tracing::debug!(error = %e, "vacuuming the queue counts failed; will retry")
                    }
                }
            }
        }
    }

    /// Removes the dead rows folds left in `provisioner_queue_counts` (PostgreSQL; SQLite
    /// reuses the pages of deleted rows by itself). Skips the table while another replica
    /// vacuums it.
    pub async fn vacuum_pending_counts(&self) -> StoreResult<()> {
        if self.backend() == DbBackend::Postgres {
            self.connection()
                .execute_unprepared("VACUUM (SKIP_LOCKED) provisioner_queue_counts")
                .await?;
        }
        Ok(())
    }
}

/// Rows folded (and so left dead) between two vacuums of the counts table: a few hundred
/// kilobytes of dead tuples at most, and a vacuum of it takes a millisecond or two.
const VACUUM_COUNTS_AFTER: u64 = 5_000;
