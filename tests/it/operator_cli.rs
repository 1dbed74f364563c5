//! The CLI as an operator lives with it (issue 18): prompts on a real pseudo-terminal (through
//! util-linux `script`), refusals without one, exit codes, messages, the daemon's outcome on
//! cancel, its backoff and its goodbye.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::cli::{BIN, provq};
use crate::helpers::*;

/// A command on a pseudo-terminal: `script` gives it one, we type into `script`'s stdin and read
/// what the terminal shows.
struct Terminal {
    child: Child,
    stdin: Option<ChildStdin>,
    screen: Arc<Mutex<String>>,
    /// Copies `script`'s output to `screen`; done at its end of file.
    reader: std::thread::JoinHandle<()>,
}

impl Terminal {
    fn start(home: &Path, command: &str, env: &[(&str, &str)]) -> Self {
        let mut script = Command::new("script");
        script
            .args(["-qfec", command, "/dev/null"])
            .env("SHELL", "/bin/sh")
            .env("XDG_CONFIG_HOME", home)
            .env("HOME", home)
            .env_remove("PROVQ_URL")
            .env_remove("PROVQ_SESSION_TOKEN")
            .env("TERM", "dumb")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            script.env(k, v);
        }
        let mut child = script.spawn().expect("script runs");
        let mut out = child.stdout.take().unwrap();
        let screen = Arc::new(Mutex::new(String::new()));
        let sink = screen.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            screen,
            reader,
        }
    }

    fn screen(&self) -> String {
        self.screen.lock().unwrap().clone()
    }

    /// Waits until the screen shows `text` `times` times in all.
    fn expect_n(&self, text: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.screen().matches(text).count() < times {
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {text:?} ({times}x):\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn expect(&self, text: &str) {
        self.expect_n(text, 1)
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\r").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// The exit code, after the command ended.
    fn wait(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The screen is complete once the reader saw the end of the output.
            if let Some(status) = self.child.try_wait().unwrap()
                && self.reader.is_finished()
            {
                return (status.code().unwrap_or(-1), self.screen());
            }
            assert!(
                Instant::now() < deadline,
                "still running:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `provq …` with `PROVQ_URL`/`PROVQ_SESSION_TOKEN`, stdin closed; (code, stdout, stderr).
fn cli(base: &str, token: &str, home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = provq(home)
        .args(args)
        .env("PROVQ_URL", base)
        .env("PROVQ_SESSION_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .expect("provq runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A pipe of a child read as it comes.
struct Output {
    text: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Output {
    fn of(mut pipe: impl Read + Send + 'static) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { text, reader }
    }

    /// Waits (up to 20 s) until what came so far passes `check`.
    async fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) {
        eventually(Duration::from_secs(20), what, || async {
            check(&self.text.lock().unwrap())
        })
        .await;
    }

    /// Everything, once the pipe reached its end.
    async fn finished(self) -> String {
        let Self { text, reader } = self;
        tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap();
        text.lock().unwrap().clone()
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_status(app: &TestApp, owner: &str, id: &str, want: &[&str], secs: u64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let status = app.status_of(owner, id).await;
        if want.contains(&status.as_str()) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} stuck in {status}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn daemon_status(app: &TestApp, owner: &str, name: &str) -> Option<String> {
    let (_, daemons) = app
        .get("/organizations/default/provisionerdaemons", Some(owner))
        .await;
    daemons
        .as_array()?
        .iter()
        .find(|d| d["name"] == name)
        .map(|d| d["status"].as_str().unwrap_or_default().to_string())
}

fn id_of(job: &Value) -> String {
    job["id"].as_str().unwrap().to_string()
}

backend_tests! {
    async fn login_hides_the_password_asks_twice_and_asks_again_when_too_short(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let home = tempfile::tempdir().unwrap();
        let mut t = Terminal::start(home.path(), &format!("{BIN} login {}", app.base), &[]);
        t.expect("Email:");
        t.type_line("admin@example.com");
        t.expect("Username for the first user:");
        t.type_line("admin");
        t.expect("Password:");
        t.type_line("short");
        t.expect("Confirm password:");
        t.type_line("short");
        t.expect("at least 6 characters");
        t.expect_n("Password:", 2);
        t.type_line("S3cure-pass");
        t.expect_n("Confirm password:", 2);
        t.type_line("S3cure-typo");
        t.expect("do not match");
        t.expect_n("Password:", 3);
        t.type_line("S3cure-pass");
        t.expect_n("Confirm password:", 3);
        t.type_line("S3cure-pass");
        let (code, screen) = t.wait();
        assert_eq!(code, 0, "{screen}");
        assert!(screen.contains("Created the first user admin"), "{screen}");
        assert!(!screen.contains("S3cure"), "the password was echoed: {screen}");
        assert!(!screen.contains("short\r\n"), "the password was echoed: {screen}");

        // Logging in asks once, hidden; a wrong password says only that.
        let mut t = Terminal::start(home.path(), &format!("{BIN} login {}", app.base), &[]);
        t.expect("Email:");
        t.type_line("admin@example.com");
        t.expect("Password:");
        t.type_line("wrong-password");
        let (code, screen) = t.wait();
        assert_eq!(code, 1, "{screen}");
        assert!(screen.contains("Incorrect email or password."), "{screen}");
        assert!(!screen.contains("provq login"), "no session hint on a failed login: {screen}");
        assert!(!screen.contains("wrong-password"), "{screen}");
    }

    async fn bulk_cancel_confirms_with_the_filter_and_refuses_without_a_terminal(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let home = tempfile::tempdir().unwrap();
        let mut prebuilds = Vec::new();
        for _ in 0..2 {
            prebuilds.push(id_of(&app.enqueue(&owner, json!({"type": "workspace_build", "initiator": "prebuilds"})).await));
        }
        let args = ["provisioner", "jobs", "cancel", "--initiator", "prebuilds", "--status", "pending"];
        let (code, out, err) = cli(&app.base, &owner, home.path(), &args);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains("--yes"), "{err}");
        assert_eq!(app.status_of(&owner, &prebuilds[0]).await, "pending", "nothing was canceled");

        let env = [("PROVQ_URL", app.base.as_str()), ("PROVQ_SESSION_TOKEN", owner.as_str())];
        let mut t = Terminal::start(home.path(), &format!("{BIN} {}", args.join(" ")), &env);
        t.expect("Cancel 2 pending or running job(s) matching status pending, initiator prebuilds? [y/N]");
        t.type_line("y");
        let (code, screen) = t.wait();
        assert_eq!(code, 0, "{screen}");
        assert!(screen.contains("Canceled 2 job(s)."), "{screen}");

        // Several ids: each is reported, a failure does not stop the rest, and exits 1.
        let running = id_of(&app.enqueue(&owner, json!({"type": "workspace_build"})).await);
        app.acquire("runner", json!({}), 0).await.expect("a job to run");
        let pending = id_of(&app.enqueue(&owner, json!({"type": "workspace_build"})).await);
        let (code, out, err) = cli(&app.base, &owner, home.path(), &["provisioner", "jobs", "cancel", &prebuilds[0], &running, &pending]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains(&format!("{}: not canceled: Job has already", prebuilds[0])), "{err}");
        assert!(out.contains(&format!("{running}: canceling")), "{out}");
        assert!(out.contains(&format!("{pending}: canceled")), "{out}");
        assert_eq!(app.status_of(&owner, &pending).await, "canceled");

        // Keys and licenses confirm too.
        let (code, _, err) = cli(&app.base, &owner, home.path(), &["provisioner", "keys", "create", "pool"]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = cli(&app.base, &owner, home.path(), &["provisioner", "keys", "delete", "pool"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--yes"), "{err}");
        let (code, _, err) = cli(&app.base, &owner, home.path(), &["provisioner", "keys", "delete", "pool", "-y"]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = cli(&app.base, &owner, home.path(), &["licenses", "delete", "1"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--yes"), "{err}");
    }

    async fn the_daemon_reports_the_commands_own_exit_and_kills_leftovers_after_the_grace(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let home = tempfile::tempdir().unwrap();
        let script = home.path().join("job.sh");
        std::fs::write(&script, "#!/bin/sh\ncase \"$(cat)\" in\n  *'\"template_name\":\"leftover\"'*) trap 'echo bye; exit 0' INT; sleep 120 & echo waiting; wait; echo woke; exit 0;;\n  *) trap 'echo trapped; exit 0' INT; echo started; while true; do sleep 0.1; done;;\nesac\n").unwrap();
        Command::new("chmod").arg("+x").arg(&script).status().unwrap();
        let stderr = std::fs::File::create(home.path().join("daemon.log")).unwrap();
        // `|| exit $?` keeps dash from exec'ing the script: the sh -c wrapper stays in between.
        let daemon = Daemon(provq(home.path())
            .args(["provisioner", "start", "--url", &app.base, "--psk", PSK, "--name", "runner", "--heartbeat", "1", "--cancel-grace", "2", "--exec"])
            .arg(format!("{} || exit $?", script.display()))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap());

        let trapped = id_of(&app.enqueue(&owner, json!({"type": "workspace_build"})).await);
        wait_status(&app, &owner, &trapped, &["running"], 30).await;
        eventually(Duration::from_secs(10), "the script to start", || async {
            let (_, logs) = app.get(&format!("/organizations/default/provisionerjobs/{trapped}/logs"), Some(&owner)).await;
            logs.to_string().contains("started")
        }).await;
        let (code, out, err) = cli(&app.base, &owner, home.path(), &["provisioner", "jobs", "cancel", &trapped]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("canceling"), "{out}");
        let end = wait_status(&app, &owner, &trapped, &["canceled", "failed"], 30).await;
        let job = app.job(&owner, &trapped).await;
        assert_eq!(end, "canceled", "the script trapped SIGINT and exited 0: {job}");

        let leftover = id_of(&app.enqueue(&owner, json!({"type": "workspace_build", "metadata": {"template_name": "leftover"}})).await);
        wait_status(&app, &owner, &leftover, &["running"], 30).await;
        eventually(Duration::from_secs(10), "the script to wait for its background sleep", || async {
            let (_, logs) = app.get(&format!("/organizations/default/provisionerjobs/{leftover}/logs"), Some(&owner)).await;
            logs.to_string().contains("waiting")
        }).await;
        let started = Instant::now();
        cli(&app.base, &owner, home.path(), &["provisioner", "jobs", "cancel", &leftover]);
        wait_status(&app, &owner, &leftover, &["canceled", "failed"], 30).await;
        assert!(started.elapsed() < Duration::from_secs(15), "the report waited for the background sleep: {:?}", started.elapsed());
        drop(daemon);
        let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap();
        assert!(log.lines().all(|l| l.starts_with("20") && l.contains("Z provq daemon: ")), "every line is timestamped: {log}");
    }

    async fn the_daemon_deregisters_on_ctrl_c_and_a_second_one_stops_its_jobs(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let home = tempfile::tempdir().unwrap();
        let log = home.path().join("daemon.log");
        let mut daemon = Daemon(
            provq(home.path())
                .args(["provisioner", "start", "--url", &app.base, "--psk", PSK, "--name", "leaving", "--heartbeat", "1", "--cancel-grace", "1", "--exec", "sleep 600"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        eventually(Duration::from_secs(10), "the daemon to register", || async {
            daemon_status(&app, &owner, "leaving").await.as_deref() == Some("idle")
        })
        .await;
        let job = id_of(&app.enqueue(&owner, json!({"type": "workspace_build"})).await);
        wait_status(&app, &owner, &job, &["running"], 30).await;
        let pid = Pid::from_raw(daemon.0.id() as i32);
        kill(pid, Signal::SIGINT).unwrap();
        eventually(Duration::from_secs(10), "the daemon to stop acquiring", || async {
            std::fs::read_to_string(&log).unwrap().contains("stopping; running jobs may finish")
        })
        .await;
        assert!(daemon.0.try_wait().unwrap().is_none(), "the first Ctrl-C lets the job run");
        assert_eq!(app.status_of(&owner, &job).await, "running", "the first Ctrl-C lets the job run");
        kill(pid, Signal::SIGINT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while daemon.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the daemon did not stop on a second Ctrl-C");
            std::thread::sleep(Duration::from_millis(50));
        }
        let end = app.status_of(&owner, &job).await;
        assert!(end == "failed" || end == "canceled", "the stopped job was reported: {end}");
        assert_eq!(daemon_status(&app, &owner, "leaving").await.as_deref(), Some("offline"));
    }

    async fn status_whoami_create_and_the_jobs_table_tell_an_operator_what_is_going_on(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let home = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| cli(&app.base, &owner, home.path(), args);

        let (code, out, err) = run(&["provisioner", "jobs", "create", "--type", "workspace_build", "--tag", "os=linux"]);
        assert_eq!(code, 0, "{err}");
        let id = out.trim().to_string();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{out}");
        let (code, out, err) = run(&["provisioner", "jobs", "create", "--type", "template_version_import", "--initiator", "prebuilds", "--input", "{\"template_version_id\":\"5b0b6a3e-59c4-4f5f-9d6c-0d3a1c3f1a2b\"}", "-o", "json"]);
        assert_eq!(code, 0, "{err}");
        let created: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(created["type"], "template_version_import");
        let (code, _, err) = run(&["provisioner", "jobs", "create", "--type", "workspace_build", "--input", "nope"]);
        assert_eq!(code, 2, "{err}");

        let (code, out, err) = run(&["status", "-o", "json"]);
        assert_eq!(code, 0, "{err}");
        let status: Value = serde_json::from_str(&out).unwrap();
        for key in ["organization", "jobs", "pending_unmatched", "oldest_pending_age_seconds", "daemons", "prebuilds_paused"] {
            assert!(status.get(key).is_some(), "{key} missing: {status}");
        }
        assert_eq!(status["jobs"]["pending"], 2);
        assert_eq!(status["pending_unmatched"], 2);
        let (code, out, _) = run(&["status"]);
        assert_eq!(code, 0);
        assert!(out.contains("Pending       2 no online daemon can run"), "{out}");
        assert!(out.contains("Daemons       idle 0  busy 0  offline 0"), "{out}");

        let (code, out, _) = run(&["whoami", "-o", "json"]);
        assert_eq!(code, 0);
        let me: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(me["username"], "owner");
        assert_eq!(me["roles"], json!(["owner"]));
        let (code, out, _) = run(&["users", "list"]);
        assert_eq!(code, 0);
        assert!(out.contains("owner@example.com") && !out.contains("prebuilds"), "{out}");

        let (code, out, err) = run(&["provisioner", "jobs", "list", "-l", "1"]);
        assert_eq!(code, 0);
        let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["CREATED", "AT", "ID", "TYPE", "STATUS", "INITIATOR", "QUEUE", "TAGS"]);
        let row = out.lines().nth(1).unwrap();
        assert!(row.contains("s ago") && row.contains("prebuilds") && row.contains("unmatched"), "{out}");
        assert!(err.contains("Showing the newest 1 jobs"), "{err}");
        let (_, out, _) = run(&["provisioner", "jobs", "show", &id]);
        let keys: Vec<&str> = out.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(keys[..6], ["ID", "Status", "Type", "Initiator", "Tags", "Queue"], "{out}");

        // --watch redraws in place every 2 s.
        let mut watch = provq(home.path())
            .args(["provisioner", "jobs", "list", "--watch"])
            .env("PROVQ_URL", &app.base)
            .env("PROVQ_SESSION_TOKEN", &owner)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let shown = Output::of(watch.stdout.take().unwrap());
        let started = Instant::now();
        shown.wait_for("a second frame", |out| out.matches("\x1b[H\x1b[2J").count() >= 2).await;
        watch.kill().unwrap();
        let _ = watch.wait();
        assert!(started.elapsed() >= Duration::from_millis(1500), "frames 2 s apart, not {:?}", started.elapsed());

        // Following a pending job no daemon can run says so; the outcome ends the output.
        let follow = provq(home.path())
            .args(["provisioner", "jobs", "logs", &id, "-f", "--exit-status"])
            .env("PROVQ_URL", &app.base)
            .env("PROVQ_SESSION_TOKEN", &owner)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut follow = follow;
        let (stdout, stderr) = (Output::of(follow.stdout.take().unwrap()), Output::of(follow.stderr.take().unwrap()));
        stderr.wait_for("the note that no daemon can run it", |err| err.contains("no online daemon can run it")).await;
        run(&["provisioner", "jobs", "cancel", &id]);
        let status = tokio::task::spawn_blocking(move || follow.wait().unwrap()).await.unwrap();
        let stdout = stdout.finished().await;
        assert_eq!(stdout.lines().last(), Some(format!("Job {id} canceled.").as_str()), "{stdout}");
        assert_eq!(status.code(), Some(1), "--exit-status: only succeeded exits 0");

        // A member is told the owner role is needed; a wrong -O names the organization.
        let member = app.member(&owner, "alice").await;
        let (code, _, err) = cli(&app.base, &member, home.path(), &["provisioner", "jobs", "list"]);
        assert_eq!(code, 1);
        assert!(err.contains("needs the owner role"), "{err}");
        let (code, _, err) = run(&["provisioner", "jobs", "list", "-O", "nosuchorg"]);
        assert_eq!(code, 1);
        assert!(err.contains("organization \"nosuchorg\" not found"), "{err}");

        // Colours on a terminal do not shift the columns.
        let env = [("PROVQ_URL", app.base.as_str()), ("PROVQ_SESSION_TOKEN", owner.as_str())];
        let t = Terminal::start(home.path(), &format!("{BIN} provisioner jobs list -c status,id"), &env);
        let (code, screen) = t.wait();
        assert_eq!(code, 0, "{screen}");
        assert!(screen.contains("\x1b[33mcanceled\x1b[0m"), "{screen:?}");
        let plain = strip_ansi(&screen);
        let lines: Vec<&str> = plain.lines().collect();
        let at = lines[0].find("ID").unwrap();
        assert!(lines[1..].iter().all(|l| l.len() > at && l.as_bytes()[at - 1] == b' ' && l.as_bytes()[at] != b' '), "{plain}");

        // logout ends the session and forgets it.
        let (code, _, err) = cli(&app.base, &owner, home.path(), &["login", &app.base, "--email", OWNER_EMAIL, "--password", OWNER_PASSWORD]);
        assert_eq!(code, 0, "{err}");
        let out = provq(home.path()).args(["logout"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(!home.path().join("provq/session.json").exists());
        let out = provq(home.path()).args(["whoami"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
    }
}

/// Bad flag values exit 2 before any request: the URL points nowhere, so a request would exit 1.
#[test]
fn bad_flag_values_are_usage_errors_before_any_request() {
    let home = tempfile::tempdir().unwrap();
    let nowhere = ["--url", "http://127.0.0.1:9", "--token", "x"];
    for (args, says) in [
        (
            vec!["provisioner", "jobs", "list", "-s", "bogus"],
            "not a valid status",
        ),
        (
            vec!["provisioner", "jobs", "list", "--search", "status:bogus"],
            "not a valid status",
        ),
        (vec!["provisioner", "jobs", "list", "-l", "0"], "0"),
        (
            vec!["provisioner", "jobs", "list", "--id", "nope"],
            "not a job id",
        ),
        (
            vec!["provisioner", "jobs", "list", "-c", "foo"],
            "valid columns: id, created_at",
        ),
        (vec!["provisioner", "jobs", "show", "nope"], "not a job id"),
        (
            vec!["provisioner", "jobs", "cancel", "--status", "pending"],
            "--yes",
        ),
    ] {
        let out = provq(home.path())
            .args(&args)
            .args(nowhere)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = provq(home.path())
        .args([
            "provisioner",
            "jobs",
            "list",
            "--url",
            "127.0.0.1:8080",
            "--token",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs http:// or https://"));
    let out = provq(home.path())
        .args(["login", "127.0.0.1:8080"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `provq openapi | head` and `provq completion zsh | head -1`: the reader leaves early.
#[test]
fn a_closed_pipe_ends_quietly() {
    let home = tempfile::tempdir().unwrap();
    for args in [vec!["openapi"], vec!["completion", "zsh"]] {
        let mut child = provq(home.path())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

/// Login against something that is not provq, and https against plain HTTP, say so.
#[test]
fn login_explains_a_wrong_server() {
    let home = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot here\n");
        }
    });
    let out = provq(home.path())
        .args([
            "login",
            &format!("http://{addr}"),
            "--email",
            "a@example.com",
            "--password",
            "whatever1",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not a provq server"), "{err}");
    let out = provq(home.path())
        .args([
            "login",
            &format!("https://{addr}"),
            "--email",
            "a@example.com",
            "--password",
            "whatever1",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not speak TLS"), "{err}");
    assert!(!err.contains("InvalidContentType"), "{err}");
}

/// Reads one HTTP request with a `Content-Length` body (or until the peer stops sending).
fn read_request(conn: &mut std::net::TcpStream) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return;
            }
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A dead server: one line when it goes away, retries backing off, timestamps.
#[test]
fn the_daemon_backs_off_quietly_on_a_dead_server() {
    let home = tempfile::tempdir().unwrap();
    // A server that hangs up on every connection, counting the daemon's attempts.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    std::thread::spawn(move || {
        for conn in dead.incoming() {
            // Read the whole request first: closing with unread bytes would reset the
            // connection instead, a different failure than the others.
            if let Ok(mut conn) = conn {
                read_request(&mut conn);
            }
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let child = provq(home.path())
        .args([
            "provisioner",
            "start",
            "--url",
            &url,
            "--psk",
            "x",
            "--exec",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Three attempts: the first, and two after backing off (1 s, then 2 s, with jitter).
    let deadline = Instant::now() + Duration::from_secs(20);
    while attempts.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the daemon stopped retrying");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("cannot acquire").count(),
        1,
        "one line per state change: {err}"
    );
    assert!(!err.contains("provq login"), "{err}");
    assert!(
        err.lines().all(|l| l.starts_with("20")),
        "timestamps: {err}"
    );
}

/// The systemd unit in deploy/ is valid (`systemd-analyze verify`, where systemd is installed)
/// and hardened; the Dockerfile runs as a non-root user with a health check on /healthz.
#[test]
fn the_service_files_are_valid_and_hardened() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("deploy/provq.service")).unwrap();
    for setting in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StateDirectory=provq",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting}");
    }
    let has_systemd = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_systemd {
        // verify checks that ExecStart exists: point it at the binary under test.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provq.service");
        std::fs::write(&path, unit.replace("/usr/local/bin/provq", BIN)).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.trim().is_empty(), "{err}");
    } else {
        eprintln!("systemd-analyze not installed: only the unit's settings were checked");
    }
    let docker = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(
        docker.matches("\nFROM ").count() >= 1 && docker.matches("FROM ").count() >= 2,
        "multi-stage"
    );
    assert!(docker.contains("\nUSER provq"), "non-root");
    assert!(docker.contains("HEALTHCHECK") && docker.contains("/healthz"));
}
