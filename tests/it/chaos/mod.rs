//! Chaos: the server, a daemon or PostgreSQL dies or stalls at the worst moment and nothing is
//! lost. Bounded and self-stopping, loopback only.
//!
//! `ledger` holds the drain daemons and what they saw, `cluster` a PostgreSQL of a test's own
//! (to restart it), `answers` admin requests as a client sees them during an incident; the
//! scenarios are `kills` (a server or daemon SIGKILLed), `cut_connections` (PostgreSQL drops
//! provq's connections) and `exhausted_pool` (a long lock drains the pool).

mod answers;
mod cluster;
mod cut_connections;
mod exhausted_pool;
mod kills;
mod ledger;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
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

/// A `provq provisioner start` child, killed when dropped.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
