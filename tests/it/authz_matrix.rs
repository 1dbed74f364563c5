//! The authorization matrix: every operation of the served OpenAPI document × every kind of
//! caller, with the status each must get. The table is checked against the document both ways,
//! so a new route fails this test until someone decides who may call it.
//!
//! Cells: `open` = authorized (any status but 401, 403, 404 and 5xx); a number = exactly that
//! status; `403|404` = either. Personas: anonymous; a member of the default organization on the
//! default organization; the same member on another organization ("outsider"); an owner; a
//! provisioner key of the other organization used on the default one; the PSK.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::*;
use crate::license_keys::*;

const PERSONAS: [&str; 6] = [
    "anonymous",
    "member",
    "outsider",
    "owner",
    "foreign key",
    "psk",
];

/// `METHOD path` → one cell per persona, in `PERSONAS` order.
const MATRIX: &[(&str, &str)] = &[
    ("GET /buildinfo", "open open open open open open"),
    ("GET /users/first", "open open open open open open"),
    ("POST /users/first", "open open open open open open"),
    ("POST /users/login", "open open open open open open"),
    ("POST /users/logout", "401 open open open 401 401"),
    ("POST /users", "401 403 403 open 401 401"),
    ("GET /users", "401 403 403 open 401 401"),
    ("GET /users/{user}", "401 open open open 401 401"),
    ("GET /organizations", "401 open open open 401 401"),
    ("POST /organizations", "401 403 403 open 401 401"),
    (
        "GET /organizations/{organization}",
        "401 open 404 open 401 401",
    ),
    (
        "PATCH /organizations/{organization}",
        "401 403 403|404 open 401 401",
    ),
    (
        "DELETE /organizations/{organization}",
        "401 403 403|404 open 401 401",
    ),
    (
        "POST /organizations/{organization}/provisionerjobs",
        "401 open 404 open 401 401",
    ),
    (
        "GET /organizations/{organization}/provisionerjobs",
        "401 404 404 open 401 401",
    ),
    (
        "GET /organizations/{organization}/provisionerjobs/{job}",
        "401 404 404 open 401 401",
    ),
    (
        "POST /organizations/{organization}/provisionerjobs/{job}/cancel",
        "401 404 404 open 401 401",
    ),
    (
        "POST /organizations/{organization}/provisionerjobs/cancel",
        "401 404 404 open 401 401",
    ),
    (
        "GET /organizations/{organization}/provisionerjobs/{job}/logs",
        "401 404 404 open 401 401",
    ),
    (
        "GET /organizations/{organization}/queue",
        "401 open 404 open 401 401",
    ),
    (
        "GET /organizations/{organization}/provisionerdaemons",
        "401 404 404 open 401 401",
    ),
    (
        "POST /organizations/{organization}/provisionerkeys",
        "401 404 404 open 401 401",
    ),
    (
        "GET /organizations/{organization}/provisionerkeys",
        "401 404 404 open 401 401",
    ),
    (
        "DELETE /organizations/{organization}/provisionerkeys/{name}",
        "401 404 404 open 401 401",
    ),
    ("GET /prebuilds/settings", "401 403 403 open 401 401"),
    ("PUT /prebuilds/settings", "401 403 403 open 401 401"),
    ("GET /licenses", "401 403 403 open 401 401"),
    ("POST /licenses", "401 403 403 open 401 401"),
    ("DELETE /licenses/{id}", "401 403 403 open 401 401"),
    (
        "POST /licenses/refresh-entitlements",
        "401 403 403 open 401 401",
    ),
    ("GET /entitlements", "401 open open open 401 401"),
    // The worker API: keys and the PSK belong here only; a key of another organization cannot
    // register in this one (400 on `organization`) nor touch its jobs (404).
    ("POST /provisionerd/acquire", "401 403 403 open 400 open"),
    ("POST /provisionerd/deregister", "401 403 403 open 400 open"),
    (
        "POST /provisionerd/acquire-jobs",
        "401 403 403 open 400 open",
    ),
    (
        "POST /provisionerd/jobs/{job}/update",
        "401 403 403 open 404 open",
    ),
    (
        "POST /provisionerd/jobs/{job}/complete",
        "401 403 403 open 404 open",
    ),
    (
        "POST /provisionerd/jobs/{job}/fail",
        "401 403 403 open 404 open",
    ),
];

