//! Prometheus metrics after a scripted scenario, checked value by value through a real
//! text-format parser, and the structured log lines.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use chrono::Duration;
use provq::queue::reaper::Reaper;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::cli::{ServeProcess, provq};
use crate::helpers::*;

/// Scrapes `/metrics` and parses it with an independent text-format parser; returns samples
/// as "name{sorted labels}" → value (histograms as `name_count`).
async fn scrape(app: &TestApp) -> (String, HashMap<String, f64>) {
    use openmetrics_parser::PrometheusValue;
    let addr = app.metrics_addr.expect("metrics listener enabled");
    let text = http_client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exposition =
        openmetrics_parser::prometheus::parse_prometheus(&text).expect("the exposition parses");
    let mut samples = HashMap::new();
    for (name, family) in &exposition.families {
        for sample in family.iter_samples() {
            let set = sample.get_labelset().expect("labels");
            let mut labels: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let labels = labels.join(",");
            match &sample.value {
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => {
                    samples.insert(format!("{name}{{{labels}}}"), n.as_f64());
                }
                PrometheusValue::Counter(c) => {
                    samples.insert(format!("{name}{{{labels}}}"), c.value.as_f64());
                }
                PrometheusValue::Histogram(h) => {
                    samples.insert(
                        format!("{name}_count{{{labels}}}"),
                        h.count.unwrap_or(0) as f64,
                    );
                }
                PrometheusValue::Summary(_) => {}
            }
        }
    }
    (text, samples)
}

fn get(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples.get(key).unwrap_or_else(|| {
        let near: Vec<&String> = samples
            .keys()
            .filter(|k| k.starts_with(key.split('{').next().unwrap_or(key)))
            .collect();
        panic!("missing sample {key}; have {near:?}")
    })
}

backend_tests! {
    async fn metrics_report_the_queue_after_a_scripted_scenario(backend: Backend) {
        let (app, owner) = spawn_queue_with(backend, |s| s.prometheus.listen = "127.0.0.1:0".into()).await;
        let org = "organization=first-organization";
        let (text, before) = scrape(&app).await;
        for name in [
            "provq_provisioner_jobs", "provq_provisioner_jobs_pending_unmatched", "provq_provisioner_jobs_oldest_pending_age_seconds",
            "provq_provisioner_daemons", "provq_provisioner_jobs_enqueued_total", "provq_provisioner_jobs_finished_total",
            "provq_provisioner_job_queue_wait_seconds", "provq_provisioner_job_run_seconds", "provq_reaper_jobs_reaped_total",
            "provq_http_requests_total", "provq_http_request_duration_seconds",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "no help text for {name}");
        }
        assert_eq!(get(&before, &format!("provq_provisioner_jobs{{{org},status=pending}}")), 0.0);

        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string());
        }
        app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"gpu": "h100"}})).await;

        // Daemon a: one success, one failure.
        for (action, body) in [("complete", json!({})), ("fail", json!({"error": "boom"}))] {
            let (id, lease) = app.acquire("a", json!({}), 0).await.unwrap();
            let mut body = body;
            body["lease_token"] = json!(lease);
            let (status, _) = app.worker(&format!("/jobs/{id}/{action}"), body).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
        // Daemon b takes one and hangs; the reaper fails it.
        app.acquire("b", json!({}), 0).await.unwrap();
        let reaper = Reaper::new(app.state.store.clone(), app.state.events.clone(), &app.state.settings.reaper);
        assert_eq!(reaper.run_once(provq::domain::now() + Duration::minutes(6)).await.unwrap().len(), 1);
        // Jobs go out oldest first: a took ids[0..2], b ids[2]. Cancel ids[5] while pending,
        // let a hold ids[3]; ids[4] and the gpu job stay pending; daemon c goes offline.
        let (status, _) = app.post(&format!("/organizations/default/provisionerjobs/{}/cancel", ids[5]), Some(&owner), json!({})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(app.acquire("a", json!({}), 0).await.unwrap().0, ids[3]);
        app.acquire("c", json!({"os": "mac"}), 0).await;
        {
            use provq::entity::provisioner_daemon;
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
            provisioner_daemon::Entity::update_many()
                .col_expr(provisioner_daemon::Column::LastSeenAt, Expr::value(provq::domain::now() - Duration::hours(1)))
                .filter(provisioner_daemon::Column::Name.eq("c"))
                .exec(app.state.store.connection())
                .await
                .unwrap();
        }
        app.state.metrics.expire_gauges().await;
        let (_, m) = scrape(&app).await;
        let status = |s: &str| get(&m, &format!("provq_provisioner_jobs{{{org},status={s}}}"));
        // 7 jobs: 1 succeeded, 2 failed (one by the reaper), 1 canceled, 1 running, 2 pending.
        assert_eq!((status("succeeded"), status("failed"), status("canceled"), status("running"), status("pending"), status("canceling")), (1.0, 2.0, 1.0, 1.0, 2.0, 0.0));
        let daemons = |s: &str| get(&m, &format!("provq_provisioner_daemons{{{org},status={s}}}"));
        assert_eq!((daemons("busy"), daemons("idle"), daemons("offline")), (1.0, 1.0, 1.0));
        assert_eq!(get(&m, &format!("provq_provisioner_jobs_pending_unmatched{{{org}}}")), 1.0);
        assert!(get(&m, &format!("provq_provisioner_jobs_oldest_pending_age_seconds{{{org}}}")) > 0.0);
        assert_eq!(get(&m, "provq_provisioner_jobs_enqueued_total{}"), 7.0);
        assert_eq!(get(&m, "provq_provisioner_jobs_finished_total{status=succeeded}"), 1.0);
        assert_eq!(get(&m, "provq_provisioner_jobs_finished_total{status=failed}"), 2.0);
        assert_eq!(get(&m, "provq_provisioner_jobs_finished_total{status=canceled}"), 1.0);
        assert_eq!(get(&m, "provq_reaper_jobs_reaped_total{reason=hung}"), 1.0);
        assert_eq!(get(&m, "provq_provisioner_job_queue_wait_seconds_count{}"), 4.0);
        assert_eq!(get(&m, "provq_provisioner_job_run_seconds_count{status=succeeded}"), 1.0);
        // The reaped job ran too: its run time counts like the daemon-reported failure's.
        assert_eq!(get(&m, "provq_provisioner_job_run_seconds_count{status=failed}"), 2.0);
        assert_eq!(
            get(&m, "provq_http_requests_total{code=201,method=POST,route=/api/v2/organizations/{organization}/provisionerjobs}"),
            7.0
        );
        assert!(m.keys().any(|k| k.starts_with("provq_http_request_duration_seconds_count{method=POST,route=/api/v2/provisionerd/acquire}")));
        assert!(!m.keys().any(|k| k.contains("route=/api/v2/organizations/default")), "raw paths must not become labels");
    }
}

