//! Who is looking: sign-in sets the `coder_session_token` cookie (HttpOnly, SameSite=Lax, the
//! same session the API accepts), sign-out deletes the session, and every page takes a [`Viewer`]
//! or sends the browser to the sign-in form. The console's own POSTs accept only same-origin
//! requests, so another site cannot sign a browser in or out.

use maud::html;
use poem::http::{StatusCode, header};
use poem::web::{Data, Form, Query};
use poem::{FromRequest, Request, RequestBody, Response, handler};
use serde::Deserialize;

use super::error::{PageError, api_status};
use super::page::{self, html_response};
use crate::api::AppState;
use crate::api::auth::{Caller, SESSION_COOKIE};
use crate::domain::secrets::SessionToken;

pub const SIGNIN_PATH: &str = "/signin";

/// A signed-in user looking at the console.
pub struct Viewer {
    pub caller: Caller,
    /// Whether prebuilds are paused, for the banner on every page (owners only, as the API
    /// shows this setting to owners only).
    pub prebuilds_paused: bool,
}

impl Viewer {
    pub fn is_owner(&self) -> bool {
        self.caller.is_owner()
    }

    pub fn username(&self) -> &str {
        &self.caller.user.username
    }

    /// A 403 page for members on owner-only pages (the API's own rule for the same data).
    pub fn require_owner(&self, what: &str) -> Result<(), PageError> {
        if self.is_owner() {
            Ok(())
        } else {
            Err(PageError::forbidden(format!(
                "{what} are visible to owners only; your account is a member."
            )))
        }
    }
}

impl<'a> FromRequest<'a> for Viewer {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let state = req
            .data::<AppState>()
            .expect("AppState is attached to every route");
        let caller = match Caller::from_request_without_body(req).await {
            Ok(caller) => caller,
            Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
                return Err(poem::Error::from_response(to_signin(req)));
            }
            Err(e) => return Err(e),
        };
        let prebuilds_paused = if caller.is_owner() {
            state
                .store
                .prebuilds_paused()
                .await
                .map_err(PageError::from)?
        } else {
            false
        };
        Ok(Self {
            caller,
            prebuilds_paused,
        })
    }
}

/// A 303 to `location`.
pub fn see_other(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .finish()
}

/// Sends a browser that is not signed in to the sign-in form, remembering where it was going.
fn to_signin(req: &Request) -> Response {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let query = serde_urlencoded::to_string([("next", target)]).unwrap_or_default();
    see_other(&format!("{SIGNIN_PATH}?{query}"))
}

/// Where to go after signing in: a path on this site only (never `//host` or a full URL).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

/// Whether an unsafe request comes from this site: `Sec-Fetch-Site` when the browser sends it,
/// else `Origin` must name the host the request was sent to. A request with neither header did
/// not come from a browser form or script on another site (browsers send `Origin` on every
/// cross-origin POST).
pub fn same_origin(req: &Request) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

fn cross_site() -> PageError {
    PageError::forbidden("This form must be sent from the console's own pages.".to_string())
}

/// The session cookie; `Secure` when the request arrived over TLS.
fn session_cookie(req: &Request, value: &str, clear: bool) -> String {
    let mut cookie = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax");
    if clear {
        cookie.push_str("; Max-Age=0");
    }
    if req.uri().scheme_str() == Some("https") {
        cookie.push_str("; Secure");
    }
    cookie
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct SignInForm {
    email: String,
    password: String,
    next: Option<String>,
}

fn signin_form(next: &str, email: &str, error: Option<&str>) -> maud::Markup {
    page::bare(
        "Sign in",
        html! {
            main.signin {
                h1 { "provq" }
                p.muted { "Sign in to the operator console." }
                form method="post" action=(SIGNIN_PATH) {
                    input type="hidden" name="next" value=(next);
                    @if let Some(e) = error {
                        p.error role="alert" { (e) }
                    }
                    label for="email" { "Email" }
                    input #email name="email" type="email" autocomplete="username" required
                        autofocus value=(email);
                    label for="password" { "Password" }
                    input #password name="password" type="password"
                        autocomplete="current-password" required;
                    button.primary type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// `GET /signin`: the form, or straight on when already signed in.
#[handler]
pub async fn signin_page(req: &Request, Query(q): Query<NextQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    if Caller::from_request_without_body(req).await.is_ok() {
        return see_other(&next);
    }
    html_response(StatusCode::OK, signin_form(&next, "", None))
}

/// `POST /signin`: checks the password as the API's login does and sets the session cookie.
#[handler]
pub async fn signin(
    req: &Request,
    Data(state): Data<&AppState>,
    Form(form): Form<SignInForm>,
) -> Result<Response, PageError> {
    if !same_origin(req) {
        return Err(cross_site());
    }
    let next = safe_next(form.next.as_deref());
    let email = form.email.clone();
    let user = match crate::api::users::check_password(state, form.email, form.password).await {
        Ok(user) => user,
        Err(e) if api_status(&e) == StatusCode::UNAUTHORIZED => {
            let page = signin_form(&next, &email, Some("Incorrect email or password."));
            return Ok(html_response(StatusCode::UNAUTHORIZED, page));
        }
        Err(e) => return Err(e.into()),
    };
    let token = state.store.create_session(user.id).await?;
    tracing::info!(user_id = %user.id, username = %user.username, "signed in to the console");
    let mut response = see_other(&next);
    let cookie = session_cookie(req, &token.reveal(), false);
    if let Ok(value) = cookie.parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `POST /signout`: ends the session and clears the cookie.
#[handler]
pub async fn signout(req: &Request, Data(state): Data<&AppState>) -> Result<Response, PageError> {
    if !same_origin(req) {
        return Err(cross_site());
    }
    let token = req
        .cookie()
        .get(SESSION_COOKIE)
        .and_then(|c| SessionToken::parse(c.value_str()));
    if let Some(token) = token {
        state.store.delete_session(&token.id).await?;
    }
    let mut response = see_other(SIGNIN_PATH);
    if let Ok(value) = session_cookie(req, "", true).parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(
            safe_next(Some("/jobs?status=pending")),
            "/jobs?status=pending"
        );
        for bad in ["//evil.example", "https://evil.example", "/\\evil", "jobs"] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().method(poem::http::Method::POST);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.finish()
    }

    #[test]
    fn only_same_origin_posts_pass() {
        assert!(same_origin(&request(&[("Sec-Fetch-Site", "same-origin")])));
        assert!(!same_origin(&request(&[("Sec-Fetch-Site", "cross-site")])));
        assert!(!same_origin(&request(&[("Sec-Fetch-Site", "same-site")])));
        assert!(same_origin(&request(&[
            ("Host", "127.0.0.1:8080"),
            ("Origin", "http://127.0.0.1:8080")
        ])));
        assert!(!same_origin(&request(&[
            ("Host", "127.0.0.1:8080"),
            ("Origin", "https://evil.example")
        ])));
        assert!(!same_origin(&request(&[
            ("Host", "127.0.0.1:8080"),
            ("Origin", "null")
        ])));
        assert!(same_origin(&request(&[("Host", "127.0.0.1:8080")])));
    }
}
