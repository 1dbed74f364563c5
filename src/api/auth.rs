//! Who is calling: a session token from the `Coder-Session-Token` header, the
//! `coder_session_token` cookie or the `coder_session_token` query parameter (in that order).

use poem::{FromRequest, Request, RequestBody};

use super::error::ApiError;
use super::state::AppState;
use crate::domain::secrets::SessionToken;
use crate::entity::user;
use crate::store::sessions::SessionCheck;
use crate::store::users::ROLE_OWNER;

pub const SESSION_HEADER: &str = "Coder-Session-Token";
pub const SESSION_COOKIE: &str = "coder_session_token";

/// An authenticated user, extracted from the request. Handlers that take it answer 401 to
/// anonymous callers before running.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: user::Model,
    /// Id part of the session token (for logout).
    pub token_id: String,
}

impl Caller {
    pub fn is_owner(&self) -> bool {
        self.user.roles.split(',').any(|r| r == ROLE_OWNER)
    }

    /// 403 unless the caller is an owner.
    pub fn require_owner(&self) -> Result<(), ApiError> {
        if self.is_owner() {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

/// The raw token, wherever the client put it.
pub fn presented_token(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(SESSION_HEADER) {
        return v.to_str().ok().map(str::to_string);
    }
    if let Some(c) = req.cookie().get(SESSION_COOKIE) {
        return Some(c.value_str().to_string());
    }
    req.uri().query().and_then(|q| {
        url_pairs(q)
            .find(|(k, _)| k == SESSION_COOKIE)
            .map(|(_, v)| v)
    })
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
}

impl<'a> FromRequest<'a> for Caller {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
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

pub(super) async fn authenticate(state: &AppState, req: &Request) -> Result<Caller, ApiError> {
    let raw = presented_token(req).ok_or_else(|| {
        ApiError::unauthorized(format!(
            "Cookie \"{SESSION_COOKIE}\" or header \"{SESSION_HEADER}\" must be provided."
        ))
    })?;
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
