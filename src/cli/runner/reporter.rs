//! The calls about one job after its acquire: log updates (heartbeats) while it runs, and its
//! `complete` or `fail` when it was not reported with the next acquire; each retried the way
//! its failure calls for.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;
use uuid::Uuid;

use super::job::Finished;
use super::process::Line;
use crate::cli::client::ClientError;
use crate::cli::worker_client::{LogLine, UpdateJobRequest, WorkerClient};
use crate::shutdown::Shutdown;

/// Log lines sent in one update at most.
pub const BATCH_LINES: usize = 100;
/// First wait before retrying a report, doubled after each failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What a failed report means for the next attempt.
pub enum Failure {
    /// No answer, or one that says "later" (408, 429, 5xx): retry, not sooner than this.
    Transient(Option<Duration>),
    /// 409 or 404: the job is no longer this daemon's (reaped, canceled, finished).
    LeaseLost,
    /// Any other answer (400, 401, 403): retrying would not help.
    Rejected,
}

pub fn classify(error: &ClientError) -> Failure {
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

/// One line about a failed call, for the daemon's stderr.
pub fn brief(error: &ClientError) -> String {
    match error {
        ClientError::Unreachable { reason, .. } => format!("no answer: {reason}"),
        ClientError::Api(f) => format!("{} {}", f.status.as_u16(), f.message),
        other => other.to_string(),
    }
}

/// Waits between retries: 0.5 s doubling to 5 s, and never less than the server's `Retry-After`
/// (capped at 5 s too).
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Self {
        Self { next: RETRY_FIRST }
    }

    pub fn delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let delay = self
            .next
            .max(retry_after.unwrap_or_default())
            .min(RETRY_MAX);
        self.next = (self.next * 2).min(RETRY_MAX);
        delay
    }
}

/// What a log update came to.
pub enum Flush {
    Ok {
        canceled: bool,
    },
    LeaseLost,
    /// Not sent (lines kept) or refused (lines dropped): try again later.
    Retry {
        retry_after: Option<Duration>,
    },
}

/// Sends the calls about jobs; shared by every job task.
pub struct Reporter {
    worker: WorkerClient,
    /// Cancelled when running jobs must stop: retries give up then.
    force_stop: Shutdown,
}

impl Reporter {
    pub fn new(worker: WorkerClient, force_stop: Shutdown) -> Self {
        Self { worker, force_stop }
    }

    /// Sleeps for `delay` unless that would pass `deadline` or the daemon must stop now; false
    /// when the caller should give up instead.
    pub async fn wait_to_retry(&self, delay: Duration, deadline: Instant) -> bool {
        if Instant::now() + delay > deadline {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.force_stop.cancelled() => false,
        }
    }

    /// Sends buffered lines (at most a batch) as a heartbeat.
    /// `failing` remembers that the last update failed, so an outage is told in one line when
    /// it starts and one when it ends, not once per beat.
    pub async fn flush(
        &self,
        id: Uuid,
        lease: &str,
        buffer: &mut Vec<Line>,
        failing: &mut bool,
    ) -> Flush {
        let take = buffer.len().min(BATCH_LINES);
        let logs = buffer[..take]
            .iter()
            .map(|l| LogLine {
                level: Some(l.level.to_string()),
                stage: Some("Executing".to_string()),
                output: Some(l.output.clone()),
                source: Some("provisioner".to_string()),
                created_at: None,
            })
            .collect();
        let request = UpdateJobRequest {
            lease_token: Some(lease.to_string()),
            logs: Some(logs),
        };
        match self.worker.update(id, &request).await {
            Ok(answer) => {
                buffer.drain(..take);
                if std::mem::take(failing) {
                    say!("updates of job {id} go through again");
                }
                Flush::Ok {
                    canceled: answer.canceled,
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

    /// Sends `complete` or `fail` on its own, retrying until the server takes it, refuses it for
    /// good, or the report's deadline passes. `maybe_applied`: an earlier attempt (e.g. with an
    /// acquire that got no answer) may have been applied although its answer was lost.
    pub async fn finish(&self, job: &Finished, mut maybe_applied: bool) {
        let (id, action) = (job.job_id, job.action());
        let mut backoff = Backoff::new();
        loop {
            let sent = self
                .worker
                .finish(id, &job.lease, job.error.as_deref())
                .await;
            let error = match sent {
                Ok(()) => {
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
                    if !self.wait_to_retry(delay, job.deadline).await {
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
