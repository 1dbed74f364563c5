//! Hardening: rate limits, request limits and slow clients (issue 9).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend_tests;
use crate::helpers::*;

/// A GET with the session token; status, `Retry-After` and JSON body.
async fn get_with_headers(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = app.http.get(format!("{}/api/v2{path}", app.base));
    if let Some(t) = token {
        req = req.header("Coder-Session-Token", t);
    }
    answer(req.send().await.expect("request sent")).await
}

/// Status, `Retry-After` and JSON body (null if none) of a response.
async fn answer(resp: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = resp.status();
    let retry = resp
        .headers()
        .get("Retry-After")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, retry, body)
}

fn assert_rate_limited(status: StatusCode, retry: Option<String>, body: &Value) {
    assert_error(status, body, StatusCode::TOO_MANY_REQUESTS);
    let secs: u64 = retry
        .expect("a 429 carries Retry-After")
        .parse()
        .expect("Retry-After is a number of seconds");
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
}

backend_tests! {
    async fn the_api_limit_is_per_user_and_route_and_answers_429(backend: Backend) {
        let (app, owner) = spawn_queue_with(backend, |s| s.rate_limit.api_per_minute = 3).await;
        let member = app.member(&owner, "alice").await;
        for _ in 0..3 {
            let (status, _, body) = get_with_headers(&app, "/organizations", Some(&owner)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let (status, retry, body) = get_with_headers(&app, "/organizations", Some(&owner)).await;
        assert_rate_limited(status, retry, &body);
        // Another route of the same user, and the same route of another user, still answer.
        let (status, _, body) = get_with_headers(&app, "/users/me", Some(&owner)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, _, body) = get_with_headers(&app, "/organizations", Some(&member)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // Anonymous callers are counted per IP.
        for _ in 0..3 {
            assert_eq!(get_with_headers(&app, "/buildinfo", None).await.0, StatusCode::OK);
        }
        let (status, retry, body) = get_with_headers(&app, "/buildinfo", None).await;
        assert_rate_limited(status, retry, &body);
        // Daemons long-poll and heartbeat past any API budget.
        for i in 0..10 {
            assert_eq!(app.acquire(&format!("d{i}"), json!({}), 0).await, None);
        }
    }

    async fn zero_disables_the_api_limit_but_not_the_login_limit(backend: Backend) {
        let (app, owner) = spawn_queue_with(backend, |s| {
            s.rate_limit.api_per_minute = 0;
            s.rate_limit.login_per_minute = 3;
        })
        .await;
        for _ in 0..20 {
            let (status, _, body) = get_with_headers(&app, "/organizations", Some(&owner)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        // owner() logged in once; a wrong password counts as an attempt too.
        let (status, body) = app
            .post("/users/login", None, json!({"email": OWNER_EMAIL, "password": "wrong-pass-1"}))
            .await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
        app.login(OWNER_EMAIL, OWNER_PASSWORD).await;
        let resp = app
            .http
            .post(format!("{}/api/v2/users/login", app.base))
            .json(&json!({"email": OWNER_EMAIL, "password": OWNER_PASSWORD}))
            .send()
            .await
            .unwrap();
        let (status, retry, body) = answer(resp).await;
        assert_rate_limited(status, retry, &body);
    }
}

#[test]
fn the_default_login_limit_is_60_per_minute_and_stays_on() {
    let s = provq::config::Settings::default();
    assert_eq!(s.rate_limit.login_per_minute, 60);
    let s = provq::config::Settings {
        rate_limit: provq::config::RateLimitSettings {
            api_per_minute: 0,
            login_per_minute: 0,
        },
        ..Default::default()
    };
    assert!(
        s.validate().is_err(),
        "the login limit cannot be turned off"
    );
}

/// Sends `head` (and `body`) on a raw connection and returns what the server answered before
/// closing or `wait` passed.
async fn raw_exchange(app: &TestApp, parts: &[&[u8]], wait: Duration) -> String {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    for part in parts {
        stream.write_all(part).await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

fn enqueue_head(extra: &str) -> String {
    format!(
        "POST /api/v2/organizations/default/provisionerjobs HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\n{extra}\r\n"
    )
}

/// The JSON body of a raw HTTP answer.
fn raw_body(answer: &str) -> Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_without_being_read() {
    let (app, owner) = spawn_queue_with(Backend::Sqlite, |s| s.limits.max_body_bytes = 1000).await;
    // An ordinary client: the whole body sent.
    let big = json!({"type": "workspace_build", "metadata": {"template_name": "x".repeat(2000)}});
    let (status, body) = app
        .post("/organizations/default/provisionerjobs", Some(&owner), big)
        .await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE);
    // Announced but never sent: answered at once, from the Content-Length alone.
    let head = enqueue_head(&format!(
        "Coder-Session-Token: {owner}\r\nContent-Length: 5000000\r\n"
    ));
    let answer = raw_exchange(&app, &[head.as_bytes()], Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &raw_body(&answer),
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    // Streamed (chunked) without a length: cut off once past the limit.
    let head = enqueue_head(&format!(
        "Coder-Session-Token: {owner}\r\nTransfer-Encoding: chunked\r\n"
    ));
    let chunk = format!("{:x}\r\n{}\r\n", 1500, "x".repeat(1500));
    let answer = raw_exchange(
        &app,
        &[head.as_bytes(), chunk.as_bytes()],
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Small bodies still pass.
    app.enqueue(&owner, json!({"type": "workspace_build"}))
        .await;
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_a_408() {
    let (app, owner) =
        spawn_queue_with(Backend::Sqlite, |s| s.limits.body_read_timeout_secs = 1).await;
    let head = enqueue_head(&format!(
        "Coder-Session-Token: {owner}\r\nContent-Length: 100\r\n"
    ));
    let started = std::time::Instant::now();
    let answer = raw_exchange(
        &app,
        &[head.as_bytes(), b"{\"type\":"],
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_error(
        StatusCode::REQUEST_TIMEOUT,
        &raw_body(&answer),
        StatusCode::REQUEST_TIMEOUT,
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_client_sending_headers_slowly_is_disconnected() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.limits.header_read_timeout_secs = 1;
    })
    .await;
    for parts in [&[][..], &[&b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[..]][..]] {
        let started = std::time::Instant::now();
        let answer = raw_exchange(&app, parts, Duration::from_secs(10)).await;
        let took = started.elapsed();
        assert!(!answer.contains("200 OK"), "{answer}");
        assert!(
            took < Duration::from_secs(5),
            "the connection was held for {took:?}"
        );
    }
    // A prompt client on the same server is served.
    let answer = raw_exchange(
        &app,
        &[b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn long_polls_outlive_the_socket_deadlines() {
    let (app, _owner) = spawn_queue_with(Backend::Sqlite, |s| {
        s.limits.header_read_timeout_secs = 1;
        s.limits.idle_timeout_secs = 1;
    })
    .await;
    assert_eq!(app.acquire("patient", json!({}), 3).await, None);
}

backend_tests! {
    async fn long_polls_are_capped_per_credential(backend: Backend) {
        let (app, owner) =
            spawn_queue_with(backend, |s| s.limits.long_polls_per_credential = 2).await;
        let mut waiting = Vec::new();
        for i in 0..2 {
            let (base, http) = (app.base.clone(), app.http.clone());
            waiting.push(tokio::spawn(async move {
                http.post(format!("{base}/api/v2/provisionerd/acquire"))
                    .header("Coder-Provisioner-Daemon-PSK", PSK)
                    .json(&json!({"name": format!("w{i}"), "wait_seconds": 20}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }));
        }
        eventually(Duration::from_secs(10), "both daemons waiting", || async {
            let (_, daemons) = app
                .get("/organizations/default/provisionerdaemons", Some(&owner))
                .await;
            daemons.as_array().is_some_and(|d| d.len() == 2)
        })
        .await;
        let resp = app
            .http
            .post(format!("{}/api/v2/provisionerd/acquire", app.base))
            .header("Coder-Provisioner-Daemon-PSK", PSK)
            .json(&json!({"name": "w3", "wait_seconds": 0}))
            .send()
            .await
            .unwrap();
        let (status, retry, body) = answer(resp).await;
        assert_rate_limited(status, retry, &body);
        // Another credential is not affected.
        let (status, _) = app
            .post(
                "/provisionerd/acquire",
                Some(&owner),
                json!({"name": "by-owner", "wait_seconds": 0}),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        // Once the long-polls end, their slots are free again.
        for _ in 0..2 {
            app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        }
        for w in waiting {
            assert_eq!(w.await.unwrap(), StatusCode::OK);
        }
        assert_eq!(app.acquire("w3", json!({}), 0).await, None);
    }
}
