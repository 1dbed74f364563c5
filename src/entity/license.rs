//! `licenses`: uploaded license JWTs with their expiry; the store hands them up as
//! `domain::license::LicenseRecord`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "licenses")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub uuid: Uuid,
    #[sea_orm(column_type = "Text")]
    pub jwt: String,
    pub uploaded_at: DateTimeUtc,
    pub exp: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
