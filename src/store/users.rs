//! Users: the first owner, members created by owners, and lookups by id, username or e-mail.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    TransactionTrait,
};
use uuid::Uuid;

use super::{Store, StoreError, StoreResult, is_unique_violation};
use crate::domain::names::{Email, FullName, Username};
use crate::domain::now;
use crate::entity::{organization_member, site_config, user};

use crate::domain::user::{ROLE_OWNER, User};

/// Marker row whose primary key makes "create the first user" succeed exactly once, even when
/// two requests race on two replicas.
const FIRST_USER_KEY: &str = "first_user_id";

/// A user about to be created; the password is already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub username: Username,
    pub name: FullName,
    pub hashed_password: String,
}

impl Store {
    /// Whether the first user was created (`GET /users/first`).
    pub async fn first_user_exists(&self) -> StoreResult<bool> {
        Ok(site_config::Entity::find_by_id(FIRST_USER_KEY.to_string())
            .one(self.connection())
            .await?
            .is_some())
    }

    /// Creates the first user as an owner of the default organization. `Conflict` once any
    /// first user exists.
    pub async fn create_first_user(&self, new: NewUser) -> StoreResult<(User, Uuid)> {
        let org = self.default_organization().await?;
        let txn = self.connection().begin().await?;
        let marker = site_config::ActiveModel {
            key: Set(FIRST_USER_KEY.to_string()),
            value: Set(String::new()),
        };
        if let Err(e) = marker.insert(&txn).await {
            return Err(if is_unique_violation(&e) {
                StoreError::conflict("The initial user has already been created.", None)
            } else {
                e.into()
            });
        }
        let created = insert_user(&txn, new, ROLE_OWNER, org.id).await?;
        site_config::Entity::update(site_config::ActiveModel {
            key: Set(FIRST_USER_KEY.to_string()),
            value: Set(created.id.to_string()),
        })
        .exec(&txn)
        .await?;
        txn.commit().await?;
        Ok((created.into(), org.id))
    }

    /// Creates a member of the default organization.
    pub async fn create_member(&self, new: NewUser) -> StoreResult<User> {
        let org = self.default_organization().await?;
        let txn = self.connection().begin().await?;
        let created = insert_user(&txn, new, "", org.id).await?;
        txn.commit().await?;
        Ok(created.into())
    }

    /// Every user but the system ones, oldest first (`GET /users`, owners only).
    pub async fn all_users(&self) -> StoreResult<Vec<User>> {
        use sea_orm::QueryOrder;
        let rows = user::Entity::find()
            .filter(user::Column::IsSystem.eq(false))
            .order_by_asc(user::Column::CreatedAt)
            .all(self.connection())
            .await?;
        Ok(rows.into_iter().map(User::from).collect())
    }

    pub async fn user_by_id(&self, id: Uuid) -> StoreResult<User> {
        user::Entity::find_by_id(id)
            .one(self.connection())
            .await?
            .map(User::from)
            .ok_or(StoreError::NotFound)
    }

    pub async fn user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        Ok(user::Entity::find()
            .filter(user::Column::Email.eq(email.as_str()))
            .one(self.connection())
            .await?
            .map(User::from))
    }

    /// Resolves a user given as an id or a username (`me` is resolved by the caller).
    pub async fn resolve_user(&self, ident: &str) -> StoreResult<User> {
        if let Ok(id) = Uuid::parse_str(ident) {
            return self.user_by_id(id).await;
        }
        user::Entity::find()
            .filter(user::Column::Username.eq(ident))
            .one(self.connection())
            .await?
            .map(User::from)
            .ok_or(StoreError::NotFound)
    }
}

async fn insert_user(
    db: &impl ConnectionTrait,
    new: NewUser,
    roles: &str,
    organization_id: Uuid,
) -> StoreResult<user::Model> {
    let at = now();
    let taken = |field| StoreError::conflict("User already exists.", Some(field));
    let by_email = user::Entity::find()
        .filter(user::Column::Email.eq(new.email.as_str()))
        .one(db)
        .await?;
    if by_email.is_some() {
        return Err(taken("email"));
    }
    let by_name = user::Entity::find()
        .filter(user::Column::Username.eq(new.username.as_str()))
        .one(db)
        .await?;
    if by_name.is_some() {
        return Err(taken("username"));
    }
    let model = user::ActiveModel {
        id: Set(Uuid::new_v4()),
        email: Set(new.email.as_str().to_string()),
        username: Set(new.username.as_str().to_string()),
        name: Set(new.name.as_str().to_string()),
        hashed_password: Set(new.hashed_password),
        status: Set("active".into()),
        roles: Set(roles.to_string()),
        is_system: Set(false),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(db)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            taken("username")
        } else {
            e.into()
        }
    })?;
    organization_member::ActiveModel {
        organization_id: Set(organization_id),
        user_id: Set(model.id),
        created_at: Set(at),
    }
    .insert(db)
    .await?;
    Ok(model)
}
