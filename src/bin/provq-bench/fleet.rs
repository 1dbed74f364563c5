//! Fleet: many idle daemons long-polling while jobs trickle in. Measures what one job costs
//! when N daemons wait: claim statements per job (the server's
//! `provq_provisioner_claim_statements_total`), server and PostgreSQL CPU per job, pickup
//! latency from the enqueue answer to the daemon's acquire answer, and the server's peak RSS.
//! Each daemon serves one of `--tag-sets` tag sets; job `i` carries tag set `i % tag_sets`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use comfy_table::Table;
use provq::cli::worker_client::{
    AcquireJobsRequest, AcquireRequest, Credential, JobReport, WorkerClient,
};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::fixtures::{Backend, BenchDb, Targets};
use crate::server::{Child, cpu_seconds, first_owner, http};
use crate::stats::{ms, percentile};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    targets: Targets,
    /// Idle daemons, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "8,1000")]
    daemons: Vec<usize>,
    /// Worker protocols, one run per value: `old` (acquire, then complete) or `new` (report and
    /// acquire in one call).
    #[arg(long, value_delimiter = ',', default_value = "old,new")]
    protocols: Vec<Protocol>,
    /// Distinct tag sets among daemons and jobs.
    #[arg(long, default_value_t = 20)]
    tag_sets: usize,
    /// Jobs enqueued per second, one at a time.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds of enqueueing.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Old,
    New,
}

