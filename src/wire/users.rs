//! The `User` JSON of Coder, as `/users` serves it.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use uuid::Uuid;

#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct Role {
    pub name: String,
    pub display_name: String,
}

/// A user as Coder shows it.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub status: String,
    pub roles: Vec<Role>,
    pub organization_ids: Vec<Uuid>,
}
