//! Database rows become domain types here, once. A row that does not parse (an unknown job
//! type, tags that are not a JSON object of strings, …) is a [`StoreError::BadRow`]: logged and
//! answered with an opaque 500, never replaced by a default.

use serde_json::Value;

use super::StoreError;
use crate::domain::daemon::{Daemon, ProvisionerKey};
use crate::domain::job::{ErrorCode, Job, JobLog, JobType, LogLevel, LogSource, Provisioner};
use crate::domain::license::LicenseRecord;
use crate::domain::organization::Organization;
use crate::domain::tags::Tags;
use crate::domain::user::{User, parse_roles};
use crate::entity::{
    license, organization, provisioner_daemon, provisioner_job, provisioner_job_log,
    provisioner_key, user,
};

/// Builds the error for a bad column of a row.
fn bad(table: &'static str, id: impl ToString, column: &str, why: impl ToString) -> StoreError {
    StoreError::BadRow {
        table,
        id: id.to_string(),
        reason: format!("{column}: {}", why.to_string()),
    }
}

impl TryFrom<provisioner_job::Model> for Job {
    type Error = StoreError;

    fn try_from(row: provisioner_job::Model) -> Result<Self, StoreError> {
        const T: &str = "provisioner_jobs";
        let id = row.id;
        let error_code = match row.error_code.filter(|c| !c.is_empty()) {
            Some(c) => Some(ErrorCode::parse(&c).map_err(|e| bad(T, id, "error_code", e))?),
            None => None,
        };
        Ok(Job {
            id,
            created_at: row.created_at,
            updated_at: row.updated_at,
            started_at: row.started_at,
            canceled_at: row.canceled_at,
            completed_at: row.completed_at,
            error: row.error.filter(|e| !e.is_empty()),
            error_code,
            organization_id: row.organization_id,
            initiator_id: row.initiator_id,
            is_prebuild: row.is_prebuild,
            provisioner: Provisioner::parse(&row.provisioner)
                .map_err(|e| bad(T, id, "provisioner", e))?,
            job_type: JobType::parse(&row.job_type).map_err(|e| bad(T, id, "type", e))?,
            input: serde_json::from_value(row.input).map_err(|e| bad(T, id, "input", e))?,
            file_id: row.file_id,
            tags: Tags::from_stored_json(row.tags).map_err(|e| bad(T, id, "tags", e))?,
            tags_key: row.tags_key,
            metadata: serde_json::from_value(row.metadata)
                .map_err(|e| bad(T, id, "metadata", e))?,
            worker_id: row.worker_id,
            lease_token: row.lease_token,
            logs_length: row.logs_length,
            logs_overflowed: row.logs_overflowed,
        })
    }
}

impl TryFrom<provisioner_daemon::Model> for Daemon {
    type Error = StoreError;

    fn try_from(row: provisioner_daemon::Model) -> Result<Self, StoreError> {
        const T: &str = "provisioner_daemons";
        let id = row.id;
        let provisioners = match &row.provisioners {
            Value::Array(names) => names
                .iter()
                .map(|p| match p {
                    Value::String(name) => Provisioner::parse(name).map_err(|e| e.to_string()),
                    other => Err(format!("not a provisioner name: {other}")),
                })
                .collect::<Result<Vec<_>, _>>(),
            other => Err(format!("not a JSON array: {other}")),
        }
        .map_err(|e| bad(T, id, "provisioners", e))?;
        Ok(Daemon {
            id,
            organization_id: row.organization_id,
            name: row.name,
            owner_tag: row.owner_tag,
            key_id: row.key_id,
            tags: Tags::from_stored_json(row.tags).map_err(|e| bad(T, id, "tags", e))?,
            provisioners,
            version: row.version,
            created_at: row.created_at,
            last_seen_at: row.last_seen_at,
        })
    }
}

impl TryFrom<provisioner_key::Model> for ProvisionerKey {
    type Error = StoreError;

    fn try_from(row: provisioner_key::Model) -> Result<Self, StoreError> {
        Ok(ProvisionerKey {
            id: row.id,
            organization_id: row.organization_id,
            tags: Tags::from_stored_json(row.tags)
                .map_err(|e| bad("provisioner_keys", row.id, "tags", e))?,
            name: row.name,
            hashed_secret: row.hashed_secret,
            created_at: row.created_at,
        })
    }
}

impl TryFrom<provisioner_job_log::Model> for JobLog {
    type Error = StoreError;

    fn try_from(row: provisioner_job_log::Model) -> Result<Self, StoreError> {
        const T: &str = "provisioner_job_logs";
        let id = row.id;
        Ok(JobLog {
            id,
            job_id: row.job_id,
            created_at: row.created_at,
            source: LogSource::parse(&row.source).map_err(|e| bad(T, id, "source", e))?,
            level: LogLevel::parse(&row.level).map_err(|e| bad(T, id, "level", e))?,
            stage: row.stage,
            output: row.output,
        })
    }
}

