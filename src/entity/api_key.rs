//! `api_keys`: session tokens. The id is the token's public half; only a hash of the secret
//! half is kept, with a sliding expiry (`store::sessions`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub hashed_secret: String,
    pub user_id: Uuid,
    pub created_at: DateTimeUtc,
    pub last_used: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub lifetime_seconds: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The session's user, read with the key in one statement on every request.
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id"
    )]
    User,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
