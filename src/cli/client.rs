//! The HTTP client every client command uses: base URL, session token, and errors that tell the
//! operator what to do next.

use std::fmt;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ClientArgs;
use super::session;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad command-line usage discovered after parsing (exit code 2).
    #[error("error: {0}")]
    Usage(String),
    #[error("error: not logged in: run `provq login URL`, or pass --url and --token")]
    NotLoggedIn,
    #[error(
        "error: cannot reach {url}: {reason}\nIs `provq serve` running there? Check --url or run `provq login URL`."
    )]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Api(ApiFailure),
    /// A failure already explained in a sentence (exit code 1).
    #[error("error: {0}")]
    Failed(String),
    /// Exit with this code without printing anything more (e.g. `--exit-status`).
    #[error("")]
    Exit(u8),
}

impl ClientError {
    /// The HTTP status of an error answer; `None` when there was no answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api(f) => Some(f.status),
            _ => None,
        }
    }
}

/// `url` if it names an HTTP(S) server; a usage error (exit 2) otherwise, so that
/// `--url 127.0.0.1:8080` says what is missing instead of failing later.
pub fn check_url(url: &str) -> Result<String, ClientError> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(ClientError::Usage(format!(
            "the URL \"{url}\" needs http:// or https://, e.g. http://{}",
            url.split("://").last().unwrap_or(url)
        )));
    }
    match reqwest::Url::parse(url) {
        Ok(parsed) if parsed.host_str().is_some_and(|h| !h.is_empty()) => {
            Ok(url.trim_end_matches('/').to_string())
        }
        _ => Err(ClientError::Usage(format!(
            "the URL \"{url}\" is not valid (e.g. http://127.0.0.1:8080)"
        ))),
    }
}

/// An error answer from the server, in Coder's shape.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub message: String,
    pub detail: Option<String>,
    pub validations: Vec<(String, String)>,
    /// The server's `Retry-After` (in seconds), on 429 and 503 answers.
    pub retry_after: Option<std::time::Duration>,
    /// Whether a 401 means the saved session is bad (false for a login attempt).
    pub session_hint: bool,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {} ({})", self.message, self.status.as_u16())?;
        if let Some(detail) = &self.detail {
            write!(f, "\n  {detail}")?;
        }
        for (field, detail) in &self.validations {
            write!(f, "\n  - {field}: {detail}")?;
        }
        if self.status == StatusCode::UNAUTHORIZED && self.session_hint {
            write!(
                f,
                "\nYour session is missing, invalid or expired: run `provq login URL`."
            )?;
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// A credential header other than the session token (daemon key or PSK).
    credential: Option<(&'static str, String)>,
}

impl Client {
    /// A client for `url` without credentials (login, first-user set-up).
    pub fn anonymous(url: &str) -> Self {
        Self::over(reqwest::Client::new(), url)
    }

    /// A client for `url` without credentials that sends through `http` (its pool, its
    /// timeouts). Building a `reqwest::Client` costs far more than a request (a connector,
    /// TLS roots), so callers that make many clients share one.
    pub fn over(http: reqwest::Client, url: &str) -> Self {
        Self {
            http,
            base: url.trim_end_matches('/').to_string(),
            token: None,
            credential: None,
        }
    }

    /// The server URL from flags, environment or the saved session.
    pub fn url_from_args(args: &ClientArgs) -> Result<String, ClientError> {
        let url = args
            .url
            .clone()
            .or_else(|| session::load().map(|s| s.url))
            .ok_or(ClientError::NotLoggedIn)?;
        check_url(&url)
    }

    /// A client from flags, environment or the saved session, in that order.
    pub fn from_args(args: &ClientArgs) -> Result<Self, ClientError> {
        let saved = session::load();
        let url = args
            .url
            .clone()
            .or_else(|| saved.as_ref().map(|s| s.url.clone()))
            .ok_or(ClientError::NotLoggedIn)?;
        let url = check_url(&url)?;
        let token = args
            .token
            .clone()
            .or_else(|| saved.map(|s| s.token))
            .ok_or(ClientError::NotLoggedIn)?;
        Ok(Self::anonymous(&url).with_token(token))
    }

    pub fn with_token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }

    /// Authenticates with `header: value` instead of a session token.
    pub fn with_credential(mut self, header: &'static str, value: String) -> Self {
        self.credential = Some((header, value));
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends a request to `/api/v2{path}`; 2xx bodies are decoded into `T`.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let (status, text) = self.raw(method, path, body).await?;
        let text = if text.is_empty() {
            "null".to_string()
        } else {
            text
        };
        serde_json::from_str(&text).map_err(|e| {
            ClientError::Api(ApiFailure {
                status,
                message: format!("unexpected response: {e}"),
                detail: None,
                validations: Vec::new(),
                retry_after: None,
                session_hint: false,
            })
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(Method::GET, path, None::<&Value>).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, ClientError> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Sends a request and returns status and body text of a 2xx answer.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<(StatusCode, String), ClientError> {
        let url = format!("{}/api/v2{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some((header, value)) = &self.credential {
            request = request.header(*header, value);
        } else if let Some(token) = &self.token {
            request = request.header("Coder-Session-Token", token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: explain_transport(&self.base, &e),
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                reason: root_cause(&e),
            })?;
        if status.is_success() {
            return Ok((status, text));
        }
        let mut failure = parse_failure(status, &text);
        failure.retry_after = retry_after;
        Err(ClientError::Api(failure))
    }
}

fn parse_failure(status: StatusCode, text: &str) -> ApiFailure {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let message = body["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text.trim().to_string());
    let detail = body["detail"].as_str().map(str::to_string);
    let validations = body["validations"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    (
                        v["field"].as_str().unwrap_or_default().to_string(),
                        v["detail"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ApiFailure {
        status,
        message,
        detail,
        validations,
        retry_after: None,
        session_hint: true,
    }
}

/// The root cause of a transport error, in words an operator can act on.
fn explain_transport(base: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let cause = root_cause(error);
    let tls_mismatch = [
        "InvalidContentType",
        "corrupt message",
        "wrong version number",
    ]
    .iter()
    .any(|s| cause.contains(s));
    if tls_mismatch && base.starts_with("https://") {
        return format!(
            "the server does not speak TLS (HTTPS) there; it may serve plain HTTP: try {}",
            base.replacen("https://", "http://", 1)
        );
    }
    cause
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
