//! Every error the API answers, in Coder's shape `{message, detail?, validations?}`, mapped from
//! the lower layers' errors in one place. HTTP status codes appear here and nowhere else.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::domain::Validations;
use crate::domain::organization::{DEFAULT_KEYWORD, OrganizationInputError};
use crate::store::{StoreError, Unavailability, unavailability};

/// Shown when something is missing or not visible to the caller (never says which).
pub const NOT_FOUND_MESSAGE: &str = "Resource not found or you do not have access to this resource";

/// One failed field rule.
#[derive(Debug, Clone, Object)]
pub struct ValidationError {
    pub field: String,
    pub detail: String,
}

/// Body of every error response.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    pub message: String,
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
    #[oai(skip_serializing_if_is_empty, default)]
    pub validations: Vec<ValidationError>,
}

impl ErrorBody {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            detail: None,
            validations: Vec::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_validations(mut self, validations: Validations) -> Self {
        self.validations = validations
            .0
            .into_iter()
            .map(|v| ValidationError {
                field: v.field,
                detail: v.detail,
            })
            .collect();
        self
    }
}

/// An error answer. Handlers return `Result<_, ApiError>`; extractors return it inside a
/// `poem::Error`, which renders the same way.
#[derive(Debug, Clone, ApiResponse)]
pub enum ApiError {
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request body did not arrive in time (`limits.body_read_timeout_secs`).
    #[oai(status = 408)]
    RequestTimeout(Json<ErrorBody>),
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    #[oai(status = 412)]
    PreconditionFailed(Json<ErrorBody>),
    /// The request body is larger than `limits.max_body_bytes`.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>, #[oai(header = "Retry-After")] String),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database is busy or unreachable for now; retry after `Retry-After` seconds.
    #[oai(status = 503)]
    ServiceUnavailable(Json<ErrorBody>, #[oai(header = "Retry-After")] String),
}

/// The answer when no database connection becomes free within `database_acquire_timeout_secs`.
pub const DATABASE_BUSY_MESSAGE: &str = "The database is busy; retry shortly.";
/// The answer to every unexpected error: its cause is logged, never shown.
const INTERNAL_MESSAGE: &str = "An internal error occurred.";

/// The answer when the database went away under a request or refuses to serve it.
pub const DATABASE_UNAVAILABLE_MESSAGE: &str = "The database is unavailable; retry shortly.";

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(Json(ErrorBody::new(message)))
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized(Json(ErrorBody::new(message)))
    }
    pub fn forbidden() -> Self {
        Self::Forbidden(Json(ErrorBody::new("Forbidden.")))
    }
    pub fn not_found() -> Self {
        Self::NotFound(Json(ErrorBody::new(NOT_FOUND_MESSAGE)))
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(Json(ErrorBody::new(message)))
    }
    pub fn validation(validations: Validations) -> Self {
        Self::BadRequest(Json(
            ErrorBody::new("Validation failed.").with_validations(validations),
        ))
    }
    /// Logs the cause and answers an opaque 500: internals never reach the client.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        Self::internal_message(&error_chain(cause))
    }

    /// Like [`ApiError::internal`] for causes that are only `Display`.
    pub fn internal_message(cause: &str) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::Internal(Json(ErrorBody::new(INTERNAL_MESSAGE)))
    }

    /// The body of an error that an answer does not declare (say a 404 where an operation
    /// documents only 403, 500 and 503): logged like any unexpected error, and answered with
    /// the opaque 500 body instead of its own message.
    pub fn undeclared(self) -> Json<ErrorBody> {
        tracing::error!(error = %self, "undeclared error answered as a 500");
        Json(ErrorBody::new(INTERNAL_MESSAGE))
    }

    /// A 503 for a request the database could not serve for the time being (logged as a
    /// warning: it says the pool is too small, something holds connections or the database is
    /// restarting, not that provq is broken). The cause never reaches the client.
    pub fn database_unavailable(why: Unavailability, cause: &dyn std::error::Error) -> Self {
        let cause = error_chain(cause);
        let (message, detail) = match why {
            Unavailability::Busy => {
                tracing::warn!(error = %cause, "database busy: no connection in time");
                (
                    DATABASE_BUSY_MESSAGE,
                    "No database connection of this server became available for as long as a \
                     request may wait for one.",
                )
            }
            Unavailability::Unreachable => {
                tracing::warn!(error = %cause, "database unavailable: connection lost or refused");
                (
                    DATABASE_UNAVAILABLE_MESSAGE,
                    "The connection to the database was lost, or the database is not accepting \
                     connections right now.",
                )
            }
        };
        Self::ServiceUnavailable(
            Json(ErrorBody::new(message).with_detail(detail)),
            "1".into(),
        )
    }

    /// Adds a `detail` to whatever kind of error this is.
    pub fn with_detail(self, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        self.map_body(|b| b.with_detail(detail))
    }

    fn map_body(self, f: impl FnOnce(ErrorBody) -> ErrorBody) -> Self {
        match self {
            Self::BadRequest(Json(b)) => Self::BadRequest(Json(f(b))),
            Self::Unauthorized(Json(b)) => Self::Unauthorized(Json(f(b))),
            Self::Forbidden(Json(b)) => Self::Forbidden(Json(f(b))),
            Self::NotFound(Json(b)) => Self::NotFound(Json(f(b))),
            Self::Conflict(Json(b)) => Self::Conflict(Json(f(b))),
            Self::PreconditionFailed(Json(b)) => Self::PreconditionFailed(Json(f(b))),
            Self::RequestTimeout(Json(b)) => Self::RequestTimeout(Json(f(b))),
            Self::PayloadTooLarge(Json(b)) => Self::PayloadTooLarge(Json(f(b))),
            Self::UnsupportedMediaType(Json(b)) => Self::UnsupportedMediaType(Json(f(b))),
            Self::TooManyRequests(Json(b), h) => Self::TooManyRequests(Json(f(b)), h),
            Self::Internal(Json(b)) => Self::Internal(Json(f(b))),
            Self::ServiceUnavailable(Json(b), h) => Self::ServiceUnavailable(Json(f(b)), h),
        }
    }

    fn body(&self) -> &ErrorBody {
        match self {
            Self::BadRequest(Json(b))
            | Self::Unauthorized(Json(b))
            | Self::Forbidden(Json(b))
            | Self::NotFound(Json(b))
            | Self::Conflict(Json(b))
            | Self::PreconditionFailed(Json(b))
            | Self::RequestTimeout(Json(b))
            | Self::PayloadTooLarge(Json(b))
            | Self::UnsupportedMediaType(Json(b))
            | Self::TooManyRequests(Json(b), _)
            | Self::Internal(Json(b))
            | Self::ServiceUnavailable(Json(b), _) => b,
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.body().message)
    }
}

