//! Safety at the edges (issue 13): empty filters, unknown query parameters on every route
//! (generated from the served OpenAPI document), per-field limits, NUL, errors produced before
//! a handler runs, and the lookups that follow Coder's rules.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::*;
use crate::license_keys::*;

const LIST: &str = "/organizations/default/provisionerjobs";
const CANCEL: &str = "/organizations/default/provisionerjobs/cancel";

/// A server with a PSK, no rate limit, `multiple_organizations` licensed, and an owner.
async fn spawn_edge(backend: Backend) -> (TestApp, String, Authority) {
    let authority = Authority::new();
    let app = TestApp::spawn_with(backend, |s| {
        authority.trust(s);
        s.provisioner.daemon_psk = PSK.into();
        s.rate_limit.api_per_minute = 0;
    })
    .await;
    let owner = app.owner().await;
    add_license(
        &app,
        &owner,
        &authority.license(&[("multiple_organizations", 1)]),
    )
    .await;
    (app, owner, authority)
}

/// A raw request (no JSON encoding of the body by the client), answering status and JSON.
async fn raw(
    app: &TestApp,
    method: Method,
    path_and_query: &str,
    token: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .request(method, format!("{}{path_and_query}", app.base))
        .header("Coder-Session-Token", token);
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        assert_eq!(
            content_type.as_deref(),
            Some("application/json; charset=utf-8"),
            "{status}: {text:?}"
        );
    }
    (status, body)
}

/// Writes `request` on a fresh connection and reads the answer until the server closes it.
async fn raw_socket(app: &TestApp, request: &str) -> (StatusCode, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        socket.read_to_end(&mut answer),
    );
    let _ = read.await.expect("the server answers and closes");
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let code: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        StatusCode::from_u16(code).unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn statuses(list: &Value) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap().to_string(),
                j["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    all.sort();
    all
}

/// What a stray request could change, read through the API.
async fn fingerprint(app: &TestApp, owner: &str) -> Value {
    let mut out = serde_json::Map::new();
    for path in [
        "/users/me",
        "/organizations",
        "/organizations/other/provisionerjobs",
        "/organizations/default/provisionerjobs",
        "/organizations/other/provisionerkeys",
        "/organizations/other/provisionerdaemons",
        "/organizations/default/provisionerdaemons",
        "/licenses",
        "/prebuilds/settings",
    ] {
        let (status, mut body) = app.get(path, Some(owner)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        // Queue numbers and liveness move on their own; ids and statuses must not.
        if path.contains("provisionerjobs") {
            body = json!(statuses(&body));
        }
        if path.contains("provisionerdaemons") {
            body = json!(
                body.as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["name"].clone())
                    .collect::<Vec<_>>()
            );
        }
        out.insert(path.to_string(), body);
    }
    Value::Object(out)
}

/// A body that would make each operation change something if it ran.
fn body_for(op: &str, license: &str) -> Option<Value> {
    Some(match op {
        "POST /users/first" | "POST /users" => {
            json!({"email": "new@example.com", "username": "newcomer", "password": "member-pass-1"})
        }
        "POST /users/login" => json!({"email": OWNER_EMAIL, "password": OWNER_PASSWORD}),
        "POST /organizations" => json!({"name": "brand-new"}),
        "PATCH /organizations/{organization}" => json!({"display_name": "Changed"}),
        "POST /organizations/{organization}/provisionerjobs" => json!({"type": "workspace_build"}),
        "POST /organizations/{organization}/provisionerjobs/cancel" => {
            json!({"status": ["pending", "running"]})
        }
        "POST /organizations/{organization}/provisionerkeys" => json!({"name": "another-key"}),
        "POST /provisionerd/acquire" => {
            json!({"name": "stray", "organization": "other", "wait_seconds": 0})
        }
        "PUT /prebuilds/settings" => json!({"reconciliation_paused": true}),
        "POST /licenses" => json!({"license": license}),
        op if op.starts_with("POST /provisionerd/jobs/") => {
            json!({"lease_token": "not-the-lease", "error": "stray"})
        }
        op if op.starts_with("POST ") || op.starts_with("PUT ") || op.starts_with("PATCH ") => {
            json!({})
        }
        _ => return None,
    })
}

