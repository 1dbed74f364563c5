//! The matching rule exists twice: `domain::daemon::can_run` in Rust (daemon lists, queue
//! positions, metrics, the console) and `runnable_by` in the claim statement. This test enqueues
//! jobs of every tag shape and provisioner, lets a daemon of each tag shape claim all it can,
//! and demands that what SQL hands out is exactly what the Rust rule allows, on both databases.

use std::collections::BTreeSet;

use provq::domain::daemon::can_run;
use provq::domain::job::{JobType, Provisioner};
use provq::domain::job_query::JobFilter;
use provq::domain::tags::Tags;
use provq::store::daemons::DaemonRegistration;
use provq::store::jobs::{MAX_BATCH, NewJob, Runnable};
use serde_json::json;
use uuid::Uuid;

use crate::backend_tests;
use crate::helpers::*;

/// Every shape of tags that matching distinguishes.
fn shapes(alice: Uuid, bob: Uuid) -> Vec<Tags> {
    let tags = |pairs: &[(&str, &str)], user: Option<Uuid>| {
        Tags::normalize(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            user,
        )
        .unwrap()
    };
    vec![
        Tags::untagged(),
        tags(&[("os", "linux")], None),
        tags(&[("os", "linux"), ("gpu", "yes")], None),
        tags(&[("os", "windows")], None),
        tags(&[("scope", "user")], Some(alice)),
        tags(&[("scope", "user")], Some(bob)),
        tags(&[("scope", "user"), ("os", "linux")], Some(alice)),
    ]
}

backend_tests! {
    async fn the_sql_match_agrees_with_the_rust_match_on_every_tag_shape(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let store = &app.state.store;
        let org = store.default_organization_id().await.unwrap();
        let shapes = shapes(Uuid::new_v4(), Uuid::new_v4());
        let serves = [Provisioner::Terraform];
        for (d, daemon_tags) in shapes.iter().enumerate() {
            let mut jobs = Vec::new();
            for job_tags in &shapes {
                for provisioner in [Provisioner::Terraform, Provisioner::Echo] {
                    let job = store
                        .enqueue_job(NewJob {
                            organization_id: org,
                            initiator_id: Uuid::new_v4(),
                            job_type: JobType::WorkspaceBuild,
                            provisioner,
                            tags: job_tags.clone(),
                            input: json!({}),
                            file_id: Uuid::nil(),
                            metadata: json!({}),
                        })
                        .await
                        .unwrap();
                    jobs.push(job);
                }
            }
            let expected: BTreeSet<Uuid> = jobs
                .iter()
                .filter(|j| can_run(daemon_tags, &serves, &j.tags, j.provisioner))
                .map(|j| j.id)
                .collect();
            let daemon = store
                .register_daemon(DaemonRegistration {
                    organization_id: org,
                    name: format!("daemon-{d}"),
                    key_id: None,
                    tags: daemon_tags.clone(),
                    provisioners: serves.to_vec(),
                    version: String::new(),
                })
                .await
                .unwrap();
            let runnable = Runnable {
                organization_id: org,
                provisioners: serves.to_vec(),
                tags: daemon_tags.clone(),
            };
            let mut claimed = BTreeSet::new();
            loop {
                let batch = store.claim_jobs(daemon.id, &runnable, MAX_BATCH).await.unwrap();
                if batch.claims.is_empty() {
                    break;
                }
                claimed.extend(batch.claims.into_iter().map(|c| c.job.id));
            }
            assert_eq!(claimed, expected, "daemon tags {daemon_tags:?}");
            // Nothing of this round may be claimed in the next one.
            store.cancel_jobs(org, &JobFilter::default(), |_| {}).await.unwrap();
        }
    }
}
