//! provq's schema, one change per file. Runs on SQLite and PostgreSQL from the same code:
//! column types come from sea-query's portable helpers, and the few raw statements (partial
//! indexes) use syntax both databases share. This crate never imports `provq`.

pub use sea_orm_migration::prelude::*;

mod m20261129_000001_create_site_configs;
mod m20261129_000002_create_organizations;
mod m20261129_000003_create_users;
mod m20261129_000004_create_api_keys;
mod m20261129_000005_create_licenses;
mod m20261129_000006_create_provisioner_jobs;
mod m20261129_000007_create_provisioner_job_logs;
mod m20261129_000008_create_provisioner_keys;
mod m20261129_000009_create_provisioner_daemons;
mod m20261129_000010_create_replicas;
mod m20261129_000011_seed_defaults;
mod m20261129_000012_add_job_tags_key;
mod m20261202_000001_organization_name_lower_unique;
mod m20261202_000020_pending_counts;
mod m20261202_000030_lean_job_indexes;
mod m20261202_000031_pending_index_with_id;
mod m20261202_000032_bulk_cancel_counts;

/// The id of the built-in `prebuilds` system user (fixed, as in Coder).
pub const PREBUILDS_USER_ID: &str = "c42fdf75-3097-471c-8c33-fb52454d81c0";

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_create_site_configs::Migration),
            Box::new(m20261129_000002_create_organizations::Migration),
            Box::new(m20261129_000003_create_users::Migration),
            Box::new(m20261129_000004_create_api_keys::Migration),
            Box::new(m20261129_000005_create_licenses::Migration),
            Box::new(m20261129_000006_create_provisioner_jobs::Migration),
            Box::new(m20261129_000007_create_provisioner_job_logs::Migration),
            Box::new(m20261129_000008_create_provisioner_keys::Migration),
            Box::new(m20261129_000009_create_provisioner_daemons::Migration),
            Box::new(m20261129_000010_create_replicas::Migration),
            Box::new(m20261129_000011_seed_defaults::Migration),
            Box::new(m20261129_000012_add_job_tags_key::Migration),
            Box::new(m20261202_000001_organization_name_lower_unique::Migration),
            Box::new(m20261202_000020_pending_counts::Migration),
            Box::new(m20261202_000030_lean_job_indexes::Migration),
            Box::new(m20261202_000031_pending_index_with_id::Migration),
            Box::new(m20261202_000032_bulk_cancel_counts::Migration),
        ]
    }
}