/// A field of a JSON log line, from the event or from one of the spans it was logged in.
fn logged_field<'a>(line: &'a Value, field: &str) -> Vec<&'a Value> {
    let mut found: Vec<&Value> = line.get(field).into_iter().collect();
    if let Some(spans) = line["spans"].as_array() {
        found.extend(spans.iter().filter_map(|s| s.get(field)));
    }
    found
}

/// The lines a request causes carry its request id (the `request` span) and the job's id (the
/// handler's span), in the real server's log output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_a_request_causes_carry_its_request_id_and_job_id() {
    let (_db, url) = TestDatabase::create(Backend::Sqlite).await;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = provq(home.path());
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--prometheus-listen",
        "",
        "--database-url",
        &url,
    ])
    .env("PROVQ_LOG_FORMAT", "json")
    .env("RUST_LOG", "info");
    let mut server = ServeProcess::start(cmd);
    let http = http_client();
    let base = format!(
        "{}/api/v2/organizations/default/provisionerjobs",
        server.url
    );
    let token = owner_token_at(&server.url).await;
    let resp = http
        .post(&base)
        .header("Coder-Session-Token", &token)
        .json(&json!({"type": "workspace_build"}))
        .send()
        .await
        .unwrap();
    let enqueue_request = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let job: Value = resp.json().await.unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();
    let resp = http
        .post(format!("{base}/{job_id}/cancel"))
        .header("Coder-Session-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cancel_request = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let stderr = server.child.stderr.take().unwrap();
    assert_eq!(server.terminate().code(), Some(0));
    let lines: Vec<Value> = BufReader::new(stderr)
        .lines()
        .map(|l| serde_json::from_str::<Value>(&l.unwrap()).expect("every log line is JSON"))
        .collect();
    for (message, request_id) in [
        ("job enqueued", &enqueue_request),
        ("job canceled", &cancel_request),
    ] {
        let line = lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in {lines:#?}"));
        assert!(
            logged_field(line, "request_id").contains(&&json!(request_id)),
            "{message:?} does not carry its request id {request_id}: {line}"
        );
        let in_span = line["spans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["job_id"] == json!(job_id));
        assert!(
            in_span,
            "{message:?} was not logged in a span with the job id {job_id}: {line}"
        );
    }
}

/// `log_format = "json"`: one JSON object per line, with the request and lifecycle fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_and_job_fields() {
    let (_db, url) = TestDatabase::create(Backend::Sqlite).await;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = provq(home.path());
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--prometheus-listen",
        "127.0.0.1:0",
        "--database-url",
        &url,
    ])
    .env("PROVQ_LOG_FORMAT", "json")
    .env("RUST_LOG", "info");
    let mut server = ServeProcess::start(cmd);
    let http = http_client();
    let base = format!("{}/api/v2", server.url);
    let token = owner_token_at(&server.url).await;
    let resp = http
        .post(format!("{base}/organizations/default/provisionerjobs"))
        .header("Coder-Session-Token", &token)
        .json(&json!({"type": "workspace_build"}))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
    let job: Value = resp.json().await.unwrap();
    let stderr = server.child.stderr.take().unwrap();
    assert_eq!(server.terminate().code(), Some(0));
    let lines: Vec<Value> = BufReader::new(stderr)
        .lines()
        .map(|l| serde_json::from_str::<Value>(&l.unwrap()).expect("every log line is JSON"))
        .collect();
    let request = lines
        .iter()
        .find(|l| {
            l["message"] == "request"
                && l["route"] == "/api/v2/organizations/{organization}/provisionerjobs"
        })
        .unwrap_or_else(|| panic!("no request line for the enqueue in {lines:#?}"));
    assert_eq!(request["method"], "POST");
    assert_eq!(request["status"], 201);
    assert!(request["duration_ms"].is_number() && request["request_id"].is_string());
    let enqueued = lines
        .iter()
        .find(|l| l["message"] == "job enqueued")
        .expect("a lifecycle line");
    assert_eq!(enqueued["job_id"], job["id"]);
    assert_eq!(enqueued["organization_id"], job["organization_id"]);
    let all = lines.iter().map(|l| l.to_string()).collect::<String>();
    assert!(
        !all.contains(&token),
        "the session token never appears in logs"
    );
    assert!(
        !all.contains(OWNER_PASSWORD),
        "the password never appears in logs"
    );
    let _ = Stdio::null();
}

