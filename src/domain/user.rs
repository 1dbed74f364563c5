//! Users as read from the database, and their roles.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The role that may administer the deployment (the first user has it).
pub const ROLE_OWNER: &str = "owner";

/// A user account. `roles` is stored as comma-separated text; here it is a list.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    pub name: String,
    pub hashed_password: String,
    pub status: String,
    pub roles: Vec<String>,
    pub is_system: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl User {
    pub fn is_owner(&self) -> bool {
        self.roles.iter().any(|r| r == ROLE_OWNER)
    }

    /// Whether the account may sign in and be counted as a user of the deployment.
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// Roles as stored: comma-separated, empty for none.
pub fn parse_roles(stored: &str) -> Vec<String> {
    stored
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_comma_separated_and_may_be_none() {
        assert_eq!(parse_roles(""), Vec::<String>::new());
        assert_eq!(parse_roles("owner"), ["owner"]);
        assert_eq!(parse_roles("member,owner"), ["member", "owner"]);
    }
}
