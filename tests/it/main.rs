//! Integration tests: the real server on port 0, over HTTP, on SQLite and PostgreSQL.
//! One test binary; `helpers` starts servers and fresh databases.

mod helpers;

mod cli;
mod dispatch;
mod foundation;
mod jobs;
mod listing;
mod logs;
mod metrics;
mod operator;
mod reaper;
mod status_sql;
mod users;
