//! `provq provisioner start`: a provisioner daemon. It long-polls for jobs and runs `--exec`
//! for each one: the job JSON on stdin, `PROVQ_JOB_*` in the environment, output lines sent as
//! logs in batches, heartbeats while it runs, SIGINT then SIGKILL when the job is canceled, and
//! complete on exit 0 or fail with the exit status and the last output line otherwise.
//!
//! SIGTERM or SIGINT: stop acquiring, let running jobs finish for `--shutdown-grace`, then stop
//! them and fail them, and exit.
//!
//! Reports survive a server or database blip: a `complete` or `fail` that gets no answer, a 408,
//! 429 or 5xx is retried with backoff (0.5 s doubling to 5 s, never sooner than `Retry-After`)
//! for up to `--report-timeout` after the command exits; a log update that fails keeps its lines
//! and is retried on a later beat. A 409 or 404 means the lease is gone: nothing more is sent.

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
/// Lines held while the server cannot take them; past this the command's output waits (its pipe
/// fills and its writes block) rather than lines being dropped.
const MAX_BUFFERED_LINES: usize = 10_000;
/// First wait before retrying a report, doubled after each failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);

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
    /// Seconds a job's final logs and its complete/fail are retried after the command exits while
    /// the server is unreachable or answers 408, 429 or 5xx (e.g. its database is restarting).
    /// Past that the server's reaper fails the job as hung anyway: keep it near the server's
    /// `reaper.hung_after_secs`.
    #[arg(long, default_value_t = 300)]
    report_timeout: u64,
}

/// What the daemon shares between its job tasks.
struct Daemon {
    client: Client,
    exec: String,
    cancel_grace: Duration,
    heartbeat: Duration,
    report_timeout: Duration,
    /// Cancelled when running jobs must stop (shutdown grace elapsed).
    force_stop: Shutdown,
}

/// One line on the daemon's stderr, stamped with the UTC time (journald and log files keep the
/// order, people see when).
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!(
            "{} provq daemon: {}",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            format_args!($($arg)*)
        )
    };
}

/// First and longest wait between acquire attempts while the server is unreachable.
const ACQUIRE_RETRY_FIRST: Duration = Duration::from_secs(1);
const ACQUIRE_RETRY_MAX: Duration = Duration::from_secs(60);

/// `base` with ±25 % of random jitter, so a fleet of daemons does not retry in step.
fn jittered(base: Duration) -> Duration {
    use rand::Rng;
    base.mul_f64(rand::rng().random_range(0.75..1.25))
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
    let force_stop = Shutdown::new();
    let (on_signal, on_second) = (stop.clone(), force_stop.clone());
    let signal = termination_signal()?;
    tokio::spawn(async move {
        signal.await;
        say!(
            "stopping; running jobs may finish within --shutdown-grace (press Ctrl-C again to stop them now)"
        );
        on_signal.cancel();
        // A second signal stops the running jobs at once (they are still reported).
        if let Ok(again) = termination_signal() {
            again.await;
            say!("stopping running jobs now");
            on_second.cancel();
        }
    });
    let daemon = Arc::new(Daemon {
        client,
        exec: args.exec.clone(),
        cancel_grace: Duration::from_secs(args.cancel_grace),
        heartbeat: Duration::from_secs(args.heartbeat.max(1)),
        report_timeout: Duration::from_secs(args.report_timeout),
        force_stop,
    });
    say!("{name}: waiting for jobs on {url}");
    let slots = Arc::new(Semaphore::new(args.concurrency));
    let mut running = JoinSet::new();
    // While the server is unreachable: the next wait, and the reason last reported (one line
    // per change, not one per attempt).
    let mut retry = ACQUIRE_RETRY_FIRST;
    let mut outage: Option<String> = None;
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
        if acquired.is_ok()
            && let Some(reason) = outage.take()
        {
            say!("the server answers again (it was: {reason}); waiting for jobs");
            retry = ACQUIRE_RETRY_FIRST;
        }
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
                let reason = brief(&e);
                if outage.as_deref() != Some(reason.as_str()) {
                    say!(
                        "cannot acquire from {url}: {reason}; retrying with backoff (up to {}s)",
                        ACQUIRE_RETRY_MAX.as_secs()
                    );
                    outage = Some(reason);
                }
                let delay = jittered(retry);
                retry = (retry * 2).min(ACQUIRE_RETRY_MAX);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
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
        say!(
            "jobs still running after {}s; stopping them",
            grace.as_secs()
        );
        daemon.force_stop.cancel();
        while running.join_next().await.is_some() {}
    }
    deregister(&daemon.client, &request).await;
    Ok(())
}

