//! Admin requests as a client sees them during an incident, and what they may be answered.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// One admin request as a client sees it: status (None: no answer), how long it took, its
/// `Retry-After` header and its body.
pub(super) struct Answer {
    pub(super) what: &'static str,
    pub(super) status: Option<StatusCode>,
    pub(super) took: Duration,
    pub(super) retry_after: Option<String>,
    pub(super) body: Value,
}

async fn timed(req: reqwest::RequestBuilder, what: &'static str) -> Answer {
    let sent = Instant::now();
    let resp = req.send().await;
    let took = sent.elapsed();
    answer(resp, what, sent, took).await
}

/// The [`Answer`] to a request already sent.
pub(super) async fn timed_response(resp: reqwest::Result<reqwest::Response>) -> Answer {
    answer(resp, "list jobs", Instant::now(), Duration::ZERO).await
}

/// Requests sent while the database was unavailable: each answered 2xx or 503 in Coder's shape
/// with `Retry-After: 1` and a message that names no internals; never a 500.
pub(super) fn assert_unavailable_at_worst(answers: &[Answer]) {
    for a in answers {
        let status = a
            .status
            .unwrap_or_else(|| panic!("{} got no answer", a.what));
        if status.is_success() {
            continue;
        }
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{} answered {status} while the database was unavailable: {}",
            a.what,
            a.body
        );
        assert_error(status, &a.body, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            [
                "The database is busy; retry shortly.",
                "The database is unavailable; retry shortly."
            ]
            .contains(&a.body["message"].as_str().unwrap_or_default()),
            "{}",
            a.body
        );
        assert_eq!(a.retry_after.as_deref(), Some("1"), "{}", a.what);
    }
}

async fn answer(
    resp: reqwest::Result<reqwest::Response>,
    what: &'static str,
    sent: Instant,
    took: Duration,
) -> Answer {
    match resp {
        Ok(r) => {
            let status = r.status();
            let retry_after = r
                .headers()
                .get("Retry-After")
                .map(|v| v.to_str().unwrap_or_default().to_string());
            let body = r.json::<Value>().await.unwrap_or(Value::Null);
            Answer {
                what,
                status: Some(status),
                took: sent.elapsed().max(took),
                retry_after,
                body,
            }
        }
        Err(_) => Answer {
            what,
            status: None,
            took,
            retry_after: None,
            body: Value::Null,
        },
    }
}

/// An admin script: lists jobs, reads itself and enqueues a job, over and over until `until`.
pub(super) async fn admin_requests(app_base: String, token: String, until: Instant) -> Vec<Answer> {
    let http = http_client();
    let mut answers = Vec::new();
    while Instant::now() < until {
        let list = http
            .get(format!(
                "{app_base}/api/v2/organizations/default/provisionerjobs?limit=5"
            ))
            .header("Coder-Session-Token", &token);
        answers.push(timed(list, "list jobs").await);
        let me = http
            .get(format!("{app_base}/api/v2/users/me"))
            .header("Coder-Session-Token", &token);
        answers.push(timed(me, "get me").await);
        let enqueue = http
            .post(format!(
                "{app_base}/api/v2/organizations/default/provisionerjobs"
            ))
            .header("Coder-Session-Token", &token)
            .json(&json!({"type": "workspace_build"}));
        answers.push(timed(enqueue, "enqueue").await);
    }
    answers
}