impl From<Validations> for ApiError {
    fn from(v: Validations) -> Self {
        Self::validation(v)
    }
}

impl From<OrganizationInputError> for ApiError {
    fn from(e: OrganizationInputError) -> Self {
        match e {
            OrganizationInputError::ReservedDefault => {
                let mut v = Validations::new();
                v.push(
                    "name",
                    format!("\"{DEFAULT_KEYWORD}\" always means the default organization"),
                );
                Self::BadRequest(Json(ErrorBody::new(e.to_string()).with_validations(v)))
            }
            OrganizationInputError::Invalid(v) => Self::validation(v),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::not_found(),
            StoreError::Conflict { message, field } => {
                let mut body = ErrorBody::new(message.clone());
                if let Some(field) = field {
                    let mut v = Validations::new();
                    v.push(field, message);
                    body = body.with_validations(v);
                }
                Self::Conflict(Json(body))
            }
            StoreError::Invalid(message) => Self::bad_request(message),
            StoreError::PreconditionFailed(message) => {
                Self::PreconditionFailed(Json(ErrorBody::new(message)))
            }
            StoreError::Database(db) => match unavailability(&db) {
                Some(why) => Self::database_unavailable(why, &db),
                None => Self::internal(&db),
            },
            bad @ StoreError::BadRow { .. } => Self::internal(&bad),
        }
    }
}

/// Renders errors raised outside handlers (routing, request parsing, extractors) in the same
/// shape as handler errors. Installed once around the whole app.
pub async fn render_poem_error(err: poem::Error) -> Response {
    use poem_openapi::error::{
        ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError,
    };
    if err.is_from_response() {
        // Already rendered (an `ApiError` raised by an extractor such as `Caller`).
        return err.into_response();
    }
    let error = if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        ApiError::bad_request("Request body must be valid JSON.").with_detail(e.reason.clone())
    } else if let Some(e) = err.downcast_ref::<ParseParamError>() {
        let mut v = Validations::new();
        v.push(e.name, e.reason.clone());
        ApiError::BadRequest(Json(
            ErrorBody::new("Invalid query parameters.").with_validations(v),
        ))
    } else if let Some(e) = err.downcast_ref::<ParsePathError>() {
        let mut v = Validations::new();
        v.push(e.name, e.reason.clone());
        ApiError::BadRequest(Json(
            ErrorBody::new(format!("Invalid path parameter \"{}\".", e.name)).with_validations(v),
        ))
    } else if let Some(e) = err.downcast_ref::<ContentTypeError>() {
        ApiError::UnsupportedMediaType(Json(
            ErrorBody::new("Unsupported Content-Type: send application/json.")
                .with_detail(e.to_string()),
        ))
    } else if err.is::<poem::error::NotFoundError>() {
        return plain(StatusCode::NOT_FOUND, ErrorBody::new("Route not found."));
    } else if err.is::<poem::error::MethodNotAllowedError>() {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorBody::new("Method not allowed."),
        );
    } else {
        let status = err.status();
        if status.is_server_error() {
            ApiError::internal_message(&err.to_string())
        } else {
            return plain(status, ErrorBody::new(err.to_string()));
        }
    };
    error.into_response()
}

