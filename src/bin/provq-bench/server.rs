//! Servers under test: in-process (`InProcess`) for the list benchmark, a child `provq serve`
//! (`Child`) when the server's own memory and CPU are measured.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use provq::config::Settings;
use provq::shutdown::Shutdown;
use provq::startup::Application;
use provq::store::Store;
use serde_json::{Value, json};

pub const EMAIL: &str = "bench@example.com";
pub const PASSWORD: &str = "bench-password-1";

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

pub fn settings(database_url: &str) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        database_url: database_url.into(),
        prometheus: provq::config::PrometheusSettings {
            listen: String::new(),
        },
        provisioner: provq::config::ProvisionerSettings {
            daemon_psk: "bench-psk".into(),
            stale_after_secs: 3600,
        },
        rate_limit: provq::config::RateLimitSettings {
            api_per_minute: 0,
            ..Default::default()
        },
        // The benchmark runs many daemons on one PSK.
        limits: provq::config::RequestLimitSettings {
            long_polls_per_credential: u64::MAX,
            ..Default::default()
        },
        ..Settings::default()
    }
}

/// Creates the first user and logs in; returns the session token.
pub async fn first_owner(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    http.post(format!("{base}/api/v2/users/first"))
        .json(&json!({"email": EMAIL, "username": "bench", "password": PASSWORD}))
        .send()
        .await?;
    let login: Value = http
        .post(format!("{base}/api/v2/users/login"))
        .json(&json!({"email": EMAIL, "password": PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    Ok(login["session_token"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

pub struct InProcess {
    pub base: String,
    pub http: reqwest::Client,
    store: Store,
    shutdown: Shutdown,
}

impl InProcess {
    pub async fn start(database_url: &str) -> anyhow::Result<Self> {
        let app = Application::build(settings(database_url)).await?;
        let base = format!("http://{}", app.local_addr());
        let store = app.state().store.clone();
        let shutdown = Shutdown::new();
        tokio::spawn(app.run(shutdown.clone().cancelled_owned()));
        Ok(Self {
            base,
            http: http(),
            store,
            shutdown,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn owner_token(&self) -> anyhow::Result<String> {
        first_owner(&self.http, &self.base).await
    }

    pub async fn owner_id(&self, token: &str) -> anyhow::Result<uuid::Uuid> {
        let me: Value = self
            .http
            .get(format!("{}/api/v2/users/me", self.base))
            .header("Coder-Session-Token", token)
            .send()
            .await?
            .json()
            .await?;
        Ok(uuid::Uuid::parse_str(
            me["id"].as_str().unwrap_or_default(),
        )?)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `provq serve` as a child process (the release binary next to this one).
pub struct Child {
    pub base: String,
    /// `http://HOST:PORT/metrics`, when started with [`Child::start_with_metrics`].
    pub metrics: Option<String>,
    child: std::process::Child,
}

impl Child {
    pub fn start(database_url: &str, max_connections: u32) -> anyhow::Result<Self> {
        Self::spawn(database_url, max_connections, false)
    }

    /// Also serves `/metrics` (on a free port), for counters such as claim statements.
    pub fn start_with_metrics(database_url: &str, max_connections: u32) -> anyhow::Result<Self> {
        Self::spawn(database_url, max_connections, true)
    }

    fn spawn(database_url: &str, max_connections: u32, metrics: bool) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?.with_file_name("provq");
        anyhow::ensure!(
            exe.exists(),
            "{} not found: build it with `cargo build --release`",
            exe.display()
        );
        let mut child = Command::new(exe)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--prometheus-listen",
                if metrics { "127.0.0.1:0" } else { "" },
                "--database-url",
                database_url,
            ])
            // The bench's own variable would be an unknown setting to the server.
            .env_remove("PROVQ_BENCH_POSTGRES_URL")
            // As the shipped unit and image run it (deploy/provq.service).
            .env("MALLOC_ARENA_MAX", "2")
            .env("PROVQ_PROVISIONER__DAEMON_PSK", "bench-psk")
            .env("PROVQ_PROVISIONER__STALE_AFTER_SECS", "3600")
            .env("PROVQ_RATE_LIMIT__API_PER_MINUTE", "0")
            .env(
                "PROVQ_DATABASE_MAX_CONNECTIONS",
                max_connections.to_string(),
            )
            .env("PROVQ_LIMITS__LONG_POLLS_PER_CREDENTIAL", "100000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        lines.read_line(&mut first)?;
        let base = first
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow::anyhow!("unexpected output: {first}"))?
            .to_string();
        let metrics = if metrics {
            let mut second = String::new();
            lines.read_line(&mut second)?;
            Some(
                second
                    .trim()
                    .strip_prefix("metrics on ")
                    .ok_or_else(|| anyhow::anyhow!("unexpected output: {second}"))?
                    .to_string(),
            )
        } else {
            None
        };
        Ok(Self {
            base,
            metrics,
            child,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A counter from `/metrics` (0 when absent).
    pub async fn counter(&self, http: &reqwest::Client, name: &str) -> anyhow::Result<f64> {
        let url = self
            .metrics
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no metrics"))?;
        let text = http.get(url).send().await?.text().await?;
        Ok(text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0))
    }

    /// Peak resident memory (VmHWM) in MiB and CPU seconds (user + system) so far.
    pub fn cost(&self) -> (f64, f64) {
        let pid = self.child.id();
        (peak_rss_mib(pid), cpu_seconds(pid))
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Peak resident memory (VmHWM) of a process in MiB; 0 when it cannot be read.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU seconds (user + system) a process has used so far; 0 when it cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}
