//! The JSON the API serves and its clients send, as types: requests and answers of the worker
//! protocol, and the job, organization and daemon answers the CLI reads. The server's handlers
//! (`api`) and its clients (`cli`, the daemon runner, `provq-bench`) use these same types, so a
//! client cannot drift from the API (mini-redis shares its command types the same way).
//!
//! Types only: serde for clients, poem-openapi `Object` for the served document, no handler
//! code. Names and field docs are the OpenAPI document's, so keep them as they are.

pub mod daemons;
pub mod jobs;
pub mod organizations;
pub mod provisionerd;
