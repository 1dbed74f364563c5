//! Dispatch: how many jobs provq moves through its HTTP API, how close that is to what its own
//! job store manages without HTTP, how fast an idle daemon picks up a new job, and what the
//! server costs meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use provq::cli::worker_client::{
    AcquireJobsRequest, AcquireRequest, Credential, JobReport, WorkerClient,
};
use provq::domain::job::{JobType, Provisioner};
use provq::domain::tags::Tags;
use provq::store::Store;
use provq::store::daemons::DaemonRegistration;
use provq::store::jobs::{NewJob, Runnable};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::fixtures::{Backend, BenchDb, Fill, Targets, fill_jobs};
use crate::server::{Child, http};
use crate::stats::{ms, percentile};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    targets: Targets,
    /// Jobs to enqueue and drain.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Concurrent daemons (and enqueuers).
    #[arg(long, default_value_t = 8)]
    daemons: usize,
    /// Jobs per second for the pickup-latency phase.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Jobs in the pickup-latency phase.
    #[arg(long, default_value_t = 2_000)]
    latency_jobs: usize,
    /// Finished jobs written into the database before the run (memory with a big table).
    #[arg(long, default_value_t = 100_000)]
    preload: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Default)]
struct Figures {
    backend: String,
    jobs: usize,
    daemons: usize,
    http_enqueue_per_s: f64,
    http_drain_per_s: f64,
    /// Report-and-acquire, one job per call.
    http_drain_new_per_s: f64,
    /// Report-and-acquire, one daemon with 8 slots acquiring up to 8 jobs per call.
    http_drain_batched_per_s: f64,
    store_enqueue_per_s: f64,
    store_drain_per_s: f64,
    drain_ratio_http_to_store: f64,
    pickup_p50_ms: f64,
    pickup_p95_ms: f64,
    pickup_p99_ms: f64,
    pickup_max_ms: f64,
    /// The enqueue call itself (request sent → 201 read) during the pickup phase.
    enqueue_call_p50_ms: f64,
    enqueue_call_p99_ms: f64,
    server_peak_rss_mib: f64,
    server_cpu_s: f64,
    duplicates: usize,
    lost: usize,
}

fn bar(len: usize, msg: String, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec}")
            .expect("template")
            .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for &backend in &args.targets.backends {
        all.push(run_backend(&args, backend).await?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.set_header([
        "backend",
        "enqueue/s (HTTP)",
        "drain/s (HTTP)",
        "drain/s (HTTP, report+acquire)",
        "drain/s (HTTP, 8 slots)",
        "enqueue/s (store)",
        "drain/s (store)",
        "drain HTTP/store",
        "pickup p50/p95/p99/max ms",
        "enqueue call p50/p99 ms",
        "peak RSS MiB",
        "CPU s",
        "dup/lost",
    ]);
    for f in &all {
        table.add_row([
            f.backend.clone(),
            format!("{:.0}", f.http_enqueue_per_s),
            format!("{:.0}", f.http_drain_per_s),
            format!("{:.0}", f.http_drain_new_per_s),
            format!("{:.0}", f.http_drain_batched_per_s),
            format!("{:.0}", f.store_enqueue_per_s),
            format!("{:.0}", f.store_drain_per_s),
            format!("{:.2}", f.drain_ratio_http_to_store),
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1}",
                f.pickup_p50_ms, f.pickup_p95_ms, f.pickup_p99_ms, f.pickup_max_ms
            ),
            format!(
                "{:.2} / {:.2}",
                f.enqueue_call_p50_ms, f.enqueue_call_p99_ms
            ),
            format!("{:.1}", f.server_peak_rss_mib),
            format!("{:.1}", f.server_cpu_s),
            format!("{}/{}", f.duplicates, f.lost),
        ]);
    }
    println!("{table}");
    println!(
        "{} jobs, {} daemons and enqueuers, pickup at {}/s over {} jobs, {} finished jobs preloaded.",
        args.jobs, args.daemons, args.rate, args.latency_jobs, args.preload
    );
    println!(
        "Goals (PostgreSQL): drain ≥ 6,000 jobs/s with 8 slots, ≥ 2,500 jobs/s one job per call; pickup p99 ≤ 3 ms at 200 jobs/s (from the enqueue call's start to the acquire's answer); enqueue call p50 ≤ 1.2 ms; peak RSS < 100 MiB. SQLite: no slower than before."
    );
    for f in &all {
        let verdict = if f.duplicates == 0 && f.lost == 0 {
            "no job acquired twice, none lost"
        } else {
            "JOBS DUPLICATED OR LOST"
        };
        println!("{}: {verdict}", f.backend);
    }
    Ok(())
}

