//! Who is calling: a session token from the `Coder-Session-Token` header, the
//! `coder_session_token` cookie or the `coder_session_token` query parameter (in that order).
//!
//! A browser attaches the cookie to requests other sites make it send (a plain HTML form
//! posting here), so a request authenticated by the cookie must come from this site when it can
//! change something: see [`same_origin`]. The header and the query parameter are never sent by
//! a browser on its own, so they need no such check.

use poem::http::{Method, header};
use poem::{Request, RequestBody};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use super::error::{ApiError, ErrorBody};
use super::state::AppState;
use crate::domain::secrets::SessionToken;
use crate::domain::user::User;
use crate::store::sessions::SessionCheck;

pub const SESSION_HEADER: &str = "Coder-Session-Token";
pub const SESSION_COOKIE: &str = "coder_session_token";

/// The OpenAPI security schemes of a session token, one per place it may travel.
pub const SESSION_HEADER_SCHEME: &str = "CoderSessionToken";
pub const SESSION_COOKIE_SCHEME: &str = "CoderSessionTokenCookie";
pub const SESSION_QUERY_SCHEME: &str = "CoderSessionTokenQuery";

/// An authenticated user, extracted from the request. Handlers that take it answer 401 to
/// anonymous callers before running, and their operations declare the session schemes.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    /// Id part of the session token (for logout).
    pub token_id: String,
}

impl Caller {
    pub fn is_owner(&self) -> bool {
        self.user.is_owner()
    }

    /// 403 unless the caller is an owner.
    pub fn require_owner(&self) -> Result<(), ApiError> {
        if self.is_owner() {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }

    /// Authenticates the request (for plain poem handlers and other extractors).
    pub async fn from_request_without_body(req: &Request) -> poem::Result<Self> {
        // The rate limiter may have authenticated this request already.
        if let Some(caller) = req.extensions().get::<Caller>() {
            return Ok(caller.clone());
        }
        let state = req
            .data::<AppState>()
            .expect("AppState is attached to every route");
        Ok(authenticate(state, req).await?)
    }
}

/// Where a session token travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource {
    Header,
    Cookie,
    Query,
}

/// The raw token, wherever the client put it.
pub fn presented_token(req: &Request) -> Option<String> {
    presented(req).map(|(token, _)| token)
}

fn presented(req: &Request) -> Option<(String, TokenSource)> {
    if let Some(v) = req.headers().get(SESSION_HEADER) {
        return v
            .to_str()
            .ok()
            .map(|t| (t.to_string(), TokenSource::Header));
    }
    if let Some(c) = req.cookie().get(SESSION_COOKIE) {
        return Some((c.value_str().to_string(), TokenSource::Cookie));
    }
    req.uri().query().and_then(|q| {
        url_pairs(q)
            .find(|(k, _)| k == SESSION_COOKIE)
            .map(|(_, v)| (v, TokenSource::Query))
    })
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
}

/// Whether the request comes from a page of this site, or from a client that is not a browser.
///
/// - `Sec-Fetch-Site` (sent by every current browser) decides when present: `same-origin` and
///   `none` (typed by the user) pass; `same-site`, `cross-site` and anything else do not.
/// - Otherwise `Origin` decides when present: it must name this server as the client reached it,
///   i.e. its `host[:port]` equals the `Host` header (or `X-Forwarded-Host`, which a cross-site
///   page cannot set); the scheme is not compared, so a TLS-terminating proxy works. `null` and
///   unparsable origins do not pass.
/// - With neither header the client is not a browser that could be tricked (browsers send
///   `Origin` on every cross-origin POST, PUT, PATCH and DELETE and on WebSocket handshakes):
///   curl with a cookie jar, scripts. They pass.
///
/// Public so the web console's own forms apply the same rule.
pub fn same_origin(req: &Request) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("Sec-Fetch-Site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(authority) = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
        .map(|(_, authority)| authority)
        .filter(|a| !a.is_empty() && !a.contains('/'))
    else {
        return false;
    };
    [header::HOST.as_str(), "X-Forwarded-Host"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .filter_map(|value| value.split(',').next())
        .any(|host| host.trim().eq_ignore_ascii_case(authority))
}

/// Whether the request can change something (or, as a WebSocket handshake, read a stream), so
/// that a cookie must not authenticate it from another site.
fn needs_same_origin(req: &Request) -> bool {
    let safe = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    let websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    !safe || websocket
}

/// The 403 for a cookie-authenticated request from another site.
pub fn cross_site_refused() -> ApiError {
    ApiError::Forbidden(Json(
        ErrorBody::new("Cross-site request refused.").with_detail(format!(
            "A request authenticated by the \"{SESSION_COOKIE}\" cookie that changes something \
             must come from this site's own pages (Origin or Sec-Fetch-Site). Other clients \
             send the \"{SESSION_HEADER}\" header instead."
        )),
    ))
}

/// The one place the cross-site rule applies to cookies: `Err` for an unsafe request (or a
/// WebSocket handshake) from another site, `Ok` otherwise.
pub fn check_same_origin(req: &Request) -> Result<(), ApiError> {
    if needs_same_origin(req) && !same_origin(req) {
        Err(cross_site_refused())
    } else {
        Ok(())
    }
}

impl<'a> ApiExtractor<'a> for Caller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_session_schemes(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        SESSION_SCHEMES.to_vec()
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Self::from_request_without_body(req).await
    }
}

