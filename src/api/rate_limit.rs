//! Rate limiting (contract §1): `rate_limit.api_per_minute` requests per caller and route
//! template, where the caller is the authenticated user or, when anonymous, the client IP; and
//! `rate_limit.login_per_minute` login attempts per client IP, which stays on when the API limit
//! is disabled (it is what slows down password guessing).
//!
//! The worker API (`/api/v2/provisionerd/*`) is exempt: a daemon long-polls and heartbeats all
//! day and must never be starved by an admin script sharing its IP. Its cost is bounded instead
//! by `limits.long_polls_per_credential` (see `limits.rs`).
//!
//! Counters are fixed one-minute windows held in memory, per replica: a small, predictable
//! limiter with no dependency; with N replicas behind a balancer a caller gets up to N times the
//! budget, which is the usual trade-off (Coder's own limiter is per replica too).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::payload::Json;

use super::auth::{Caller, authenticate, presented_token};
use super::error::{ApiError, ErrorBody};
use super::state::AppState;
use crate::config::RateLimitSettings;

const WINDOW: Duration = Duration::from_secs(60);
const LOGIN_ROUTE: &str = "/api/v2/users/login";
const WORKER_PREFIX: &str = "/api/v2/provisionerd/";

/// Counts requests per key in fixed windows of `window`.
pub struct FixedWindow {
    limit: u64,
    window: Duration,
    state: Mutex<Windows>,
}

struct Windows {
    counters: HashMap<String, (Instant, u64)>,
    last_sweep: Instant,
}

impl FixedWindow {
    pub fn new(limit: u64, window: Duration) -> Self {
        Self {
            limit,
            window,
            state: Mutex::new(Windows {
                counters: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Counts one request for `key` at `now`; `Err(wait)` when the key is over its limit, with
    /// the time until its window ends.
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().expect("not poisoned");
        // Forget finished windows once per window so the map holds only active callers.
        if now.duration_since(state.last_sweep) >= self.window {
            let window = self.window;
            state
                .counters
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            state.last_sweep = now;
        }
        let entry = state.counters.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            return Err(self.window.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }

    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// The middleware; built once per server from the settings.
pub struct RateLimit {
    api: Option<Arc<FixedWindow>>,
    login: Arc<FixedWindow>,
}

impl RateLimit {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            api: (settings.api_per_minute > 0)
                .then(|| Arc::new(FixedWindow::new(settings.api_per_minute, WINDOW))),
            login: Arc::new(FixedWindow::new(settings.login_per_minute, WINDOW)),
        }
    }
}

impl<E: Endpoint> Middleware<E> for RateLimit {
    type Output = RateLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RateLimitEndpoint {
            inner,
            api: self.api.clone(),
            login: self.login.clone(),
        }
    }
}

pub struct RateLimitEndpoint<E> {
    inner: E,
    api: Option<Arc<FixedWindow>>,
    login: Arc<FixedWindow>,
}

impl<E: Endpoint> Endpoint for RateLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let path = req.uri().path();
        // The console's sign-in guesses passwords as well as the API's login: one budget.
        if path == crate::console::SIGNIN_PATH
            && req.method() == poem::http::Method::POST
            && let Err(wait) = self.login.check(&client_ip(&req))
        {
            return Ok(too_many(self.login.limit(), wait));
        }
        if path.starts_with("/api/v2/") && !path.starts_with(WORKER_PREFIX) {
            let route = route_template(path).unwrap_or_else(|| "unmatched".into());
            let ip = client_ip(&req);
            if route == LOGIN_ROUTE
                && req.method() == poem::http::Method::POST
                && let Err(wait) = self.login.check(&ip)
            {
                return Ok(too_many(self.login.limit(), wait));
            }
            if let Some(api) = &self.api {
                let caller = caller_key(&mut req, &ip).await;
                let key = format!("{caller} {} {route}", req.method());
                if let Err(wait) = api.check(&key) {
                    return Ok(too_many(api.limit(), wait));
                }
            }
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}

/// `user:<id>` for a valid session (kept on the request so the handler does not look it up
/// again), else `ip:<address>`: a bad token is counted against the address that sent it.
async fn caller_key(req: &mut Request, ip: &str) -> String {
    if presented_token(req).is_some()
        && let Some(state) = req.data::<AppState>().cloned()
        && let Ok(caller) = authenticate(&state, req).await
    {
        let key = format!("user:{}", caller.user.id);
        req.extensions_mut().insert::<Caller>(caller);
        return key;
    }
    format!("ip:{ip}")
}

fn client_ip(req: &Request) -> String {
    req.remote_addr()
        .as_socket_addr()
        .map(|a| a.ip())
        .map(|ip: IpAddr| ip.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The documented template a raw `/api/v2` path belongs to; literal segments win over
/// parameters (`…/provisionerjobs/cancel` is not `…/provisionerjobs/{job}`).
pub fn route_template(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    super::observe::documented_routes()
        .iter()
        .filter_map(|(shape, template)| {
            let parts: Vec<&str> = shape.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literals = 0;
            for (p, s) in parts.iter().zip(&segments) {
                if *p == "{}" {
                    continue;
                }
                if p != s {
                    return None;
                }
                literals += 1;
            }
            Some((literals, template))
        })
        .max_by_key(|(literals, _)| *literals)
        .map(|(_, t)| t.clone())
}

fn too_many(limit: u64, wait: Duration) -> Response {
    // Round up: a client that waits exactly this long finds a fresh window.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::TooManyRequests(
        Json(
            ErrorBody::new(format!(
                "You've been rate limited for sending more than {limit} requests in 1m0s."
            ))
            .with_detail(format!("Try again in {} seconds.", secs.max(1))),
        ),
        secs.max(1).to_string(),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_limited_until_its_window_ends() {
        let limiter = FixedWindow::new(2, WINDOW);
        let t0 = Instant::now();
        assert!(limiter.check_at("a", t0).is_ok());
        assert!(limiter.check_at("a", t0).is_ok());
        let wait = limiter
            .check_at("a", t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(
            limiter.check_at("b", t0).is_ok(),
            "other keys are unaffected"
        );
        assert!(limiter.check_at("a", t0 + WINDOW).is_ok(), "a new window");
    }

    #[test]
    fn finished_windows_are_forgotten() {
        let limiter = FixedWindow::new(1, WINDOW);
        let t0 = Instant::now();
        limiter.check_at("a", t0).unwrap();
        limiter.check_at("b", t0 + 2 * WINDOW).unwrap();
        assert_eq!(limiter.state.lock().unwrap().counters.len(), 1);
    }

    #[test]
    fn raw_paths_map_to_their_templates() {
        assert_eq!(
            route_template("/api/v2/organizations/x/provisionerjobs/cancel").as_deref(),
            Some("/api/v2/organizations/{organization}/provisionerjobs/cancel")
        );
        assert_eq!(
            route_template("/api/v2/organizations/x/provisionerjobs/abc").as_deref(),
            Some("/api/v2/organizations/{organization}/provisionerjobs/{job}")
        );
        assert_eq!(route_template("/api/v2/nope/nope/nope/nope"), None);
    }
}