async fn run_backend(args: &Args, backend: Backend) -> anyhow::Result<Figures> {
    let quiet = args.json;
    let mut figures = Figures {
        backend: backend.name().into(),
        jobs: args.jobs,
        daemons: args.daemons,
        ..Default::default()
    };
    // HTTP against a child `provq serve`.
    let mut db = BenchDb::create(backend, &args.targets.postgres_url).await?;
    let max_connections = (args.daemons as u32 * 2 + 4).max(20);
    let server = Child::start(&db.url, max_connections)?;
    let client = http();
    let token = crate::server::first_owner(&client, &server.base).await?;
    if args.preload > 0 {
        let store = Store::connect(&crate::server::settings(&db.url)).await?;
        let org = store.default_organization().await?.id;
        let b = bar(
            args.preload,
            format!("{}: preloading finished jobs", backend.name()),
            quiet,
        );
        fill_jobs(
            &store,
            org,
            provq::domain::PREBUILDS_USER_ID,
            Fill {
                total: args.preload,
                pending: 0,
                tag_sets: 20,
                prebuild_share: 0.0,
            },
            &b,
        )
        .await?;
        b.finish_and_clear();
        store.close().await?;
    }
    let http_run = Http::new(server.base.clone(), token, client);

    let b = bar(
        args.jobs,
        format!("{}: enqueue over HTTP", backend.name()),
        quiet,
    );
    let started = Instant::now();
    let enqueued = http_run.enqueue_many(args.jobs, args.daemons, &b).await?;
    figures.http_enqueue_per_s = args.jobs as f64 / started.elapsed().as_secs_f64();
    b.finish_and_clear();

    let b = bar(
        args.jobs,
        format!("{}: drain over HTTP", backend.name()),
        quiet,
    );
    let started = Instant::now();
    let acquired = http_run.drain(args.jobs, args.daemons, &b).await?;
    figures.http_drain_per_s = args.jobs as f64 / started.elapsed().as_secs_f64();
    b.finish_and_clear();
    let unique: HashSet<&Uuid> = acquired.iter().collect();
    figures.duplicates = acquired.len() - unique.len();
    figures.lost = enqueued.iter().filter(|id| !unique.contains(id)).count();

    // The same drain with the new protocol: one job per call, then 8 slots per call.
    for batched in [false, true] {
        let b = bar(
            args.jobs,
            format!("{}: enqueue again", backend.name()),
            quiet,
        );
        let enqueued = http_run.enqueue_many(args.jobs, args.daemons, &b).await?;
        b.finish_and_clear();
        let what = if batched { "8 slots" } else { "report+acquire" };
        let b = bar(
            args.jobs,
            format!("{}: drain over HTTP, {what}", backend.name()),
            quiet,
        );
        let started = Instant::now();
        let acquired = if batched {
            http_run.drain_batched(args.jobs, 8, &b).await?
        } else {
            http_run.drain_new(args.jobs, args.daemons, &b).await?
        };
        let rate = args.jobs as f64 / started.elapsed().as_secs_f64();
        b.finish_and_clear();
        if batched {
            figures.http_drain_batched_per_s = rate;
        } else {
            figures.http_drain_new_per_s = rate;
        }
        let unique: HashSet<&Uuid> = acquired.iter().collect();
        figures.duplicates += acquired.len() - unique.len();
        figures.lost += enqueued.iter().filter(|id| !unique.contains(id)).count();
    }

    let b = bar(
        args.latency_jobs,
        format!("{}: pickup latency", backend.name()),
        quiet,
    );
    let (mut latencies, mut calls) = http_run
        .pickup(args.latency_jobs, args.daemons, args.rate, &b)
        .await?;
    b.finish_and_clear();
    figures.enqueue_call_p50_ms = ms(percentile(&mut calls, 50.0));
    figures.enqueue_call_p99_ms = ms(percentile(&mut calls, 99.0));
    figures.pickup_p50_ms = ms(percentile(&mut latencies, 50.0));
    figures.pickup_p95_ms = ms(percentile(&mut latencies, 95.0));
    figures.pickup_p99_ms = ms(percentile(&mut latencies, 99.0));
    figures.pickup_max_ms = ms(latencies.iter().max().copied().unwrap_or_default());
    let (rss, cpu) = server.cost();
    figures.server_peak_rss_mib = rss;
    figures.server_cpu_s = cpu;
    server.stop();
    db.drop_now().await;

    // The same cycle on the job store directly, on a fresh database.
    let mut db = BenchDb::create(backend, &args.targets.postgres_url).await?;
    let mut settings = crate::server::settings(&db.url);
    settings.database_max_connections = max_connections;
    let store = Store::connect(&settings).await?;
    store.migrate_up().await?;
    let (enqueue, drain) = store_cycle(&store, args.jobs, args.daemons, quiet, backend).await?;
    figures.store_enqueue_per_s = enqueue;
    figures.store_drain_per_s = drain;
    figures.drain_ratio_http_to_store = figures.http_drain_per_s / drain;
    store.close().await?;
    db.drop_now().await;
    Ok(figures)
}

