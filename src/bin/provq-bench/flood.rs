//! The flood at scale (issue 16): 100,000 pending prebuilds and 1,000 human jobs over 20 tag
//! sets with 50 online daemons. Measures the job list at 10,000 and 100,000 pending, a `GET` of
//! the deepest job, the `/metrics` scrape, the bulk cancel of the flood while humans keep
//! enqueueing and 4 daemons keep working, and the server's peak memory; then checks that every
//! canceled job ended canceled, none was handed out after its cancel and none was lost.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use comfy_table::Table;
use indicatif::ProgressBar;
use provq::cli::worker_client::{AcquireRequest, Credential, WorkerClient};
use provq::domain::PREBUILDS_USER_ID;
use provq::domain::job::{JobStatus, derive_status};
use provq::entity::provisioner_job;
use provq::store::Store;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::fixtures::{Backend, BenchDb, Fill, Targets, fill_daemons, fill_jobs, tag_set};
use crate::server::{first_owner, http, settings};
use crate::stats::{ms, percentile};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    targets: Targets,
    /// Pending prebuild jobs in the flood.
    #[arg(long, default_value_t = 100_000)]
    prebuilds: usize,
    /// Pending human jobs.
    #[arg(long, default_value_t = 1_000)]
    humans: usize,
    /// Requests per measured list query.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Human jobs enqueued per second while the cancel runs.
    #[arg(long, default_value_t = 20)]
    human_rate: u64,
}

const TAG_SETS: usize = 20;
const DAEMONS: usize = 50;
const WORKERS: usize = 4;
const QUERIES: [&str; 2] = ["limit=50", "status=pending&initiator=prebuilds&limit=50"];

/// `provq serve` as a child with its Prometheus listener on.
struct Server {
    base: String,
    metrics: String,
    child: std::process::Child,
}