/// Tells the server this daemon is gone, so it is listed offline at once rather than idle
/// until it goes stale. Best effort: a server that is down will see it go stale anyway.
async fn deregister(client: &Client, request: &Value) {
    let sent = tokio::time::timeout(
        Duration::from_secs(5),
        client.raw(Method::POST, "/provisionerd/deregister", Some(request)),
    )
    .await;
    match sent {
        Ok(Ok(_)) => say!("deregistered; exiting"),
        Ok(Err(e)) => say!("could not deregister ({}); exiting", brief(&e)),
        Err(_) => say!("could not deregister (no answer within 5s); exiting"),
    }
}

/// One line of output on its way to the server.
struct Line {
    level: &'static str,
    output: String,
}

/// What a failed report means for the next attempt.
enum Failure {
    /// No answer, or one that says "later" (408, 429, 5xx): retry, not sooner than this.
    Transient(Option<Duration>),
    /// 409 or 404: the job is no longer this daemon's (reaped, canceled, finished).
    LeaseLost,
    /// Any other answer (400, 401, 403): retrying would not help.
    Rejected,
}

fn classify(error: &ClientError) -> Failure {
    match error {
        ClientError::Unreachable { .. } => Failure::Transient(None),
        ClientError::Api(f) if f.status == StatusCode::CONFLICT => Failure::LeaseLost,
        ClientError::Api(f) if f.status == StatusCode::NOT_FOUND => Failure::LeaseLost,
        ClientError::Api(f)
            if f.status.is_server_error()
                || f.status == StatusCode::REQUEST_TIMEOUT
                || f.status == StatusCode::TOO_MANY_REQUESTS =>
        {
            Failure::Transient(f.retry_after)
        }
        _ => Failure::Rejected,
    }
}

/// One line about a failed report, for the daemon's stderr.
fn brief(error: &ClientError) -> String {
    match error {
        ClientError::Unreachable { reason, .. } => format!("no answer: {reason}"),
        ClientError::Api(f) => format!("{} {}", f.status.as_u16(), f.message),
        other => other.to_string(),
    }
}

/// Waits between retries: 0.5 s doubling to 5 s, and never less than the server's `Retry-After`
/// (capped at 5 s too).
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: RETRY_FIRST }
    }

    fn delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let delay = self
            .next
            .max(retry_after.unwrap_or_default())
            .min(RETRY_MAX);
        self.next = (self.next * 2).min(RETRY_MAX);
        delay
    }
}

impl Daemon {
    async fn report(
        &self,
        id: &str,
        action: &str,
        body: &Value,
    ) -> Result<(StatusCode, String), ClientError> {
        self.client
            .raw(
                Method::POST,
                &format!("/provisionerd/jobs/{id}/{action}"),
                Some(body),
            )
            .await
    }

    /// Sleeps for `delay` unless that would pass `deadline` or the daemon must stop now; false
    /// when the caller should give up instead.
    async fn wait_to_retry(&self, delay: Duration, deadline: Instant) -> bool {
        if Instant::now() + delay > deadline {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.force_stop.cancelled() => false,
        }
    }

    /// Sends `complete` or `fail`, retrying until the server takes it, refuses it for good, or
    /// `deadline` passes.
    async fn finish(&self, id: &str, action: &str, body: Value, deadline: Instant) {
        let mut backoff = Backoff::new();
        // Whether an earlier attempt may have been applied although its answer was lost.
        let mut maybe_applied = false;
        loop {
            let error = match self.report(id, action, &body).await {
                Ok(_) => {
                    say!("job {id} reported ({action})");
                    return;
                }
                Err(e) => e,
            };
            match classify(&error) {
                Failure::LeaseLost if maybe_applied => {
                    say!(
                        "{action} of job {id}: {}; an earlier attempt may have been \
                         applied, or the job was reaped",
                        brief(&error)
                    );
                    return;
                }
                Failure::LeaseLost => {
                    say!(
                        "job {id} is no longer ours ({}): not reported",
                        brief(&error)
                    );
                    return;
                }
                Failure::Rejected => {
                    say!("could not report job {id}: {error}");
                    return;
                }
                Failure::Transient(retry_after) => {
                    maybe_applied = true;
                    let delay = backoff.delay(retry_after);
                    if !self.wait_to_retry(delay, deadline).await {
                        say!(
                            "giving up on the {action} of job {id} ({}); the \
                             server's reaper will fail it as hung",
                            brief(&error)
                        );
                        return;
                    }
                    say!(
                        "{action} of job {id} failed ({}); retried after {delay:?}",
                        brief(&error)
                    );
                }
            }
        }
    }