/// The session schemes, in the order the token is looked for.
pub(super) const SESSION_SCHEMES: [&str; 3] = [
    SESSION_HEADER_SCHEME,
    SESSION_COOKIE_SCHEME,
    SESSION_QUERY_SCHEME,
];

/// Declares the three ways to send a session token, so Swagger UI offers "Authorize".
pub(super) fn register_session_schemes(registry: &mut Registry) {
    for (name, key_in, description) in [
        (
            SESSION_HEADER_SCHEME,
            "header",
            "A session token from POST /users/login.",
        ),
        (
            SESSION_COOKIE_SCHEME,
            "cookie",
            "The session token as a cookie. Requests that change something must come from this \
             site (Origin or Sec-Fetch-Site), else 403.",
        ),
        (
            SESSION_QUERY_SCHEME,
            "query",
            "The session token as a query parameter (for WebSocket clients that cannot set headers).",
        ),
    ] {
        let key = if key_in == "header" {
            SESSION_HEADER
        } else {
            SESSION_COOKIE
        };
        registry.create_security_scheme(name, api_key_scheme(key, key_in, description));
    }
}

/// An OpenAPI `apiKey` security scheme.
pub(super) fn api_key_scheme(
    name: &'static str,
    key_in: &'static str,
    description: &'static str,
) -> MetaSecurityScheme {
    MetaSecurityScheme {
        ty: "apiKey",
        description: Some(description),
        name: Some(name),
        key_in: Some(key_in),
        scheme: None,
        bearer_format: None,
        flows: None,
        openid_connect_url: None,
    }
}

pub(super) async fn authenticate(state: &AppState, req: &Request) -> Result<Caller, ApiError> {
    let (raw, source) = presented(req).ok_or_else(|| {
        ApiError::unauthorized(format!(
            "Cookie \"{SESSION_COOKIE}\" or header \"{SESSION_HEADER}\" must be provided."
        ))
    })?;
    if source == TokenSource::Cookie {
        check_same_origin(req)?;
    }
    let token = SessionToken::parse(&raw).ok_or_else(|| {
        ApiError::unauthorized("Invalid API key format.")
            .with_detail("A session token looks like <10 alphanumerics>-<22 alphanumerics>.")
    })?;
    match state.store.check_session(&token).await? {
        SessionCheck::Valid(user) => Ok(Caller {
            user,
            token_id: token.id,
        }),
        SessionCheck::Invalid => Err(ApiError::unauthorized("API key is invalid.")),
        SessionCheck::Expired(at) => Err(ApiError::unauthorized("API key expired.").with_detail(
            format!("The API key expired at {}. Log in again.", at.to_rfc3339()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use poem::Request;

    fn post(headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder()
            .method(poem::http::Method::POST)
            .header("Host", "provq.example:8080");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.finish()
    }

    #[test]
    fn the_same_origin_rule() {
        use super::same_origin;
        assert!(same_origin(&post(&[])), "no browser headers: not a browser");
        assert!(same_origin(&post(&[(
            "Origin",
            "http://provq.example:8080"
        )])));
        assert!(same_origin(&post(&[(
            "Origin",
            "https://PROVQ.example:8080"
        )])));
        assert!(same_origin(&post(&[("Sec-Fetch-Site", "same-origin")])));
        assert!(!same_origin(&post(&[("Origin", "https://evil.example")])));
        assert!(!same_origin(&post(&[("Origin", "http://provq.example")])));
        assert!(!same_origin(&post(&[("Origin", "null")])));
        assert!(!same_origin(&post(&[("Sec-Fetch-Site", "cross-site")])));
        assert!(!same_origin(&post(&[("Sec-Fetch-Site", "same-site")])));
        assert!(
            !same_origin(&post(&[
                ("Sec-Fetch-Site", "cross-site"),
                ("Origin", "http://provq.example:8080")
            ])),
            "Sec-Fetch-Site wins"
        );
        assert!(same_origin(&post(&[
            ("Origin", "https://provq.example"),
            ("X-Forwarded-Host", "provq.example")
        ])));
    }

    #[test]
    fn only_unsafe_methods_and_websockets_need_it() {
        let get = |upgrade: Option<&str>| {
            let mut b = Request::builder().header("Origin", "https://evil.example");
            if let Some(u) = upgrade {
                b = b.header("Upgrade", u);
            }
            b.finish()
        };
        assert!(super::check_same_origin(&get(None)).is_ok());
        assert!(super::check_same_origin(&get(Some("websocket"))).is_err());
        assert!(super::check_same_origin(&post(&[("Origin", "https://evil.example")])).is_err());
    }
}
