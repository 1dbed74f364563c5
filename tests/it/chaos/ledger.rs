//! The drain daemons of a chaos test and the ledger of what they saw, checked against the jobs
//! as the server lists them afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

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
pub(super) struct Drains {
    ledger: Arc<Mutex<Ledger>>,
    stopping: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Drains {
    pub(super) fn spawn(&self, http: &reqwest::Client, base: &str, name: &str) {
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
    pub(super) async fn stop(&self) {
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
    pub(super) fn server_errors_since(&self, since: Instant) -> Vec<String> {
        let ledger = self.ledger.lock().unwrap();
        ledger
            .server_errors
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, what)| what.clone())
            .collect()
    }

    /// Completes answered 204, over all jobs.
    pub(super) fn completions(&self) -> usize {
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
    pub(super) fn check_incident(&self, all: &[Value], began: Instant, recovered: Instant) {
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
    pub(super) fn check(&self, all: &[Value]) {
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
