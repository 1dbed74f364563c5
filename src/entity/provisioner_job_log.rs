//! `provisioner_job_logs`: log lines of jobs in id order, capped per job
//! (`store::logs`); handed up as `domain::job::JobLog`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "provisioner_job_logs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub job_id: Uuid,
    pub created_at: DateTimeUtc,
    pub source: String,
    pub level: String,
    pub stage: String,
    #[sea_orm(column_type = "Text")]
    pub output: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