fn allowed(cell: &str, status: StatusCode) -> bool {
    let code = status.as_u16();
    match cell {
        "open" => !matches!(code, 401 | 403 | 404) && code < 500,
        other => other.split('|').any(|c| c.parse::<u16>() == Ok(code)),
    }
}

/// What a persona sends and where it points.
struct Persona {
    header: Option<(&'static str, String)>,
    org: String,
    job: String,
    key_name: String,
}

/// A body that parses for each operation and changes nothing that later cells need.
fn body_for(op: &str, license: &str) -> Option<Value> {
    let method = op.split(' ').next().unwrap();
    if matches!(
        op,
        "POST /provisionerd/acquire"
            | "POST /provisionerd/deregister"
            | "POST /provisionerd/acquire-jobs"
    ) {
        return Some(json!({"name": "matrix", "organization": "default", "wait_seconds": 0}));
    }
    if op.starts_with("POST /provisionerd/jobs/") {
        return Some(json!({"lease_token": "not-the-lease", "error": "matrix"}));
    }
    if op == "POST /licenses" {
        return Some(json!({"license": license}));
    }
    if op == "POST /organizations/{organization}/provisionerjobs" {
        return Some(json!({"type": "workspace_build"}));
    }
    matches!(method, "POST" | "PUT" | "PATCH").then(|| json!({}))
}

backend_tests! {
    async fn every_operation_answers_every_caller_as_the_matrix_says(backend: Backend) {
        let authority = Authority::new();
        let app = TestApp::spawn_with(backend, |s| {
            authority.trust(s);
            s.provisioner.daemon_psk = PSK.into();
            s.rate_limit.api_per_minute = 0;
        })
        .await;
        let owner = app.owner().await;
        add_license(&app, &owner, &authority.license(&[("multiple_organizations", 1)])).await;
        let spare = add_license(&app, &owner, &authority.license(&[("user_limit", 100)])).await;
        let (status, other) = app.post("/organizations", Some(&owner), json!({"name": "other"})).await;
        assert_eq!(status, StatusCode::CREATED, "{other}");
        app.member(&owner, "alice").await;
        let member = app.login("alice@example.com", "member-pass-1").await;
        let outsider = app.login("alice@example.com", "member-pass-1").await;
        let mut keys = BTreeMap::new();
        for org in ["default", "other"] {
            let (status, key) = app
                .post(&format!("/organizations/{org}/provisionerkeys"), Some(&owner), json!({"name": "matrix-key"}))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{key}");
            keys.insert(org, key["key"].as_str().unwrap().to_string());
        }
        let job_a = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let (status, job_b) = app
            .post("/organizations/other/provisionerjobs", Some(&owner), json!({"type": "workspace_build"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{job_b}");
        let job_b = job_b["id"].as_str().unwrap().to_string();
        // A license that is valid but already uploaded, so POST /licenses changes nothing.
        let license = authority.license(&[("user_limit", 100)]);

        let home = |header: Option<(&'static str, String)>| Persona {
            header,
            org: "default".into(),
            job: job_a.clone(),
            key_name: "matrix-key".into(),
        };
        let personas = [
            home(None),
            home(Some(("Coder-Session-Token", member))),
            Persona {
                header: Some(("Coder-Session-Token", outsider)),
                org: "other".into(),
                job: job_b.clone(),
                key_name: "matrix-key".into(),
            },
            home(Some(("Coder-Session-Token", owner.clone()))),
            home(Some(("Coder-Provisioner-Daemon-Key", keys["other"].clone()))),
            home(Some(("Coder-Provisioner-Daemon-PSK", PSK.to_string()))),
        ];

        let (status, doc) = app.get("/openapi.json", None).await;
        assert_eq!(status, StatusCode::OK);
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        let table: BTreeMap<&str, Vec<&str>> = MATRIX
            .iter()
            .map(|(op, cells)| (*op, cells.split(' ').collect::<Vec<_>>()))
            .collect();
        let uncovered: Vec<_> = documented.iter().filter(|op| !table.contains_key(op.as_str())).collect();
        assert!(uncovered.is_empty(), "operations without a row in the matrix: {uncovered:?}");
        let stale: Vec<_> = table.keys().filter(|op| !documented.contains(**op)).collect();
        assert!(stale.is_empty(), "rows for operations that no longer exist: {stale:?}");

        let mut wrong = security_disagreements(&doc, &table);

        // The owner's session as a cookie, sent by a form on another site: every operation that
        // can change something is refused (first, so a failure cannot disturb the rows below).
        for op in table.keys() {
            let (method, template) = op.split_once(' ').unwrap();
            let unsafe_method = method != "GET";
            let path = template
                .replace("{organization}", "default")
                .replace("{job}", &job_a)
                .replace("{user}", "me")
                .replace("{name}", "matrix-key")
                .replace("{id}", &spare["id"].to_string());
            let resp = app
                .http
                .request(Method::from_bytes(method.as_bytes()).unwrap(), format!("{}/api/v2{path}", app.base))
                .header("Cookie", format!("coder_session_token={owner}"))
                .header("Origin", "https://evil.example")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("a=1")
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let needs_session = table[op][0] == "401";
            if unsafe_method && needs_session && status != StatusCode::FORBIDDEN {
                wrong.push(format!("{op} by cookie from another site: expected 403, got {status}"));
            }
            if !unsafe_method && status == StatusCode::FORBIDDEN {
                wrong.push(format!("{op} by cookie from another site: a read is not refused, got {status}"));
            }
        }

        // The owner goes last (its calls succeed), and logout ends each persona's row.
        for (persona, who) in personas.iter().zip(PERSONAS) {
            let idx = PERSONAS.iter().position(|p| *p == who).unwrap();
            let mut ops: Vec<&&str> = table.keys().collect();
            ops.sort_by_key(|op| (**op == "POST /users/logout", op.to_string()));
            for op in ops {
                let (method, template) = op.split_once(' ').unwrap();
                let path = template
                    .replace("{organization}", &persona.org)
                    .replace("{job}", &persona.job)
                    .replace("{user}", "me")
                    .replace("{name}", &persona.key_name)
                    .replace("{id}", &spare["id"].to_string());
                let mut req = app
                    .http
                    .request(Method::from_bytes(method.as_bytes()).unwrap(), format!("{}/api/v2{path}", app.base));
                if let Some((name, value)) = &persona.header {
                    req = req.header(*name, value);
                }
                if let Some(body) = body_for(op, &license) {
                    req = req.json(&body);
                }
                let resp = req.send().await.unwrap();
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                let cell = table[*op][idx];
                if !allowed(cell, status) {
                    wrong.push(format!("{op} as {who}: expected {cell}, got {status}: {text}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{} cells disagree:\n{}", wrong.len(), wrong.join("\n"));
    }
}

/// The document's `security` must say what the matrix shows: an operation anonymous callers get
/// 401 from lists the session schemes (and the daemon schemes when a PSK is accepted); an open
/// one lists none. Every scheme named is declared.
fn security_disagreements(doc: &Value, table: &BTreeMap<&str, Vec<&str>>) -> Vec<String> {
    let declared = &doc["components"]["securitySchemes"];
    let mut wrong = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let key = format!("{} {path}", method.to_uppercase());
            let Some(cells) = table.get(key.as_str()) else {
                continue;
            };
            let schemes: BTreeSet<&str> = op["security"]
                .as_array()
                .map(|alternatives| {
                    alternatives
                        .iter()
                        .flat_map(|a| a.as_object().unwrap().keys().map(String::as_str))
                        .collect()
                })
                .unwrap_or_default();
            let mut expected = BTreeSet::new();
            if cells[0] == "401" {
                expected.extend([
                    "CoderSessionToken",
                    "CoderSessionTokenCookie",
                    "CoderSessionTokenQuery",
                ]);
            }
            if cells[5] == "open" && cells[0] == "401" {
                expected.extend(["ProvisionerDaemonKey", "ProvisionerDaemonPSK"]);
            }
            if schemes != expected {
                wrong.push(format!(
                    "{key}: security {schemes:?}, expected {expected:?}"
                ));
            }
            for scheme in &schemes {
                if !declared[*scheme].is_object() {
                    wrong.push(format!("{key}: scheme {scheme} is not declared"));
                }
            }
        }
    }
    wrong
}