impl From<organization::Model> for Organization {
    fn from(row: organization::Model) -> Self {
        Organization {
            id: row.id,
            name: row.name,
            display_name: row.display_name,
            description: row.description,
            icon: row.icon,
            is_default: row.is_default,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl From<user::Model> for User {
    fn from(row: user::Model) -> Self {
        User {
            id: row.id,
            email: row.email,
            username: row.username,
            name: row.name,
            hashed_password: row.hashed_password,
            status: row.status,
            roles: parse_roles(&row.roles),
            is_system: row.is_system,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl From<license::Model> for LicenseRecord {
    fn from(row: license::Model) -> Self {
        LicenseRecord {
            id: row.id,
            uuid: row.uuid,
            jwt: row.jwt,
            uploaded_at: row.uploaded_at,
            exp: row.exp,
        }
    }
}

/// A job row of a raw query (the claim statements). Those speak `DbErr`, so a bad row becomes
/// `DbErr::Type` carrying the [`StoreError::BadRow`] text: still logged and an opaque 500.
pub(crate) fn job_from_query(row: &sea_orm::QueryResult) -> Result<Job, sea_orm::DbErr> {
    use sea_orm::FromQueryResult;
    let model = provisioner_job::Model::from_query_result(row, "")?;
    Job::try_from(model).map_err(|e| sea_orm::DbErr::Type(e.to_string()))
}

/// Converts every row, failing on the first bad one.
pub(crate) fn all<R, T>(rows: Vec<R>) -> Result<Vec<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn job_row() -> provisioner_job::Model {
        let at = Utc::now();
        provisioner_job::Model {
            id: Uuid::new_v4(),
            created_at: at,
            updated_at: at,
            started_at: None,
            canceled_at: None,
            completed_at: None,
            error: Some(String::new()),
            error_code: Some(String::new()),
            organization_id: Uuid::new_v4(),
            initiator_id: Uuid::new_v4(),
            is_prebuild: false,
            provisioner: "echo".into(),
            job_type: "workspace_build".into(),
            input: json!({}),
            file_id: Uuid::new_v4(),
            tags: Tags::untagged().to_json(),
            tags_key: Tags::untagged().key(),
            metadata: json!({"template_name": "t"}),
            worker_id: None,
            lease_token: None,
            logs_length: 0,
            logs_overflowed: false,
        }
    }

    #[test]
    fn a_good_job_row_parses_with_empty_errors_as_none() {
        let job = Job::try_from(job_row()).unwrap();
        assert_eq!(job.job_type, JobType::WorkspaceBuild);
        assert_eq!(job.provisioner, Provisioner::Echo);
        assert_eq!(job.error, None);
        assert_eq!(job.error_code, None);
        assert_eq!(job.metadata.template_name, "t");
        assert!(job.tags.is_untagged());
    }

    #[test]
    fn a_bad_job_row_is_an_error_not_a_default() {
        let bad_rows = [
            provisioner_job::Model {
                job_type: "build".into(),
                ..job_row()
            },
            provisioner_job::Model {
                provisioner: "ansible".into(),
                ..job_row()
            },
            provisioner_job::Model {
                input: json!(null),
                ..job_row()
            },
            provisioner_job::Model {
                metadata: json!({"template_id": "not a uuid"}),
                ..job_row()
            },
            provisioner_job::Model {
                tags: json!({"os": 1}),
                ..job_row()
            },
            provisioner_job::Model {
                error_code: Some("NOPE".into()),
                ..job_row()
            },
        ];
        for row in bad_rows {
            let e = Job::try_from(row.clone()).unwrap_err();
            assert!(matches!(e, StoreError::BadRow { .. }), "{row:?}: {e}");
        }
    }

    #[test]
    fn a_daemon_row_with_an_unknown_provisioner_is_an_error() {
        let at = Utc::now();
        let row = provisioner_daemon::Model {
            id: Uuid::new_v4(),
            organization_id: Uuid::new_v4(),
            name: "d".into(),
            owner_tag: String::new(),
            key_id: None,
            tags: Tags::untagged().to_json(),
            provisioners: json!(["echo", "terraform"]),
            version: String::new(),
            created_at: at,
            last_seen_at: at,
        };
        let d = Daemon::try_from(row.clone()).unwrap();
        assert_eq!(d.provisioner_names(), ["echo", "terraform"]);
        let bad = provisioner_daemon::Model {
            provisioners: json!(["ansible"]),
            ..row
        };
        assert!(matches!(
            Daemon::try_from(bad),
            Err(StoreError::BadRow { .. })
        ));
    }
}
