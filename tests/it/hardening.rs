//! Hardening: rate limits, request limits and slow clients (issue 9).

use reqwest::StatusCode;
use serde_json::{Value, json};

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
    let resp = req.send().await.expect("request sent");
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
        let status = resp.status();
        let retry = resp
            .headers()
            .get("Retry-After")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = resp.json().await.unwrap();
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
