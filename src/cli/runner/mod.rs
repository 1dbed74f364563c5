//! `provq provisioner start`: a provisioner daemon. It long-polls for jobs and runs `--exec`
//! for each one: the job JSON on stdin, `PROVQ_JOB_*` in the environment, output lines sent as
//! logs in batches, heartbeats while it runs, SIGINT then SIGKILL when the job is canceled, and
//! complete on exit 0 or fail with the exit status and the last output line otherwise.
//!
//! It speaks the batched worker protocol (`POST /provisionerd/acquire-jobs`): one call reports
//! the job that just finished and acquires as many jobs as slots are free (`--concurrency`), so
//! a busy daemon makes one call per job. A job that ends while the daemon is already waiting
//! for work is reported on its own (`/complete` or `/fail`), as are reports during shutdown and
//! reports whose call got no answer.
//!
//! SIGTERM or SIGINT: stop acquiring, let running jobs finish for `--shutdown-grace`, then stop
//! them and fail them, and exit; a second signal stops them at once. The signals drive the one
//! shutdown wiring every process uses ([`crate::shutdown::on_termination`]).
//!
//! Reports survive a server or database blip: a `complete` or `fail` that gets no answer, a 408,
//! 429 or 5xx is retried with backoff (0.5 s doubling to 5 s, never sooner than `Retry-After`)
//! for up to `--report-timeout` after the command exits; a log update that fails keeps its lines
//! and is retried on a later beat. A 409 or 404 means the lease is gone: nothing more is sent.
//!
//! - [`slots`]: the acquire loop and the job slots it fills.
//! - [`job`]: a typed job, what the command sees of it, and how it ended.
//! - [`execute`]: one job's run: the command, its logs and heartbeats, a cancel.
//! - [`process`]: the command as a process group, its output lines and signals.
//! - [`reporter`]: the calls about one job (updates, complete, fail) and their retries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::ClientArgs;
use super::client::{Client, ClientError};
use super::worker_client::{AcquireRequest, WorkerClient};
use crate::shutdown::{Forced, Shutdown, on_termination};

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

mod execute;
mod job;
mod process;
mod reporter;
mod slots;

use reporter::Reporter;
use slots::Slots;

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

/// How long an acquire waits for a job on the server.
const WAIT_SECONDS: i64 = 10;

/// What the daemon shares between its job tasks.
struct Daemon {
    worker: WorkerClient,
    exec: String,
    cancel_grace: Duration,
    heartbeat: Duration,
    report_timeout: Duration,
    reporter: Reporter,
    /// Cancelled when running jobs must stop (shutdown grace elapsed, or a second signal).
    force_stop: Shutdown,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "provq-daemon".into())
}

/// Who the daemon is, as every acquire (and the deregister) says it.
fn registration(args: &StartArgs) -> Result<AcquireRequest, ClientError> {
    let mut tags = BTreeMap::new();
    for t in &args.tags {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| ClientError::Usage(format!("tag \"{t}\" must look like key=value")))?;
        tags.insert(k.to_string(), v.to_string());
    }
    let mut request = AcquireRequest::named(args.name.clone().unwrap_or_else(hostname));
    request.provisioners = Some(args.provisioner.clone());
    request.wait_seconds = Some(WAIT_SECONDS);
    request.version = Some(env!("CARGO_PKG_VERSION").to_string());
    if args.key.is_none() {
        request.tags = Some(serde_json::json!(tags));
    }
    request.organization = args.org.clone();
    Ok(request)
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
    let request = registration(&args)?;
    if args.concurrency == 0 {
        return Err(ClientError::Usage("--concurrency must be at least 1".into()).into());
    }
    // The first signal stops acquiring; a second one, or --shutdown-grace passing after the
    // first, stops the running jobs (they are still reported).
    let stages = on_termination(Some(Duration::from_secs(args.shutdown_grace)))?;
    let worker = WorkerClient::from_client(client);
    let daemon = Arc::new(Daemon {
        reporter: Reporter::new(worker.clone(), stages.forced.clone()),
        worker,
        exec: args.exec.clone(),
        cancel_grace: Duration::from_secs(args.cancel_grace),
        heartbeat: Duration::from_secs(args.heartbeat.max(1)),
        report_timeout: Duration::from_secs(args.report_timeout),
        force_stop: stages.forced.clone(),
    });
    say!(
        "{}: waiting for jobs on {url}",
        request.name.as_deref().unwrap_or_default()
    );
    let mut slots = Slots::new(daemon.clone(), args.concurrency);
    slots.run(&request, &url, &stages.graceful).await?;
    say!(
        "stopping; running jobs may finish within --shutdown-grace (press Ctrl-C again to stop them now)"
    );
    let drained = tokio::select! {
        () = slots.drain() => true,
        () = stages.forced.cancelled() => false,
    };
    if !drained {
        match stages.forced_by() {
            Some(Forced::Deadline) => say!(
                "jobs still running after {}s; stopping them",
                args.shutdown_grace
            ),
            _ => say!("stopping running jobs now"),
        }
        slots.drain().await;
    }
    deregister(&daemon.worker, &request).await;
    Ok(())
}

/// Tells the server this daemon is gone, so it is listed offline at once rather than idle
/// until it goes stale. Best effort: a server that is down will see it go stale anyway.
async fn deregister(worker: &WorkerClient, request: &AcquireRequest) {
    let sent = tokio::time::timeout(Duration::from_secs(5), worker.deregister(request)).await;
    match sent {
        Ok(Ok(())) => say!("deregistered; exiting"),
        Ok(Err(e)) => say!("could not deregister ({}); exiting", reporter::brief(&e)),
        Err(_) => say!("could not deregister (no answer within 5s); exiting"),
    }
}
