//! `provq provisioner start`: a provisioner daemon. It long-polls for jobs and runs `--exec`
//! for each one: the job JSON on stdin, `PROVQ_JOB_*` in the environment, output lines sent as
//! logs in batches, heartbeats while it runs, SIGINT then SIGKILL when the job is canceled, and
//! complete on exit 0 or fail with the exit status and the last output line otherwise.
//!
//! SIGTERM or SIGINT: stop acquiring, let running jobs finish for `--shutdown-grace`, then stop
//! them and fail them, and exit.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::ClientArgs;
use super::client::{Client, ClientError};
use crate::shutdown::{Shutdown, termination_signal};

/// Log lines sent in one update at most.
const BATCH_LINES: usize = 100;
/// How often buffered lines are sent.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

#[derive(Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// A provisioner key (organization and tags come from the key).
    #[arg(
        long,
        env = "PROVQ_PROVISIONER_KEY",
        hide_env_values = true,
        conflicts_with = "psk"
    )]
    key: Option<String>,
    /// The deployment's pre-shared key. Without --key or --psk the session token is used
    /// (owners only).
    #[arg(long, env = "PROVQ_PROVISIONER_PSK", hide_env_values = true)]
    psk: Option<String>,
    /// Tags of this daemon, `key=value` (repeatable; not with --key).
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Provisioners this daemon runs (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "terraform")]
    provisioner: Vec<String>,
    /// Daemon name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Organization (PSK and session auth; default: the default organization).
    #[arg(short = 'O', long)]
    org: Option<String>,
    /// The command run for each job, through `sh -c`.
    #[arg(long)]
    exec: String,
    /// Jobs run at the same time.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds between SIGINT and SIGKILL when a job is canceled.
    #[arg(long, default_value_t = 10)]
    cancel_grace: u64,
    /// Seconds running jobs get to finish after SIGTERM.
    #[arg(long, default_value_t = 60)]
    shutdown_grace: u64,
    /// Seconds between heartbeats while a job prints nothing.
    #[arg(long, default_value_t = 5)]
    heartbeat: u64,
}

/// What the daemon shares between its job tasks.
struct Daemon {
    client: Client,
    exec: String,
    cancel_grace: Duration,
    heartbeat: Duration,
    /// Cancelled when running jobs must stop (shutdown grace elapsed).
    force_stop: Shutdown,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "provq-daemon".into())
}