backend_tests! {
    async fn an_empty_list_never_selects_every_job(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let running = app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        app.acquire("d", json!({}), 0).await.expect("the first job starts");
        let pending = app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        let before = statuses(&app.get(LIST, Some(&owner)).await.1);
        assert_eq!(before.len(), 2);
        for (body, field) in [
            (json!({"status": []}), "status"),
            (json!({"ids": []}), "ids"),
            (json!({"ids": [], "status": ["pending"]}), "ids"),
            (json!({"tags": {}}), "tags"),
        ] {
            let (status, answer) = app.post(CANCEL, Some(&owner), body.clone()).await;
            assert_error(status, &answer, StatusCode::BAD_REQUEST);
            assert_eq!(validation_fields(&answer), [field], "{body}: {answer}");
        }
        for query in ["ids=", "ids=,", "status=", "status=%20", "ids=&status=pending"] {
            let (status, answer) = app.get(&format!("{LIST}?{query}"), Some(&owner)).await;
            assert_error(status, &answer, StatusCode::BAD_REQUEST);
        }
        assert_eq!(statuses(&app.get(LIST, Some(&owner)).await.1), before, "nothing was canceled");
        // A real filter still works.
        let (status, answer) = app.post(CANCEL, Some(&owner), json!({"ids": [pending["id"]]})).await;
        assert_eq!((status, answer["count"].clone()), (StatusCode::OK, json!(1)), "{answer}");
        assert_eq!(app.status_of(&owner, running["id"].as_str().unwrap()).await, "running");
    }

    async fn an_unknown_query_parameter_is_a_400_that_changes_nothing_on_every_operation(backend: Backend) {
        let (app, owner, authority) = spawn_edge(backend).await;
        let (status, other) = app.post("/organizations", Some(&owner), json!({"name": "other"})).await;
        assert_eq!(status, StatusCode::CREATED, "{other}");
        let (status, key) = app.post("/organizations/other/provisionerkeys", Some(&owner), json!({"name": "edge-key"})).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        let (status, job) = app.post("/organizations/other/provisionerjobs", Some(&owner), json!({"type": "workspace_build"})).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        let job = job["id"].as_str().unwrap().to_string();
        let spare = add_license(&app, &owner, &authority.license(&[("user_limit", 100)])).await;
        let license = authority.license(&[("user_limit", 50)]);
        let before = fingerprint(&app, &owner).await;

        let (status, doc) = app.get("/openapi.json", None).await;
        assert_eq!(status, StatusCode::OK);
        let mut ops = BTreeSet::new();
        for (path, methods) in doc["paths"].as_object().unwrap() {
            for method in methods.as_object().unwrap().keys() {
                ops.insert((path.as_str() == "/users/logout", method.to_uppercase(), path.clone()));
            }
        }
        assert!(ops.len() >= 30, "the document lists every operation: {}", ops.len());
        let mut wrong = Vec::new();
        // Logout goes last: had it run, every later call would be anonymous.
        for (_, method, template) in &ops {
            let op = format!("{method} {template}");
            let path = template
                .replace("{organization}", "other")
                .replace("{job}", &job)
                .replace("{user}", "me")
                .replace("{name}", "edge-key")
                .replace("{id}", &spare["id"].to_string());
            let mut req = app
                .http
                .request(Method::from_bytes(method.as_bytes()).unwrap(), format!("{}/api/v2{path}?unknown_param=1", app.base))
                .header("Coder-Session-Token", &owner);
            if let Some(body) = body_for(&op, &license) {
                req = req.json(&body);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status != StatusCode::BAD_REQUEST || validation_fields(&body) != ["unknown_param"] {
                wrong.push(format!("{op}: {status} {body}"));
            }
        }
        assert!(wrong.is_empty(), "{} operations took an unknown parameter:\n{}", wrong.len(), wrong.join("\n"));
        assert_eq!(fingerprint(&app, &owner).await, before, "a refused request changed nothing");
        // Outside the document too, and the session token is never an unknown parameter.
        let (status, body) = raw(&app, Method::GET, "/healthz?verbose=1", &owner, None).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        let (status, _) = app.get(&format!("/users/me?coder_session_token={owner}"), None).await;
        assert_eq!(status, StatusCode::OK);
    }

    async fn a_typo_in_expect_status_does_not_cancel_a_running_job(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let id = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        app.acquire("d", json!({}), 0).await.unwrap();
        let (status, body) = app.post(&format!("{LIST}/{id}/cancel?expect-status=pending"), Some(&owner), json!({})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["expect-status"]);
        assert_eq!(app.status_of(&owner, &id).await, "running");
    }

    async fn fields_past_their_limits_are_400s_naming_the_field(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let member = app.member(&owner, "mallory").await;
        let many_tags: serde_json::Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
        let cases = [
            (json!({"type": "workspace_build", "metadata": {"template_name": "n".repeat(129)}}), "metadata.template_name"),
            (json!({"type": "workspace_build", "metadata": {"workspace_name": "n".repeat(129)}}), "metadata.workspace_name"),
            (json!({"type": "workspace_build", "metadata": {"template_icon": "i".repeat(2049)}}), "metadata.template_icon"),
            (json!({"type": "workspace_build", "input": {"error": "e".repeat(64 * 1024)}}), "input"),
            (json!({"type": "workspace_build", "tags": many_tags}), "tags"),
            (json!({"type": "workspace_build", "tags": {"k".repeat(129): "v"}}), "tags"),
            (json!({"type": "workspace_build", "tags": {"k": "v".repeat(257)}}), "tags"),
            // On PostgreSQL this used to be a 500 (the index row of a pending job was too big).
            (json!({"type": "workspace_build", "tags": {"k": "v".repeat(3000)}}), "tags"),
            (json!({"type": "workspace_build", "tags": (0..10).map(|i| (format!("k{i}"), json!("v".repeat(250)))).collect::<serde_json::Map<_, _>>()}), "tags"),
        ];
        for (body, field) in cases {
            let (status, answer) = app.post(LIST, Some(&member), body).await;
            assert_error(status, &answer, StatusCode::BAD_REQUEST);
            assert_eq!(validation_fields(&answer), [field], "{answer}");
        }
        let (_, list) = app.get(LIST, Some(&owner)).await;
        assert_eq!(list.as_array().unwrap().len(), 0, "nothing was enqueued");
        // At the limits everything is accepted, on both backends.
        let at_limit = json!({
            "type": "workspace_build",
            "tags": {"k".repeat(128): "v".repeat(256)},
            "metadata": {"template_name": "n".repeat(128), "template_display_name": "é".repeat(128)},
            "input": {"error": "e".repeat(60 * 1024)},
        });
        let (status, job) = app.post(LIST, Some(&member), at_limit).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        // Daemon and key tags share the rule.
        let (status, body) = app.worker("/acquire", json!({"name": "d", "tags": {"k": "v".repeat(3000)}, "wait_seconds": 0})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["tags"]);
        let (status, body) = app.post("/organizations/default/provisionerkeys", Some(&owner), json!({"name": "k", "tags": {"k": "v".repeat(3000)}})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["tags"]);
        let (status, body) = app.get(&format!("{LIST}?tags={}", json!({"k": "v".repeat(300)})), Some(&owner)).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
    }

    async fn nul_is_a_400_naming_the_field_on_both_backends(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let enqueue = |body: &'static str| raw(&app, Method::POST, "/api/v2/organizations/default/provisionerjobs", &owner, Some(body));
        for (body, field) in [
            (r#"{"type":"workspace_build","metadata":{"template_name":"\u0000"}}"#, "metadata.template_name"),
            (r#"{"type":"workspace_build","input":{"error":"\u0000x"}}"#, "input.error"),
            (r#"{"type":"workspace_build","tags":{"os":"lin\u0000ux"}}"#, "tags"),
            (r#"{"type":"workspace_build","initiator":"\u0000"}"#, "initiator"),
        ] {
            let (status, answer) = enqueue(body).await;
            assert_error(status, &answer, StatusCode::BAD_REQUEST);
            assert_eq!(validation_fields(&answer), [field], "{answer}");
        }
        // An escaped backslash followed by "u0000" is no NUL.
        let (status, job) = enqueue(r#"{"type":"workspace_build","metadata":{"template_name":"\\u0000"}}"#).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        assert_eq!(job["metadata"]["template_name"], "\\u0000");
        let (status, answer) = raw(&app, Method::POST, &format!("/api/v2{CANCEL}"), &owner, Some(r#"{"initiator":"\u0000"}"#)).await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&answer), ["initiator"]);
        for (method, path, field) in [
            (Method::GET, format!("/api/v2{LIST}?initiator=%00"), "initiator"),
            (Method::GET, "/api/v2/organizations/%00/provisionerjobs".to_string(), "organization"),
            (Method::GET, "/api/v2/users/%00".to_string(), "user"),
            (Method::DELETE, "/api/v2/organizations/default/provisionerkeys/%00".to_string(), "name"),
            (Method::GET, "/api/v2/organizations/de%00fault".to_string(), "organization"),
        ] {
            let (status, answer) = raw(&app, method, &path, &owner, None).await;
            assert_error(status, &answer, StatusCode::BAD_REQUEST);
            assert_eq!(validation_fields(&answer), [field], "{path}: {answer}");
        }
        let (status, answer) = app.worker("/acquire", json!({"name": "d", "organization": "de\u{0}fault", "wait_seconds": 0})).await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&answer), ["organization"]);
        // Log lines keep their replacement instead.
        let (id, lease) = app.acquire("d", json!({}), 0).await.unwrap();
        let (status, _) = app.worker(&format!("/jobs/{id}/update"), json!({"lease_token": lease, "logs": [{"level": "info", "output": "a\u{0}b"}]})).await;
        assert_eq!(status, StatusCode::OK);
        let (_, logs) = app.get(&format!("{LIST}/{id}/logs"), Some(&owner)).await;
        assert_eq!(logs[0]["output"], "a\u{FFFD}b");
    }

    async fn errors_before_a_handler_use_the_error_shape_and_name_the_parameter(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let (status, body) = raw(&app, Method::GET, &format!("/api/v2{LIST}/070b5157"), &owner, None).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(body["message"], "Invalid job id \"070b5157\": expected a UUID");
        assert_eq!(validation_fields(&body), ["job"]);
        let (status, body) = raw(&app, Method::POST, "/api/v2/provisionerd/jobs/nope/complete", &owner, Some("{}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["job"]);
        let (status, body) = raw(&app, Method::GET, "/api/v2/users/%FF", &owner, None).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["user"]);
        let (status, body) = raw(&app, Method::GET, &format!("/api/v2{LIST}?initiator=%FF"), &owner, None).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["initiator"]);
        // Long URIs: past provq's limit, and past what the HTTP parser itself accepts (hyper
        // answers those before poem runs; the client library refuses to send them, so a raw
        // socket does).
        let (status, body) = raw(&app, Method::GET, &format!("/api/v2{LIST}?ids={}", "a".repeat(20_000)), &owner, None).await;
        assert_error(status, &body, StatusCode::URI_TOO_LONG);
        let request = format!("GET /api/v2{LIST}?ids={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
        let (status, body) = raw_socket(&app, &request).await;
        assert_error(status, &body, StatusCode::URI_TOO_LONG);
        let (status, body) = raw_socket(&app, "NOT HTTP AT ALL\r\n\r\n").await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        let (status, body) = raw(&app, Method::GET, "/api/v2/no/such/route", &owner, None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
    }

    async fn a_well_formed_id_of_no_user_matches_nothing_but_an_unknown_username_is_a_400(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        let nobody = uuid::Uuid::new_v4();
        let (status, list) = app.get(&format!("{LIST}?initiator={nobody}"), Some(&owner)).await;
        assert_eq!((status, list), (StatusCode::OK, json!([])));
        let (status, body) = app.get(&format!("{LIST}?initiator=nobody"), Some(&owner)).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["initiator"]);
        let (status, body) = app.post(CANCEL, Some(&owner), json!({"initiator": nobody})).await;
        assert_eq!((status, body["count"].clone()), (StatusCode::OK, json!(0)), "{body}");
        // Enqueueing for a user still needs one that exists.
        let (status, body) = app.post(LIST, Some(&owner), json!({"type": "workspace_build", "initiator": nobody})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["initiator"]);
    }

    async fn organization_names_are_looked_up_ignoring_case(backend: Backend) {
        let (app, owner, _authority) = spawn_edge(backend).await;
        let (status, acme) = app.post("/organizations", Some(&owner), json!({"name": "Acme"})).await;
        assert_eq!(status, StatusCode::CREATED, "{acme}");
        for name in ["Acme", "acme", "ACME"] {
            let (status, org) = app.get(&format!("/organizations/{name}"), Some(&owner)).await;
            assert_eq!((status, org["id"].clone()), (StatusCode::OK, acme["id"].clone()), "{name}");
            let (status, _) = app.get(&format!("/organizations/{name}/provisionerjobs"), Some(&owner)).await;
            assert_eq!(status, StatusCode::OK, "{name}");
        }
        let (status, body) = app.post("/organizations", Some(&owner), json!({"name": "acme"})).await;
        assert_error(status, &body, StatusCode::CONFLICT);
        let (status, org) = app.get("/organizations/DEFAULT", Some(&owner)).await;
        assert_eq!((status, org["is_default"].clone()), (StatusCode::OK, json!(true)));
        let (status, body) = app.worker("/acquire", json!({"name": "d", "organization": "ACME", "wait_seconds": 0})).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }

    async fn display_names_follow_coders_rule(backend: Backend) {
        let (app, owner, _authority) = spawn_edge(backend).await;
        for (i, ok) in ["k\r\rm", "!!!!1 ?????", "<b> </b>", &"1".repeat(64)].into_iter().enumerate() {
            let (status, org) = app.post("/organizations", Some(&owner), json!({"name": format!("ok-{i}"), "display_name": ok})).await;
            assert_eq!(status, StatusCode::CREATED, "{ok:?}: {org}");
            assert_eq!(org["display_name"], ok);
        }
        for (i, bad) in [" a", "a ", "\ta", "aa\r", "a\nb", &"1".repeat(65), &"é".repeat(33)].into_iter().enumerate() {
            let (status, body) = app.post("/organizations", Some(&owner), json!({"name": format!("bad-{i}"), "display_name": bad})).await;
            assert_error(status, &body, StatusCode::BAD_REQUEST);
            assert_eq!(validation_fields(&body), ["display_name"], "{bad:?}");
        }
        let (status, org) = app
            .request(Method::PATCH, "/organizations/ok-0", Some(&owner), Some(json!({"display_name": "x\u{1}y"})))
            .await;
        assert_eq!((status, org["display_name"].clone()), (StatusCode::OK, json!("x\u{1}y")));
    }
}
