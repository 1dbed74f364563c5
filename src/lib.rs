//! provq: a provisioner job queue daemon with a Coder-compatible admin API.
//!
//! # Layout
//! - [`config`]: settings, loaded from defaults, a TOML file, `PROVQ_*` variables and flags.
//! - [`metrics`]: Prometheus counters, histograms and database gauges.
//! - [`net`]: the HTTP listener, which lets long-polls notice a vanished client.
//! - [`slow_clients`]: header and idle deadlines for slow clients, at the socket.
//! - [`startup`]: builds the application (database, migrations, listeners); tests use it too.
//! - [`shutdown`]: the one shutdown signal every task shares.
//! - [`domain`]: pure types and rules (names, secrets, validations); no database, no HTTP.
//! - [`entity`]: sea-orm entities, one per table.
//! - [`entitlements`]: the licensed features this replica serves, kept fresh across replicas.
//! - [`store`]: the only code that talks to the database.
//! - [`queue`]: wake-ups, dispatch of a new job to one waiting daemon, the daemon long-poll
//!   and the reaper loop.
//! - [`wire`]: the JSON of requests and answers as types, shared by the API and its clients.
//! - [`api`]: the HTTP API; thin handlers that parse, call the store and map errors.
//! - [`console`]: the operator console, HTML pages at `/` on the API listener.
//! - [`cli`]: the `provq` command tree and its HTTP client.
//! - [`telemetry`]: log output.

pub mod api;
pub mod cli;
pub mod config;
pub mod console;
pub mod domain;
pub mod entitlements;
pub mod entity;
pub mod metrics;
pub mod net;
pub mod queue;
pub mod shutdown;
pub mod slow_clients;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod wire;
