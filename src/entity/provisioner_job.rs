//! `provisioner_jobs`: the queue. The status is never stored: it follows from the timestamps
//! and `error` (`domain::job::derive_status`). `input`, `metadata` and `tags` are JSON; the
//! store hands rows up as `domain::job::Job`, failing on a row that does not parse.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "provisioner_jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub canceled_at: Option<DateTimeUtc>,
    pub completed_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub error_code: Option<String>,
    pub organization_id: Uuid,
    pub initiator_id: Uuid,
    pub is_prebuild: bool,
    pub provisioner: String,
    #[sea_orm(column_name = "type")]
    pub job_type: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub input: Json,
    pub file_id: Uuid,
    #[sea_orm(column_type = "JsonBinary")]
    pub tags: Json,
    /// The tags as canonical text (`Tags::key`), for grouping by tag set.
    #[sea_orm(column_type = "Text")]
    pub tags_key: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: Json,
    pub worker_id: Option<Uuid>,
    pub lease_token: Option<String>,
    pub logs_length: i64,
    pub logs_overflowed: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
