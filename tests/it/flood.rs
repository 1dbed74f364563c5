//! The flood at scale: queue numbers deep in a flood agree with the contract's rule computed the
//! slow way, a bulk cancel larger than one chunk is exact while daemons claim concurrently, and
//! presenting a job does not cost daemons × tags.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use provq::domain::PREBUILDS_USER_ID;
use provq::domain::job::{JobStatus, Provisioner};
use provq::domain::tags::Tags;
use provq::entity::provisioner_job;
use provq::store::daemons::DaemonRegistration;
use provq::store::jobs::Runnable;
use reqwest::StatusCode;
use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::backend_tests;
use crate::helpers::*;

const LIST: &str = "/organizations/default/provisionerjobs";

fn tags(pairs: &[(&str, &str)]) -> Tags {
    Tags::normalize(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        None,
    )
    .unwrap()
}

async fn org(app: &TestApp) -> Uuid {
    app.state.store.default_organization().await.unwrap().id
}

async fn register(app: &TestApp, name: &str, t: Tags) -> Uuid {
    app.state
        .store
        .register_daemon(DaemonRegistration {
            organization_id: org(app).await,
            name: name.into(),
            key_id: None,
            tags: t,
            provisioners: vec![Provisioner::Terraform],
            version: "test".into(),
        })
        .await
        .unwrap()
        .id
}

/// Inserts pending jobs straight into the store: `(tags, prebuild?, seconds ago)` each.
async fn insert_jobs(app: &TestApp, initiator: Uuid, jobs: &[(Tags, bool, i64)]) {
    let organization_id = org(app).await;
    let now = Utc::now();
    for chunk in jobs.chunks(500) {
        let rows = chunk.iter().map(|(t, prebuild, ago)| {
            let at = now - chrono::Duration::seconds(*ago);
            provisioner_job::ActiveModel {
                id: Set(Uuid::new_v4()),
                created_at: Set(at),
                updated_at: Set(now),
                started_at: Set(None),
                canceled_at: Set(None),
                completed_at: Set(None),
                error: Set(None),
                error_code: Set(None),
                organization_id: Set(organization_id),
                initiator_id: Set(if *prebuild {
                    PREBUILDS_USER_ID
                } else {
                    initiator
                }),
                is_prebuild: Set(*prebuild),
                provisioner: Set("terraform".into()),
                job_type: Set("workspace_build".into()),
                input: Set(json!({})),
                file_id: Set(Uuid::nil()),
                tags: Set(t.to_json()),
                tags_key: Set(t.key()),
                metadata: Set(json!({})),
                worker_id: Set(None),
                lease_token: Set(None),
                logs_length: Set(0),
                logs_overflowed: Set(false),
            }
        });
        provisioner_job::Entity::insert_many(rows)
            .exec(app.state.store.connection())
            .await
            .unwrap();
    }
}

/// The contract's rule, computed the slow way over every row: `(position, size)` per pending job.
async fn expected_numbers(app: &TestApp, daemons: &[Tags]) -> BTreeMap<Uuid, (i64, i64)> {
    let all = provisioner_job::Entity::find()
        .all(app.state.store.connection())
        .await
        .unwrap();
    let mut pending: Vec<&provisioner_job::Model> = all
        .iter()
        .filter(|j| status_of(j) == JobStatus::Pending)
        .collect();
    pending.sort_by_key(|j| (j.is_prebuild, j.created_at, j.id));
    let job_tags: Vec<Tags> = pending
        .iter()
        .map(|j| Tags::from_stored_json(j.tags.clone()).unwrap())
        .collect();
    // Each daemon's queue in dispatch order, as positions into `pending`.
    let queues: Vec<Vec<usize>> = daemons
        .iter()
        .map(|d| {
            (0..pending.len())
                .filter(|&o| job_tags[o].satisfied_by(d))
                .collect()
        })
        .collect();
    let mut out = BTreeMap::new();
    for (i, j) in pending.iter().enumerate() {
        let mut best: Option<(i64, i64)> = None;
        for queue in queues.iter().filter(|q| q.binary_search(&i).is_ok()) {
            let rank = queue.binary_search(&i).unwrap() as i64 + 1;
            let size = queue.len() as i64;
            best = Some(best.map_or((rank, size), |(p, s)| (p.min(rank), s.max(size))));
        }
        out.insert(j.id, best.unwrap_or((0, 0)));
    }
    out
}