impl Server {
    fn start(database_url: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?.with_file_name("provq");
        anyhow::ensure!(
            exe.exists(),
            "{} not found: build it with `cargo build --release`",
            exe.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--prometheus-listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--database-url", database_url])
            .env_remove("PROVQ_BENCH_POSTGRES_URL")
            .env("PROVQ_PROVISIONER__DAEMON_PSK", "bench-psk")
            .env("PROVQ_PROVISIONER__STALE_AFTER_SECS", "3600")
            .env("PROVQ_RATE_LIMIT__API_PER_MINUTE", "0")
            .env("PROVQ_DATABASE_MAX_CONNECTIONS", "40")
            // The fill is dated in the past; the reaper must not fail it as stale.
            .env("PROVQ_REAPER__PENDING_AFTER_SECS", "31536000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut first)?;
        let base = first
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow::anyhow!("unexpected output: {first}"))?
            .to_string();
        Ok(Self {
            base,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            child,
        })
    }

    /// Peak resident memory (VmHWM) in MiB.
    fn peak_rss_mib(&self) -> f64 {
        crate::server::peak_rss_mib(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Row {
    what: String,
    p50: f64,
    p99: f64,
    goal: String,
}

fn row(what: impl Into<String>, samples: &mut [Duration], goal: impl Into<String>) -> Row {
    Row {
        what: what.into(),
        p50: ms(percentile(samples, 50.0)),
        p99: ms(percentile(samples, 99.0)),
        goal: goal.into(),
    }
}

async fn timed_gets(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 3 {
        let started = Instant::now();
        let mut req = client.get(url);
        if let Some(t) = token {
            req = req.header("Coder-Session-Token", t);
        }
        let resp = req.send().await?;
        anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.bytes().await?;
        if i >= 3 {
            samples.push(started.elapsed());
        }
    }
    Ok(samples)
}

/// What autovacuum would do minutes into a real flood: fresh planner statistics (a bulk fill
/// measured at once otherwise leaves the planner believing the table is empty).
async fn analyze(store: &Store) -> anyhow::Result<()> {
    use sea_orm::ConnectionTrait;
    store
        .connection()
        .execute_unprepared("ANALYZE provisioner_jobs")
        .await?;
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    for &backend in &args.targets.backends {
        run_backend(&args, backend).await?;
    }
    println!(
        "{TAG_SETS} tag sets, {DAEMONS} online daemons; the server is a child `provq serve`; the fill is written straight into the database."
    );
    Ok(())
}

async fn run_backend(args: &Args, backend: Backend) -> anyhow::Result<()> {
    let mut db = BenchDb::create(backend, &args.targets.postgres_url).await?;
    let server = Server::start(&db.url)?;
    let client = http();
    let token = first_owner(&client, &server.base).await?;
    let store = Store::connect(&settings(&db.url)).await?;
    let org = store.default_organization().await?.id;
    let me: Value = client
        .get(format!("{}/api/v2/users/me", server.base))
        .header("Coder-Session-Token", &token)
        .send()
        .await?
        .json()
        .await?;
    let owner_id = Uuid::parse_str(me["id"].as_str().unwrap_or_default())?;
    fill_daemons(&store, org, DAEMONS, TAG_SETS).await?;
    let mut rows: Vec<Row> = Vec::new();
    let list_url = |q: &str| {
        format!(
            "{}/api/v2/organizations/default/provisionerjobs?{q}",
            server.base
        )
    };

    // 10,000 pending: the humans and the first prebuilds.
    let first = 10_000.min(args.prebuilds + args.humans);
    let started = Instant::now();
    fill_jobs(
        &store,
        org,
        owner_id,
        Fill {
            total: first,
            pending: first,
            tag_sets: TAG_SETS,
            prebuild_share: 1.0 - args.humans as f64 / first as f64,
        },
        &ProgressBar::hidden(),
    )
    .await?;
    eprintln!(
        "{}: filled {first} pending in {:.1} s",
        backend.name(),
        started.elapsed().as_secs_f64()
    );
    let mut small = Vec::new();
    for q in QUERIES {
        small.push(ms(percentile(
            &mut timed_gets(&client, &list_url(q), Some(&token), args.requests).await?,
            50.0,
        )));
    }
    for (q, p50) in QUERIES.iter().zip(&small) {
        let mut s = timed_gets(&client, &list_url(q), Some(&token), args.requests).await?;
        rows.push(row(
            format!("list ?{q} at {first} pending"),
            &mut s,
            format!("(base: {p50:.1} ms)"),
        ));
    }

    // The rest of the flood.
    let rest = args.prebuilds + args.humans - first;
    let started = Instant::now();
    fill_jobs(
        &store,
        org,
        owner_id,
        Fill {
            total: rest,
            pending: rest,
            tag_sets: TAG_SETS,
            prebuild_share: 1.0,
        },
        &ProgressBar::hidden(),
    )
    .await?;
    analyze(&store).await?;
    let total = first + rest;
    eprintln!(
        "{}: filled {rest} more in {:.1} s",
        backend.name(),
        started.elapsed().as_secs_f64()
    );
    for (q, base) in QUERIES.iter().zip(&small) {
        let mut s = timed_gets(&client, &list_url(q), Some(&token), args.requests).await?;
        let abs = if backend == Backend::Postgres {
            ", ≤ 20 ms"
        } else {
            ""
        };
        rows.push(row(
            format!("list ?{q} at {total} pending"),
            &mut s,
            format!("p50 ≤ {:.1} ms (2× base){abs}", 2.0 * base),
        ));
    }
    // The deepest job: the newest prebuild, last in every daemon's order.
    let deepest = provisioner_job::Entity::find()
        .filter(provisioner_job::Column::IsPrebuild.eq(true))
        .order_by_desc(provisioner_job::Column::CreatedAt)
        .one(store.connection())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no prebuild job"))?;
    let deep_url = format!(
        "{}/api/v2/organizations/default/provisionerjobs/{}",
        server.base, deepest.id
    );
    let mut s = timed_gets(&client, &deep_url, Some(&token), args.requests).await?;
    rows.push(row("GET of the deepest job", &mut s, "≤ 10 ms"));
    let deep: Value = client
        .get(&deep_url)
        .header("Coder-Session-Token", &token)
        .send()
        .await?
        .json()
        .await?;
    eprintln!(
        "deepest job: position {} of {}",
        deep["queue_position"], deep["queue_size"]
    );
    // Scrapes 6 s apart, so each one refreshes the database gauges.
    let mut scrapes = Vec::new();
    for _ in 0..3 {
        scrapes.extend(timed_gets(&client, &server.metrics, None, 1).await?);
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    rows.push(row(
        "/metrics scrape (gauges refreshed)",
        &mut scrapes,
        "≤ 100 ms",
    ));

    // The cancel, while humans enqueue and 4 daemons of tag set 0 work.
    let stop = Arc::new(AtomicBool::new(false));
    let acquired: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let worker_calls: Arc<Mutex<(Vec<Duration>, Vec<Duration>)>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let worker = WorkerClient::new(
            client.clone(),
            &server.base,
            Credential::Psk("bench-psk".into()),
        );
        let (stop, acquired, calls) = (stop.clone(), acquired.clone(), worker_calls.clone());
        let mut request = AcquireRequest::named(format!("flood-worker-{w}"));
        request.tags = Some(json!(tag_set(0).as_map()));
        request.wait_seconds = Some(1);
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let t = Instant::now();
                let Ok(Some(answer)) = worker.acquire(&request).await else {
                    continue;
                };
                let took = t.elapsed();
                let job = answer.job;
                acquired.lock().await.insert(job.job_id, Instant::now());
                let t = Instant::now();
                let _ = worker.complete(job.job_id, &job.lease_token).await;
                let mut calls = calls.lock().await;
                calls.0.push(took);
                calls.1.push(t.elapsed());
            }
        }));
    }
    // Per human job: when its enqueue call started and when its 201 arrived.
    let enqueued: Arc<Mutex<HashMap<Uuid, (Instant, Instant)>>> = Arc::default();
    let humans = {
        let (client, base, token, stop, enqueued) = (
            client.clone(),
            server.base.clone(),
            token.clone(),
            stop.clone(),
            enqueued.clone(),
        );
        let rate = args.human_rate.max(1);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / rate));
            while !stop.load(Ordering::Acquire) {
                tick.tick().await;
                let sent = Instant::now();
                let Ok(resp) = client
                    .post(format!(
                        "{base}/api/v2/organizations/default/provisionerjobs"
                    ))
                    .header("Coder-Session-Token", &token)
                    .json(&json!({"type": "workspace_build", "tags": tag_set(0).as_map()}))
                    .send()
                    .await
                else {
                    continue;
                };
                if let Ok(job) = resp.json::<Value>().await
                    && let Some(id) = job["id"].as_str().and_then(|s| Uuid::parse_str(s).ok())
                {
                    enqueued.lock().await.insert(id, (sent, Instant::now()));
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let resp = client
        .post(format!(
            "{}/api/v2/organizations/default/provisionerjobs/cancel",
            server.base
        ))
        .header("Coder-Session-Token", &token)
        .json(&json!({"initiator": "prebuilds", "status": ["pending"]}))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "cancel: {}", resp.status());
    let canceled: Value = resp.json().await?;
    let cancel_took = started.elapsed();
    let cancel_ended = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    humans.await?;
    for w in workers {
        w.await?;
    }
    // Let the last human jobs be picked up.
    let enqueued = enqueued.lock().await.clone();
    let acquired = acquired.lock().await.clone();
    // Human jobs enqueued while the cancel ran (the goal), and all of them: from 2 s before it
    // to 2 s after (what the cancel leaves behind shows there).
    let during = |sent: &Instant| *sent >= started && *sent <= cancel_ended;
    let pickups = |only_during: bool| -> Vec<Duration> {
        enqueued
            .iter()
            .filter(|(_, (sent, _))| !only_during || during(sent))
            .filter_map(|(id, (sent, _))| {
                acquired
                    .get(id)
                    .map(|at| at.saturating_duration_since(*sent))
            })
            .collect()
    };
    let mut pickup = pickups(true);
    let mut pickup_around = pickups(false);
    // The split in two, during the cancel: the enqueue call, and from its 201 to the acquire.
    let mut enqueue_calls: Vec<Duration> = enqueued
        .values()
        .filter(|(sent, _)| during(sent))
        .map(|(sent, answered)| answered.saturating_duration_since(*sent))
        .collect();
    let mut after_201: Vec<Duration> = enqueued
        .iter()
        .filter(|(_, (sent, _))| during(sent))
        .filter_map(|(id, (_, answered))| {
            acquired
                .get(id)
                .map(|at| at.saturating_duration_since(*answered))
        })
        .collect();
    let not_picked = enqueued
        .keys()
        .filter(|id| !acquired.contains_key(id))
        .count();
    rows.push(Row {
        what: format!("bulk cancel of {} jobs", canceled["count"]),
        p50: ms(cancel_took),
        p99: ms(cancel_took),
        goal: "≤ 5,000 ms".into(),
    });
    rows.push(row(
        format!(
            "human pickup during the cancel ({} jobs; {not_picked} of all not picked)",
            pickup.len()
        ),
        &mut pickup,
        "p99 ≤ 50 ms",
    ));
    rows.push(row(
        format!(
            "human pickup from 2 s before to 2 s after ({} jobs)",
            pickup_around.len()
        ),
        &mut pickup_around,
        "(context)",
    ));
    rows.push(row(
        "  of which the enqueue call (during)",
        &mut enqueue_calls,
        "(breakdown)",
    ));
    rows.push(row(
        "  of which from the 201 to the acquire (during)",
        &mut after_201,
        "(breakdown)",
    ));
    let (mut acq, mut comp) = std::mem::take(&mut *worker_calls.lock().await);
    rows.push(row(
        format!("daemon acquire returning a job ({})", acq.len()),
        &mut acq,
        "no slower than idle",
    ));
    rows.push(row(
        format!("daemon complete ({})", comp.len()),
        &mut comp,
        "no slower than idle",
    ));
    let rss = server.peak_rss_mib();
    // Where the slowest pickups fell, relative to the cancel (it ran from 0 to `cancel_took`).
    let mut slowest: Vec<(Duration, f64)> = enqueued
        .iter()
        .filter_map(|(id, (sent, _))| {
            let at = acquired.get(id)?;
            let offset = sent.saturating_duration_since(started).as_secs_f64()
                - started.saturating_duration_since(*sent).as_secs_f64();
            Some((at.saturating_duration_since(*sent), offset))
        })
        .collect();
    slowest.sort_by_key(|b| std::cmp::Reverse(b.0));
    let slowest: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|(took, offset)| format!("{:.1} ms at {offset:+.2} s", ms(*took)))
        .collect();
    eprintln!(
        "slowest human pickups: {} (the cancel ran from 0 to {:.2} s)",
        slowest.join(", "),
        cancel_took.as_secs_f64()
    );
    let _ = cancel_ended;

    // Correctness.
    let ids: HashSet<Uuid> = canceled["canceled"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
                .collect()
        })
        .unwrap_or_default();
    let all = provisioner_job::Entity::find()
        .all(store.connection())
        .await?;
    let status_of = |j: &provisioner_job::Model| {
        derive_status(
            j.started_at,
            j.canceled_at,
            j.completed_at,
            j.error.as_deref(),
        )
    };
    let mut wrong = 0;
    let mut handed_out_after = 0;
    for j in &all {
        if ids.contains(&j.id) {
            if status_of(j) != JobStatus::Canceled {
                wrong += 1;
            }
            if j.started_at.is_some() || acquired.contains_key(&j.id) {
                handed_out_after += 1;
            }
        }
    }
    let prebuilds_left = all
        .iter()
        .filter(|j| j.initiator_id == PREBUILDS_USER_ID && status_of(j) == JobStatus::Pending)
        .count();
    let prebuilds_run = all
        .iter()
        .filter(|j| j.initiator_id == PREBUILDS_USER_ID && j.started_at.is_some())
        .count();
    let lost = args.prebuilds as i64 - (ids.len() + prebuilds_left + prebuilds_run) as i64;

    let mut table = Table::new();
    table.set_header(["backend", "measure", "p50 ms", "p99 ms", "goal"]);
    for r in &rows {
        table.add_row([
            backend.name().to_string(),
            r.what.clone(),
            format!("{:.1}", r.p50),
            format!("{:.1}", r.p99),
            r.goal.clone(),
        ]);
    }
    table.add_row([
        backend.name().to_string(),
        "server peak RSS".into(),
        format!("{rss:.0} MiB"),
        String::new(),
        "< 100 MiB".into(),
    ]);
    println!("{table}");
    println!(
        "{}: canceled {} (answer count {}), not ending canceled: {wrong}, handed out after the cancel: {handed_out_after}, prebuilds run by the daemons before their cancel: {prebuilds_run}, still pending: {prebuilds_left}, lost: {lost}",
        backend.name(),
        ids.len(),
        canceled["count"],
    );
    drop(server);
    store.close().await?;
    db.drop_now().await;
    Ok(())
}