#[derive(Serialize, Default)]
struct Figures {
    backend: String,
    protocol: String,
    daemons: usize,
    jobs: usize,
    claims_per_job: f64,
    server_cpu_ms_per_job: f64,
    postgres_cpu_ms_per_job: Option<f64>,
    pickup_p50_ms: f64,
    pickup_p99_ms: f64,
    pickup_max_ms: f64,
    server_peak_rss_mib: f64,
    duplicates: usize,
    lost: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for &backend in &args.targets.backends {
        for &daemons in &args.daemons {
            for &protocol in &args.protocols {
                if !args.json {
                    eprintln!(
                        "{}: {daemons} daemons, {protocol:?} protocol…",
                        backend.name()
                    );
                }
                let figures = run_one(&args, backend, daemons, protocol).await?;
                // Each run as it ends, so a long series still leaves its figures.
                eprintln!("{}", serde_json::to_string(&figures)?);
                all.push(figures);
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.set_header([
        "backend",
        "protocol",
        "daemons",
        "jobs",
        "claims/job",
        "server CPU ms/job",
        "PostgreSQL CPU ms/job",
        "pickup p50/p99/max ms",
        "peak RSS MiB",
        "dup/lost",
    ]);
    for f in &all {
        table.add_row([
            f.backend.clone(),
            f.protocol.clone(),
            f.daemons.to_string(),
            f.jobs.to_string(),
            format!("{:.2}", f.claims_per_job),
            format!("{:.2}", f.server_cpu_ms_per_job),
            f.postgres_cpu_ms_per_job
                .map_or("-".into(), |c| format!("{c:.2}")),
            format!(
                "{:.1} / {:.1} / {:.1}",
                f.pickup_p50_ms, f.pickup_p99_ms, f.pickup_max_ms
            ),
            format!("{:.1}", f.server_peak_rss_mib),
            format!("{}/{}", f.duplicates, f.lost),
        ]);
    }
    println!("{table}");
    println!(
        "{} tag sets, {} jobs/s for {} s, one at a time; CPU is for the whole run divided by its jobs.",
        args.tag_sets, args.rate, args.seconds
    );
    println!(
        "Goals: ≤ 1.1 claims/job with 8 and with 1,000 daemons; pickup p99 ≤ 10 ms with 1,000; CPU/job with 1,000 ≤ 2× the 8-daemon case; peak RSS < 100 MiB."
    );
    for f in &all {
        let verdict = if f.duplicates == 0 && f.lost == 0 {
            "no job acquired twice, none lost"
        } else {
            "JOBS DUPLICATED OR LOST"
        };
        let claims = if f.claims_per_job <= 1.1 {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "{} {} {} daemons: {verdict}; claims/job goal {claims} ({:.2})",
            f.backend, f.protocol, f.daemons, f.claims_per_job
        );
    }
    Ok(())
}

/// CPU seconds of every PostgreSQL backend serving `database` (the throwaway database is this
/// run's alone, so this is the run's share of the shared server).
async fn postgres_cpu(admin_url: &str, database: &str) -> anyhow::Result<f64> {
    let admin = Database::connect(admin_url).await?;
    let rows = admin
        .query_all_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT pid FROM pg_stat_activity WHERE datname = $1",
            [database.into()],
        ))
        .await?;
    admin.close().await?;
    let mut total = 0.0;
    for row in rows {
        let pid: i32 = row.try_get("", "pid")?;
        total += cpu_seconds(pid as u32);
    }
    Ok(total)
}

type Pickups = Arc<Mutex<HashMap<Uuid, Instant>>>;

async fn run_one(
    args: &Args,
    backend: Backend,
    daemons: usize,
    protocol: Protocol,
) -> anyhow::Result<Figures> {
    let mut db = BenchDb::create(backend, &args.targets.postgres_url).await?;
    let server = Child::start_with_metrics(&db.url, 20)?;
    let client = http();
    let token = first_owner(&client, &server.base).await?;
    let worker = WorkerClient::new(
        client.clone(),
        &server.base,
        Credential::Psk("bench-psk".into()),
    );
    let got: Pickups = Arc::new(Mutex::new(HashMap::new()));
    let picked = Arc::new(Mutex::new(Vec::<Uuid>::new()));
    let stop = provq::shutdown::Shutdown::new();
    let mut tasks = Vec::with_capacity(daemons);
    for d in 0..daemons {
        let (worker, got, picked, stop) =
            (worker.clone(), got.clone(), picked.clone(), stop.clone());
        let tags = json!({"pool": format!("p{}", d % args.tag_sets)});
        // Daemons start over a second or two, as a fleet does.
        tokio::time::sleep(Duration::from_millis(2)).await;
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                r = daemon(worker, d, tags, protocol, got, picked) => r,
                () = stop.cancelled() => Ok(()),
            }
        }));
    }
    // Every daemon registered and asleep (the first claims of each kind find nothing).
    tokio::time::sleep(Duration::from_millis(3_000 + daemons as u64 * 5)).await;
    let claims_before = server
        .counter(&client, "provq_provisioner_claim_statements_total")
        .await?;
    let cpu_before = cpu_seconds(server.pid());
    let pg_name = db.url.rsplit('/').next().unwrap_or_default().to_string();
    let pg_before = match backend {
        Backend::Postgres => Some(postgres_cpu(&args.targets.postgres_url, &pg_name).await?),
        Backend::Sqlite => None,
    };

    let n = (args.rate * args.seconds) as usize;
    let sent = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / args.rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut enqueues = Vec::with_capacity(n);
    for i in 0..n {
        ticker.tick().await;
        let (client, base, token, sent) = (
            client.clone(),
            server.base.clone(),
            token.clone(),
            sent.clone(),
        );
        // Only tag sets some daemon serves (8 daemons cover 8 of the 20).
        let tags = json!({"pool": format!("p{}", i % args.tag_sets.min(daemons))});
        enqueues.push(tokio::spawn(async move {
            let resp = loop {
                let resp = client
                    .post(format!(
                        "{base}/api/v2/organizations/default/provisionerjobs"
                    ))
                    .header("Coder-Session-Token", &token)
                    .json(&json!({"type": "workspace_build", "tags": tags}))
                    .send()
                    .await?;
                // A busy server is retried; pickup runs from the successful answer.
                if resp.status().as_u16() != 503 {
                    break resp;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let at = Instant::now();
            anyhow::ensure!(
                resp.status().as_u16() == 201,
                "enqueue answered {}",
                resp.status()
            );
            let job: serde_json::Value = resp.json().await?;
            sent.lock()
                .await
                .push((Uuid::parse_str(job["id"].as_str().unwrap_or_default())?, at));
            anyhow::Ok(())
        }));
    }
    for e in enqueues {
        e.await??;
    }
    // Let the last jobs be picked up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while picked.lock().await.len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let claims = server
        .counter(&client, "provq_provisioner_claim_statements_total")
        .await?
        - claims_before;
    let cpu = cpu_seconds(server.pid()) - cpu_before;
    let pg = match (backend, pg_before) {
        (Backend::Postgres, Some(before)) => {
            Some(postgres_cpu(&args.targets.postgres_url, &pg_name).await? - before)
        }
        _ => None,
    };
    stop.cancel();
    for t in tasks {
        t.await??;
    }
    let (rss, _) = server.cost();
    server.stop();
    db.drop_now().await;

    let sent = sent.lock().await;
    let got = got.lock().await;
    let picked = picked.lock().await;
    let unique: HashSet<&Uuid> = picked.iter().collect();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .map(|(id, at)| {
            got.get(id)
                .map_or(Duration::MAX, |g| g.saturating_duration_since(*at))
        })
        .collect();
    Ok(Figures {
        backend: backend.name().into(),
        protocol: format!("{protocol:?}").to_lowercase(),
        daemons,
        jobs: n,
        claims_per_job: claims / n as f64,
        server_cpu_ms_per_job: cpu * 1000.0 / n as f64,
        postgres_cpu_ms_per_job: pg.map(|p| p * 1000.0 / n as f64),
        pickup_p50_ms: ms(percentile(&mut latencies, 50.0)),
        pickup_p99_ms: ms(percentile(&mut latencies, 99.0)),
        pickup_max_ms: ms(latencies.iter().max().copied().unwrap_or_default()),
        server_peak_rss_mib: rss,
        duplicates: picked.len() - unique.len(),
        lost: sent.iter().filter(|(id, _)| !unique.contains(id)).count(),
    })
}

/// One daemon: long-polls, "runs" each job at once, reports it (then or with the next acquire).
async fn daemon(
    worker: WorkerClient,
    d: usize,
    tags: serde_json::Value,
    protocol: Protocol,
    got: Pickups,
    picked: Arc<Mutex<Vec<Uuid>>>,
) -> anyhow::Result<()> {
    let mut request = AcquireRequest::named(format!("fleet-{d}"));
    request.tags = Some(tags);
    request.wait_seconds = Some(30);
    let mut report: Option<JobReport> = None;
    loop {
        let job = match protocol {
            Protocol::Old => worker.acquire(&request).await.map(|a| a.map(|a| a.job)),
            Protocol::New => worker
                .acquire_jobs(&AcquireJobsRequest {
                    daemon: request.clone(),
                    max_jobs: None,
                    report: report.clone(),
                    reports: None,
                })
                .await
                .map(|answer| answer.jobs.into_iter().next()),
        };
        // A busy server (503 while 1,000 daemons register) is retried, as a daemon would.
        let job = match job {
            Ok(job) => {
                report = None;
                job
            }
            Err(e) => {
                if e.status().is_some_and(|s| s.is_client_error()) {
                    // The report already went through (or can never): do not repeat it.
                    report = None;
                }
                tracing::debug!(error = %e, "acquire failed; retrying");
                // Spread the retries: a fleet retrying in step keeps the pool exhausted.
                tokio::time::sleep(Duration::from_millis(1_000 + (d as u64 * 7) % 2_000)).await;
                continue;
            }
        };
        let Some(job) = job else { continue };
        got.lock().await.insert(job.job_id, Instant::now());
        picked.lock().await.push(job.job_id);
        match protocol {
            Protocol::Old => {
                while let Err(e) = worker.complete(job.job_id, &job.lease_token).await {
                    tracing::debug!(error = %e, "complete failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Protocol::New => {
                report = Some(JobReport {
                    job_id: job.job_id,
                    lease_token: Some(job.lease_token),
                    error: None,
                    error_code: None,
                })
            }
        }
    }
}
