//! The operator's terminal: the seed runbook through the `provq` binary, the reference daemon
//! `provq provisioner start`, and the CLI's output formats.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::cli::provq;
use crate::helpers::*;

/// `provq …` against `app` as the owner; returns (exit code, stdout, stderr).
fn cli(app: &TestApp, token: &str, home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = provq(home)
        .args(args)
        .env("PROVQ_URL", &app.base)
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

const SCRIPT: &str = r#"#!/bin/sh
job=$(cat)
case "$job" in
  *'"template_name":"fail"'*) echo "planning"; echo "boom: resource invalid"; exit 3;;
  *'"template_name":"sleep"'*) trap 'echo "got SIGINT"; exit 130' INT; echo "sleeping"; while true; do sleep 0.1; done;;
  *) echo "hello from $PROVQ_JOB_ID ($PROVQ_JOB_TYPE)"; exit 0;;
esac
"#;

struct DaemonProcess(Child);

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_status(app: &TestApp, owner: &str, id: &str, want: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
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

backend_tests! {
    async fn the_seed_runbook_works_from_the_terminal(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let home = tempfile::tempdir().unwrap();
        for _ in 0..50 {
            app.enqueue(&owner, json!({"type": "workspace_build", "initiator": "prebuilds"})).await;
        }
        let mut humans = Vec::new();
        for _ in 0..3 {
            humans.push(app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string());
        }
        let run = |args: &[&str]| cli(&app, &owner, home.path(), args);

        let (code, out, err) = run(&["prebuilds", "pause"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("paused"), "{out}");
        let (code, out, err) = run(&["provisioner", "jobs", "list", "--initiator", "prebuilds", "--status", "pending", "-o", "json"]);
        assert_eq!(code, 0, "{err}");
        let listed: Value = serde_json::from_str(&out).expect("JSON output parses");
        assert_eq!(listed.as_array().unwrap().len(), 50);
        assert!(listed.as_array().unwrap().iter().all(|j| j["initiator_id"] == "c42fdf75-3097-471c-8c33-fb52454d81c0"));

        let (code, _, err) = run(&["provisioner", "jobs", "cancel"]);
        assert_eq!(code, 2, "no filter at all is refused");
        assert!(err.contains("refusing"), "{err}");
        let (code, out, err) = run(&["provisioner", "jobs", "cancel", "--initiator", "prebuilds", "--status", "pending", "-y"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("Canceled 50 job(s)"), "{out}");

        let (code, out, _) = run(&["provisioner", "jobs", "list", "-s", "pending", "-c", "id"]);
        assert_eq!(code, 0);
        let shown: Vec<String> = out.lines().skip(1).map(|l| l.trim().to_string()).collect();
        let mut expected = humans.clone();
        expected.reverse();
        assert_eq!(shown, expected);
        let (code, out, _) = run(&["provisioner", "jobs", "ls", "--search", "initiator:prebuilds status:pending"]);
        assert_eq!(code, 0);
        assert_eq!(out.trim(), "No provisioner jobs found");
        let (code, out, _) = run(&["prebuilds", "resume"]);
        assert_eq!(code, 0);
        assert!(out.contains("not paused"), "{out}");
    }

    async fn the_reference_daemon_runs_jobs_and_reports_them(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let home = tempfile::tempdir().unwrap();
        let script = home.path().join("job.sh");
        std::fs::write(&script, SCRIPT).unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&script).status().unwrap();
        let ok = app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"os": "linux"}})).await["id"].as_str().unwrap().to_string();
        let fail = app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"os": "linux"}, "metadata": {"template_name": "fail"}})).await["id"].as_str().unwrap().to_string();

        let daemon = provq(home.path())
            .args(["provisioner", "start", "--url", &app.base, "--psk", PSK, "--tag", "os=linux", "--name", "runner", "--heartbeat", "1", "--cancel-grace", "5", "--exec"])
            .arg(&script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = DaemonProcess(daemon);

        assert_eq!(wait_status(&app, &owner, &ok, &["succeeded", "failed"]).await, "succeeded");
        assert_eq!(wait_status(&app, &owner, &fail, &["succeeded", "failed"]).await, "failed");
        let failed = app.job(&owner, &fail).await;
        assert_eq!(failed["error"], "exit status 3: boom: resource invalid");
        assert_eq!(failed["worker_name"], "runner");

        let (code, out, _) = cli(&app, &owner, home.path(), &["provisioner", "jobs", "logs", &ok]);
        assert_eq!(code, 0);
        assert!(out.contains(&format!("hello from {ok} (workspace_build)")), "{out}");

        // Canceled while running: the script gets SIGINT and exits 130, so the job fails.
        let slow = app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"os": "linux"}, "metadata": {"template_name": "sleep"}})).await["id"].as_str().unwrap().to_string();
        wait_status(&app, &owner, &slow, &["running"]).await;
        let (code, out, err) = cli(&app, &owner, home.path(), &["provisioner", "jobs", "cancel", &slow]);
        assert_eq!(code, 0, "{out}{err}");
        let end = wait_status(&app, &owner, &slow, &["canceled", "failed"]).await;
        assert_eq!(end, "failed", "exit 130 after a cancel fails the job (status rules)");
        let (_, out, _) = cli(&app, &owner, home.path(), &["provisioner", "jobs", "logs", &slow]);
        assert!(out.contains("got SIGINT"), "the script saw SIGINT: {out}");

        // SIGTERM: the daemon stops acquiring and exits.
        let mut daemon = daemon;
        kill(Pid::from_raw(daemon.0.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = daemon.0.try_wait().unwrap() {
                assert!(status.success(), "{status:?}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        let later = app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"os": "linux"}})).await["id"].as_str().unwrap().to_string();
        assert_eq!(app.status_of(&owner, &later).await, "pending", "a stopped daemon takes no jobs");
        // Were a long-poll of the stopped daemon still open on the server, the new job would
        // have been offered to it; another daemon asking now gets it instead.
        let probe = app.acquire("probe", json!({"os": "linux"}), 0).await;
        assert_eq!(probe.map(|(id, _)| id), Some(later), "the job waited for a live daemon");
    }

    async fn tables_and_json_come_out_as_documented(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let home = tempfile::tempdir().unwrap();
        let (code, out, _) = cli(&app, &owner, home.path(), &["provisioner", "jobs", "list"]);
        assert_eq!(code, 0);
        assert_eq!(out, "No provisioner jobs found\n");
        app.enqueue(&owner, json!({"type": "template_version_import", "tags": {"os": "linux"}})).await;
        app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        let (code, out, _) = cli(&app, &owner, home.path(), &["provisioner", "jobs", "list", "-c", "type,status,queue,tags"]);
        assert_eq!(code, 0);
        let expected = " TYPE                     STATUS   QUEUE      TAGS\n workspace_build          pending  unmatched  owner= scope=organization\n template_version_import  pending  unmatched  os=linux owner= scope=organization\n";
        assert_eq!(out, expected);
        let (_, out, _) = cli(&app, &owner, home.path(), &["provisioner", "jobs", "list", "-o", "json", "-l", "1"]);
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), 1);
        assert_eq!(parsed[0]["type"], "workspace_build");
        let default_header = cli(&app, &owner, home.path(), &["provisioner", "jobs", "list"]).1;
        assert!(default_header.lines().next().unwrap().split_whitespace().collect::<Vec<_>>() == ["CREATED", "AT", "ID", "TYPE", "STATUS", "INITIATOR", "QUEUE", "TAGS"], "{default_header}");

        let (code, _, err) = cli(&app, &owner, home.path(), &["provisioner", "jobs", "list", "--search", "colour:red"]);
        assert_eq!(code, 2);
        assert!(err.contains("unknown search key"), "{err}");
        let (code, _, err) = cli(&app, &owner, home.path(), &["provisioner", "jobs", "list", "-s", "done"]);
        assert_eq!(code, 2, "a bad status is bad usage, caught before the request");
        assert!(err.contains("status"), "{err}");
        let (code, _, err) = cli(&app, &owner, home.path(), &["provisioner", "jobs", "list", "--token", "abcdefghij-abcdefghijklmnopqrstuv"]);
        assert_eq!(code, 1);
        assert!(err.contains("provq login"), "an invalid session points at provq login: {err}");
        let (code, out, _) = cli(&app, &owner, home.path(), &["provisioner", "keys", "create", "pool", "--tag", "os=linux"]);
        assert_eq!(code, 0);
        assert!(out.trim().len() >= 40);
        let (_, out, _) = cli(&app, &owner, home.path(), &["provisioner", "keys", "list"]);
        assert!(out.contains("pool") && out.contains("os=linux"), "{out}");
        let (code, _, _) = cli(&app, &owner, home.path(), &["provisioner", "keys", "delete", "pool", "-y"]);
        assert_eq!(code, 0);
    }
}

#[test]
fn completion_and_help_are_there() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = provq(home.path())
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("provisioner"),
            "{shell}"
        );
    }
    for args in [
        vec!["provisioner", "jobs", "list", "--help"],
        vec!["provisioner", "start", "--help"],
        vec!["prebuilds", "pause", "--help"],
        vec!["provisioner", "jobs", "cancel", "--help"],
    ] {
        let out = provq(home.path()).args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{args:?} has no example: {text}");
    }
    let _ = Command::new("true");
}
