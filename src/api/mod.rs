//! The HTTP API: `/api/v2` (poem-openapi, Coder-compatible JSON), `/healthz`, the OpenAPI
//! document and Swagger UI. Handlers are thin: parse into domain types, call the store, map
//! errors through `error.rs`.

pub mod access;
pub mod auth;
pub mod daemon_auth;
pub mod daemons;
pub mod edges;
pub mod error;
pub mod job_views;
pub mod jobs;
pub mod licenses;
pub mod limits;
pub mod logs_follow;
pub mod meta;
pub mod observe;
pub mod organizations;
pub mod overview;
pub mod prebuilds;
pub mod provisionerd;
pub mod queue_position;
pub mod rate_limit;
pub mod state;
pub mod users;

use poem::endpoint::BoxEndpoint;
use poem::http::StatusCode;
use poem::middleware::{CatchPanic, CookieJarManager};
use poem::web::Data;
use poem::{EndpointExt, Route, handler};
use poem_openapi::{OpenApiService, Tags};

pub use state::AppState;

#[derive(Tags)]
pub enum ApiTags {
    /// Build information.
    General,
    /// Users and sessions.
    Users,
    /// Provisioner jobs: enqueue, inspect, cancel, logs.
    Jobs,
    /// Provisioner daemons and their keys.
    Daemons,
    /// The worker API daemons long-poll.
    Provisionerd,
    /// Pausing prebuild jobs.
    Prebuilds,
    /// Organizations: list, create, rename, delete.
    Organizations,
    /// Licenses and the entitlements they grant.
    Licenses,
}

type Apis = (
    meta::MetaApi,
    users::UsersApi,
    jobs::JobsApi,
    daemons::DaemonsApi,
    provisionerd::ProvisionerdApi,
    prebuilds::PrebuildsApi,
    organizations::OrganizationsApi,
    licenses::LicensesApi,
    overview::OverviewApi,
);

/// The OpenAPI service for `/api/v2`; also used to print the document without a server.
/// Handlers take the state as request data, so the service itself holds none.
pub fn openapi_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            meta::MetaApi,
            users::UsersApi,
            jobs::JobsApi,
            daemons::DaemonsApi,
            provisionerd::ProvisionerdApi,
            prebuilds::PrebuildsApi,
            organizations::OrganizationsApi,
            licenses::LicensesApi,
            overview::OverviewApi,
        ),
        "provq",
        env!("CARGO_PKG_VERSION"),
    )
    .description("Provisioner job queue with a Coder-compatible admin API.")
    .server("/api/v2")
}

/// The OpenAPI document of `/api/v2`, as served at `/api/v2/openapi.json`. Needs no database.
pub fn openapi_document() -> String {
    openapi_service().spec()
}

#[handler]
async fn healthz(Data(state): Data<&AppState>) -> (StatusCode, &'static str) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "OK"),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> BoxEndpoint<'static> {
    let service = openapi_service();
    let operations = edges::Operations::from_spec(&service.spec());
    let spec = service.spec_endpoint();
    let swagger = service.swagger_ui();
    Route::new()
        .at("/healthz", poem::get(healthz))
        .at("/api/v2/openapi.json", spec)
        .nest("/api/v2", service.around(logs_follow::follow_or))
        .nest("/swagger", swagger)
        .nest("/", crate::console::routes())
        .with(edges::EdgeGuard::new(operations))
        .with(limits::RequestLimits::new(&state.settings.limits))
        .with(rate_limit::RateLimit::new(&state.settings.rate_limit))
        .around(observe::observe)
        .data(state)
        .with(CookieJarManager::new())
        .catch_all_error(error::render_poem_error)
        .with(CatchPanic::new())
        .boxed()
}
