//! Shutdown of the real binary: SIGINT/SIGTERM start one graceful shutdown that ends within
//! 10 s even with a daemon attached and the log pipe gone (`provq serve 2>&1 | tee log`, then
//! Ctrl-C, which kills `tee` too); a second signal exits at once; a clean exit removes the
//! replica's row. In-process: open long-polls end 204, late requests get 503 in the error shape.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::json;

use crate::backend_tests;
use crate::cli::{BIN, provq};
use crate::helpers::*;

/// A child process killed when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.0.id() as i32), signal).unwrap();
    }

    /// Waits up to `limit` for the exit; the exit code and how long it took.
    fn exit_within(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "provq serve was still running {limit:?} after the signal"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `provq serve` with stdout and stderr on pipes, reads the `listening on` line, then
/// closes both pipes' read ends: every later log line meets EPIPE, as after `tee` died.
fn serve_on_a_pipe_that_closes(url: &str, home: &std::path::Path) -> (Guard, String) {
    let mut child = provq(home)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--prometheus-listen",
            "",
            "--database-url",
            url,
        ])
        .env("PROVQ_PROVISIONER__DAEMON_PSK", PSK)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn provq serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let base = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    drop(stdout);
    drop(child.stderr.take());
    (Guard(child), base)
}

/// A request whose body never completes: the server holds it in flight.
fn hold_a_request_open(base: &str) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /api/v2/users/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"email\""
    )
    .unwrap();
    stream.flush().unwrap();
    stream
}

/// The status of `GET /healthz` on a new connection; `None` when the connection was refused.
async fn healthz(http: &reqwest::Client, base: &str) -> Option<StatusCode> {
    let resp = http
        .get(format!("{base}/healthz"))
        .header("Connection", "close")
        .send()
        .await
        .ok()?;
    Some(resp.status())
}

async fn replica_rows(database_url: &str) -> u64 {
    let store = provq::store::Store::connect(&test_settings(database_url))
        .await
        .unwrap();
    provq::entity::replica::Entity::find()
        .count(store.connection())
        .await
        .unwrap()
}

backend_tests! {
    async fn ctrl_c_with_a_daemon_attached_and_the_log_pipe_gone_exits_cleanly(backend: Backend) {
        let (_db, url) = TestDatabase::create(backend).await;
        let home = tempfile::tempdir().unwrap();
        let (mut server, base) = serve_on_a_pipe_that_closes(&url, home.path());
        let owner = owner_token_at(&base).await;
        let _daemon = Guard(
            Command::new(BIN)
                .args(["provisioner", "start", "--url", &base, "--psk", PSK, "--name", "attached", "--exec", "true"])
                .env("HOME", home.path())
                .env("XDG_CONFIG_HOME", home.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn provq provisioner start"),
        );
        let http = http_client();
        let (http_ref, base_ref, owner_ref) = (&http, &base, &owner);
        eventually(Duration::from_secs(20), "the daemon to register", || async move {
            let daemons: serde_json::Value = http_ref
                .get(format!("{base_ref}/api/v2/organizations/default/provisionerdaemons"))
                .header("Coder-Session-Token", owner_ref)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or_default();
            daemons.as_array().is_some_and(|a| a.iter().any(|d| d["name"] == "attached"))
        })
        .await;
        // Every request writes a log line nobody can read any more; none may fail for it.
        for _ in 0..3 {
            let resp = http.get(format!("{base}/api/v2/buildinfo")).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
        }
        assert_eq!(replica_rows(&url).await, 1);

        let _in_flight = hold_a_request_open(&base);
        server.signal(Signal::SIGINT);
        let (code, took) = server.exit_within(Duration::from_secs(10));
        assert_eq!(code, Some(0), "a graceful shutdown exits 0 (took {took:?})");
        assert_eq!(replica_rows(&url).await, 0, "a clean exit removes the replica's row");
    }
}

/// A second signal ends a shutdown that waits for a request at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let (_db, url) = TestDatabase::create(Backend::Sqlite).await;
    let home = tempfile::tempdir().unwrap();
    let (mut server, base) = serve_on_a_pipe_that_closes(&url, home.path());
    let _in_flight = hold_a_request_open(&base);
    // The request has reached the server before the signal: one sent after it was answered.
    let http = http_client();
    assert_eq!(healthz(&http, &base).await, Some(StatusCode::OK));
    server.signal(Signal::SIGTERM);
    // The graceful stage has begun once new connections are refused (the listener closed) or
    // answered 503.
    let deadline = Instant::now() + Duration::from_secs(10);
    while healthz(&http, &base).await == Some(StatusCode::OK) {
        assert!(
            Instant::now() < deadline,
            "the first signal did not begin a shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "the first signal waits for the request in flight"
    );
    server.signal(Signal::SIGTERM);
    let (code, took) = server.exit_within(Duration::from_secs(2));
    assert_eq!(
        code,
        Some(provq::shutdown::FORCED_EXIT_CODE),
        "took {took:?}"
    );
}

backend_tests! {
    async fn a_shutdown_ends_open_long_polls_with_204_and_refuses_new_requests_with_503(backend: Backend) {
        let (mut app, owner) = spawn_queue(backend).await;
        let poll = {
            let http = app.http.clone();
            let url = format!("{}/api/v2/provisionerd/acquire", app.base);
            tokio::spawn(async move {
                let started = Instant::now();
                let resp = http
                    .post(url)
                    .header("Coder-Provisioner-Daemon-PSK", PSK)
                    .json(&json!({"name": "waiting", "wait_seconds": 30}))
                    .send()
                    .await
                    .unwrap();
                (resp.status(), started.elapsed())
            })
        };
        let (app_ref, owner_ref) = (&app, &owner);
        eventually(Duration::from_secs(10), "the long-poll to start", || async move {
            let (_, daemons) = app_ref.get("/organizations/default/provisionerdaemons", Some(owner_ref)).await;
            daemons.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;

        // The shutdown has begun (the state's token is what the signal cancels first); a request
        // that arrives now is refused in the error shape, the open long-poll ends at once.
        app.state.shutdown.cancel();
        let (status, body) = app.get("/buildinfo", Some(&owner)).await;
        assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["message"], provq::startup::SHUTTING_DOWN_MESSAGE);
        let resp = app.http.get(format!("{}/healthz", app.base)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "1");
        let (status, took) = poll.await.unwrap();
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(took < Duration::from_secs(10), "the long-poll ended with the shutdown, not its wait: {took:?}");
        app.stop().await;
    }
}
