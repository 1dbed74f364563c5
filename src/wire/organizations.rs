//! The organization answer of `/organizations`.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use uuid::Uuid;

/// An organization as Coder shows it.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub icon: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub is_default: bool,
}
