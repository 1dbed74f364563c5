//! Chaos: the server, a daemon or PostgreSQL dies or stalls at the worst moment and nothing is
//! lost. Bounded and self-stopping, loopback only.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement, TransactionTrait};
use serde_json::{Value, json};

use crate::cli::{ServeProcess, provq};
use crate::helpers::*;

const JOBS: usize = 150;

fn serve(home: &std::path::Path, url: &str) -> Command {
    let mut cmd = provq(home);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--prometheus-listen",
        "",
    ])
    .args(["--database-url", url])
    .env("PROVQ_PROVISIONER__DAEMON_PSK", PSK)
    .env("PROVQ_RATE_LIMIT__API_PER_MINUTE", "0")
    .env("PROVQ_REAPER__INTERVAL_SECS", "1")
    .env("PROVQ_REAPER__HUNG_AFTER_SECS", "2")
    .env("PROVQ_REAPER__MAX_JOBS_PER_RUN", "1000")
    // Few log lines: nobody drains stderr here.
    .env("RUST_LOG", "error");
    cmd
}

/// Enqueues `n` jobs through the admin API of `bases`, taking turns.
async fn enqueue_jobs(http: &reqwest::Client, bases: &[&str], token: &str, n: usize) {
    for i in 0..n {
        let resp = http
            .post(format!(
                "{}/api/v2/organizations/default/provisionerjobs",
                bases[i % bases.len()]
            ))
            .header("Coder-Session-Token", token)
            .json(&json!({"type": "workspace_build"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
}

/// Waits until a third of the jobs succeeded: the drain is well under way.
async fn until_a_third_done(http: &reqwest::Client, base: &str, token: &str) {
    eventually(
        Duration::from_secs(60),
        "a third of the jobs done",
        || async { count(&jobs(http, base, token).await, "succeeded") >= JOBS / 3 },
    )
    .await;
}

async fn jobs(http: &reqwest::Client, base: &str, token: &str) -> Vec<Value> {
    let resp = http
        .get(format!(
            "{base}/api/v2/organizations/default/provisionerjobs?limit=10000"
        ))
        .header("Coder-Session-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json::<Vec<Value>>().await.unwrap()
}

fn count(jobs: &[Value], status: &str) -> usize {
    jobs.iter().filter(|j| j["status"] == status).count()
}

/// What the drain daemons of one test saw, shared by all of them.
#[derive(Default)]
struct Ledger {
    /// job id → (daemon name, daemon id) of each acquire answered 200 with that job.
    acquired: BTreeMap<String, Vec<(String, String)>>,
    /// job id → daemon names whose `complete` was answered 204.
    completed: BTreeMap<String, Vec<String>>,
    /// job id → daemon names whose `complete` got no answer, a 5xx other than 503, or a 409
    /// after an "unavailable" 503: the server may or may not have applied it.
    unsure: BTreeMap<String, Vec<String>>,
    /// Every 5xx the daemons got: when its request was sent, and what it was.
    server_errors: Vec<(Instant, String)>,
}

/// Drain daemons sharing one [`Ledger`]: `spawn` starts one, `check` asserts that no job was
/// handed out or completed twice and that every succeeded job was completed by exactly one
/// daemon, the one the server names as its worker.
#[derive(Clone, Default)]
struct Drains {
    ledger: Arc<Mutex<Ledger>>,
    stopping: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Drains {
    fn spawn(&self, http: &reqwest::Client, base: &str, name: &str) {
        let task = tokio::spawn(drain(
            http.clone(),
            base.to_string(),
            name.to_string(),
            self.ledger.clone(),
            self.stopping.clone(),
        ));
        self.tasks.lock().unwrap().push(task);
    }

    /// Stops every daemon spawned so far once it has finished what it was doing (an acquire
    /// of at most 1 s, and the complete of the job it holds), so nothing it did goes unrecorded.
    /// Daemons whose server went away stop by themselves.
    async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("a drain daemon stops within 30 s")
                .unwrap();
        }
        self.stopping.store(false, Ordering::SeqCst);
    }

    /// The 5xx answers to requests sent at or after `since`.
    fn server_errors_since(&self, since: Instant) -> Vec<String> {
        let ledger = self.ledger.lock().unwrap();
        ledger
            .server_errors
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, what)| what.clone())
            .collect()
    }

    /// Completes answered 204, over all jobs.
    fn completions(&self) -> usize {
        self.ledger
            .lock()
            .unwrap()
            .completed
            .values()
            .map(Vec::len)
            .sum()
    }

    /// After an incident that began at `began` and was over by `recovered`: the ledger agrees
    /// with `all`, no daemon got a 5xx after recovery, and during the incident only 503s.
    fn check_incident(&self, all: &[Value], began: Instant, recovered: Instant) {
        self.check(all);
        let late = self.server_errors_since(recovered);
        assert!(late.is_empty(), "5xx after recovery: {late:?}");
        let during = self.server_errors_since(began);
        assert!(
            during
                .iter()
                .all(|e| e.ends_with("503 Service Unavailable")),
            "daemons got a 5xx other than 503 during the incident: {during:?}"
        );
    }

    /// Checks the ledger against `all` (every job, as the server lists them).
    fn check(&self, all: &[Value]) {
        let ledger = self.ledger.lock().unwrap();
        for (job, by) in &ledger.acquired {
            assert_eq!(
                by.len(),
                1,
                "job {job} was handed out more than once: {by:?}"
            );
        }
        for (job, by) in &ledger.completed {
            assert_eq!(
                by.len(),
                1,
                "job {job} was completed more than once: {by:?}"
            );
            let acquirer = &ledger.acquired[job][0].0;
            assert_eq!(
                &by[0], acquirer,
                "job {job} completed by a daemon that never acquired it"
            );
        }
        for job in all {
            let id = job["id"].as_str().unwrap();
            let completed = ledger.completed.get(id).map_or(0, Vec::len);
            if completed > 0 {
                assert_eq!(
                    job["status"], "succeeded",
                    "a 204 complete did not stick: {job}"
                );
            }
            if job["status"] != "succeeded" {
                continue;
            }
            // Succeeded: completed by exactly one daemon, or by the one daemon whose complete
            // got no answer (the server applied it and then died, say).
            let unsure = ledger.unsure.get(id).map_or(0, Vec::len);
            assert!(
                completed == 1 || (completed == 0 && unsure > 0),
                "job {id} succeeded with {completed} confirmed and {unsure} unanswered completes"
            );
            let (name, daemon_id) = ledger
                .acquired
                .get(id)
                .and_then(|a| a.first())
                .unwrap_or_else(|| panic!("job {id} succeeded but no daemon acquired it"));
            assert_eq!(
                job["worker_id"].as_str(),
                Some(daemon_id.as_str()),
                "the server names another worker than {name} for job {id}: {job}"
            );
        }
        let known: BTreeSet<&str> = all.iter().map(|j| j["id"].as_str().unwrap()).collect();
        for job in ledger.acquired.keys() {
            assert!(known.contains(job.as_str()), "job {job} vanished");
        }
    }
}

/// A daemon that acquires and completes jobs until the server goes away (or it is stopped),
/// writing down what happened in `ledger`. A 503 on `complete` is retried: after "busy" nothing
/// was changed, after "unavailable" (the connection was cut under it) the complete may have been
/// applied, so a 409 to its retry leaves the job unsure. Any other failed `complete` leaves the
/// job to the reaper.
async fn drain(
    http: reqwest::Client,
    base: String,
    name: String,
    ledger: Arc<Mutex<Ledger>>,
    stopping: Arc<AtomicBool>,
) {
    let server_error = |sent: Instant, what: String| {
        ledger.lock().unwrap().server_errors.push((sent, what));
    };
    while !stopping.load(Ordering::SeqCst) {
        let sent = Instant::now();
        let Ok(resp) = http
            .post(format!("{base}/api/v2/provisionerd/acquire"))
            .header("Coder-Provisioner-Daemon-PSK", PSK)
            .json(&json!({"name": name, "wait_seconds": 1}))
            .send()
            .await
        else {
            return;
        };
        let status = resp.status();
        if status.is_server_error() {
            server_error(sent, format!("{name}: acquire answered {status}"));
        }
        if status != StatusCode::OK {
            if status != StatusCode::NO_CONTENT {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        }
        let Ok(body) = resp.json::<Value>().await else {
            return;
        };
        let job = body["job"]["job_id"].as_str().unwrap().to_string();
        let lease = body["job"]["lease_token"].clone();
        let daemon_id = body["daemon_id"].as_str().unwrap().to_string();
        ledger
            .lock()
            .unwrap()
            .acquired
            .entry(job.clone())
            .or_default()
            .push((name.clone(), daemon_id));
        let mut maybe_applied = false;
        loop {
            let sent = Instant::now();
            let resp = http
                .post(format!("{base}/api/v2/provisionerd/jobs/{job}/complete"))
                .header("Coder-Provisioner-Daemon-PSK", PSK)
                .json(&json!({"lease_token": lease}))
                .send()
                .await;
            let status = resp.as_ref().map(|r| r.status()).ok();
            if let Some(s) = status.filter(|s| s.is_server_error()) {
                server_error(sent, format!("{name}: complete of {job} answered {s}"));
            }
            match status {
                Some(StatusCode::NO_CONTENT) => {
                    let mut l = ledger.lock().unwrap();
                    l.completed.entry(job).or_default().push(name.clone());
                    break;
                }
                Some(StatusCode::SERVICE_UNAVAILABLE) => {
                    let body = match resp {
                        Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
                        Err(_) => Value::Null,
                    };
                    maybe_applied |= body["message"] != "The database is busy; retry shortly.";
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some(s) if !s.is_server_error() => {
                    // e.g. 409: the lease was lost, or an earlier attempt was applied.
                    if maybe_applied {
                        let mut l = ledger.lock().unwrap();
                        l.unsure.entry(job).or_default().push(name.clone());
                    }
                    break;
                }
                _ => {
                    let mut l = ledger.lock().unwrap();
                    l.unsure.entry(job).or_default().push(name.clone());
                    if status.is_none() {
                        return; // the server went away
                    }
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_a_kill_9_mid_drain() {
    let (_db, url) = TestDatabase::create(Backend::Sqlite).await;
    let home = tempfile::tempdir().unwrap();
    let http = http_client();
    let mut server = ServeProcess::start(serve(home.path(), &url));
    let base = server.url.clone();
    owner_token_at(&base).await;
    let token = login_at(&base).await;
    enqueue_jobs(&http, &[&base], &token, JOBS).await;
    let drains = Drains::default();
    for i in 0..4 {
        drains.spawn(&http, &base, &format!("d{i}"));
    }
    until_a_third_done(&http, &base, &token).await;
    server.child.kill().unwrap(); // SIGKILL, mid-drain
    server.child.wait().unwrap();
    drains.stop().await; // they stop by themselves: their server is gone

    let db = Database::connect(&url).await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA integrity_check",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "integrity_check").unwrap(), "ok");
    db.close().await.unwrap();

    // Restarted on the same file: jobs left running are reaped, the rest drains.
    let server = ServeProcess::start(serve(home.path(), &url));
    let base = server.url.clone();
    let token = login_at(&base).await;
    let after_kill = jobs(&http, &base, &token).await;
    assert_eq!(after_kill.len(), JOBS, "no job vanished");
    eventually(Duration::from_secs(30), "running jobs reaped", || async {
        count(&jobs(&http, &base, &token).await, "running") == 0
    })
    .await;
    for i in 0..4 {
        drains.spawn(&http, &base, &format!("r{i}"));
    }
    eventually(Duration::from_secs(60), "the queue drained", || async {
        count(&jobs(&http, &base, &token).await, "pending") == 0
    })
    .await;
    drains.stop().await;
    let all = jobs(&http, &base, &token).await;
    assert_eq!(all.len(), JOBS);
    assert_eq!(
        count(&all, "succeeded") + count(&all, "failed"),
        JOBS,
        "every job ended: {all:#?}"
    );
    drains.check(&all);
    assert_eq!(server.terminate().code(), Some(0));
}

/// A `provq provisioner start` child, killed when dropped.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The process group of a job's command, named in a file the command writes; killed when
/// dropped (also when the test panics).
struct JobGroup(std::path::PathBuf);

impl JobGroup {
    fn pgid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|p| *p > 1)
    }
}

impl Drop for JobGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn daemon(app: &TestApp, home: &std::path::Path, name: &str, exec: &str) -> Daemon {
    let child = provq(home)
        .args(["provisioner", "start", "--url", &app.base, "--psk", PSK])
        .args(["--name", name, "--exec", exec])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the daemon");
    Daemon(child)
}

crate::backend_tests! {
    async fn a_daemon_killed_mid_job_has_its_job_reaped_and_nothing_else_is_affected(backend: Backend) {
        let (app, owner) = spawn_queue_with(backend, |s| {
            s.reaper.interval_secs = 1;
            s.reaper.hung_after_secs = 2;
        })
        .await;
        let home = tempfile::tempdir().unwrap();
        let victim_job = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        // The job's command writes its process group (it leads one) so the test can kill what
        // the SIGKILLed daemon leaves behind.
        let job_group = JobGroup(home.path().join("job.pgid"));
        let exec = format!("echo $$ > {}; exec sleep 20", job_group.0.display());
        let mut victim = daemon(&app, home.path(), "victim", &exec);
        eventually(Duration::from_secs(20), "the victim runs its job", || async {
            app.status_of(&owner, &victim_job).await == "running"
        })
        .await;
        // "running" comes with the acquire; the command starts a moment later.
        eventually(Duration::from_secs(20), "the job's command named its process group", || async {
            job_group.pgid().is_some()
        })
        .await;
        victim.0.kill().unwrap(); // SIGKILL: no goodbye, no fail call
        victim.0.wait().unwrap();
        drop(job_group); // its orphaned `sleep 20` goes too, instead of outliving the test
        eventually(Duration::from_secs(20), "the job reaped", || async {
            app.status_of(&owner, &victim_job).await == "failed"
        })
        .await;
        let job = app.job(&owner, &victim_job).await;
        assert!(job["error"].as_str().unwrap().contains("hung"), "{job}");

        let next = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let _survivor = daemon(&app, home.path(), "survivor", "true");
        eventually(Duration::from_secs(20), "the next job done", || async {
            app.status_of(&owner, &next).await == "succeeded"
        })
        .await;
        assert_eq!(app.status_of(&owner, &victim_job).await, "failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backends_terminated_mid_drain_are_replaced_without_a_restart() {
    let (app, owner) = spawn_queue_with(Backend::Postgres, |s| {
        s.rate_limit.api_per_minute = 0;
        s.reaper.interval_secs = 1;
        s.reaper.hung_after_secs = 2;
        s.reaper.max_jobs_per_run = 1000;
    })
    .await;
    let TestDatabase::Postgres { admin_url, name } = &app.database else {
        unreachable!("a PostgreSQL test")
    };
    for _ in 0..JOBS {
        app.enqueue(&owner, json!({"type": "workspace_build"}))
            .await;
    }
    let drains = Drains::default();
    for i in 0..4 {
        drains.spawn(&app.http, &app.base, &format!("d{i}"));
    }
    until_a_third_done(&app.http, &app.base, &owner).await;
    let admin = Database::connect(admin_url.as_str()).await.unwrap();
    let killed_at = Instant::now();
    let killed = admin
        .execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ),
        ))
        .await
        .unwrap();
    assert!(killed.rows_affected() > 0, "provq had connections to kill");
    admin.close().await.unwrap();

    // The pool reconnects by itself; meanwhile a request may be answered 503, never 500, and
    // once it has, no request gets a 5xx.
    let incident = Mutex::new(Vec::new());
    eventually(
        Duration::from_secs(30),
        "the replica answers again",
        || async {
            let list = app
                .http
                .get(format!(
                    "{}/api/v2/organizations/default/provisionerjobs?limit=1",
                    app.base
                ))
                .header("Coder-Session-Token", &owner)
                .send()
                .await;
            let list = timed_response(list).await;
            incident.lock().unwrap().push(list);
            let resp = app.http.get(format!("{}/healthz", app.base)).send().await;
            resp.is_ok_and(|r| r.status() == StatusCode::OK)
        },
    )
    .await;
    let recovered = Instant::now();
    assert_unavailable_at_worst(&incident.into_inner().unwrap());
    for _ in 0..20 {
        let (status, body) = app
            .get(
                "/organizations/default/provisionerjobs?limit=5",
                Some(&owner),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    eventually(Duration::from_secs(90), "the queue drained", || async {
        let all = jobs(&app.http, &app.base, &owner).await;
        count(&all, "pending") == 0 && count(&all, "running") == 0
    })
    .await;
    drains.stop().await;
    let all = jobs(&app.http, &app.base, &owner).await;
    assert_eq!(all.len(), JOBS, "no job vanished");
    assert_eq!(count(&all, "succeeded") + count(&all, "failed"), JOBS);
    drains.check_incident(&all, killed_at, recovered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_postgres_replicas_killed_mid_drain_loses_nothing() {
    let (_db, url) = TestDatabase::create(Backend::Postgres).await;
    let home = tempfile::tempdir().unwrap();
    let http = http_client();
    let mut victim = ServeProcess::start(serve(home.path(), &url));
    let survivor = ServeProcess::start(serve(home.path(), &url));
    let (a, b) = (victim.url.clone(), survivor.url.clone());
    let token = owner_token_at(&b).await;
    enqueue_jobs(&http, &[&b], &token, JOBS).await;
    let drains = Drains::default();
    for i in 0..4 {
        drains.spawn(&http, if i % 2 == 0 { &a } else { &b }, &format!("d{i}"));
    }
    until_a_third_done(&http, &b, &token).await;
    victim.child.kill().unwrap(); // SIGKILL one replica mid-drain
    victim.child.wait().unwrap();
    // Its daemons move to a restarted replica; the survivor never stopped serving.
    let restarted = ServeProcess::start(serve(home.path(), &url));
    for i in 0..2 {
        drains.spawn(&http, &restarted.url, &format!("r{i}"));
    }
    eventually(Duration::from_secs(90), "the queue drained", || async {
        let all = jobs(&http, &b, &token).await;
        count(&all, "pending") == 0 && count(&all, "running") == 0
    })
    .await;
    drains.stop().await;
    let all = jobs(&http, &restarted.url, &token).await;
    assert_eq!(all.len(), JOBS, "no job vanished");
    assert_eq!(count(&all, "succeeded") + count(&all, "failed"), JOBS);
    drains.check(&all);
    assert_eq!(restarted.terminate().code(), Some(0));
    assert_eq!(survivor.terminate().code(), Some(0));
}

/// One admin request as a client sees it: status (None: no answer), how long it took, its
/// `Retry-After` header and its body.
struct Answer {
    what: &'static str,
    status: Option<StatusCode>,
    took: Duration,
    retry_after: Option<String>,
    body: Value,
}

async fn timed(req: reqwest::RequestBuilder, what: &'static str) -> Answer {
    let sent = Instant::now();
    let resp = req.send().await;
    let took = sent.elapsed();
    answer(resp, what, sent, took).await
}

/// The [`Answer`] to a request already sent.
async fn timed_response(resp: reqwest::Result<reqwest::Response>) -> Answer {
    answer(resp, "list jobs", Instant::now(), Duration::ZERO).await
}

/// Requests sent while the database was unavailable: each answered 2xx or 503 in Coder's shape
/// with `Retry-After: 1` and a message that names no internals; never a 500.
fn assert_unavailable_at_worst(answers: &[Answer]) {
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
async fn admin_requests(app_base: String, token: String, until: Instant) -> Vec<Answer> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pool_exhausted_behind_a_long_lock_answers_503_then_recovers() {
    const POOL_JOBS: usize = 60;
    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
    const LOCK_HELD: Duration = Duration::from_secs(5);
    let (app, owner) = spawn_queue_with(Backend::Postgres, |s| {
        s.rate_limit.api_per_minute = 0;
        s.database_max_connections = 3;
        s.database_acquire_timeout_secs = ACQUIRE_TIMEOUT.as_secs();
        s.reaper.interval_secs = 1;
        // Nothing may be reaped: every job is to be completed, however long the lock lasts.
        s.reaper.hung_after_secs = 120;
    })
    .await;
    for _ in 0..POOL_JOBS {
        app.enqueue(&owner, json!({"type": "workspace_build"}))
            .await;
    }
    let drains = Drains::default();
    for i in 0..4 {
        drains.spawn(&app.http, &app.base, &format!("d{i}"));
    }
    eventually(Duration::from_secs(60), "some jobs done", || async {
        count(&jobs(&app.http, &app.base, &owner).await, "succeeded") >= 10
    })
    .await;

    // Another client takes the jobs table for a while: every statement of provq on it waits,
    // holding its pooled connection, so the small pool runs dry while requests keep coming.
    let locker = Database::connect(app.database_url.as_str()).await.unwrap();
    let txn = locker.begin().await.unwrap();
    let locked_at = Instant::now();
    txn.execute_unprepared("LOCK TABLE provisioner_jobs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let scripts: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(admin_requests(
                app.base.clone(),
                owner.clone(),
                locked_at + LOCK_HELD,
            ))
        })
        .collect();
    tokio::time::sleep(LOCK_HELD.saturating_sub(locked_at.elapsed())).await;
    txn.rollback().await.unwrap();
    locker.close().await.unwrap();
    let released_at = Instant::now();
    let mut during = Vec::new();
    for s in scripts {
        during.extend(s.await.unwrap());
    }

    // Every request answered: 2xx, or 503 in Coder's shape with Retry-After. Never a 500, and
    // never longer than the lock plus a few acquire timeouts.
    let busy: Vec<&Answer> = during
        .iter()
        .filter(|a| a.status == Some(StatusCode::SERVICE_UNAVAILABLE))
        .collect();
    for a in &during {
        let status = a
            .status
            .unwrap_or_else(|| panic!("{} got no answer", a.what));
        assert!(
            status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE,
            "{} answered {status} while the pool was exhausted: {}",
            a.what,
            a.body
        );
        assert!(
            a.took < LOCK_HELD + 3 * ACQUIRE_TIMEOUT + Duration::from_secs(5),
            "{} took {:?}",
            a.what,
            a.took
        );
    }
    assert!(
        !busy.is_empty(),
        "the pool was never exhausted: {} answers, none 503",
        during.len()
    );
    for a in &busy {
        assert_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &a.body,
            StatusCode::SERVICE_UNAVAILABLE,
        );
        assert_eq!(a.body["message"], "The database is busy; retry shortly.");
        assert_eq!(a.retry_after.as_deref(), Some("1"), "{}", a.what);
        // A request that found no connection gives up after the acquire timeout (a few times
        // over for requests that run several statements), not after the lock.
        assert!(
            a.took < 3 * ACQUIRE_TIMEOUT + Duration::from_secs(3),
            "a 503 for {} took {:?}",
            a.what,
            a.took
        );
    }
    let slowest = during.iter().map(|a| a.took).max().unwrap();
    eprintln!(
        "pool exhausted for {:?}: {} admin answers, {} of them 503, slowest {slowest:?}",
        released_at - locked_at,
        during.len(),
        busy.len()
    );

    // Recovery without a restart: no 5xx for anything sent from then on, and the drain ends
    // with every job completed exactly once.
    eventually(
        Duration::from_secs(30),
        "the server answers again",
        || async {
            let (status, _) = app
                .get(
                    "/organizations/default/provisionerjobs?limit=1",
                    Some(&owner),
                )
                .await;
            status == StatusCode::OK
        },
    )
    .await;
    let recovered = Instant::now();
    let after = admin_requests(
        app.base.clone(),
        owner.clone(),
        Instant::now() + Duration::from_secs(2),
    )
    .await;
    for a in &after {
        let status = a.status.unwrap();
        assert!(
            status.is_success(),
            "{} answered {status} after recovery: {}",
            a.what,
            a.body
        );
    }
    eventually(Duration::from_secs(60), "the queue drained", || async {
        let all = jobs(&app.http, &app.base, &owner).await;
        count(&all, "pending") == 0 && count(&all, "running") == 0
    })
    .await;
    drains.stop().await;
    let all = jobs(&app.http, &app.base, &owner).await;
    let enqueued = during
        .iter()
        .chain(&after)
        .filter(|a| a.status == Some(StatusCode::CREATED))
        .count();
    assert!(all.len() >= POOL_JOBS + enqueued, "no job vanished");
    assert_eq!(count(&all, "succeeded"), all.len(), "every job completed");
    drains.check(&all);
    assert_eq!(
        drains.completions(),
        all.len(),
        "each job completed exactly once"
    );
    let errors = drains.server_errors_since(locked_at);
    assert!(
        errors
            .iter()
            .all(|e| e.ends_with("503 Service Unavailable")),
        "daemons got a 5xx other than 503: {errors:?}"
    );
    let late = drains.server_errors_since(recovered);
    assert!(
        late.is_empty(),
        "daemons got a 5xx after recovery: {late:?}"
    );
}

/// A throwaway PostgreSQL cluster of its own (initdb in a temp dir, a free loopback port, fsync
/// off), so a test may restart it. Dropping it stops it at once and removes its directory, also
/// when the test panics.
struct ThrowawayPostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl ThrowawayPostgres {
    fn start() -> Self {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("provq-chaos-pg-")
            .tempdir()
            .expect("temp dir");
        // initdb refuses to run as root: then the cluster belongs to the postgres user.
        let as_postgres = command_output(Command::new("id").arg("-u")).trim() == "0";
        if as_postgres {
            command_output(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(dir.path()),
            );
        }
        let mut pg = Self {
            bin,
            dir,
            port: 0,
            as_postgres,
        };
        let data = pg.data();
        command_output(
            pg.tool("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
                .args(["--no-locale", "--no-sync"]),
        );
        // A free port may be taken between looking and binding: try a few.
        for attempt in 1..=3 {
            pg.port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let out = pg.pg_ctl("start").output().expect("run pg_ctl start");
            if out.status.success() {
                return pg;
            }
            assert!(
                attempt < 3,
                "pg_ctl start failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(pg.dir.path().join("server.log")).unwrap_or_default()
            );
        }
        unreachable!()
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// `postgres` URL of database `name` on this cluster.
    fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.current_dir(self.dir.path())
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// `pg_ctl ACTION` on this cluster, waiting for it to finish.
    fn pg_ctl(&self, action: &str) -> Command {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let mut cmd = self.tool("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "30", "-m", "fast", "-o", &options, action]);
        cmd
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the server is down for a moment.
    fn restart(&self) {
        command_output(&mut self.pg_ctl("restart"));
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        // The TempDir removes the directory after this.
    }
}

/// The directory holding `initdb` and `pg_ctl`: on `PATH`, else Debian's versioned folder.
fn postgres_bin_dir() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse(); // the newest version first
    on_path
        .into_iter()
        .chain(debian)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test starts its own PostgreSQL cluster and needs initdb and pg_ctl, found \
                 neither on PATH nor in /usr/lib/postgresql/*/bin: install PostgreSQL's server \
                 (Debian: apt-get install postgresql; .ci/run does)"
            )
        })
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns its stdout.
fn command_output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads a server's stderr so it never blocks on a full pipe; keeps it for failure messages.
fn keep_stderr(server: &mut ServeProcess) -> Arc<Mutex<String>> {
    use std::io::Read;
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = server.child.stderr.take().expect("piped stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_drain_loses_nothing_and_replicas_recover_by_themselves() {
    let pg = tokio::task::block_in_place(ThrowawayPostgres::start);
    let admin = Database::connect(pg.url("postgres")).await.unwrap();
    admin
        .execute_unprepared("CREATE DATABASE provq")
        .await
        .unwrap();
    admin.close().await.unwrap();
    let url = pg.url("provq");
    let home = tempfile::tempdir().unwrap();
    let http = http_client();
    let mut a = ServeProcess::start(serve(home.path(), &url));
    let mut b = ServeProcess::start(serve(home.path(), &url));
    let logs = [keep_stderr(&mut a), keep_stderr(&mut b)];
    let bases = [a.url.clone(), b.url.clone()];
    let token = owner_token_at(&bases[0]).await;
    enqueue_jobs(&http, &[&bases[0], &bases[1]], &token, JOBS).await;
    let drains = Drains::default();
    for i in 0..4 {
        drains.spawn(&http, &bases[i % 2], &format!("d{i}"));
    }
    until_a_third_done(&http, &bases[0], &token).await;
    let restart = Instant::now();
    tokio::task::block_in_place(|| pg.restart());
    let restart_took = restart.elapsed();

    // Both replicas answer again by themselves; meanwhile requests may be answered 503 (in
    // Coder's shape, with Retry-After) but never 500, and from then on nothing gets a 5xx.
    let incident = Mutex::new(Vec::new());
    eventually(
        Duration::from_secs(30),
        "both replicas answer again",
        || async {
            let mut ok = true;
            for base in &bases {
                let health = http.get(format!("{base}/healthz")).send().await;
                let list = http
                    .get(format!(
                        "{base}/api/v2/organizations/default/provisionerjobs?limit=1"
                    ))
                    .header("Coder-Session-Token", &token)
                    .send()
                    .await;
                ok &= health.is_ok_and(|r| r.status() == StatusCode::OK);
                let list = timed_response(list).await;
                ok &= list.status == Some(StatusCode::OK);
                incident.lock().unwrap().push(list);
            }
            ok
        },
    )
    .await;
    let incident = incident.into_inner().unwrap();
    assert_unavailable_at_worst(&incident);
    let recovered = Instant::now();
    for base in &bases {
        for _ in 0..10 {
            let resp = http
                .get(format!(
                    "{base}/api/v2/organizations/default/provisionerjobs?limit=5"
                ))
                .header("Coder-Session-Token", &token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{base} after recovery");
        }
    }
    eventually(Duration::from_secs(60), "the queue drained", || async {
        let all = jobs(&http, &bases[1], &token).await;
        count(&all, "pending") == 0 && count(&all, "running") == 0
    })
    .await;
    drains.stop().await;
    let all = jobs(&http, &bases[0], &token).await;
    assert_eq!(all.len(), JOBS, "no job vanished");
    assert_eq!(count(&all, "succeeded") + count(&all, "failed"), JOBS);
    drains.check_incident(&all, restart, recovered);
    let during = drains.server_errors_since(restart);
    eprintln!(
        "restart took {restart_took:?}, recovered {:?} after it began; {} succeeded, {} \
         failed (reaped), {} 503 to daemons and {} to admin requests during the restart",
        recovered - restart,
        count(&all, "succeeded"),
        count(&all, "failed"),
        during.len(),
        incident
            .iter()
            .filter(|a| a.status == Some(StatusCode::SERVICE_UNAVAILABLE))
            .count()
    );
    for (server, log) in [a, b].into_iter().zip(logs) {
        let status = server.terminate();
        assert_eq!(status.code(), Some(0), "{}", log.lock().unwrap());
    }
}

/// The ledger check itself can fail: a job completed by two daemons, and a succeeded job the
/// server says another daemon ran.
#[test]
fn the_drain_ledger_catches_a_double_completion_and_a_wrong_worker() {
    let job = json!({"id": "j1", "status": "succeeded", "worker_id": "id-a"});
    let ledger = |completed: &[&str], worker: &str| {
        let drains = Drains::default();
        let mut l = drains.ledger.lock().unwrap();
        l.acquired
            .insert("j1".into(), vec![("a".into(), worker.to_string())]);
        l.completed.insert(
            "j1".into(),
            completed.iter().map(|s| s.to_string()).collect(),
        );
        drop(l);
        drains
    };
    ledger(&["a"], "id-a").check(std::slice::from_ref(&job));
    for (completed, worker, expected) in [
        (&["a", "b"][..], "id-a", "completed more than once"),
        (&["b"][..], "id-a", "never acquired it"),
        (&["a"][..], "id-b", "names another worker"),
    ] {
        let drains = ledger(completed, worker);
        let job = job.clone();
        let panic = std::panic::catch_unwind(move || drains.check(&[job])).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains(expected), "{message}");
    }
}

/// `provq provisioner start` finishing a job while the database cannot serve it (a pool of 3
/// exhausted behind a lock on the jobs table, so its log updates and its `complete` are answered
/// 503 for a few seconds): it keeps the lines and retries, and the job ends `succeeded` with
/// every line, instead of being reaped as hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_daemon_retries_its_reports_through_a_database_outage() {
    const LOCK_HELD: Duration = Duration::from_secs(6);
    const LINES: usize = 50;
    let (app, owner) = spawn_queue_with(Backend::Postgres, |s| {
        s.rate_limit.api_per_minute = 0;
        s.database_max_connections = 3;
        s.database_acquire_timeout_secs = 1;
        s.reaper.interval_secs = 1;
        // Well past the outage, but reached long before the test gives up waiting: a daemon that
        // drops its complete has its job reaped.
        s.reaper.hung_after_secs = 20;
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let go = home.path().join("go");
    let script = home.path().join("job.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho before the outage\nwhile [ ! -e {go} ]; do sleep 0.1; done\n\
             i=1; while [ $i -le {LINES} ]; do echo during the outage $i; i=$((i+1)); done\n",
            go = go.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let job = app
        .enqueue(&owner, json!({"type": "workspace_build"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let stderr = std::fs::File::create(home.path().join("daemon.log")).unwrap();
    let _daemon = Daemon(
        provq(home.path())
            .args(["provisioner", "start", "--url", &app.base, "--psk", PSK])
            .args(["--name", "steady", "--heartbeat", "1", "--exec"])
            .arg(&script)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the daemon"),
    );
    let logs_path = format!("/organizations/default/provisionerjobs/{job}/logs");
    eventually(Duration::from_secs(20), "the job runs and logs", || async {
        let (_, logs) = app.get(&logs_path, Some(&owner)).await;
        logs.as_array().is_some_and(|l| !l.is_empty())
    })
    .await;

    // The outage: the jobs table locked, and admin requests holding every pooled connection
    // while they wait for it, so anything else is answered 503 after the acquire timeout.
    let locker = Database::connect(app.database_url.as_str()).await.unwrap();
    let txn = locker.begin().await.unwrap();
    txn.execute_unprepared("LOCK TABLE provisioner_jobs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let until = Instant::now() + LOCK_HELD;
    let holders: Vec<_> = (0..4)
        .map(|_| {
            let (http, base, token) = (app.http.clone(), app.base.clone(), owner.clone());
            tokio::spawn(async move {
                let mut busy = 0;
                while Instant::now() < until {
                    let resp = http
                        .get(format!(
                            "{base}/api/v2/organizations/default/provisionerjobs?limit=1"
                        ))
                        .header("Coder-Session-Token", &token)
                        .send()
                        .await
                        .unwrap();
                    busy += usize::from(resp.status() == StatusCode::SERVICE_UNAVAILABLE);
                }
                busy
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::write(&go, "").unwrap(); // the command prints its lines and exits 0 now
    tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
    txn.rollback().await.unwrap();
    locker.close().await.unwrap();
    let mut busy = 0;
    for h in holders {
        busy += h.await.unwrap();
    }
    assert!(busy > 0, "the pool was never exhausted");

    eventually(Duration::from_secs(40), "the job ends", || async {
        let status = app.status_of(&owner, &job).await;
        status == "succeeded" || status == "failed"
    })
    .await;
    let end = app.status_of(&owner, &job).await;
    let daemon_log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap();
    let ended = app.job(&owner, &job).await;
    assert_eq!(end, "succeeded", "{ended}\ndaemon:\n{daemon_log}");
    assert!(
        daemon_log.contains("503"),
        "the daemon met the outage: {daemon_log}"
    );
    let (status, logs) = app.get(&logs_path, Some(&owner)).await;
    assert_eq!(status, StatusCode::OK);
    let outputs: Vec<&str> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["output"].as_str().unwrap())
        .collect();
    let mut expected = vec!["before the outage".to_string()];
    expected.extend((1..=LINES).map(|i| format!("during the outage {i}")));
    assert_eq!(outputs, expected, "every line, once, in order");
}
