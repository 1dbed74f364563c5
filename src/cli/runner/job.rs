//! A job as the daemon holds it: the typed answer of the acquire, what the command sees of it
//! (the job JSON on stdin, `PROVQ_JOB_*` variables), and how it ended.

use tokio::time::Instant;
use uuid::Uuid;

use crate::cli::worker_client::{AcquiredJob, JobReport};

/// A job this daemon holds the lease of.
pub struct Job {
    acquired: AcquiredJob,
}

impl From<AcquiredJob> for Job {
    fn from(acquired: AcquiredJob) -> Self {
        Self { acquired }
    }
}

impl Job {
    pub fn id(&self) -> Uuid {
        self.acquired.job_id
    }

    pub fn lease(&self) -> &str {
        &self.acquired.lease_token
    }

    /// The job JSON the command reads on stdin: the acquire's answer without the lease token
    /// (the command has no business reporting on its own).
    pub fn stdin(&self) -> String {
        let mut public = serde_json::to_value(&self.acquired).unwrap_or_default();
        if let Some(o) = public.as_object_mut() {
            o.remove("lease_token");
        }
        public.to_string()
    }

    /// The `PROVQ_*` variables the command gets.
    pub fn env(&self) -> [(&'static str, String); 6] {
        let j = &self.acquired;
        [
            ("PROVQ_JOB_ID", j.job_id.to_string()),
            ("PROVQ_JOB_TYPE", j.job_type.clone()),
            ("PROVQ_ORGANIZATION_ID", j.organization_id.to_string()),
            ("PROVQ_INITIATOR_ID", j.initiator_id.to_string()),
            ("PROVQ_PROVISIONER", j.provisioner.clone()),
            (
                "PROVQ_JOB_TAGS",
                serde_json::to_string(&j.tags).unwrap_or_default(),
            ),
        ]
    }
}

/// A job whose command ended, with the report still to send.
#[derive(Debug, Clone)]
pub struct Finished {
    pub job_id: Uuid,
    pub lease: String,
    /// `None` when the command succeeded, else why it failed.
    pub error: Option<String>,
    /// The report may be retried until then (`--report-timeout` after the exit).
    pub deadline: Instant,
}

impl Finished {
    /// The call the report stands for, for the daemon's stderr.
    pub fn action(&self) -> &'static str {
        if self.error.is_some() {
            "fail"
        } else {
            "complete"
        }
    }

    /// The report as it rides on the next acquire.
    pub fn report(&self) -> JobReport {
        JobReport {
            job_id: self.job_id,
            lease_token: Some(self.lease.clone()),
            error: self.error.clone(),
            error_code: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquired() -> AcquiredJob {
        serde_json::from_value(serde_json::json!({
            "job_id": "5b0b6a3e-59c4-4f5f-9d6c-0d3a1c3f1a2b",
            "lease_token": "secret",
            "type": "workspace_build",
            "provisioner": "terraform",
            "organization_id": "6b0b6a3e-59c4-4f5f-9d6c-0d3a1c3f1a2b",
            "initiator_id": "7b0b6a3e-59c4-4f5f-9d6c-0d3a1c3f1a2b",
            "input": {},
            "tags": {"scope": "organization", "owner": "", "os": "linux"},
            "file_id": "8b0b6a3e-59c4-4f5f-9d6c-0d3a1c3f1a2b",
            "metadata": {"template_name": "t"},
            "created_at": "2026-01-02T03:04:05.123456+00:00"
        }))
        .unwrap()
    }

    #[test]
    fn the_command_sees_the_job_without_its_lease() {
        let job = Job::from(acquired());
        let stdin = job.stdin();
        assert!(
            !stdin.contains("secret") && !stdin.contains("lease_token"),
            "{stdin}"
        );
        assert!(stdin.contains(r#""type":"workspace_build""#), "{stdin}");
        assert!(stdin.contains(r#""template_name":"t""#), "{stdin}");
        // The server's own time format, not a re-encoding of it.
        assert!(
            stdin.contains(r#""created_at":"2026-01-02T03:04:05.123456+00:00""#),
            "{stdin}"
        );
        let env = job.env();
        assert_eq!(env[1], ("PROVQ_JOB_TYPE", "workspace_build".to_string()));
        assert_eq!(
            env[5].1,
            r#"{"os":"linux","owner":"","scope":"organization"}"#
        );
    }
}
