//! The worker path at fleet scale: one claim per job however many daemons wait, report and
//! acquire in one call, several jobs per acquire, and still never a job handed out twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::backend_tests;
use crate::cli::provq;
use crate::helpers::*;

/// Claim statements the server has run so far (the counter behind
/// `provq_provisioner_claim_statements_total`).
fn claims(app: &TestApp) -> u64 {
    app.state.store.claim_statements()
}

async fn fleet_app(backend: Backend) -> (Arc<TestApp>, String) {
    let (app, owner) = spawn_queue_with(backend, |s| {
        s.limits.long_polls_per_credential = 1_000;
        s.prometheus.listen = "127.0.0.1:0".into();
    })
    .await;
    (Arc::new(app), owner)
}

/// Starts `n` daemons named `prefix-i` with `tags` that each long-poll once (up to 20 s).
fn waiting_daemons(
    app: &Arc<TestApp>,
    prefix: &str,
    tags: Value,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Option<(String, String)>>> {
    (0..n)
        .map(|i| {
            let (app, tags, name) = (app.clone(), tags.clone(), format!("{prefix}-{i}"));
            tokio::spawn(async move { app.acquire(&name, tags, 20).await })
        })
        .collect()
}

async fn acquire_jobs(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.worker("/acquire-jobs", body).await
}

fn ids_of(answer: &Value) -> Vec<String> {
    answer["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect()
}

backend_tests! {
    async fn a_new_job_costs_one_claim_however_many_daemons_wait(backend: Backend) {
        let (app, owner) = fleet_app(backend).await;
        let pool_a = waiting_daemons(&app, "a", json!({"pool": "a"}), 30);
        let pool_b = waiting_daemons(&app, "b", json!({"pool": "b"}), 10);
        eventually(Duration::from_secs(10), "40 daemons waiting", || async {
            app.state.wakeups.dispatcher().idle_waiters() == 40
        })
        .await;
        let before = claims(&app);
        let mut enqueued = HashSet::new();
        for _ in 0..10 {
            let job = app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"pool": "a"}})).await;
            enqueued.insert(job["id"].as_str().unwrap().to_string());
        }
        eventually(Duration::from_secs(4), "10 daemons woken", || async {
            app.state.wakeups.dispatcher().idle_waiters() == 30
        })
        .await;
        let used = claims(&app) - before;
        // One claim per job; one more if a backup poll happened to fall in the window.
        assert!(used <= 11, "{used} claim statements for 10 jobs with 40 daemons waiting");
        // The woken daemons' answers are on their way.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool_a.iter().filter(|d| d.is_finished()).count() < 10 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut got = HashSet::new();
        let mut still_waiting = Vec::new();
        for d in pool_a {
            if d.is_finished() {
                let (id, _) = d.await.unwrap().expect("a woken daemon got a job");
                assert!(got.insert(id), "a job handed out twice");
            } else {
                still_waiting.push(d);
            }
        }
        assert_eq!(got, enqueued);
        assert_eq!(still_waiting.len(), 20, "the other pool-a daemons sleep on");
        assert!(pool_b.iter().all(|d| !d.is_finished()), "pool-b daemons were not woken");
        // On /metrics too.
        let metrics = app.http.get(format!("http://{}/metrics", app.metrics_addr.unwrap())).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("provq_provisioner_claim_statements_total"), "{metrics}");
        for d in still_waiting.into_iter().chain(pool_b) {
            d.abort();
        }
    }

    async fn a_daemon_reports_its_job_and_acquires_the_next_in_one_call(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string());
        }
        let (status, first) = acquire_jobs(&app, json!({"name": "d", "wait_seconds": 0})).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(ids_of(&first), [ids[0].clone()]);
        let lease = first["jobs"][0]["lease_token"].clone();

        let before = claims(&app);
        let (status, second) = acquire_jobs(&app, json!({"name": "d", "wait_seconds": 0, "report": {"job_id": ids[0], "lease_token": lease}})).await;
        assert_eq!(status, StatusCode::OK, "{second}");
        assert_eq!(claims(&app) - before, 1, "report and claim in one statement");
        assert_eq!(ids_of(&second), [ids[1].clone()]);
        assert_eq!(second["daemon_id"], first["daemon_id"]);
        assert_eq!(app.status_of(&owner, &ids[0]).await, "succeeded");
        assert_eq!(app.status_of(&owner, &ids[1]).await, "running");

        // A stale lease changes nothing and claims nothing.
        let (status, err) = acquire_jobs(&app, json!({"name": "d", "wait_seconds": 0, "report": {"job_id": ids[1], "lease_token": "stale"}})).await;
        assert_error(status, &err, StatusCode::CONFLICT);
        assert_eq!(app.status_of(&owner, &ids[1]).await, "running");
        assert_eq!(app.status_of(&owner, &ids[2]).await, "pending");
        let (status, err) = acquire_jobs(&app, json!({"name": "d", "report": {"job_id": ids[1], "lease_token": second["jobs"][0]["lease_token"], "error": " "}})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&err), ["report.error"]);

        // A failure report, and nothing left to hand out: 200 with no jobs.
        let lease = second["jobs"][0]["lease_token"].clone();
        let (_, third) = acquire_jobs(&app, json!({"name": "d", "wait_seconds": 0, "report": {"job_id": ids[1], "lease_token": lease, "error": "boom"}})).await;
        assert_eq!(ids_of(&third), [ids[2].clone()]);
        let failed = app.job(&owner, &ids[1]).await;
        assert_eq!((failed["status"].as_str(), failed["error"].as_str()), (Some("failed"), Some("boom")));
        let lease = third["jobs"][0]["lease_token"].clone();
        let (status, last) = acquire_jobs(&app, json!({"name": "d", "wait_seconds": 0, "report": {"job_id": ids[2], "lease_token": lease}})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(last["jobs"], json!([]));
        assert_eq!(app.status_of(&owner, &ids[2]).await, "succeeded");
    }

    async fn one_call_reports_several_jobs_all_or_nothing(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let mut ids = Vec::new();
        for _ in 0..7 {
            ids.push(app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string());
        }
        let (_, first) = acquire_jobs(&app, json!({"name": "s", "max_jobs": 3, "wait_seconds": 0})).await;
        assert_eq!(ids_of(&first), ids[0..3]);
        let report = |job: &Value, error: Option<&str>| {
            let mut r = json!({"job_id": job["job_id"], "lease_token": job["lease_token"]});
            if let Some(e) = error {
                r["error"] = json!(e);
            }
            r
        };
        let held: Vec<Value> = first["jobs"].as_array().unwrap().clone();

        // Three reports (one a failure) and three new jobs: one statement, one transaction.
        let before = claims(&app);
        let (status, second) = acquire_jobs(&app, json!({"name": "s", "max_jobs": 3, "wait_seconds": 0, "report": report(&held[0], None), "reports": [report(&held[1], Some("boom")), report(&held[2], None)]})).await;
        assert_eq!(status, StatusCode::OK, "{second}");
        assert_eq!(claims(&app) - before, 1, "three reports and three claims in one statement");
        assert_eq!(ids_of(&second), ids[3..6]);
        assert_eq!(app.status_of(&owner, &ids[0]).await, "succeeded");
        let failed = app.job(&owner, &ids[1]).await;
        assert_eq!((failed["status"].as_str(), failed["error"].as_str()), (Some("failed"), Some("boom")));
        assert_eq!(app.status_of(&owner, &ids[2]).await, "succeeded");

        // One stale lease among them: nothing is finished and nothing claimed.
        let held: Vec<Value> = second["jobs"].as_array().unwrap().clone();
        let stale = json!({"job_id": held[2]["job_id"], "lease_token": "stale"});
        let (status, err) = acquire_jobs(&app, json!({"name": "s", "max_jobs": 3, "wait_seconds": 0, "reports": [report(&held[0], None), report(&held[1], None), stale]})).await;
        assert_error(status, &err, StatusCode::CONFLICT);
        assert!(err["message"].as_str().unwrap().contains(&ids[5]), "names the stale report: {err}");
        for id in &ids[3..6] {
            assert_eq!(app.status_of(&owner, id).await, "running", "{id} changed");
        }
        assert_eq!(app.status_of(&owner, &ids[6]).await, "pending", "a refused report claims nothing");

        // Bad lists are a 400 naming the field, and change nothing either.
        let (status, err) = acquire_jobs(&app, json!({"name": "s", "wait_seconds": 0, "reports": [report(&held[0], None), report(&held[0], None)]})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&err), ["reports[1].job_id"]);
        let (status, err) = acquire_jobs(&app, json!({"name": "s", "wait_seconds": 0, "report": report(&held[0], None), "reports": [{"job_id": held[1]["job_id"]}]})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&err), ["reports[0].lease_token"]);
        let many: Vec<Value> = (0..33).map(|_| json!({"job_id": uuid::Uuid::new_v4(), "lease_token": "x"})).collect();
        let (status, err) = acquire_jobs(&app, json!({"name": "s", "wait_seconds": 0, "reports": many})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&err), ["reports"]);
        for id in &ids[3..6] {
            assert_eq!(app.status_of(&owner, id).await, "running", "{id} changed");
        }

        // The good reports alone land, and the last pending job comes with them.
        let (status, third) = acquire_jobs(&app, json!({"name": "s", "max_jobs": 3, "wait_seconds": 0, "reports": held.iter().map(|j| report(j, None)).collect::<Vec<_>>()})).await;
        assert_eq!(status, StatusCode::OK, "{third}");
        assert_eq!(ids_of(&third), [ids[6].clone()]);
        for id in &ids[3..6] {
            assert_eq!(app.status_of(&owner, id).await, "succeeded");
        }
    }

    async fn one_acquire_hands_out_up_to_k_jobs_in_dispatch_order(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let prebuild = app.enqueue(&owner, json!({"type": "workspace_build", "initiator": "prebuilds"})).await["id"].as_str().unwrap().to_string();
        let mut humans = Vec::new();
        for _ in 0..3 {
            humans.push(app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string());
        }
        let other = app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"pool": "x"}})).await["id"].as_str().unwrap().to_string();
        for bad in [0, 33] {
            let (status, err) = acquire_jobs(&app, json!({"name": "k", "max_jobs": bad})).await;
            assert_error(status, &err, StatusCode::BAD_REQUEST);
            assert_eq!(validation_fields(&err), ["max_jobs"]);
        }
        let before = claims(&app);
        let (status, got) = acquire_jobs(&app, json!({"name": "k", "max_jobs": 3, "wait_seconds": 0})).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(ids_of(&got), humans, "humans first, oldest first");
        assert_eq!(claims(&app) - before, 1, "three jobs, one claim statement");
        let leases: HashSet<&str> = got["jobs"].as_array().unwrap().iter().map(|j| j["lease_token"].as_str().unwrap()).collect();
        assert_eq!(leases.len(), 3, "each job its own lease");
        let (_, got) = acquire_jobs(&app, json!({"name": "k", "max_jobs": 3, "wait_seconds": 0})).await;
        assert_eq!(ids_of(&got), [prebuild], "the `pool: x` job is not for this daemon");
        for job in got["jobs"].as_array().unwrap() {
            let (status, _) = app.worker(&format!("/jobs/{}/complete", job["job_id"].as_str().unwrap()), json!({"lease_token": job["lease_token"]})).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
        assert_eq!(app.status_of(&owner, &other).await, "pending");
    }

    async fn batched_daemons_drain_300_jobs_exactly_once(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let app = Arc::new(app);
        let total = 300;
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut daemons = Vec::new();
        for d in 0..6 {
            let (app, seen) = (app.clone(), seen.clone());
            daemons.push(tokio::spawn(async move {
                let mut report: Option<Value> = None;
                let mut held: Vec<Value> = Vec::new();
                while seen.lock().await.len() < total || !held.is_empty() {
                    // Finish all held jobs but the last through /complete, the last as a report.
                    if let Some(last) = held.pop() {
                        for job in held.drain(..) {
                            let (status, body) = app.worker(&format!("/jobs/{}/complete", job["job_id"].as_str().unwrap()), json!({"lease_token": job["lease_token"]})).await;
                            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
                        }
                        report = Some(json!({"job_id": last["job_id"], "lease_token": last["lease_token"]}));
                    }
                    let mut body = json!({"name": format!("batch-{d}"), "max_jobs": 4, "wait_seconds": 1});
                    if let Some(r) = report.take() {
                        body["report"] = r;
                    }
                    let (status, got) = app.worker("/acquire-jobs", body).await;
                    assert_eq!(status, StatusCode::OK, "{got}");
                    for job in got["jobs"].as_array().unwrap() {
                        seen.lock().await.push(job["job_id"].as_str().unwrap().to_string());
                        held.push(job.clone());
                    }
                }
            }));
        }
        let mut enqueued = HashSet::new();
        for _ in 0..total {
            enqueued.insert(app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string());
        }
        for d in daemons {
            tokio::time::timeout(Duration::from_secs(120), d).await.expect("drained in time").unwrap();
        }
        let seen = seen.lock().await;
        let unique: HashSet<String> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), unique.len(), "a job was handed out twice");
        assert_eq!(unique, enqueued, "a job was lost");
        let (_, running) = app.get("/organizations/default/provisionerjobs?status=running,pending", Some(&owner)).await;
        assert_eq!(running, json!([]), "every job finished");
    }
}

