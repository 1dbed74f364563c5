//! One job's run: the command, its output flowing to the server as logs in batches (a
//! heartbeat when it prints nothing), SIGINT then SIGKILL when the job is canceled or the
//! daemon must stop now, and how it ended.

use std::time::Duration;

use tokio::time::Instant;

use super::Daemon;
use super::job::{Finished, Job};
use super::process::{Line, Process};
use super::reporter::{BATCH_LINES, Backoff, Flush};

/// How often buffered lines are sent.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Lines held while the server cannot take them; past this the command's output waits (its pipe
/// fills and its writes block) rather than lines being dropped.
const MAX_BUFFERED_LINES: usize = 10_000;

impl Daemon {
    /// Runs `job`; its report (to send) when the command ended, `None` when the lease was lost
    /// on the way (nothing more may be sent about it).
    pub(super) async fn run_job(&self, job: Job) -> Option<Finished> {
        let id = job.id();
        say!("running job {id}");
        let finished = self.execute(&job).await;
        if finished.is_none() {
            say!("job {id} is no longer ours (reaped or finished elsewhere)");
        }
        finished
    }

    async fn execute(&self, job: &Job) -> Option<Finished> {
        let (id, lease) = (job.id(), job.lease());
        let finished = |error, deadline| Finished {
            job_id: id,
            lease: lease.to_string(),
            error,
            deadline,
        };
        let mut process = match Process::spawn(&self.exec, job) {
            Ok(p) => p,
            Err(e) => {
                let deadline = Instant::now() + self.report_timeout;
                return Some(finished(
                    Some(format!("cannot start the command: {e}")),
                    deadline,
                ));
            }
        };
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
                status = process.child.wait() => break status,
                Some(line) = process.lines.recv(), if buffer.len() < MAX_BUFFERED_LINES => {
                    buffer.push(line);
                    if buffer.len() < BATCH_LINES || waiting {
                        continue;
                    }
                }
                _ = ticker.tick() => {
                    if let Some(at) = kill_at && Instant::now() >= at {
                        process.kill();
                    }
                    if waiting || (buffer.is_empty() && last_report.elapsed() < self.heartbeat) {
                        continue;
                    }
                }
                () = self.force_stop.cancelled(), if kill_at.is_none() => {
                    process.interrupt();
                    kill_at = Some(Instant::now() + self.cancel_grace);
                    continue;
                }
            }
            match self
                .reporter
                .flush(id, lease, &mut buffer, &mut failing)
                .await
            {
                Flush::Ok { canceled } => {
                    last_report = Instant::now();
                    retry_at = None;
                    backoff = Backoff::new();
                    if canceled && kill_at.is_none() {
                        say!("job {id} canceled; sending SIGINT");
                        process.interrupt();
                        kill_at = Some(Instant::now() + self.cancel_grace);
                    }
                }
                Flush::LeaseLost => {
                    process.kill();
                    let _ = process.child.wait().await;
                    return None;
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
                line = process.lines.recv() => match line {
                    Some(line) => buffer.push(line),
                    None => break,
                },
                () = tokio::time::sleep_until(kill_group_at), if !group_killed => {
                    say!("job {id}: processes of the command still hold its output; killing its process group");
                    process.kill();
                    group_killed = true;
                }
            }
        }
        process.readers_done().await;
        let deadline = Instant::now() + self.report_timeout;
        let mut backoff = Backoff::new();
        while !buffer.is_empty() {
            match self
                .reporter
                .flush(id, lease, &mut buffer, &mut failing)
                .await
            {
                Flush::LeaseLost => return None,
                Flush::Ok { .. } => {}
                Flush::Retry { retry_after } => {
                    if !self
                        .reporter
                        .wait_to_retry(backoff.delay(retry_after), deadline)
                        .await
                    {
                        say!("job {id}: {} log lines could not be sent", buffer.len());
                        break;
                    }
                }
            }
        }
        let error = process.failure(status).await;
        Some(finished(error, deadline))
    }
}
