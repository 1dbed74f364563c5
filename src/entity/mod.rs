//! sea-orm entities, one per table; no behaviour lives here.

pub mod api_key;
pub mod license;
pub mod organization;
pub mod organization_member;
pub mod provisioner_daemon;
pub mod provisioner_job;
pub mod provisioner_job_log;
pub mod provisioner_key;
pub mod replica;
pub mod site_config;
pub mod user;
