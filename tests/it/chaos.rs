//! Chaos: the server dies at the worst moment and nothing is lost. Bounded and self-stopping,
//! loopback only.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
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

/// A daemon that acquires and completes jobs until the server goes away.
async fn drain(http: reqwest::Client, base: String, name: String) {
    loop {
        let Ok(resp) = http
            .post(format!("{base}/api/v2/provisionerd/acquire"))
            .header("Coder-Provisioner-Daemon-PSK", PSK)
            .json(&json!({"name": name, "wait_seconds": 1}))
            .send()
            .await
        else {
            return;
        };
        if resp.status() != StatusCode::OK {
            continue;
        }
        let Ok(body) = resp.json::<Value>().await else {
            return;
        };
        let job = body["job"]["job_id"].as_str().unwrap().to_string();
        let lease = body["job"]["lease_token"].clone();
        if http
            .post(format!("{base}/api/v2/provisionerd/jobs/{job}/complete"))
            .header("Coder-Provisioner-Daemon-PSK", PSK)
            .json(&json!({"lease_token": lease}))
            .send()
            .await
            .is_err()
        {
            return;
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
    for _ in 0..JOBS {
        let resp = http
            .post(format!(
                "{base}/api/v2/organizations/default/provisionerjobs"
            ))
            .header("Coder-Session-Token", &token)
            .json(&json!({"type": "workspace_build"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let daemons: Vec<_> = (0..4)
        .map(|i| tokio::spawn(drain(http.clone(), base.clone(), format!("d{i}"))))
        .collect();
    eventually(
        Duration::from_secs(60),
        "a third of the jobs done",
        || async { count(&jobs(&http, &base, &token).await, "succeeded") >= JOBS / 3 },
    )
    .await;
    server.child.kill().unwrap(); // SIGKILL, mid-drain
    server.child.wait().unwrap();
    for d in daemons {
        let _ = tokio::time::timeout(Duration::from_secs(30), d).await;
    }

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
    let daemons: Vec<_> = (0..4)
        .map(|i| tokio::spawn(drain(http.clone(), base.clone(), format!("d{i}"))))
        .collect();
    eventually(Duration::from_secs(60), "the queue drained", || async {
        count(&jobs(&http, &base, &token).await, "pending") == 0
    })
    .await;
    let all = jobs(&http, &base, &token).await;
    assert_eq!(all.len(), JOBS);
    assert_eq!(
        count(&all, "succeeded") + count(&all, "failed"),
        JOBS,
        "every job ended: {all:#?}"
    );
    assert_eq!(server.terminate().code(), Some(0));
    for d in daemons {
        let _ = tokio::time::timeout(Duration::from_secs(30), d).await;
    }
}

/// A `provq provisioner start` child, killed when dropped.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
        let mut victim = daemon(&app, home.path(), "victim", "sleep 20");
        eventually(Duration::from_secs(20), "the victim runs its job", || async {
            app.status_of(&owner, &victim_job).await == "running"
        })
        .await;
        victim.0.kill().unwrap(); // SIGKILL: no goodbye, no fail call
        victim.0.wait().unwrap();
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
    let daemons: Vec<_> = (0..4)
        .map(|i| tokio::spawn(drain(app.http.clone(), app.base.clone(), format!("d{i}"))))
        .collect();
    eventually(
        Duration::from_secs(60),
        "a third of the jobs done",
        || async { count(&jobs(&app.http, &app.base, &owner).await, "succeeded") >= JOBS / 3 },
    )
    .await;
    let admin = Database::connect(admin_url.as_str()).await.unwrap();
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

    // The pool reconnects by itself; once it has, no request gets a 5xx.
    eventually(
        Duration::from_secs(30),
        "the replica answers again",
        || async {
            let resp = app.http.get(format!("{}/healthz", app.base)).send().await;
            resp.is_ok_and(|r| r.status() == StatusCode::OK)
        },
    )
    .await;
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
    let all = jobs(&app.http, &app.base, &owner).await;
    assert_eq!(all.len(), JOBS, "no job vanished");
    assert_eq!(count(&all, "succeeded") + count(&all, "failed"), JOBS);
    for d in daemons {
        d.abort();
    }
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
    for _ in 0..JOBS {
        let resp = http
            .post(format!("{b}/api/v2/organizations/default/provisionerjobs"))
            .header("Coder-Session-Token", &token)
            .json(&json!({"type": "workspace_build"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let daemons: Vec<_> = (0..4)
        .map(|i| {
            let base = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(drain(http.clone(), base, format!("d{i}")))
        })
        .collect();
    eventually(
        Duration::from_secs(60),
        "a third of the jobs done",
        || async { count(&jobs(&http, &b, &token).await, "succeeded") >= JOBS / 3 },
    )
    .await;
    victim.child.kill().unwrap(); // SIGKILL one replica mid-drain
    victim.child.wait().unwrap();
    // Its daemons move to a restarted replica; the survivor never stopped serving.
    let restarted = ServeProcess::start(serve(home.path(), &url));
    let more: Vec<_> = (0..2)
        .map(|i| tokio::spawn(drain(http.clone(), restarted.url.clone(), format!("r{i}"))))
        .collect();
    eventually(Duration::from_secs(90), "the queue drained", || async {
        let all = jobs(&http, &b, &token).await;
        count(&all, "pending") == 0 && count(&all, "running") == 0
    })
    .await;
    let all = jobs(&http, &restarted.url, &token).await;
    assert_eq!(all.len(), JOBS, "no job vanished");
    assert_eq!(count(&all, "succeeded") + count(&all, "failed"), JOBS);
    for d in daemons.into_iter().chain(more) {
        d.abort();
    }
    assert_eq!(restarted.terminate().code(), Some(0));
    assert_eq!(survivor.terminate().code(), Some(0));
}
