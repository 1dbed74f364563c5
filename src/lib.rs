//! provq: a provisioner job queue daemon with a Coder-compatible admin API.
//!
//! # Layout
//! - [`config`]: settings, loaded from defaults, a TOML file, `PROVQ_*` variables and flags.
//! - [`metrics`]: Prometheus counters, histograms and database gauges, and the `/metrics`
//!   listener (given the metrics and the store, not the API's state).
//! - [`net`]: the HTTP listener, which lets long-polls notice a vanished client.
//! - [`slow_clients`]: header and idle deadlines for slow clients, at the socket.
//! - [`startup`]: builds the application (database, migrations, listeners); tests use it too.
//!   The only place that reads the settings for the store (`StoreOptions`).
//! - [`shutdown`]: the one shutdown signal every task shares, and the one signal-to-shutdown
//!   wiring (a graceful stage, then a forced one).
//! - [`domain`]: pure types and rules: what the store hands up (`Job`, `Daemon`, `User`, …),
//!   job status, daemon liveness and matching, tags, names, filters, validations, each with a
//!   typed error; no database, no HTTP.
//! - [`entity`]: sea-orm entities, one per table.
//! - [`entitlements`]: the licensed features this replica serves, kept fresh across replicas.
//! - [`store`]: the only code that talks to the database, in plain statements (NOTIFY and
//!   LISTEN included); it converts each row to its domain type once and fails on a row that
//!   does not parse.
//! - [`queue`]: job events (every job state change with its metrics, wake-ups and log line),
//!   claims (batched on SQLite), wake-ups over the replica's one LISTEN connection (the
//!   notifier), dispatch of a new job to one waiting daemon, the daemon long-poll and the
//!   reaper loop.
//! - [`wire`]: the JSON of requests and answers as types, shared by the API and its clients.
//! - [`api`]: the HTTP API; thin handlers that parse, call the store or the job events and map
//!   errors. They take the state as request data, so the OpenAPI document needs none; each
//!   request runs in a span carrying its request id.
//! - [`console`]: the operator console, HTML pages at `/` on the API listener.
//! - [`cli`]: the `provq` command tree, its HTTP client, the typed worker client and the
//!   daemon runner (`provq provisioner start`).
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
