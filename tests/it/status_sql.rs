//! The status rule exists twice: `derive_status` in Rust and `STATUS_SQL` / the per-status
//! predicates in queries. This table test runs all of them on every combination of the
//! timestamps and the error, on both databases, and demands they agree.

use provq::domain::job::{JobStatus, STATUS_SQL, derive_status};
use provq::entity::provisioner_job;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, Statement};
use uuid::Uuid;

use crate::backend_tests;
use crate::helpers::*;

backend_tests! {
    async fn the_sql_status_agrees_with_the_rust_status_on_every_combination(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let db = app.state.store.connection();
        let org = app.state.store.default_organization().await.unwrap().id;
        let at = provq::domain::now();
        let t = Some(at);
        let mut expected = Vec::new();
        for started in [None, t] {
            for canceled in [None, t] {
                for completed in [None, t] {
                    for error in [None, Some(""), Some("boom")] {
                        let id = Uuid::new_v4();
                        provisioner_job::ActiveModel {
                            id: Set(id),
                            created_at: Set(at),
                            updated_at: Set(at),
                            started_at: Set(started),
                            canceled_at: Set(canceled),
                            completed_at: Set(completed),
                            error: Set(error.map(str::to_string)),
                            error_code: Set(None),
                            organization_id: Set(org),
                            initiator_id: Set(provq::domain::PREBUILDS_USER_ID),
                            is_prebuild: Set(true),
                            provisioner: Set("terraform".into()),
                            job_type: Set("workspace_build".into()),
                            input: Set(serde_json::json!({})),
                            file_id: Set(Uuid::nil()),
                            tags: Set(serde_json::json!({"scope": "organization", "owner": ""})),
                            tags_key: Set(provq::domain::tags::Tags::untagged().key()),
                            metadata: Set(serde_json::json!({})),
                            worker_id: Set(None),
                            lease_token: Set(None),
                            logs_length: Set(0),
                            logs_overflowed: Set(false),
                        }
                        .insert(db)
                        .await
                        .unwrap();
                        expected.push((id, derive_status(started, canceled, completed, error)));
                    }
                }
            }
        }
        assert_eq!(expected.len(), 24);
        for (id, status) in &expected {
            let stmt = Statement::from_sql_and_values(
                db.get_database_backend(),
                match db.get_database_backend() {
                    sea_orm::DbBackend::Postgres => format!("SELECT {STATUS_SQL} AS status FROM provisioner_jobs WHERE id = $1"),
                    _ => format!("SELECT {STATUS_SQL} AS status FROM provisioner_jobs WHERE id = ?"),
                },
                [(*id).into()],
            );
            let row = db.query_one_raw(stmt).await.unwrap().unwrap();
            let sql: String = row.try_get("", "status").unwrap();
            assert_eq!(sql, status.as_str(), "job {id}");
        }
        for status in JobStatus::ALL {
            let sql = format!("SELECT COUNT(*) AS n FROM provisioner_jobs WHERE {}", status.sql_predicate());
            let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap().unwrap();
            let n: i64 = row.try_get("", "n").unwrap();
            let want = expected.iter().filter(|(_, s)| *s == status).count() as i64;
            assert_eq!(n, want, "predicate of {status}");
        }
    }
}