pub async fn run(args: StartArgs) -> anyhow::Result<()> {
    let url = Client::url_from_args(&args.client)?;
    let client = match (&args.key, &args.psk) {
        (Some(key), _) => {
            Client::anonymous(&url).with_credential("Coder-Provisioner-Daemon-Key", key.clone())
        }
        (None, Some(psk)) => {
            Client::anonymous(&url).with_credential("Coder-Provisioner-Daemon-PSK", psk.clone())
        }
        (None, None) => Client::from_args(&args.client)?,
    };
    let mut tags = BTreeMap::new();
    for t in &args.tags {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| ClientError::Usage(format!("tag \"{t}\" must look like key=value")))?;
        tags.insert(k.to_string(), v.to_string());
    }
    if args.concurrency == 0 {
        return Err(ClientError::Usage("--concurrency must be at least 1".into()).into());
    }
    let name = args.name.clone().unwrap_or_else(hostname);
    let mut request = json!({"name": name, "provisioners": args.provisioner, "wait_seconds": 10, "version": env!("CARGO_PKG_VERSION")});
    if args.key.is_none() {
        request["tags"] = json!(tags);
    }
    if let Some(org) = &args.org {
        request["organization"] = json!(org);
    }
    let stop = Shutdown::new();
    let on_signal = stop.clone();
    let signal = termination_signal()?;
    tokio::spawn(async move {
        signal.await;
        eprintln!("provq daemon: stopping; running jobs may finish");
        on_signal.cancel();
    });
    let daemon = Arc::new(Daemon {
        client,
        exec: args.exec.clone(),
        cancel_grace: Duration::from_secs(args.cancel_grace),
        heartbeat: Duration::from_secs(args.heartbeat.max(1)),
        force_stop: Shutdown::new(),
    });
    eprintln!("provq daemon {name}: waiting for jobs on {url}");
    let slots = Arc::new(Semaphore::new(args.concurrency));
    let mut running = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p?,
            () = stop.cancelled() => break,
        };
        let acquired = tokio::select! {
            r = daemon.client.raw(Method::POST, "/provisionerd/acquire", Some(&request)) => r,
            () = stop.cancelled() => break,
        };
        while running.try_join_next().is_some() {}
        match acquired {
            Ok((StatusCode::OK, body)) => {
                let body: Value = serde_json::from_str(&body)?;
                let daemon = daemon.clone();
                running.spawn(async move {
                    let _permit = permit;
                    daemon.run_job(body["job"].clone()).await;
                });
            }
            Ok(_) => {}
            Err(ClientError::Api(f)) if f.status.is_client_error() => {
                return Err(ClientError::Api(f).into());
            }
            Err(e) => {
                eprintln!("provq daemon: {e}; retrying in 2 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }
    let grace = Duration::from_secs(args.shutdown_grace);
    if tokio::time::timeout(grace, async {
        while running.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        eprintln!(
            "provq daemon: jobs still running after {}s; stopping them",
            grace.as_secs()
        );
        daemon.force_stop.cancel();
        while running.join_next().await.is_some() {}
    }
    Ok(())
}

/// One line of output on its way to the server.
struct Line {
    level: &'static str,
    output: String,
}

impl Daemon {
    async fn report(
        &self,
        id: &str,
        action: &str,
        body: Value,
    ) -> Result<(StatusCode, String), ClientError> {
        let mut attempt = 0;
        loop {
            match self
                .client
                .raw(
                    Method::POST,
                    &format!("/provisionerd/jobs/{id}/{action}"),
                    Some(&body),
                )
                .await
            {
                Err(ClientError::Unreachable { .. }) if attempt < 30 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => return other,
            }
        }
    }

    async fn run_job(&self, job: Value) {
        let id = job["job_id"].as_str().unwrap_or_default().to_string();
        let lease = job["lease_token"].as_str().unwrap_or_default().to_string();
        eprintln!("provq daemon: running job {id}");
        let outcome = self.execute(&id, &lease, &job).await;
        let result = match outcome {
            Outcome::Exited(None) => {
                self.report(&id, "complete", json!({"lease_token": lease}))
                    .await
            }
            Outcome::Exited(Some(error)) => {
                self.report(&id, "fail", json!({"lease_token": lease, "error": error}))
                    .await
            }
            Outcome::LeaseLost => {
                eprintln!(
                    "provq daemon: job {id} is no longer ours (reaped or finished elsewhere)"
                );
                return;
            }
        };
        match result {
            Ok(_) => eprintln!("provq daemon: job {id} reported"),
            Err(e) => eprintln!("provq daemon: could not report job {id}: {e}"),
        }
    }

    async fn execute(&self, id: &str, lease: &str, job: &Value) -> Outcome {
        let mut public = job.clone();
        if let Some(o) = public.as_object_mut() {
            o.remove("lease_token");
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&self.exec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .env("PROVQ_JOB_ID", id)
            .env("PROVQ_JOB_TYPE", job["type"].as_str().unwrap_or_default())
            .env(
                "PROVQ_ORGANIZATION_ID",
                job["organization_id"].as_str().unwrap_or_default(),
            )
            .env(
                "PROVQ_INITIATOR_ID",
                job["initiator_id"].as_str().unwrap_or_default(),
            )
            .env(
                "PROVQ_PROVISIONER",
                job["provisioner"].as_str().unwrap_or_default(),
            )
            .env("PROVQ_JOB_TAGS", job["tags"].to_string());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::Exited(Some(format!("cannot start the command: {e}"))),
        };
        let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
        if let Some(mut stdin) = child.stdin.take() {
            let payload = public.to_string();
            tokio::spawn(async move {
                let _ = stdin.write_all(payload.as_bytes()).await;
            });
        }
        let (tx, mut rx) = mpsc::channel::<Line>(1024);
        let last_line = Arc::new(Mutex::new(String::new()));
        let mut readers = JoinSet::new();
        if let Some(out) = child.stdout.take() {
            readers.spawn(read_lines(out, "info", tx.clone(), last_line.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.spawn(read_lines(err, "warn", tx.clone(), last_line.clone()));
        }
        drop(tx);
        let mut buffer: Vec<Line> = Vec::new();
        let mut last_report = Instant::now();
        let mut kill_at: Option<Instant> = None;
        let mut ticker = tokio::time::interval(FLUSH_EVERY);
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                Some(line) = rx.recv() => {
                    buffer.push(line);
                    if buffer.len() < BATCH_LINES {
                        continue;
                    }
                }
                _ = ticker.tick() => {
                    if let Some(at) = kill_at && Instant::now() >= at {
                        signal(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    if buffer.is_empty() && last_report.elapsed() < self.heartbeat {
                        continue;
                    }
                }
                () = self.force_stop.cancelled(), if kill_at.is_none() => {
                    signal(pid, nix::sys::signal::Signal::SIGINT);
                    kill_at = Some(Instant::now() + self.cancel_grace);
                    continue;
                }
            }
            match self.flush(id, lease, &mut buffer).await {
                Flush::Ok { canceled } => {
                    last_report = Instant::now();
                    if canceled && kill_at.is_none() {
                        eprintln!("provq daemon: job {id} canceled; sending SIGINT");
                        signal(pid, nix::sys::signal::Signal::SIGINT);
                        kill_at = Some(Instant::now() + self.cancel_grace);
                    }
                }
                Flush::LeaseLost => {
                    signal(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait().await;
                    return Outcome::LeaseLost;
                }
                Flush::Retry => {}
            }
        };
        while readers.join_next().await.is_some() {}
        while let Ok(line) = rx.try_recv() {
            buffer.push(line);
        }
        while !buffer.is_empty() {
            if let Flush::LeaseLost = self.flush(id, lease, &mut buffer).await {
                return Outcome::LeaseLost;
            }
        }
        let last = last_line.lock().await.clone();
        Outcome::Exited(match status {
            Ok(s) if s.success() => None,
            Ok(s) => Some(describe_exit(s, &last)),
            Err(e) => Some(format!("waiting for the command failed: {e}")),
        })
    }

    /// Sends buffered lines (at most a batch) as a heartbeat.
    async fn flush(&self, id: &str, lease: &str, buffer: &mut Vec<Line>) -> Flush {
        let take = buffer.len().min(BATCH_LINES);
        let logs: Vec<Value> = buffer[..take]
            .iter()
            .map(|l| json!({"level": l.level, "stage": "Executing", "output": l.output, "source": "provisioner"}))
            .collect();
        match self
            .report(id, "update", json!({"lease_token": lease, "logs": logs}))
            .await
        {
            Ok((_, body)) => {
                buffer.drain(..take);
                let body: Value = serde_json::from_str(&body).unwrap_or_default();
                Flush::Ok {
                    canceled: body["canceled"].as_bool().unwrap_or(false),
                }
            }
            Err(ClientError::Api(f))
                if f.status == StatusCode::CONFLICT || f.status == StatusCode::NOT_FOUND =>
            {
                Flush::LeaseLost
            }
            Err(e) => {
                eprintln!("provq daemon: update of job {id} failed: {e}");
                buffer.drain(..take);
                Flush::Retry
            }
        }
    }
}

enum Outcome {
    /// The command ended: `None` on success, else the failure text.
    Exited(Option<String>),
    LeaseLost,
}

enum Flush {
    Ok { canceled: bool },
    LeaseLost,
    Retry,
}

fn signal(pid: Option<nix::unistd::Pid>, sig: nix::sys::signal::Signal) {
    if let Some(pid) = pid {
        // The command runs in its own process group: signal the whole group.
        let _ = nix::sys::signal::killpg(pid, sig);
    }
}

fn describe_exit(status: std::process::ExitStatus, last_line: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exited abnormally".to_string(),
    };
    if last_line.is_empty() {
        how
    } else {
        format!("{how}: {last_line}")
    }
}

async fn read_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    level: &'static str,
    tx: mpsc::Sender<Line>,
    last: Arc<Mutex<String>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if !line.trim().is_empty() {
            *last.lock().await = line.clone();
        }
        if tx
            .send(Line {
                level,
                output: line,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}