fn numbers(list: &Value) -> BTreeMap<Uuid, (i64, i64)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                Uuid::parse_str(j["id"].as_str().unwrap()).unwrap(),
                (
                    j["queue_position"].as_i64().unwrap(),
                    j["queue_size"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Lists `ids` (in pages, the query string stays short) and checks every number.
async fn check_numbers(app: &TestApp, owner: &str, daemons: &[Tags], ids: &[Uuid], what: &str) {
    let expected = expected_numbers(app, daemons).await;
    for page in ids.chunks(40) {
        let query: Vec<String> = page.iter().map(Uuid::to_string).collect();
        let (status, list) = app
            .get(
                &format!("{LIST}?limit=1000&ids={}", query.join(",")),
                Some(owner),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        for (id, got) in numbers(&list) {
            let want = expected.get(&id).copied().unwrap_or((0, 0));
            assert_eq!(got, want, "{what}: job {id}");
        }
    }
}

backend_tests! {
    async fn queue_numbers_deep_in_a_flood_follow_the_rule(backend: Backend) {
        // Daemons stay online however slow the machine (the reference below is computed slowly).
        let (app, owner) = spawn_queue_with(backend, |s| s.provisioner.stale_after_secs = 3600).await;
        let initiator = Uuid::new_v4();
        let a = tags(&[("pool", "a")]);
        let gpu = tags(&[("pool", "a"), ("gpu", "yes")]);
        let b = tags(&[("pool", "b")]);
        // Two classes past the short-side bound (500), ties in created_at, humans sprinkled in.
        let mut jobs = Vec::new();
        for i in 0..1300i64 {
            let t = match i % 3 { 0 => a.clone(), 1 => gpu.clone(), _ => b.clone() };
            jobs.push((t, i % 40 != 0, 5000 - i / 2));
        }
        insert_jobs(&app, initiator, &jobs).await;
        // One daemon runs `a`, one runs `a` and `a+gpu`, `b` has none online.
        let daemons = [a.clone(), gpu.clone()];
        register(&app, "a", a.clone()).await;
        register(&app, "gpu", gpu.clone()).await;

        let all = provisioner_job::Entity::find().all(app.state.store.connection()).await.unwrap();
        let mut by_age: Vec<&provisioner_job::Model> = all.iter().collect();
        by_age.sort_by_key(|j| (j.created_at, j.id));
        // The newest, the oldest and the middle of the flood (both sides of the bound).
        let mut ids: Vec<Uuid> = by_age.iter().rev().take(60).map(|j| j.id).collect();
        ids.extend(by_age.iter().take(60).map(|j| j.id));
        ids.extend(by_age.iter().skip(600).take(60).map(|j| j.id));
        check_numbers(&app, &owner, &daemons, &ids, "fresh flood").await;

        // The newest page and one job alone agree too.
        let (_, newest) = app.get(&format!("{LIST}?limit=50"), Some(&owner)).await;
        let expected = expected_numbers(&app, &daemons).await;
        for (id, got) in numbers(&newest) {
            assert_eq!(got, expected[&id], "newest page: {id}");
        }
        let deepest = by_age.last().unwrap().id;
        let one = app.job(&owner, &deepest.to_string()).await;
        assert_eq!(
            (one["queue_position"].as_i64().unwrap(), one["queue_size"].as_i64().unwrap()),
            expected[&deepest]
        );

        // Jobs leave from anywhere: a bulk cancel of one tag set, single cancels, claims.
        let (status, body) = app
            .post(&format!("{LIST}/cancel"), Some(&owner), json!({"tags": {"pool": "b"}, "status": ["pending"]}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for j in by_age.iter().skip(650).step_by(7).take(20) {
            app.post(&format!("{LIST}/{}/cancel", j.id), Some(&owner), json!({})).await;
        }
        for _ in 0..5 {
            app.acquire("gpu", json!({"pool": "a", "gpu": "yes"}), 0).await.unwrap();
        }
        check_numbers(&app, &owner, &daemons, &ids, "after cancels and claims").await;
        // Folding the maintained counts changes no answer.
        app.state.store.fold_pending_counts().await.unwrap();
        check_numbers(&app, &owner, &daemons, &ids, "after folding").await;
    }

    async fn a_bulk_cancel_of_many_chunks_is_exact_while_daemons_claim(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let pool = tags(&[("pool", "flood")]);
        let total = 2_600usize;
        let jobs: Vec<(Tags, bool, i64)> = (0..total).map(|i| (pool.clone(), true, 10_000 - i as i64)).collect();
        insert_jobs(&app, Uuid::nil(), &jobs).await;
        let organization_id = org(&app).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut claimers = Vec::new();
        for n in 0..3 {
            let store = app.state.store.clone();
            let stop = stop.clone();
            let daemon = register(&app, &format!("claimer-{n}"), pool.clone()).await;
            let runnable = Runnable { organization_id, provisioners: vec![Provisioner::Terraform], tags: pool.clone() };
            claimers.push(tokio::spawn(async move {
                let mut claimed = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    match store.claim_jobs(daemon, &runnable, 1).await.unwrap().claims.pop() {
                        Some(c) => claimed.push(c.job.id),
                        None => break,
                    }
                    // Paced, so that the cancel has more than one chunk to do.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                claimed
            }));
        }
        let (status, body) = app
            .post(&format!("{LIST}/cancel"), Some(&owner), json!({"initiator": "prebuilds", "status": ["pending"]}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        stop.store(true, Ordering::Release);
        let mut claimed = Vec::new();
        for c in claimers {
            claimed.extend(c.await.unwrap());
        }
        let canceled: Vec<Uuid> = body["canceled"].as_array().unwrap().iter()
            .map(|v| Uuid::parse_str(v.as_str().unwrap()).unwrap()).collect();
        assert_eq!(body["count"].as_u64().unwrap() as usize, canceled.len());
        assert!(canceled.len() > 1_000, "more than one chunk was canceled ({} claimed first)", claimed.len());

        let rows = provisioner_job::Entity::find().all(app.state.store.connection()).await.unwrap();
        let by_id: BTreeMap<Uuid, &provisioner_job::Model> = rows.iter().map(|j| (j.id, j)).collect();
        for id in &canceled {
            assert_eq!(status_of(by_id[id]), JobStatus::Canceled, "canceled job {id}");
            assert!(by_id[id].started_at.is_none(), "a canceled pending job was never handed out: {id}");
        }
        for id in &claimed {
            let j = by_id[id];
            assert!(j.started_at.is_some(), "claimed job {id} is running");
            assert!(j.canceled_at.is_none(), "claimed job {id} was not canceled afterwards by a pending-only cancel");
        }
        let mut seen: Vec<Uuid> = canceled.iter().chain(&claimed).copied().collect();
        seen.sort();
        let before = seen.len();
        seen.dedup();
        assert_eq!(before, seen.len(), "no job both canceled and claimed, none claimed twice");
        let pending = rows.iter().filter(|j| status_of(j) == JobStatus::Pending).count();
        assert_eq!(seen.len() + pending, total, "none lost");
        assert_eq!(pending, 0, "a pending-only cancel leaves nothing pending");
        // The maintained counts agree (on PostgreSQL the cancel writes them per chunk, not the
        // row trigger), before and after folding.
        for fold in [false, true] {
            if fold {
                app.state.store.fold_pending_counts().await.unwrap();
            }
            let counted: i64 = app.state.store.pending_counts_everywhere().await.unwrap().iter().map(|r| r.4).sum();
            assert_eq!(counted, 0, "maintained counts after the cancel (folded: {fold})");
        }
        // The rows the fold moved are vacuumed away (PostgreSQL; with autovacuum off or behind,
        // every read of the counts would step over them).
        app.state.store.vacuum_pending_counts().await.unwrap();
        if backend == Backend::Postgres {
            let vacuumed = sea_orm::ConnectionTrait::query_one_raw(
                app.state.store.connection(),
                sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'provisioner_queue_counts'",
                ),
            )
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "vacuum_count")
            .unwrap();
            assert!(vacuumed >= 1, "the counts table was vacuumed");
        }
        // Nothing left in the queue.
        let (_, list) = app.get(&format!("{LIST}?status=pending"), Some(&owner)).await;
        assert_eq!(list, json!([]));
    }

    async fn a_bulk_cancel_passes_a_held_job_and_comes_back_for_it(backend: Backend) {
        // PostgreSQL's row locks: the cancel's first walk passes over a job another
        // transaction holds (a claim in flight) instead of waiting for it and keeping it locked
        // for the rest of its chunk, and its second walk cancels that job once it is released.
        // SQLite has one writer and no row locks: nothing to pass over.
        if backend != Backend::Postgres {
            return;
        }
        let (app, owner) = spawn_queue(backend).await;
        let pool = tags(&[("pool", "held")]);
        let total = 2_500usize;
        let jobs: Vec<(Tags, bool, i64)> = (0..total).map(|i| (pool.clone(), true, 10_000 - i as i64)).collect();
        insert_jobs(&app, Uuid::nil(), &jobs).await;
        // The front of the queue (the oldest prebuild), where the first chunk starts.
        let front = provisioner_job::Entity::find()
            .order_by_asc(provisioner_job::Column::CreatedAt)
            .one(app.state.store.connection())
            .await
            .unwrap()
            .unwrap()
            .id;
        let holder = sea_orm::TransactionTrait::begin(app.state.store.connection()).await.unwrap();
        sea_orm::ConnectionTrait::execute_raw(
            &holder,
            sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT id FROM provisioner_jobs WHERE id = $1 FOR UPDATE",
                [front.into()],
            ),
        )
        .await
        .unwrap();
        let answered = AtomicBool::new(false);
        let cancel = async {
            let answer = app
                .post(&format!("{LIST}/cancel"), Some(&owner), json!({"initiator": "prebuilds", "status": ["pending"]}))
                .await;
            answered.store(true, Ordering::Release);
            answer
        };
        let hold = async {
            // Every other job is canceled and committed while the front one is held.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let rows = provisioner_job::Entity::find().all(app.state.store.connection()).await.unwrap();
                let canceled = rows.iter().filter(|j| status_of(j) == JobStatus::Canceled).count();
                if canceled == total - 1 {
                    break;
                }
                assert!(Instant::now() < deadline, "the cancel did not pass the held job ({canceled} canceled)");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!answered.load(Ordering::Acquire), "the cancel waits for the held job before it answers");
            holder.rollback().await.unwrap();
        };
        let ((status, body), ()) = tokio::join!(cancel, hold);
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["count"], json!(total), "{body}");
        let held = provisioner_job::Entity::find_by_id(front).one(app.state.store.connection()).await.unwrap().unwrap();
        assert_eq!(status_of(&held), JobStatus::Canceled, "the held job was canceled on the second walk");
    }

    async fn presenting_a_job_does_not_cost_daemons_times_tags(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        // 10,000 tags on one job (inserted directly: request limits are not what is tested).
        // PostgreSQL's btree rows cap the tags key at ~2.7 kB, so fewer there.
        let count = if backend == Backend::Postgres { 150 } else { 10_000 };
        let mut huge: Vec<(String, String)> = (0..count).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
        huge.push(("pool".into(), "x".into()));
        huge.push(("scope".into(), "organization".into()));
        huge.push(("owner".into(), String::new()));
        // Past the enqueue limits on purpose, so built as stored rather than normalised.
        let huge = Tags::from_stored(huge.into_iter().collect());
        insert_jobs(&app, Uuid::nil(), &[(huge.clone(), true, 1)]).await;
        for i in 0..1_000 {
            register(&app, &format!("d{i}"), tags(&[("pool", "x"), ("n", &format!("{}", i % 20))])).await;
        }
        let all_of_them = register(&app, "all", huge.clone()).await;
        let started = Instant::now();
        let (status, list) = app.get(&format!("{LIST}?limit=5"), Some(&owner)).await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::OK);
        let job = &list[0];
        assert_eq!(job["available_workers"], json!([all_of_them.to_string()]));
        assert_eq!((job["queue_position"].as_i64(), job["queue_size"].as_i64()), (Some(1), Some(1)));
        assert_eq!(job["tags"].as_object().unwrap().len(), count + 3);
        // Parsing the tags once per daemon (the old way) took seconds here; once per job takes
        // milliseconds. The bound is loose on purpose: it only catches per-daemon parsing.
        assert!(took < Duration::from_secs(5), "listing took {took:?}");
    }
}

/// The status of a job row read directly from the table.
fn status_of(j: &provisioner_job::Model) -> JobStatus {
    provq::domain::job::derive_status(
        j.started_at,
        j.canceled_at,
        j.completed_at,
        j.error.as_deref(),
    )
}
