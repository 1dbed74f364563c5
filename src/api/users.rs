//! `/users`: the first user, login and logout, creating members, reading users.

use crate::wire::users::{Role, User};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::auth::Caller;
use super::error::ApiError;
use super::state::AppState;
use crate::domain::Validations;
use crate::domain::names::{Email, FullName, Password, Username};
use crate::domain::secrets;
use crate::domain::user::User as UserRecord;
use crate::store::users::NewUser;

pub struct UsersApi;

/// Body of `POST /users/first` and `POST /users`. Fields are optional in the schema so that a
/// missing one is reported as a validation of its own.
#[derive(Object)]
pub struct CreateUserRequest {
    email: Option<String>,
    username: Option<String>,
    password: Option<String>,
    name: Option<String>,
}

#[derive(Object)]
pub struct LoginRequest {
    email: Option<String>,
    password: Option<String>,
}

#[derive(Object)]
pub struct CreateFirstUserResponse {
    user_id: Uuid,
    organization_id: Uuid,
}

#[derive(Object)]
pub struct LoginResponse {
    session_token: String,
}

#[derive(Object)]
pub struct Message {
    pub message: String,
}

#[derive(ApiResponse)]
pub enum FirstUserStatus {
    /// The first user exists.
    #[oai(status = 200)]
    Exists(Json<Message>),
    /// No user yet: `POST /users/first` will create the owner.
    #[oai(status = 404)]
    Missing(Json<Message>),
}

#[derive(ApiResponse)]
pub enum Created<T: poem_openapi::types::ToJSON> {
    #[oai(status = 201)]
    Created(Json<T>),
}

impl CreateUserRequest {
    /// Parses the body into a new user, hashing the password off the async threads.
    async fn into_new_user(self) -> Result<NewUser, ApiError> {
        let mut v = Validations::new();
        let email = v.required("email", self.email, Email::parse);
        let username = v.required("username", self.username, Username::parse);
        let password = v.required("password", self.password, Password::parse);
        let name = v.check("name", FullName::parse(self.name.unwrap_or_default()));
        v.finish()?;
        let (Some(email), Some(username), Some(password), Some(name)) =
            (email, username, password, name)
        else {
            unreachable!("finish() returned Ok, so every field parsed");
        };
        let hashed_password = hash_blocking(password).await?;
        Ok(NewUser {
            email,
            username,
            name,
            hashed_password,
        })
    }
}

async fn hash_blocking(password: Password) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || secrets::hash_password(password.expose()))
        .await
        .map_err(|e| ApiError::internal(&e))
}

/// The active, non-system user with this email and password; 401 otherwise. A wrong email costs
/// as much time as a wrong password. Shared by the API's login and the console's sign-in.
pub async fn check_password(
    state: &AppState,
    email: String,
    password: String,
) -> Result<UserRecord, ApiError> {
    let user = match Email::parse(email) {
        Ok(email) => state.store.user_by_email(&email).await?,
        Err(_) => None,
    };
    let stored = user
        .as_ref()
        .filter(|u| !u.is_system && u.is_active())
        .map(|u| u.hashed_password.clone())
        .unwrap_or_else(|| secrets::dummy_password_hash().to_string());
    let ok = tokio::task::spawn_blocking(move || secrets::verify_password(&password, &stored))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    match (ok, user) {
        (true, Some(u)) if !u.is_system => Ok(u),
        _ => Err(ApiError::unauthorized("Incorrect email or password.")),
    }
}

impl UsersApi {
    async fn to_user(&self, state: &AppState, u: UserRecord) -> Result<User, ApiError> {
        let organization_ids = state.store.organization_ids_of(u.id).await?;
        let role = if u.is_owner() {
            Role {
                name: "owner".into(),
                display_name: "Owner".into(),
            }
        } else {
            Role {
                name: "member".into(),
                display_name: "Member".into(),
            }
        };
        Ok(User {
            id: u.id,
            username: u.username,
            email: u.email,
            name: u.name,
            created_at: u.created_at,
            status: u.status,
            roles: vec![role],
            organization_ids,
        })
    }
}

