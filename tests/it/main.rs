//! Integration tests: the real server on port 0, over HTTP, on SQLite and PostgreSQL.
//! One test binary; `helpers` starts servers and fresh databases.

mod helpers;

mod cli;
mod foundation;
mod users;
