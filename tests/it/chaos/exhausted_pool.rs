//! A long lock on the jobs table exhausts a small pool while admin requests and daemons keep
//! coming: 503s with `Retry-After`, never a 500, and nothing lost once the lock is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use serde_json::json;

use super::answers::{Answer, admin_requests};
use super::ledger::Drains;
use super::*;

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

/// `provq provisioner start` finishing a job while the database cannot serve it (a pool of 3
/// exhausted behind a lock on the jobs table, so its log updates and its `complete` are answered
/// 503 for a few seconds): it keeps the lines and retries, and the job ends `succeeded` with
/// every line, instead of being reaped as hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_daemon_retries_its_reports_through_a_database_outage() {
    // How long the outage goes on once the job prints its lines: a scenario's length, not a
    // wait for something to happen.
    const OUTAGE_AFTER_GO: Duration = Duration::from_millis(4500);
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
    let over = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let holders: Vec<_> = (0..4)
        .map(|_| {
            let (http, base, token) = (app.http.clone(), app.base.clone(), owner.clone());
            let (over, refused) = (over.clone(), refused.clone());
            tokio::spawn(async move {
                let mut busy = 0;
                while !over.load(Ordering::SeqCst) {
                    let resp = http
                        .get(format!(
                            "{base}/api/v2/organizations/default/provisionerjobs?limit=1"
                        ))
                        .header("Coder-Session-Token", &token)
                        .send()
                        .await
                        .unwrap();
                    if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
                        busy += 1;
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
                busy
            })
        })
        .collect();
    // The command prints its lines once the pool has run dry, so the daemon's reports meet it.
    eventually(Duration::from_secs(20), "the pool runs dry", || async {
        refused.load(Ordering::SeqCst) > 0
    })
    .await;
    std::fs::write(&go, "").unwrap(); // the command prints its lines and exits 0 now
    tokio::time::sleep(OUTAGE_AFTER_GO).await;
    over.store(true, Ordering::SeqCst);
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
