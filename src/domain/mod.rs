//! Pure types and rules: no sea-orm, no poem. Requests become these types at the edge, so code
//! past the handlers never sees an unchecked name, token or password.

pub mod daemon;
pub mod job;
pub mod job_query;
pub mod job_search;
pub mod license;
pub mod limits;
pub mod names;
pub mod organization;
pub mod secrets;
pub mod tags;
pub mod user;
pub mod validation;

use chrono::{DateTime, SubsecRound, Utc};

pub use validation::{Validation, Validations};

/// The current time at the precision both databases keep (microseconds), so a timestamp read
/// back from the database equals the one written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Id of the built-in `prebuilds` system user; jobs it initiates are prebuild jobs.
pub const PREBUILDS_USER_ID: uuid::Uuid = uuid::uuid!("c42fdf75-3097-471c-8c33-fb52454d81c0");

#[cfg(test)]
mod tests {
    #[test]
    fn the_prebuilds_id_matches_the_seed_migration() {
        assert_eq!(
            super::PREBUILDS_USER_ID.to_string(),
            migration::PREBUILDS_USER_ID
        );
    }
}