    async fn run_job(&self, job: Value) {
        let id = job["job_id"].as_str().unwrap_or_default().to_string();
        let lease = job["lease_token"].as_str().unwrap_or_default().to_string();
        say!("running job {id}");
        match self.execute(&id, &lease, &job).await {
            Outcome::Exited {
                error: None,
                deadline,
            } => {
                self.finish(&id, "complete", json!({"lease_token": lease}), deadline)
                    .await
            }
            Outcome::Exited {
                error: Some(error),
                deadline,
            } => {
                let body = json!({"lease_token": lease, "error": error});
                self.finish(&id, "fail", body, deadline).await
            }
            Outcome::LeaseLost => {
                say!("job {id} is no longer ours (reaped or finished elsewhere)")
            }
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
            Err(e) => {
                return Outcome::Exited {
                    error: Some(format!("cannot start the command: {e}")),
                    deadline: Instant::now() + self.report_timeout,
                };
            }
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
        // After a failed update, no other is sent before this (the lines stay buffered).
        let mut retry_at: Option<Instant> = None;
        let mut backoff = Backoff::new();
        let mut failing = false;
        let status = loop {
            let waiting = retry_at.is_some_and(|at| Instant::now() < at);
            tokio::select! {
                status = child.wait() => break status,
                Some(line) = rx.recv(), if buffer.len() < MAX_BUFFERED_LINES => {
                    buffer.push(line);
                    if buffer.len() < BATCH_LINES || waiting {
                        continue;
                    }
                }
                _ = ticker.tick() => {
                    if let Some(at) = kill_at && Instant::now() >= at {
                        signal(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    if waiting || (buffer.is_empty() && last_report.elapsed() < self.heartbeat) {
                        continue;
                    }
                }
                () = self.force_stop.cancelled(), if kill_at.is_none() => {
                    interrupt(pid, &self.exec);
                    kill_at = Some(Instant::now() + self.cancel_grace);
                    continue;
                }
            }
            match self.flush(id, lease, &mut buffer, &mut failing).await {
                Flush::Ok { canceled } => {
                    last_report = Instant::now();
                    retry_at = None;
                    backoff = Backoff::new();
                    if canceled && kill_at.is_none() {
                        say!("job {id} canceled; sending SIGINT");
                        interrupt(pid, &self.exec);
                        kill_at = Some(Instant::now() + self.cancel_grace);
                    }
                }
                Flush::LeaseLost => {
                    signal(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait().await;
                    return Outcome::LeaseLost;
                }
                Flush::Retry { retry_after } => {
                    retry_at = Some(Instant::now() + backoff.delay(retry_after));
                }
            }
        };
        // The command exited: take what its readers still have (they end at EOF). A process it
        // left behind may hold the output open; the whole group is killed once the cancel grace
        // (or, without a cancel, the same time after the exit) has passed.
        let kill_group_at = kill_at.unwrap_or_else(|| Instant::now() + self.cancel_grace);
        let mut group_killed = false;
        loop {
            tokio::select! {
                line = rx.recv() => match line {
                    Some(line) => buffer.push(line),
                    None => break,
                },
                () = tokio::time::sleep_until(kill_group_at), if !group_killed => {
                    say!("job {id}: processes of the command still hold its output; killing its process group");
                    signal(pid, nix::sys::signal::Signal::SIGKILL);
                    group_killed = true;
                }
            }
        }
        while readers.join_next().await.is_some() {}
        let deadline = Instant::now() + self.report_timeout;
        let mut backoff = Backoff::new();
        while !buffer.is_empty() {
            match self.flush(id, lease, &mut buffer, &mut failing).await {
                Flush::LeaseLost => return Outcome::LeaseLost,
                Flush::Ok { .. } => {}
                Flush::Retry { retry_after } => {
                    if !self
                        .wait_to_retry(backoff.delay(retry_after), deadline)
                        .await
                    {
                        say!("job {id}: {} log lines could not be sent", buffer.len());
                        break;
                    }
                }
            }
        }
        let last = last_line.lock().await.clone();
        let error = match status {
            Ok(s) if s.success() => None,
            Ok(s) => Some(describe_exit(s, &last)),
            Err(e) => Some(format!("waiting for the command failed: {e}")),
        };
        Outcome::Exited { error, deadline }
    }

    /// Sends buffered lines (at most a batch) as a heartbeat.
    /// `failing` remembers that the last update failed, so an outage is told in one line when
    /// it starts and one when it ends, not once per beat.
    async fn flush(
        &self,
        id: &str,
        lease: &str,
        buffer: &mut Vec<Line>,
        failing: &mut bool,
    ) -> Flush {
        let take = buffer.len().min(BATCH_LINES);
        let logs: Vec<Value> = buffer[..take]
            .iter()
            .map(|l| json!({"level": l.level, "stage": "Executing", "output": l.output, "source": "provisioner"}))
            .collect();
        let body = json!({"lease_token": lease, "logs": logs});
        match self.report(id, "update", &body).await {
            Ok((_, body)) => {
                buffer.drain(..take);
                if std::mem::take(failing) {
                    say!("updates of job {id} go through again");
                }
                let body: Value = serde_json::from_str(&body).unwrap_or_default();
                Flush::Ok {
                    canceled: body["canceled"].as_bool().unwrap_or(false),
                }
            }
            Err(e) => match classify(&e) {
                Failure::LeaseLost => Flush::LeaseLost,
                Failure::Transient(retry_after) => {
                    if !std::mem::replace(failing, true) {
                        say!(
                            "update of job {id} failed ({}); its lines are kept and sent once \
                             the server answers",
                            brief(&e)
                        );
                    }
                    Flush::Retry { retry_after }
                }
                Failure::Rejected => {
                    // The server will not take these lines; keep the rest flowing.
                    say!("update of job {id} refused, {take} lines dropped: {e}");
                    buffer.drain(..take);
                    Flush::Retry { retry_after: None }
                }
            },
        }
    }
}

enum Outcome {
    /// The command ended: `error` is `None` on success, else the failure text; its report may be
    /// retried until `deadline`.
    Exited {
        error: Option<String>,
        deadline: Instant,
    },
    LeaseLost,
}

enum Flush {
    Ok {
        canceled: bool,
    },
    LeaseLost,
    /// Not sent (lines kept) or refused (lines dropped): try again later.
    Retry {
        retry_after: Option<Duration>,
    },
}

/// Sends SIGINT to the command's process group, except to the `sh -c` wrapper while it is still
/// the shell: a non-interactive `dash` dies of SIGINT at once, which would hide the command's
/// own exit (a script that traps SIGINT and exits 0 would look "killed by signal 2"). The
/// wrapper then exits with its command's status. Without `/proc` the whole group is signalled.
fn interrupt(pid: Option<nix::unistd::Pid>, exec: &str) {
    use nix::sys::signal::{Signal, kill};
    let Some(leader) = pid else { return };
    let Some(members) = group_members(leader.as_raw()) else {
        return signal(pid, Signal::SIGINT);
    };
    let wrapper = format!("sh\0-c\0{exec}\0");
    for member in members {
        if member == leader.as_raw()
            && std::fs::read(format!("/proc/{member}/cmdline")).ok()
                == Some(wrapper.clone().into_bytes())
        {
            continue;
        }
        let _ = kill(nix::unistd::Pid::from_raw(member), Signal::SIGINT);
    }
}

/// The processes of process group `pgid`, from `/proc` (None where there is no `/proc`).
fn group_members(pgid: i32) -> Option<Vec<i32>> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let pgrp = stat[close + 1..]
            .split_whitespace()
            .nth(2)
            .and_then(|p| p.parse::<i32>().ok());
        if pgrp == Some(pgid) {
            members.push(pid);
        }
    }
    Some(members)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::ApiFailure;

    fn api(status: u16, retry_after: Option<u64>) -> ClientError {
        ClientError::Api(ApiFailure {
            status: StatusCode::from_u16(status).unwrap(),
            message: "m".into(),
            detail: None,
            validations: Vec::new(),
            retry_after: retry_after.map(Duration::from_secs),
            session_hint: false,
        })
    }

    #[test]
    fn later_answers_are_retried_and_lease_answers_stop() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(
                classify(&api(status, None)),
                Failure::Transient(_)
            ));
        }
        let unreachable = ClientError::Unreachable {
            url: "u".into(),
            reason: "r".into(),
        };
        assert!(matches!(classify(&unreachable), Failure::Transient(None)));
        assert!(matches!(
            classify(&api(503, Some(3))),
            Failure::Transient(Some(d)) if d == Duration::from_secs(3)
        ));
        for status in [404, 409] {
            assert!(matches!(classify(&api(status, None)), Failure::LeaseLost));
        }
        for status in [400, 401, 403] {
            assert!(matches!(classify(&api(status, None)), Failure::Rejected));
        }
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_honours_retry_after() {
        let mut b = Backoff::new();
        let delays: Vec<_> = (0..6).map(|_| b.delay(None).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
        let mut b = Backoff::new();
        assert_eq!(
            b.delay(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(b.delay(Some(Duration::from_secs(60))), RETRY_MAX);
    }
}
