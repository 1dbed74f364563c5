//! `GET …/provisionerjobs/{job}/logs?follow`: a WebSocket that sends each log line as one JSON
//! text message and closes once the job has finished and every line was sent. poem-openapi
//! cannot describe an upgrade, so this sits in front of it as a middleware.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use poem::web::websocket::{Message, WebSocket, WebSocketStream};
use poem::{Endpoint, FromRequest, IntoResponse, Request, Response};
use poem_openapi::types::ToJSON;
use uuid::Uuid;

use super::access::org_for_owner;
use super::auth::Caller;
use super::error::ApiError;
use super::state::AppState;
use crate::store::logs::MAX_LOGS_PER_READ;
use crate::wire::jobs::ProvisionerJobLog;

/// How often a follower re-reads even without a wake-up (events from other replicas may be lost).
const FOLLOW_POLL: Duration = Duration::from_secs(1);

/// Routes follow requests to the WebSocket, everything else to `next`.
pub async fn follow_or<E: Endpoint>(
    next: std::sync::Arc<E>,
    req: Request,
) -> poem::Result<Response> {
    if let Some((org, job)) = follow_target(&req) {
        return follow(req, org, job).await;
    }
    next.call(req).await.map(IntoResponse::into_response)
}

/// `(organization, job)` when the request is a log follow.
fn follow_target(req: &Request) -> Option<(String, String)> {
    if req.method() != poem::http::Method::GET {
        return None;
    }
    let query = req.uri().query()?;
    let follows = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .iter()
        .any(|(k, v)| k == "follow" && v != "false");
    if !follows {
        return None;
    }
    // Inside the `/api/v2` nest the prefix is already stripped.
    let path = req.uri().path().trim_matches('/');
    let path = path.strip_prefix("api/v2/").unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["organizations", org, "provisionerjobs", job, "logs"] => {
            Some((org.to_string(), job.to_string()))
        }
        _ => None,
    }
}

fn after_param(req: &Request) -> Result<i64, ApiError> {
    let pairs =
        serde_urlencoded::from_str::<Vec<(String, String)>>(req.uri().query().unwrap_or_default())
            .unwrap_or_default();
    match pairs.iter().find(|(k, _)| k == "after") {
        None => Ok(0),
        Some((_, v)) => v.parse().map_err(|_| {
            let mut validations = crate::domain::Validations::new();
            validations.push("after", "must be an integer log id");
            ApiError::from(validations)
        }),
    }
}

async fn follow(req: Request, org: String, job: String) -> poem::Result<Response> {
    let state = req
        .data::<AppState>()
        .expect("AppState is attached")
        .clone();
    let caller = Caller::from_request_without_body(&req).await?;
    let org = org_for_owner(&state, &caller, &org).await?;
    let job_id = Uuid::parse_str(&job).map_err(|_| {
        let mut v = crate::domain::Validations::new();
        v.push("job", "must be a UUID");
        ApiError::from(v)
    })?;
    let job = state
        .store
        .job(org.id, job_id)
        .await
        .map_err(ApiError::from)?;
    let after = after_param(&req)?;
    let ws = WebSocket::from_request_without_body(&req).await?;
    Ok(ws
        .on_upgrade(move |socket| async move {
            if let Err(e) = stream_logs(state, job.id, after, socket).await {
                tracing::debug!(job_id = %job.id, error = %e, "log follower ended");
            }
        })
        .into_response())
}

async fn stream_logs(
    state: AppState,
    job_id: Uuid,
    mut after: i64,
    socket: WebSocketStream,
) -> anyhow::Result<()> {
    let (mut sink, mut incoming) = socket.split();
    let mut events = state.wakeups.subscribe_events();
    loop {
        // Read the job first: if it was finished, every line it will ever have is written.
        let finished = state.store.job_by_id(job_id).await?.completed_at.is_some();
        loop {
            let logs = state.store.job_logs(job_id, after).await?;
            let full = logs.len() as u64 == MAX_LOGS_PER_READ;
            for log in logs {
                after = after.max(log.id);
                let json = ProvisionerJobLog::from(log).to_json().unwrap_or_default();
                sink.send(Message::Text(json.to_string())).await?;
            }
            if !full {
                break;
            }
        }
        if finished {
            sink.send(Message::Close(None)).await.ok();
            return Ok(());
        }
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(id) if id == job_id => return,
                    Ok(_) => continue,
                    // Lagged or closed: re-read to be safe.
                    Err(_) => return,
                }
            }
        };
        tokio::select! {
            () = wait => {}
            () = tokio::time::sleep(FOLLOW_POLL) => {}
            () = state.shutdown.cancelled() => {
                sink.send(Message::Close(None)).await.ok();
                return Ok(());
            }
            msg = incoming.next() => {
                if matches!(msg, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                    return Ok(());
                }
            }
        }
    }
}
