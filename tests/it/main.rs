//! Integration tests: the real server on port 0, over HTTP, on SQLite and PostgreSQL.
//! One test binary; `helpers` starts servers and fresh databases.

mod helpers;
mod license_keys;

mod authz_matrix;
mod chaos;
mod cli;
mod console;
mod console_browser;
mod cross_site;
mod dispatch;
mod edges;
mod entitlements;
mod flood;
mod foundation;
mod hardening;
mod jobs;
mod license_cli;
mod licenses;
mod listing;
mod logs;
mod matching_sql;
mod metrics;
mod operator;
mod operator_cli;
mod organizations;
mod overview;
mod reaper;
mod secrets;
mod shutdown;
mod status_sql;
mod users;
mod worker_protocol;