/// hyper answers a few malformed requests itself, before poem sees them, with an empty body: a
/// URI past 64 KiB (414), a header block too large (431), a request line or header that does
/// not parse (400). The connection layer passes every response head it writes through this
/// function; such an automatic answer (one of those statuses, `content-length: 0`, no
/// `content-type`: provq's own errors always have one) comes back as the same status with an
/// error body in the usual shape.
pub fn rewrite_automatic_error(head: &[u8]) -> Option<Vec<u8>> {
    // Cheap tests first: this sees every write of every connection.
    if head.len() > 1024 || !head.starts_with(b"HTTP/1.1 4") || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    let (message, detail) = match rest.get(..4)? {
        "400 " => (
            "The request could not be parsed.",
            "The request line or a header is not valid HTTP/1.1.",
        ),
        "414 " => (
            "Request URI too long.",
            "The path and query must be shorter; send long filters in a request body where the \
             route takes one.",
        ),
        "431 " => (
            "Request header fields too large.",
            "The header block of a request is limited in size.",
        ),
        _ => return None,
    };
    let lines: Vec<&str> = text.trim_end().split("\r\n").collect();
    let headers = &lines[1..];
    let lower = |h: &&str| h.to_ascii_lowercase();
    if !headers.iter().any(|h| lower(h) == "content-length: 0")
        || headers
            .iter()
            .any(|h| lower(h).starts_with("content-type:"))
    {
        return None;
    }
    let body = serde_json::json!({"message": message, "detail": detail}).to_string();
    let mut out = format!("{}\r\n", lines[0]);
    for h in headers
        .iter()
        .filter(|h| !lower(h).starts_with("content-length:"))
    {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("content-type: application/json; charset=utf-8\r\n");
    out.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    Some(out.into_bytes())
}

fn plain(status: StatusCode, body: ErrorBody) -> Response {
    let mut response = Json(body).into_response();
    response.set_status(status);
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};

    use super::*;

    async fn render(e: StoreError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = ApiError::from(e).into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get("Retry-After")
            .map(|v| v.to_str().unwrap().to_string());
        let body = response.into_body().into_json().await.unwrap();
        (status, retry_after, body)
    }

    #[tokio::test]
    async fn a_pool_timeout_is_a_503_with_retry_after_and_no_internals() {
        for db in [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::Conn(RuntimeErr::SqlxError(Arc::new(
                sea_orm::sqlx::Error::PoolTimedOut,
            ))),
        ] {
            let (status, retry_after, body) = render(StoreError::Database(db)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(retry_after.as_deref(), Some("1"));
            assert_eq!(body["message"], DATABASE_BUSY_MESSAGE);
            let text = body.to_string().to_lowercase();
            assert!(!text.contains("pool") && !text.contains("sqlx"), "{body}");
        }
    }

    #[tokio::test]
    async fn a_lost_or_refused_connection_is_a_503_with_retry_after_and_no_internals() {
        for db in [
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            DbErr::Query(RuntimeErr::SqlxError(Arc::new(sea_orm::sqlx::Error::Io(
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "secret_host:5432 closed the connection",
                ),
            )))),
        ] {
            let (status, retry_after, body) = render(StoreError::Database(db)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(retry_after.as_deref(), Some("1"));
            assert_eq!(body["message"], DATABASE_UNAVAILABLE_MESSAGE);
            let text = body.to_string().to_lowercase();
            assert!(
                !text.contains("secret_host") && !text.contains("pool") && !text.contains("sqlx"),
                "{body}"
            );
        }
    }

    #[test]
    fn hypers_automatic_errors_get_a_body_and_nothing_else_is_touched() {
        let head = b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(rewrite_automatic_error(head).unwrap()).unwrap();
        let (top, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(top.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{top}");
        assert!(
            top.contains("connection: close") && top.contains("date: x"),
            "{top}"
        );
        assert!(
            top.contains(&format!("content-length: {}", body.len())),
            "{top}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["message"], "Request URI too long.");
        for untouched in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n",
            b"{\"message\":\"HTTP/1.1 414 \"}",
        ] {
            assert_eq!(rewrite_automatic_error(untouched), None);
        }
    }

    #[tokio::test]
    async fn other_database_errors_stay_opaque_500s() {
        for db in [
            DbErr::Custom("relation \"secret_table\" does not exist".into()),
            DbErr::Query(RuntimeErr::SqlxError(Arc::new(
                sea_orm::sqlx::Error::Protocol("secret_table: unexpected message".into()),
            ))),
        ] {
            let (status, retry_after, body) = render(StoreError::Database(db)).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(retry_after, None);
            assert_eq!(body["message"], "An internal error occurred.");
            assert!(!body.to_string().contains("secret_table"), "{body}");
        }
    }
}
