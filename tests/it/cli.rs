//! The `provq` binary itself: `serve` start-up and shutdown, configuration layers and errors,
//! `migrate`, `login` and `users create`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::backend_tests;
use crate::helpers::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_provq");

/// A `provq` command with a clean environment: no saved session, no stray `PROVQ_*`.
pub fn provq(home: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("PROVQ_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("XDG_CONFIG_HOME", home)
        .env("HOME", home)
        .current_dir(home);
    cmd
}

/// A running `provq serve` child process.
pub struct ServeProcess {
    pub child: Child,
    pub url: String,
    /// The rest of stdout, kept open so later start-up lines have a reader.
    #[allow(dead_code)]
    pub stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl ServeProcess {
    /// Starts `provq serve` and waits for its `listening on` line.
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn provq serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a line on stdout").expect("utf-8");
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_string();
        Self {
            child,
            url,
            stdout: lines,
        }
    }

    /// SIGTERM, then the exit status (within 10 s, as the contract promises).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "provq did not exit within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exec(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run provq");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

backend_tests! {
    async fn serve_prints_its_address_and_exits_cleanly_on_sigterm(backend: Backend) {
        let (_db, url) = TestDatabase::create(backend).await;
        let home = tempfile::tempdir().unwrap();
        let mut cmd = provq(home.path());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--prometheus-listen", "", "--database-url", &url]);
        let server = ServeProcess::start(cmd);
        assert!(server.url.starts_with("http://127.0.0.1:"));
        assert!(!server.url.ends_with(":0"), "the real port is printed");
        let body = http_client().get(format!("{}/healthz", server.url)).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "OK");
        let status = server.terminate();
        assert_eq!(status.code(), Some(0));
    }

    async fn login_creates_the_first_user_then_users_create_adds_a_member(backend: Backend) {
        let (_db, url) = TestDatabase::create(backend).await;
        let home = tempfile::tempdir().unwrap();
        let mut cmd = provq(home.path());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--prometheus-listen", "", "--database-url", &url]);
        let server = ServeProcess::start(cmd);
        let (code, out, err) = exec(provq(home.path()).args([
            "login", &server.url, "--username", "admin", "--email", "admin@example.com", "--password", "S3cure-pass",
        ]));
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("Created the first user admin"), "{out}");
        assert!(home.path().join("provq/session.json").exists());

        let (code, out, err) = exec(provq(home.path()).args([
            "users", "create", "--username", "alice", "--email", "alice@example.com", "--password", "alice-pass",
        ]));
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("Created user alice"), "{out}");

        // Logging in again (the first user exists now) just logs in.
        let (code, out, err) = exec(provq(home.path()).args([
            "login", &server.url, "--email", "alice@example.com", "--password", "alice-pass",
        ]));
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, _) = exec(provq(home.path()).args(["users", "show"]));
        assert_eq!(code, 0);
        assert!(out.contains("\"username\": \"alice\""), "{out}");

        // A failed request exits 1 and prints the server's message.
        let (code, _, err) = exec(provq(home.path()).args([
            "users", "create", "--username", "eve", "--email", "eve@example.com", "--password", "eve-pass-1",
        ]));
        assert_eq!(code, 1);
        assert!(err.contains("Forbidden."), "{err}");
        server.terminate();
    }

    async fn migrate_status_down_and_up_work_from_the_command_line(backend: Backend) {
        let (_db, url) = TestDatabase::empty(backend).await;
        let home = tempfile::tempdir().unwrap();
        let (code, out, err) = exec(provq(home.path()).args(["migrate", "up", "--database-url", &url]));
        assert_eq!(code, 0, "{out}{err}");
        let (_, out, _) = exec(provq(home.path()).args(["migrate", "status", "--database-url", &url]));
        assert!(out.lines().all(|l| l.starts_with("applied")), "{out}");
        let (code, _, err) = exec(provq(home.path()).args(["migrate", "down", "--steps", "2", "--database-url", &url]));
        assert_eq!(code, 0, "{err}");
        let (_, out, _) = exec(provq(home.path()).args(["migrate", "status", "--database-url", &url]));
        assert_eq!(out.lines().filter(|l| l.starts_with("pending")).count(), 2, "{out}");
        let (code, _, _) = exec(provq(home.path()).args(["migrate", "up", "--database-url", &url]));
        assert_eq!(code, 0);
    }
}

#[test]
fn a_bad_environment_value_stops_the_start_naming_the_key() {
    let home = tempfile::tempdir().unwrap();
    let (code, _, err) = exec(
        provq(home.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("PROVQ_REAPER__HUNG_AFTER_SECS", "soon"),
    );
    assert_ne!(code, 0);
    assert!(err.contains("reaper.hung_after_secs"), "{err}");
}

#[test]
fn config_file_errors_name_the_key() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("bad.toml");
    for (content, key) in [
        ("listen = \"nowhere\"\n", "listen"),
        ("[reaper]\nhung_afer_secs = 5\n", "hung_afer_secs"),
        ("log_format = \"xml\"\n", "log_format"),
        ("database_url = \"mysql://x\"\n", "database_url"),
    ] {
        std::fs::write(&file, content).unwrap();
        let (code, _, err) =
            exec(provq(home.path()).args(["serve", "--config", file.to_str().unwrap()]));
        assert_ne!(code, 0, "{content}");
        assert!(err.contains(key), "{content}: {err}");
    }
    let (code, _, err) = exec(provq(home.path()).args(["serve", "--config", "/no/such/file.toml"]));
    assert_ne!(code, 0);
    assert!(err.contains("/no/such/file.toml"), "{err}");
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("provq.toml");
    let db = home.path().join("layers.db");
    std::fs::write(
        &file,
        format!("listen = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{}?mode=rwc\"\n[prometheus]\nlisten = \"\"\n", db.display()),
    )
    .unwrap();
    // The environment overrides the file: an invalid listen address from PROVQ_LISTEN stops it.
    let (code, _, err) = exec(
        provq(home.path())
            .args(["serve", "--config", file.to_str().unwrap()])
            .env("PROVQ_LISTEN", "bad-address"),
    );
    assert_ne!(code, 0);
    assert!(err.contains("`listen`"), "{err}");
    // The flag overrides the environment.
    let mut cmd = provq(home.path());
    cmd.args([
        "serve",
        "--config",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .env("PROVQ_LISTEN", "bad-address");
    let server = ServeProcess::start(cmd);
    assert!(db.exists(), "the file's database_url was used");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn client_commands_without_a_session_say_how_to_log_in() {
    let home = tempfile::tempdir().unwrap();
    let (code, _, err) = exec(provq(home.path()).args(["users", "show"]));
    assert_eq!(code, 1);
    assert!(err.contains("provq login"), "{err}");
    let (code, _, err) = exec(provq(home.path()).args([
        "users",
        "show",
        "--url",
        "http://127.0.0.1:9",
        "--token",
        "x",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");
    let (code, _, _) = exec(provq(home.path()).args(["no-such-command"]));
    assert_eq!(code, 2);
}
