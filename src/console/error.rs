//! Errors of console pages, answered as HTML pages with the status the API would give for the
//! same failure (the API's one mapping decides the status and logs internal causes).

use maud::html;
use poem::IntoResponse;
use poem::http::StatusCode;

use super::page::{self, html_response};
use crate::api::error::ApiError;
use crate::store::StoreError;

/// A failed page: its status and what to tell the operator.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn forbidden(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The status an API error is answered with.
pub fn api_status(e: &ApiError) -> StatusCode {
    e.clone().into_response().status()
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        let status = api_status(&e);
        let message = match status {
            StatusCode::NOT_FOUND => "Not found, or not visible to your account.".to_string(),
            _ => e.to_string(),
        };
        Self::new(status, message)
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<PageError> for poem::Error {
    fn from(e: PageError) -> Self {
        poem::Error::from_response(e.into_response())
    }
}

/// Renders errors raised outside the pages' own code (an unknown path, a bad form body) as
/// pages too; errors that already carry their page pass through.
pub async fn render_error(e: poem::Error) -> poem::Response {
    if e.is_from_response() {
        return e.into_response();
    }
    let message = match e.status() {
        StatusCode::NOT_FOUND => "There is no such page.".to_string(),
        s if s.is_server_error() => {
            tracing::error!(error = %e, "console error");
            "An internal error occurred.".to_string()
        }
        _ => e.to_string(),
    };
    PageError::new(e.status(), message).into_response()
}

impl PageError {
    fn into_response(self) -> poem::Response {
        let e = self;
        let title = e.status.canonical_reason().unwrap_or("Error");
        let body = page::bare(
            title,
            html! {
                main.narrow {
                    h1 { (title) }
                    p role="alert" { (e.message) }
                    p { a href="/" { "Back to the overview" } }
                }
            },
        );
        html_response(e.status, body)
    }
}