struct Http {
    base: String,
    token: String,
    client: reqwest::Client,
    /// Built once: a daemon keeps its client (and its connections) for every call.
    worker: WorkerClient,
}

impl Http {
    fn new(base: String, token: String, client: reqwest::Client) -> Self {
        let worker = WorkerClient::new(client.clone(), &base, Credential::Psk("bench-psk".into()));
        Self {
            base,
            token,
            client,
            worker,
        }
    }

    fn worker(&self) -> WorkerClient {
        self.worker.clone()
    }

    /// Drains `n` jobs with `daemons` daemons that report each job with their next acquire.
    async fn drain_new(
        &self,
        n: usize,
        daemons: usize,
        b: &ProgressBar,
    ) -> anyhow::Result<Vec<Uuid>> {
        let done = Arc::new(AtomicUsize::new(0));
        let acquired = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let mut tasks = Vec::new();
        for d in 0..daemons {
            let (worker, done, acquired, b) =
                (self.worker(), done.clone(), acquired.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                let mut request = AcquireRequest::named(format!("bench-new-{d}"));
                request.wait_seconds = Some(1);
                let mut report = None;
                while done.load(Ordering::Acquire) < n || report.is_some() {
                    let mut daemon = request.clone();
                    if done.load(Ordering::Acquire) >= n {
                        // The last report: nothing more to wait for.
                        daemon.wait_seconds = Some(0);
                    }
                    let answer = worker
                        .acquire_jobs(&AcquireJobsRequest {
                            daemon,
                            max_jobs: None,
                            report: report.take(),
                            reports: None,
                        })
                        .await?;
                    for job in answer.jobs {
                        acquired.lock().await.push(job.job_id);
                        done.fetch_add(1, Ordering::AcqRel);
                        b.inc(1);
                        report = Some(JobReport {
                            job_id: job.job_id,
                            lease_token: Some(job.lease_token),
                            error: None,
                            error_code: None,
                        });
                    }
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(Arc::try_unwrap(acquired).expect("tasks done").into_inner())
    }

    /// Drains `n` jobs with one daemon of `slots` slots, as `provq provisioner start
    /// --concurrency` does with no-op jobs: each call reports every job that finished since the
    /// last one and acquires as many jobs as slots are free, in one transaction.
    async fn drain_batched(
        &self,
        n: usize,
        slots: usize,
        b: &ProgressBar,
    ) -> anyhow::Result<Vec<Uuid>> {
        let worker = self.worker();
        let mut request = AcquireRequest::named("bench-batched");
        request.wait_seconds = Some(1);
        let mut acquired = Vec::with_capacity(n);
        let mut held: Vec<(Uuid, String)> = Vec::new();
        while acquired.len() < n || !held.is_empty() {
            let reports: Vec<JobReport> = held
                .drain(..)
                .map(|(id, lease)| JobReport {
                    job_id: id,
                    lease_token: Some(lease),
                    error: None,
                    error_code: None,
                })
                .collect();
            let mut ask = AcquireJobsRequest {
                daemon: request.clone(),
                max_jobs: Some(slots as i64),
                report: None,
                reports: Some(reports),
            };
            if acquired.len() >= n {
                // The last reports: nothing more to wait for.
                ask.daemon.wait_seconds = Some(0);
            }
            for job in worker.acquire_jobs(&ask).await?.jobs {
                acquired.push(job.job_id);
                b.inc(1);
                held.push((job.job_id, job.lease_token));
            }
            if acquired.len() >= n && held.is_empty() {
                break;
            }
        }
        Ok(acquired)
    }

    /// One enqueue: the job's id, when the call was sent and when its 201 was read.
    async fn enqueue(&self) -> anyhow::Result<(Uuid, Instant, Instant)> {
        let sent = Instant::now();
        let resp = self
            .client
            .post(format!(
                "{}/api/v2/organizations/default/provisionerjobs",
                self.base
            ))
            .header("Coder-Session-Token", &self.token)
            .json(&json!({"type": "workspace_build"}))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().as_u16() == 201,
            "enqueue answered {}",
            resp.status()
        );
        let job: Value = resp.json().await?;
        let answered = Instant::now();
        Ok((
            Uuid::parse_str(job["id"].as_str().unwrap_or_default())?,
            sent,
            answered,
        ))
    }

    async fn enqueue_many(
        &self,
        n: usize,
        workers: usize,
        b: &ProgressBar,
    ) -> anyhow::Result<Vec<Uuid>> {
        let left = Arc::new(AtomicUsize::new(n));
        let ids = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (this, left, ids, b) = (self.clone_handle(), left.clone(), ids.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| l.checked_sub(1))
                    .is_ok()
                {
                    let (id, _, _) = this.enqueue().await?;
                    ids.lock().await.push(id);
                    b.inc(1);
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(Arc::try_unwrap(ids).expect("tasks done").into_inner())
    }

    fn clone_handle(&self) -> Arc<Http> {
        Arc::new(Http {
            base: self.base.clone(),
            token: self.token.clone(),
            client: self.client.clone(),
            worker: self.worker.clone(),
        })
    }

    /// One acquire with the old protocol; `Some((job, lease))` or `None` on 204.
    async fn acquire(&self, name: &str, wait: u64) -> anyhow::Result<Option<(Uuid, String)>> {
        let mut request = AcquireRequest::named(name);
        request.wait_seconds = Some(wait as i64);
        let answer = self.worker().acquire(&request).await?;
        Ok(answer.map(|a| (a.job.job_id, a.job.lease_token)))
    }

    async fn complete(&self, id: Uuid, lease: &str) -> anyhow::Result<()> {
        Ok(self.worker().complete(id, lease).await?)
    }

    async fn drain(&self, n: usize, daemons: usize, b: &ProgressBar) -> anyhow::Result<Vec<Uuid>> {
        let done = Arc::new(AtomicUsize::new(0));
        let acquired = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let mut tasks = Vec::new();
        for d in 0..daemons {
            let (this, done, acquired, b) = (
                self.clone_handle(),
                done.clone(),
                acquired.clone(),
                b.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let name = format!("bench-{d}");
                while done.load(Ordering::Acquire) < n {
                    if let Some((id, lease)) = this.acquire(&name, 1).await? {
                        this.complete(id, &lease).await?;
                        acquired.lock().await.push(id);
                        done.fetch_add(1, Ordering::AcqRel);
                        b.inc(1);
                    }
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(Arc::try_unwrap(acquired).expect("tasks done").into_inner())
    }

    /// Idle daemons long-poll; jobs arrive one at a time at `rate`. Returns each job's pickup
    /// (enqueue call sent → acquire answered) and each enqueue call's own duration.
    async fn pickup(
        &self,
        n: usize,
        daemons: usize,
        rate: u64,
        b: &ProgressBar,
    ) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let got = Arc::new(Mutex::new(HashMap::<Uuid, Instant>::with_capacity(n)));
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for d in 0..daemons {
            let (this, got, done, b) = (self.clone_handle(), got.clone(), done.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                let name = format!("idle-{d}");
                while done.load(Ordering::Acquire) < n {
                    if let Some((id, lease)) = this.acquire(&name, 2).await? {
                        got.lock().await.insert(id, Instant::now());
                        this.complete(id, &lease).await?;
                        done.fetch_add(1, Ordering::AcqRel);
                        b.inc(1);
                    }
                }
                anyhow::Ok(())
            }));
        }
        // Let every daemon start waiting before the first job.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut sent = Vec::with_capacity(n);
        let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for _ in 0..n {
            ticker.tick().await;
            sent.push(self.enqueue().await?);
        }
        for t in tasks {
            t.await??;
        }
        let got = got.lock().await;
        // Pickup runs from the enqueue call's start, as a user who enqueues sees it.
        let pickups = sent
            .iter()
            .map(|(id, at, _)| {
                got.get(id)
                    .map(|g| g.saturating_duration_since(*at))
                    .unwrap_or(Duration::MAX)
            })
            .collect();
        let calls = sent.iter().map(|(_, at, done)| *done - *at).collect();
        Ok((pickups, calls))
    }
}

/// enqueue → claim → complete straight on the store, with the same concurrency.
async fn store_cycle(
    store: &Store,
    n: usize,
    workers: usize,
    quiet: bool,
    backend: Backend,
) -> anyhow::Result<(f64, f64)> {
    let org = store.default_organization().await?.id;
    let new_job = || NewJob {
        organization_id: org,
        initiator_id: provq::domain::PREBUILDS_USER_ID,
        job_type: JobType::WorkspaceBuild,
        provisioner: Provisioner::Terraform,
        tags: Tags::untagged(),
        input: json!({}),
        file_id: Uuid::nil(),
        metadata: json!({}),
    };
    let b = bar(
        n,
        format!("{}: enqueue on the store", backend.name()),
        quiet,
    );
    let left = Arc::new(AtomicUsize::new(n));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (store, left, b, job) = (store.clone(), left.clone(), b.clone(), new_job());
        tasks.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| l.checked_sub(1))
                .is_ok()
            {
                store.enqueue_job(job.clone()).await?;
                b.inc(1);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let enqueue = n as f64 / started.elapsed().as_secs_f64();
    b.finish_and_clear();

    let b = bar(n, format!("{}: drain on the store", backend.name()), quiet);
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    // Claims as the server makes them (batched on SQLite).
    let events = provq::queue::JobEvents::new(
        store.clone(),
        Default::default(),
        provq::queue::Wakeups::local(),
    );
    let claims = provq::queue::Claims::new(store.clone(), events);
    for d in 0..workers {
        let (store, claims, done, b) = (store.clone(), claims.clone(), done.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let daemon = store
                .register_daemon(DaemonRegistration {
                    organization_id: org,
                    name: format!("store-{d}"),
                    key_id: None,
                    tags: Tags::untagged(),
                    provisioners: vec![Provisioner::Terraform],
                    version: "bench".into(),
                })
                .await?;
            let runnable = Runnable {
                organization_id: org,
                provisioners: vec![Provisioner::Terraform],
                tags: Tags::untagged(),
            };
            while done.load(Ordering::Acquire) < n {
                match claims.claim_job(daemon.id, &runnable).await? {
                    Some(claim) => {
                        store
                            .finish_job(claim.job.id, None, &claim.lease_token, None)
                            .await?;
                        done.fetch_add(1, Ordering::AcqRel);
                        b.inc(1);
                    }
                    None => tokio::task::yield_now().await,
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let drain = n as f64 / started.elapsed().as_secs_f64();
    b.finish_and_clear();
    Ok((enqueue, drain))
}
