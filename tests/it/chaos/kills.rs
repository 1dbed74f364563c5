//! SIGKILL mid-drain: a SQLite server, a daemon holding a job, one of two PostgreSQL replicas.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::json;

use super::ledger::Drains;
use super::*;

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