#[OpenApi(tag = "ApiTags::Users")]
impl UsersApi {
    /// Whether the first user was created.
    #[oai(path = "/users/first", method = "get")]
    async fn first_user_status(
        &self,
        Data(state): Data<&AppState>,
    ) -> Result<FirstUserStatus, ApiError> {
        Ok(if state.store.first_user_exists().await? {
            FirstUserStatus::Exists(Json(Message {
                message: "The initial user has already been created!".into(),
            }))
        } else {
            FirstUserStatus::Missing(Json(Message {
                message: "The initial user has not been created!".into(),
            }))
        })
    }

    /// Creates the first user, an owner. Only while no user exists (409 afterwards).
    #[oai(path = "/users/first", method = "post")]
    async fn create_first_user(
        &self,
        Data(state): Data<&AppState>,
        body: Json<CreateUserRequest>,
    ) -> Result<Created<CreateFirstUserResponse>, ApiError> {
        if state.store.first_user_exists().await? {
            return Err(ApiError::conflict(
                "The initial user has already been created.",
            ));
        }
        let new = body.0.into_new_user().await?;
        let (created, organization_id) = state.store.create_first_user(new).await?;
        tracing::info!(user_id = %created.id, username = %created.username, "first user created");
        Ok(Created::Created(Json(CreateFirstUserResponse {
            user_id: created.id,
            organization_id,
        })))
    }

    /// Logs in with e-mail and password; returns a session token.
    #[oai(path = "/users/login", method = "post")]
    async fn login(
        &self,
        Data(state): Data<&AppState>,
        body: Json<LoginRequest>,
    ) -> Result<Created<LoginResponse>, ApiError> {
        let mut v = Validations::new();
        let email = v.required("email", body.0.email, Ok::<_, String>);
        let password = v.required("password", body.0.password, Ok::<_, String>);
        v.finish()?;
        let (Some(email), Some(password)) = (email, password) else {
            unreachable!("both fields are present")
        };
        let user = check_password(state, email, password).await?;
        let token = state.store.create_session(user.id).await?;
        Ok(Created::Created(Json(LoginResponse {
            session_token: token.reveal(),
        })))
    }

    /// Ends the caller's session.
    #[oai(path = "/users/logout", method = "post")]
    async fn logout(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
    ) -> Result<Json<Message>, ApiError> {
        state.store.delete_session(&caller.token_id).await?;
        Ok(Json(Message {
            message: "You've been logged out!".into(),
        }))
    }

    /// Creates a member of the default organization (owners only).
    #[oai(path = "/users", method = "post")]
    async fn create_user(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        body: Json<CreateUserRequest>,
    ) -> Result<Created<User>, ApiError> {
        caller.require_owner()?;
        let new = body.0.into_new_user().await?;
        let created = state.store.create_member(new).await?;
        tracing::info!(user_id = %created.id, username = %created.username, by = %caller.user.username, "user created");
        Ok(Created::Created(Json(self.to_user(state, created).await?)))
    }

    /// Every user (owners only), oldest first.
    #[oai(path = "/users", method = "get")]
    async fn list_users(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
    ) -> Result<Json<Vec<User>>, ApiError> {
        caller.require_owner()?;
        let mut users = Vec::new();
        for u in state.store.all_users().await? {
            users.push(self.to_user(state, u).await?);
        }
        Ok(Json(users))
    }

    /// A user by id, username or `me`. Coder's read rule for users: owners read every user, a
    /// member reads only itself (any other user is 404, as if missing), so a member never sees
    /// another user's e-mail address or organizations.
    #[oai(path = "/users/:user", method = "get")]
    async fn get_user(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        user: Path<String>,
    ) -> Result<Json<User>, ApiError> {
        let target = if user.0 == "me" {
            caller.user.clone()
        } else {
            state.store.resolve_user(&user.0).await?
        };
        if !caller.is_owner() && target.id != caller.user.id {
            return Err(ApiError::not_found());
        }
        Ok(Json(self.to_user(state, target).await?))
    }
}