/// HTTP requests the server has answered on routes containing `route` (any method and code),
/// from `provq_http_requests_total` on its metrics listener.
async fn requests_to(app: &TestApp, route: &str) -> f64 {
    let addr = app.metrics_addr.expect("metrics listener enabled");
    let text = app
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("provq_http_requests_total{") && l.contains(&format!("route=\"{route}"))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `provq provisioner start` with the PSK against `app`, killed when dropped.
struct Runner(std::process::Child);

impl Runner {
    fn start(app: &TestApp, home: &std::path::Path, args: &[&str]) -> Self {
        let child = provq(home)
            .args([
                "provisioner",
                "start",
                "--url",
                &app.base,
                "--psk",
                PSK,
                "--heartbeat",
                "1",
            ])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the daemon");
        Self(child)
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn all_succeeded(app: &TestApp, owner: &str, jobs: &[String]) {
    eventually(Duration::from_secs(30), "every job to succeed", || async {
        for id in jobs {
            let status = app.status_of(owner, id).await;
            assert!(
                status != "failed",
                "job {id} failed: {}",
                app.job(owner, id).await
            );
            if status != "succeeded" {
                return false;
            }
        }
        true
    })
    .await;
}

backend_tests! {
    async fn the_reference_daemon_reports_each_job_with_its_next_acquire(backend: Backend) {
        let (app, owner) = fleet_app(backend).await;
        let home = tempfile::tempdir().unwrap();
        let mut jobs = Vec::new();
        for _ in 0..4 {
            jobs.push(app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"pool": "one"}})).await["id"].as_str().unwrap().to_string());
        }
        let started = std::time::Instant::now();
        let _daemon = Runner::start(&app, home.path(), &["--name", "one-slot", "--tag", "pool=one", "--exec", "echo ran $PROVQ_JOB_ID"]);
        all_succeeded(&app, &owner, &jobs).await;
        // One call per job: the first acquires, each later one reports the job before it and
        // acquires the next; the call that reports the last job may still be waiting for work
        // (and, on a slow machine, an idle daemon asks again every 10 s).
        let calls = requests_to(&app, "/api/v2/provisionerd/acquire-jobs").await;
        let idle = (started.elapsed().as_secs() / 10) as f64;
        assert!((4.0..=5.0 + idle).contains(&calls), "{calls} acquire-jobs calls for 4 jobs");
        assert_eq!(requests_to(&app, "/api/v2/provisionerd/acquire\"").await, 0.0, "the old acquire is not used");
        for call in ["/complete", "/fail"] {
            let route = format!("/api/v2/provisionerd/jobs/{{job}}{call}");
            assert_eq!(requests_to(&app, &route).await, 0.0, "no report on its own ({call})");
        }
        let (_, logs) = app.get(&format!("/organizations/default/provisionerjobs/{}/logs", jobs[0]), Some(&owner)).await;
        assert!(logs.to_string().contains(&format!("ran {}", jobs[0])), "{logs}");
    }

    async fn the_reference_daemon_runs_concurrency_jobs_at_once(backend: Backend) {
        let (app, owner) = fleet_app(backend).await;
        let home = tempfile::tempdir().unwrap();
        let started = home.path().join("started");
        std::fs::create_dir(&started).unwrap();
        // Each job marks itself started and succeeds only once three have started: run one
        // after another, the first would give up after 20 s and fail.
        let exec = format!(
            "touch {dir}/$PROVQ_JOB_ID; i=0; while [ $(ls {dir} | wc -l) -lt 3 ]; do i=$((i+1)); [ $i -gt 400 ] && exit 1; sleep 0.05; done",
            dir = started.display()
        );
        let mut jobs = Vec::new();
        for _ in 0..3 {
            jobs.push(app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"pool": "three"}})).await["id"].as_str().unwrap().to_string());
        }
        let _daemon = Runner::start(&app, home.path(), &["--name", "three-slots", "--tag", "pool=three", "--concurrency", "3", "--exec", &exec]);
        all_succeeded(&app, &owner, &jobs).await;
        let (_, daemons) = app.get("/organizations/default/provisionerdaemons", Some(&owner)).await;
        assert_eq!(daemons.as_array().unwrap().len(), 1, "one daemon ran them: {daemons}");
        let listed = provq(home.path())
            .args(["provisioner", "list", "--url", &app.base])
            .env("PROVQ_SESSION_TOKEN", &owner)
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout);
        let row = listed.lines().find(|l| l.contains("three-slots")).unwrap_or_else(|| panic!("{listed}"));
        assert!(row.contains("pool=three") && row.contains("terraform") && row.contains("psk"), "{listed}");
        // A fourth job, enqueued while the daemon waits with three free slots, runs too (and
        // the three-at-once rule is met by the files already there).
        let fourth = app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"pool": "three"}})).await["id"].as_str().unwrap().to_string();
        all_succeeded(&app, &owner, &[fourth]).await;
    }
}
