//! The operator console: server-rendered pages on the API listener at `/` (overview, jobs, one
//! job, daemons, licenses), with a small hand-written script for what must happen without a
//! reload (the overview's refresh, log following, confirmations). Pages read the store directly;
//! every action the script takes goes through the `/api/v2` JSON API with the session cookie, so
//! the console can do nothing the API would refuse.
//!
//! Templates are `maud` (checked at compile time, escaped by default); the CSS and script are
//! embedded in the binary with `rust-embed`. Every response carries a strict
//! Content-Security-Policy (no inline script or style, nothing from another origin) and
//! `X-Frame-Options: DENY`.

mod daemons;
mod error;
mod job;
mod jobs;
mod licenses;
mod overview;
mod page;
mod session;
mod time;

use poem::endpoint::EmbeddedFilesEndpoint;
use poem::http::header;
use poem::middleware::SetHeader;
use poem::{EndpointExt, IntoEndpoint, Route, get, post};

pub use jobs::MAX_ROWS;
pub use session::{SIGNIN_PATH, same_origin};

/// Nothing but this origin's own files; no inline script or style; no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The console's CSS and script, compiled into the binary.
#[derive(rust_embed::RustEmbed)]
#[folder = "src/console/assets/"]
struct Assets;

/// The console's routes, to be nested at `/` next to the API.
pub fn routes() -> impl IntoEndpoint {
    Route::new()
        .at("/", get(overview::page))
        .at(SIGNIN_PATH, get(session::signin_page).post(session::signin))
        .at("/signout", post(session::signout))
        .at("/jobs", get(jobs::page))
        .at("/jobs/count", get(jobs::count))
        .at("/jobs/:id", get(job::page))
        .at("/daemons", get(daemons::page))
        .at("/licenses", get(licenses::page))
        .nest(
            "/static",
            EmbeddedFilesEndpoint::<Assets>::new()
                .with(SetHeader::new().overriding(header::CACHE_CONTROL, "no-cache")),
        )
        .catch_all_error(error::render_error)
        .with(
            SetHeader::new()
                .overriding(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
                .overriding(header::X_FRAME_OPTIONS, "DENY")
                .overriding(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
                .overriding(header::REFERRER_POLICY, "same-origin"),
        )
}
