//! Cross-site requests: the session cookie authenticates a request that changes something only
//! when it comes from this site (`Origin` / `Sec-Fetch-Site`) or from a client that is not a
//! browser; header tokens are unaffected. (The authorization matrix checks every operation.)

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::*;

/// A request authenticated by the session cookie with extra headers, as a browser sends it.
async fn by_cookie(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .request(method, format!("{}/api/v2{path}", app.base))
        .header("Cookie", format!("coder_session_token={token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

backend_tests! {
    async fn a_cookie_from_another_site_cannot_cancel_a_job_but_this_site_can(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let job = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let cancel = format!("/organizations/default/provisionerjobs/{job}/cancel");

        for headers in [
            vec![("Origin", "https://evil.example"), FORM],
            vec![("Sec-Fetch-Site", "cross-site"), FORM],
            vec![("Sec-Fetch-Site", "same-site"), ("Origin", "https://sibling.example")],
            vec![("Origin", "null"), FORM],
        ] {
            let (status, body) = by_cookie(&app, Method::POST, &cancel, &owner, &headers).await;
            assert_error(status, &body, StatusCode::FORBIDDEN);
            assert_eq!(body["message"], "Cross-site request refused.", "{headers:?}");
        }
        let (status, body) = by_cookie(&app, Method::POST, "/licenses/refresh-entitlements", &owner, &[("Origin", "https://evil.example"), FORM]).await;
        assert_error(status, &body, StatusCode::FORBIDDEN);
        assert_eq!(app.status_of(&owner, &job).await, "pending", "nothing was canceled");

        // Reads by cookie from anywhere are fine (the browser keeps the answer from the page).
        let (status, _) = by_cookie(&app, Method::GET, &format!("/organizations/default/provisionerjobs/{job}"), &owner, &[("Origin", "https://evil.example")]).await;
        assert_eq!(status, StatusCode::OK);
        // A header token is not something a browser adds on its own: no origin check.
        let resp = app.http.post(format!("{}/api/v2/licenses/refresh-entitlements", app.base))
            .header("Coder-Session-Token", &owner)
            .header("Origin", "https://evil.example")
            .send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);

        // The console's own fetch: same origin, by Origin or by Sec-Fetch-Site.
        let own_origin = format!("http://{}", app.addr);
        let (status, body) = by_cookie(&app, Method::POST, &cancel, &owner, &[("Origin", &own_origin), ("Content-Type", "application/json")]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(app.status_of(&owner, &job).await, "canceled");
        let second = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let (status, body) = by_cookie(&app, Method::POST, &format!("/organizations/default/provisionerjobs/{second}/cancel"), &owner, &[("Sec-Fetch-Site", "same-origin")]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // A client that is not a browser (no Origin, no Sec-Fetch-Site) with a cookie jar.
        let third = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let (status, body) = by_cookie(&app, Method::POST, &format!("/organizations/default/provisionerjobs/{third}/cancel"), &owner, &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}
