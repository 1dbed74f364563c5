//! What one request may cost: a body larger than `limits.max_body_bytes` is answered 413 without
//! being read (by its `Content-Length`, or as soon as a streamed body passes the limit); a body
//! that does not arrive within `limits.body_read_timeout_secs` is answered 408; and one daemon
//! credential holds at most `limits.long_polls_per_credential` acquire long-polls at once (the
//! worker API is exempt from rate limits, so this is what bounds a leaked or looping key).
//! Header and idle deadlines live at the socket, in `slow_clients`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use poem::http::{Method, header};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::payload::Json;
use sha2::{Digest, Sha256};

use super::auth::presented_token;
use super::daemon_auth::{KEY_HEADER, PSK_HEADER};
use super::error::{ApiError, ErrorBody};
use crate::config::RequestLimitSettings;

const ACQUIRE_PATH: &str = "/api/v2/provisionerd/acquire";

/// The middleware; built once per server from the settings.
pub struct RequestLimits {
    max_body: usize,
    body_timeout: Duration,
    long_polls: Arc<LongPolls>,
}

impl RequestLimits {
    pub fn new(settings: &RequestLimitSettings) -> Self {
        Self {
            max_body: usize::try_from(settings.max_body_bytes).unwrap_or(usize::MAX),
            body_timeout: Duration::from_secs(settings.body_read_timeout_secs),
            long_polls: Arc::new(LongPolls {
                limit: usize::try_from(settings.long_polls_per_credential).unwrap_or(usize::MAX),
                active: Mutex::default(),
            }),
        }
    }
}

impl<E: Endpoint> Middleware<E> for RequestLimits {
    type Output = RequestLimitsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestLimitsEndpoint {
            inner,
            max_body: self.max_body,
            body_timeout: self.body_timeout,
            long_polls: self.long_polls.clone(),
        }
    }
}

pub struct RequestLimitsEndpoint<E> {
    inner: E,
    max_body: usize,
    body_timeout: Duration,
    long_polls: Arc<LongPolls>,
}

impl<E: Endpoint> Endpoint for RequestLimitsEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let _slot = if req.method() == Method::POST && req.uri().path() == ACQUIRE_PATH {
            match credential(&req).map(|c| self.long_polls.enter(c)) {
                Some(None) => return Ok(too_many_long_polls(self.long_polls.limit)),
                Some(Some(slot)) => Some(slot),
                None => None,
            }
        } else {
            None
        };
        if let Err(response) = self.read_body(&mut req).await {
            return Ok(*response);
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}

impl<E> RequestLimitsEndpoint<E> {
    /// Reads the body up front, bounded in size and time, and puts it back for the handler.
    /// Requests without a body (no `Content-Length`, no `Transfer-Encoding`: GETs, WebSocket
    /// upgrades) are left alone.
    async fn read_body(&self, req: &mut Request) -> Result<(), Box<Response>> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let streamed = req.headers().contains_key(header::TRANSFER_ENCODING);
        match declared {
            Some(n) if n > self.max_body as u64 => return Err(Box::new(too_large(self.max_body))),
            Some(0) => return Ok(()),
            None if !streamed => return Ok(()),
            _ => {}
        }
        let mut stream = req.take_body().into_bytes_stream();
        let max = self.max_body;
        let read = async {
            let mut buf = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| ReadError::Broken)?;
                if buf.len() + chunk.len() > max {
                    return Err(ReadError::TooLarge);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(buf)
        };
        match tokio::time::timeout(self.body_timeout, read).await {
            Ok(Ok(bytes)) => {
                req.set_body(Body::from_vec(bytes));
                Ok(())
            }
            Ok(Err(ReadError::TooLarge)) => Err(Box::new(too_large(max))),
            Ok(Err(ReadError::Broken)) => Err(Box::new(closing(ApiError::bad_request(
                "The request body could not be read.",
            )))),
            Err(_) => Err(Box::new(closing(ApiError::RequestTimeout(Json(
                ErrorBody::new("The request body was not received in time.").with_detail(format!(
                    "Send the body within {} seconds.",
                    self.body_timeout.as_secs()
                )),
            ))))),
        }
    }
}

enum ReadError {
    TooLarge,
    Broken,
}

/// A stable, secret-free name for the daemon credential of an acquire request, if it has one.
fn credential(req: &Request) -> Option<String> {
    let raw = [KEY_HEADER, PSK_HEADER]
        .iter()
        .find_map(|h| req.headers().get(*h).map(|v| format!("{h}:{v:?}")))
        .or_else(|| presented_token(req).map(|t| format!("session:{t}")))?;
    Some(hex::encode(Sha256::digest(raw.as_bytes())))
}

/// Acquire long-polls in progress per credential.
struct LongPolls {
    limit: usize,
    active: Mutex<HashMap<String, usize>>,
}

impl LongPolls {
    /// A slot for `credential`, or `None` when it already holds `limit` of them.
    fn enter(self: &Arc<Self>, credential: String) -> Option<LongPollSlot> {
        let mut active = self.active.lock().expect("not poisoned");
        let count = active.entry(credential.clone()).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(LongPollSlot {
            polls: self.clone(),
            credential,
        })
    }
}

/// Gives the slot back when the long-poll ends, however it ends.
struct LongPollSlot {
    polls: Arc<LongPolls>,
    credential: String,
}

impl Drop for LongPollSlot {
    fn drop(&mut self) {
        let mut active = self.polls.active.lock().expect("not poisoned");
        if let Some(count) = active.get_mut(&self.credential) {
            *count -= 1;
            if *count == 0 {
                active.remove(&self.credential);
            }
        }
    }
}

fn too_large(max: usize) -> Response {
    closing(ApiError::PayloadTooLarge(Json(
        ErrorBody::new("Request body too large.")
            .with_detail(format!("Request bodies are limited to {max} bytes.")),
    )))
}

fn too_many_long_polls(limit: usize) -> Response {
    ApiError::TooManyRequests(
        Json(
            ErrorBody::new("Too many concurrent long-polls for this credential.").with_detail(
                format!("A daemon credential may hold {limit} acquire requests at once."),
            ),
        ),
        "1".into(),
    )
    .into_response()
}

/// An error answer after which the connection is closed: the unread rest of the body must
/// not be taken for the next request.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_poll_slots_are_counted_per_credential_and_given_back() {
        let polls = Arc::new(LongPolls {
            limit: 2,
            active: Mutex::default(),
        });
        let a = polls.enter("a".into()).unwrap();
        let _b = polls.enter("a".into()).unwrap();
        assert!(polls.enter("a".into()).is_none());
        assert!(polls.enter("other".into()).is_some());
        drop(a);
        assert!(polls.enter("a".into()).is_some());
    }
}
