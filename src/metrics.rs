//! Prometheus metrics: counters and histograms of what this replica did, and gauges read from
//! the database (so every replica reports the same queue). Gauges are refreshed by a few
//! aggregate queries at most once per `GAUGE_TTL`, however often Prometheus scrapes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use uuid::Uuid;

use crate::domain::daemon::{Daemon, DaemonStatus, Liveness};
use crate::domain::job::{Job, JobStatus};
use crate::store::jobs::ReapedJob;
use crate::store::{Store, StoreResult};

/// How long database gauges are reused between scrapes.
pub const GAUGE_TTL: Duration = Duration::from_secs(5);

/// Seconds to an hour: provisioning runs take minutes, queue waits can be milliseconds.
const JOB_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];
/// HTTP latency, up to the 30 s long-poll.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const STATUSES: [JobStatus; 6] = [
    JobStatus::Pending,
    JobStatus::Running,
    JobStatus::Succeeded,
    JobStatus::Canceling,
    JobStatus::Canceled,
    JobStatus::Failed,
];

pub struct Metrics {
    registry: Registry,
    pub jobs_enqueued: IntCounter,
    /// Claim statements run by this replica (each claims up to k jobs), from the store's count.
    claim_statements: IntCounter,
    jobs_finished: IntCounterVec,
    queue_wait: prometheus::Histogram,
    run_seconds: HistogramVec,
    reaped: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    jobs: IntGaugeVec,
    pending_unmatched: IntGaugeVec,
    oldest_pending: GaugeVec,
    daemons: IntGaugeVec,
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: T) -> T {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        Self {
            jobs_enqueued: register(&r, counter("provq_provisioner_jobs_enqueued_total", "Jobs enqueued through this replica.")),
            claim_statements: register(&r, counter("provq_provisioner_claim_statements_total", "Claim statements this replica ran (each claims up to k jobs for one daemon, or one job each for a batch of daemons).")),
            jobs_finished: register(&r, counter_vec("provq_provisioner_jobs_finished_total", "Jobs that reached a terminal status through this replica, by status.", &["status"])),
            queue_wait: register(
                &r,
                prometheus::Histogram::with_opts(
                    HistogramOpts::new("provq_provisioner_job_queue_wait_seconds", "Time from enqueue to acquire of jobs acquired through this replica.")
                        .buckets(JOB_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            run_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("provq_provisioner_job_run_seconds", "Time from acquire to the end of jobs finished through this replica, by status.")
                        .buckets(JOB_BUCKETS.to_vec()),
                    &["status"],
                )
                .expect("valid metric"),
            ),
            reaped: register(&r, counter_vec("provq_reaper_jobs_reaped_total", "Jobs failed by this replica's reaper, by reason (hung or pending).", &["reason"])),
            http_requests: register(&r, counter_vec("provq_http_requests_total", "HTTP requests by method, route template and status code.", &["method", "route", "code"])),
            http_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("provq_http_request_duration_seconds", "HTTP request latency by method and route template.").buckets(HTTP_BUCKETS.to_vec()),
                    &["method", "route"],
                )
                .expect("valid metric"),
            ),
            jobs: register(&r, gauge_vec("provq_provisioner_jobs", "Jobs in the database by organization and status.", &["organization", "status"])),
            pending_unmatched: register(&r, gauge_vec("provq_provisioner_jobs_pending_unmatched", "Pending jobs that no online daemon can run.", &["organization"])),
            oldest_pending: register(
                &r,
                GaugeVec::new(Opts::new("provq_provisioner_jobs_oldest_pending_age_seconds", "Age of the oldest pending job (0 when none)."), &["organization"]).expect("valid metric"),
            ),
            daemons: register(&r, gauge_vec("provq_provisioner_daemons", "Daemons by organization and status (idle, busy, offline).", &["organization", "status"])),
            refreshed: tokio::sync::Mutex::new(None),
            registry: r,
        }
        .with_zero_series()
    }

    /// Creates the label combinations every deployment has, so a fresh daemon already shows
    /// every metric (the text format omits families without series).
    fn with_zero_series(self) -> Self {
        for s in [JobStatus::Succeeded, JobStatus::Failed, JobStatus::Canceled] {
            self.jobs_finished.with_label_values(&[s.as_str()]);
            self.run_seconds.with_label_values(&[s.as_str()]);
        }
        for reason in ["hung", "pending"] {
            self.reaped.with_label_values(&[reason]);
        }
        self.http_requests
            .with_label_values(&["GET", "/healthz", "200"]);
        self.http_duration.with_label_values(&["GET", "/healthz"]);
        self
    }

    /// A job was handed to a daemon.
    pub fn job_acquired(&self, job: &Job) {
        if let Some(started) = job.started_at {
            self.queue_wait.observe(seconds(started - job.created_at));
        }
    }

    /// A job reached a terminal status (or `canceling`, which is counted when it ends).
    pub fn job_finished(&self, job: &Job) {
        let status = job.status();
        if !status.is_terminal() {
            return;
        }
        self.jobs_finished
            .with_label_values(&[status.as_str()])
            .inc();
        if let (Some(started), Some(completed)) = (job.started_at, job.completed_at) {
            self.run_seconds
                .with_label_values(&[status.as_str()])
                .observe(seconds(completed - started));
        }
    }

    /// The reaper failed a job; a running one also ran until then, like any failed job.
    pub fn job_reaped(&self, job: &ReapedJob) {
        self.reaped.with_label_values(&[job.reason.as_str()]).inc();
        let failed = JobStatus::Failed.as_str();
        self.jobs_finished.with_label_values(&[failed]).inc();
        if let Some(started) = job.started_at {
            self.run_seconds
                .with_label_values(&[failed])
                .observe(seconds(job.completed_at - started));
        }
    }

    /// The exposition text, refreshing the database gauges if they are older than `GAUGE_TTL`.
    pub async fn render(
        &self,
        store: &Store,
        stale_after: chrono::Duration,
    ) -> StoreResult<String> {
        {
            let mut refreshed = self.refreshed.lock().await;
            if refreshed.is_none_or(|at| at.elapsed() >= GAUGE_TTL) {
                self.refresh(store, stale_after).await?;
                *refreshed = Some(Instant::now());
            }
        }
        let claims = store.claim_statements();
        self.claim_statements
            .inc_by(claims.saturating_sub(self.claim_statements.get()));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        Ok(String::from_utf8(out).expect("exposition is UTF-8"))
    }

    /// Makes the next `render` read the database gauges again, as if `GAUGE_TTL` had passed: a
    /// test then checks fresh gauges without waiting out the cache.
    pub async fn expire_gauges(&self) {
        *self.refreshed.lock().await = None;
    }

    async fn refresh(&self, store: &Store, stale_after: chrono::Duration) -> StoreResult<()> {
        let now = crate::domain::now();
        let orgs: BTreeMap<Uuid, String> = store
            .list_organizations(None)
            .await?
            .into_iter()
            .map(|o| (o.id, o.name))
            .collect();
        let label = |id: &Uuid| orgs.get(id).cloned().unwrap_or_else(|| id.to_string());
        self.jobs.reset();
        self.daemons.reset();
        self.pending_unmatched.reset();
        self.oldest_pending.reset();
        for name in orgs.values() {
            for s in STATUSES {
                self.jobs
                    .with_label_values(&[name.as_str(), s.as_str()])
                    .set(0);
            }
            for s in ["idle", "busy", "offline"] {
                self.daemons.with_label_values(&[name.as_str(), s]).set(0);
            }
            self.pending_unmatched
                .with_label_values(&[name.as_str()])
                .set(0);
            self.oldest_pending
                .with_label_values(&[name.as_str()])
                .set(0.0);
        }
        for (org, status, n) in store.job_status_counts().await? {
            self.jobs
                .with_label_values(&[label(&org).as_str(), status.as_str()])
                .set(n);
        }
        for (org, oldest) in store.oldest_pending().await? {
            self.oldest_pending
                .with_label_values(&[label(&org).as_str()])
                .set(seconds(now - oldest).max(0.0));
        }
        let liveness = Liveness::at(now, stale_after);
        let busy = store.busy_worker_ids(None).await?;
        let daemons = store.daemons(None).await?;
        let mut online: HashMap<Uuid, Vec<&Daemon>> = HashMap::new();
        for d in &daemons {
            let status = liveness.status(d.last_seen_at, busy.contains(&d.id));
            self.daemons
                .with_label_values(&[label(&d.organization_id).as_str(), status.as_str()])
                .inc();
            if status != DaemonStatus::Offline {
                online.entry(d.organization_id).or_default().push(d);
            }
        }
        for (org, job_tags, provisioner, n) in store.pending_groups_everywhere().await? {
            let runnable = online
                .get(&org)
                .is_some_and(|ds| ds.iter().any(|d| d.can_run(&job_tags, provisioner)));
            if !runnable {
                self.pending_unmatched
                    .with_label_values(&[label(&org).as_str()])
                    .add(n);
            }
        }
        Ok(())
    }
}

