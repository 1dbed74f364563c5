//! PostgreSQL cuts provq's connections mid-drain: its backends terminated, or the whole server
//! restarted under two replicas.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::json;

use super::answers::{assert_unavailable_at_worst, timed_response};
use super::cluster::ThrowawayPostgres;
use super::ledger::Drains;
use super::*;

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