/// Text log lines on a pipe or a file carry no colour escape codes (only a terminal gets them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_on_a_pipe_have_no_colour_codes() {
    let (_db, url) = TestDatabase::create(Backend::Sqlite).await;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = provq(home.path());
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--prometheus-listen",
        "",
        "--database-url",
        &url,
    ])
    .env("PROVQ_LOG_FORMAT", "text")
    .env("RUST_LOG", "info")
    .env_remove("NO_COLOR");
    let mut server = ServeProcess::start(cmd);
    let resp = http_client()
        .get(format!("{}/api/v2/buildinfo", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let stderr = server.child.stderr.take().unwrap();
    assert_eq!(server.terminate().code(), Some(0));
    let text = std::io::read_to_string(stderr).unwrap();
    assert!(text.contains("request"), "no request line in {text}");
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in piped logs: {text:?}"
    );
}

backend_tests! {
    async fn unknown_methods_count_as_other_and_healthz_takes_only_get_and_head(backend: Backend) {
        let app = TestApp::spawn_with(backend, |s| s.prometheus.listen = "127.0.0.1:0".into()).await;
        let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
        let resp = app.http.request(brew.clone(), format!("{}/healthz", app.base)).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_default();
        assert_error(status, &body, StatusCode::METHOD_NOT_ALLOWED);
        for method in [reqwest::Method::POST, reqwest::Method::DELETE] {
            let resp = app.http.request(method, format!("{}/healthz", app.base)).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        }
        let resp = app.http.head(format!("{}/healthz", app.base)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        for i in 0..3 {
            let method = reqwest::Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
            app.http.request(method, format!("{}/api/v2/buildinfo", app.base)).send().await.unwrap();
        }
        let (text, m) = scrape(&app).await;
        assert!(!text.contains("BREW"), "a client-chosen method became a label:\n{text}");
        assert_eq!(get(&m, "provq_http_requests_total{code=405,method=other,route=/healthz}"), 1.0);
        assert_eq!(get(&m, "provq_http_requests_total{code=405,method=POST,route=/healthz}"), 1.0);
        assert_eq!(get(&m, "provq_http_requests_total{code=200,method=HEAD,route=/healthz}"), 1.0);
        let other: f64 = m.iter().filter(|(k, _)| k.starts_with("provq_http_requests_total{") && k.contains("method=other")).map(|(_, v)| v).sum();
        assert_eq!(other, 4.0, "every unknown method is counted, as `other`");
    }
}
