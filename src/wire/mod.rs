//! The JSON the API serves and its clients send, as types: requests and answers of the worker
//! protocol, and the job, log, organization, daemon and user answers the CLI reads. The server's handlers
//! (`api`) and its clients (`cli`, the daemon runner, `provq-bench`) use these same types, so a
//! client cannot drift from the API (mini-redis shares its command types the same way).
//!
//! Types only: serde for clients, poem-openapi `Object` for the served document, no handler
//! code. Names and field docs are the OpenAPI document's, so keep them as they are.

pub mod daemons;
pub mod jobs;
pub mod organizations;
pub mod provisionerd;
pub mod users;

/// Serialises a time as the served document writes it (`to_rfc3339`, `+00:00`), so a client
/// that passes an answer on (the daemon runner's job JSON on stdin) passes on the same text.
pub fn rfc3339<S: serde::Serializer>(
    at: &chrono::DateTime<chrono::Utc>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339())
}