fn seconds(d: chrono::Duration) -> f64 {
    d.num_microseconds()
        .map(|us| us as f64 / 1e6)
        .unwrap_or(f64::MAX)
}

/// What the Prometheus listener serves from: this replica's metrics, and the store and
/// daemon staleness its database gauges are read with.
#[derive(Clone)]
pub struct Scrape {
    pub metrics: std::sync::Arc<Metrics>,
    pub store: Store,
    pub stale_after: chrono::Duration,
}

/// The Prometheus listener's app: `GET /metrics` in the text exposition format, no auth.
pub fn endpoint(scrape: Scrape) -> poem::endpoint::BoxEndpoint<'static> {
    use poem::{EndpointExt, Route, get, handler, web::Data};

    #[handler]
    async fn serve(Data(scrape): Data<&Scrape>) -> poem::Response {
        match scrape
            .metrics
            .render(&scrape.store, scrape.stale_after)
            .await
        {
            Ok(text) => poem::Response::builder()
                .content_type("text/plain; version=0.0.4; charset=utf-8")
                .body(text),
            Err(e) => {
                tracing::error!(error = %e, "metrics refresh failed");
                poem::Response::builder()
                    .status(poem::http::StatusCode::SERVICE_UNAVAILABLE)
                    .body("metrics unavailable: database error")
            }
        }
    }

    Route::new().at("/metrics", get(serve)).data(scrape).boxed()
}
