//! Settings: built-in defaults → TOML file → `PROVQ_*` environment → command-line flags.
//!
//! This is the only module that reads configuration from the environment, so every knob is
//! visible in one struct and documented in `config/default.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The file read when neither `--config` nor `PROVQ_CONFIG` names one (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "config/default.toml";

/// Environment variables with the `PROVQ_` prefix that belong to the CLI or the tests, not to
/// the daemon's settings; they are skipped so `deny_unknown_fields` can catch typos.
const NON_SETTING_ENV: &[&str] = &["config", "url", "session_token", "test_postgres_url"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// HTTP API address; port 0 picks a free port.
    pub listen: String,
    /// `sqlite://PATH?mode=rwc` or `postgres://…`.
    pub database_url: String,
    /// Connections in the database pool (PostgreSQL; SQLite uses what its locking allows).
    pub database_max_connections: u32,
    /// Seconds a request waits for a free database connection before it is answered 503.
    pub database_acquire_timeout_secs: u64,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    pub prometheus: PrometheusSettings,
    pub provisioner: ProvisionerSettings,
    pub reaper: ReaperSettings,
    pub licenses: LicenseSettings,
    pub rate_limit: RateLimitSettings,
    pub limits: RequestLimitSettings,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusSettings {
    /// `HOST:PORT` of the metrics listener; empty disables it.
    pub listen: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisionerSettings {
    /// Pre-shared key daemons may authenticate with; empty disables PSK authentication.
    pub daemon_psk: String,
    /// A daemon not seen for this long counts as offline.
    pub stale_after_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReaperSettings {
    pub interval_secs: u64,
    pub hung_after_secs: u64,
    pub pending_after_secs: u64,
    pub max_jobs_per_run: u64,
    /// Daemons not seen for this long are deleted (Coder purges after 7 days).
    pub daemon_purge_after_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LicenseSettings {
    /// Trusted license signing keys: kid → base64 of the raw 32-byte Ed25519 public key.
    pub keys: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Requests per minute per user (or IP) and route; 0 disables.
    pub api_per_minute: u64,
    /// Login attempts per minute per client IP; always on (`api_per_minute = 0` keeps it).
    pub login_per_minute: u64,
}

/// What one request or connection may cost the server (see `api::limits` and `slow_clients`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLimitSettings {
    /// Largest request body accepted; larger ones are answered 413 without being read.
    pub max_body_bytes: u64,
    /// A client must send a request's complete header block within this many seconds of its
    /// first byte.
    pub header_read_timeout_secs: u64,
    /// A client must send a request's complete body within this many seconds.
    pub body_read_timeout_secs: u64,
    /// A keep-alive connection with no request for this many seconds is closed.
    pub idle_timeout_secs: u64,
    /// Concurrent `/provisionerd/acquire` long-polls per daemon credential (key, PSK or session).
    pub long_polls_per_credential: u64,
    /// Daemons one organization may have registered; a new daemon past it is refused (409).
    pub daemons_per_organization: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://provq.db?mode=rwc".into(),
            database_max_connections: 20,
            database_acquire_timeout_secs: 5,
            log_format: LogFormat::Text,
            prometheus: PrometheusSettings::default(),
            provisioner: ProvisionerSettings::default(),
            reaper: ReaperSettings::default(),
            licenses: LicenseSettings::default(),
            rate_limit: RateLimitSettings::default(),
            limits: RequestLimitSettings::default(),
        }
    }
}

impl Default for PrometheusSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:2112".into(),
        }
    }
}

impl Default for ProvisionerSettings {
    fn default() -> Self {
        Self {
            daemon_psk: String::new(),
            stale_after_secs: 90,
        }
    }
}

impl Default for ReaperSettings {
    fn default() -> Self {
        Self {
            interval_secs: 60,
            hung_after_secs: 300,
            pending_after_secs: 1800,
            max_jobs_per_run: 10,
            daemon_purge_after_secs: 7 * 24 * 60 * 60,
        }
    }
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            api_per_minute: 512,
            login_per_minute: 60,
        }
    }
}

impl Default for RequestLimitSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            idle_timeout_secs: 120,
            long_polls_per_credential: 32,
            daemons_per_organization: 10_000,
        }
    }
}

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub prometheus_listen: Option<String>,
}

/// Why the settings could not be loaded; the message always names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Settings {
    /// Loads every layer. `file` is `--config` (or `PROVQ_CONFIG`, which clap reads); without
    /// it `config/default.toml` is used when present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => {}
        }
        figment = figment.merge(Env::prefixed("PROVQ_").ignore(NON_SETTING_ENV).split("__"));
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        if let Some(v) = &overrides.listen {
            settings.listen = v.clone();
        }
        if let Some(v) = &overrides.database_url {
            settings.database_url = v.clone();
        }
        if let Some(v) = &overrides.prometheus_listen {
            settings.prometheus.listen = v.clone();
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the rules serde cannot express. Called by `load`; tests that build settings in
    /// code call it too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        self.listen_addr()
            .map_err(|e| invalid("listen", &format!("{e} (expected HOST:PORT)")))?;
        if !self.prometheus.listen.is_empty() {
            self.prometheus.listen.parse::<SocketAddr>().map_err(|e| {
                invalid(
                    "prometheus.listen",
                    &format!("{e} (expected HOST:PORT or \"\")"),
                )
            })?;
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                "must start with sqlite: or postgres://",
            ));
        }
        if self.database_max_connections == 0 {
            return Err(invalid("database_max_connections", "must be at least 1"));
        }
        if self.provisioner.stale_after_secs == 0 {
            return Err(invalid(
                "provisioner.stale_after_secs",
                "must be at least 1",
            ));
        }
        let r = &self.reaper;
        for (key, value) in [
            (
                "database_acquire_timeout_secs",
                self.database_acquire_timeout_secs,
            ),
            ("reaper.interval_secs", r.interval_secs),
            ("reaper.hung_after_secs", r.hung_after_secs),
            ("reaper.pending_after_secs", r.pending_after_secs),
            ("reaper.max_jobs_per_run", r.max_jobs_per_run),
            ("reaper.daemon_purge_after_secs", r.daemon_purge_after_secs),
            (
                "rate_limit.login_per_minute",
                self.rate_limit.login_per_minute,
            ),
            ("limits.max_body_bytes", self.limits.max_body_bytes),
            (
                "limits.header_read_timeout_secs",
                self.limits.header_read_timeout_secs,
            ),
            (
                "limits.body_read_timeout_secs",
                self.limits.body_read_timeout_secs,
            ),
            ("limits.idle_timeout_secs", self.limits.idle_timeout_secs),
            (
                "limits.long_polls_per_credential",
                self.limits.long_polls_per_credential,
            ),
            (
                "limits.daemons_per_organization",
                self.limits.daemons_per_organization,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, std::net::AddrParseError> {
        self.listen.parse()
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }
}

/// figment reports the key as a path; keep its message but drop the profile prefix.
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let kind = e.kind.to_string();
            if key.is_empty() {
                kind
            } else {
                format!("`{key}`: {kind}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let s = Settings::default();
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert_eq!(s.database_url, "sqlite://provq.db?mode=rwc");
        assert_eq!(s.prometheus.listen, "127.0.0.1:2112");
        assert_eq!(s.reaper.hung_after_secs, 300);
        assert_eq!(s.reaper.pending_after_secs, 1800);
        assert_eq!(s.rate_limit.api_per_minute, 512);
        s.validate().unwrap();
    }

    #[test]
    fn the_documented_config_file_holds_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_FILE);
        let from_file: Settings = Figment::new()
            .merge(Toml::file_exact(&path))
            .extract()
            .expect("config/default.toml parses");
        assert_eq!(from_file, Settings::default());
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [
            "listen",
            "database_url",
            "database_max_connections",
            "database_acquire_timeout_secs",
            "log_format",
            "daemon_psk",
            "stale_after_secs",
            "interval_secs",
            "hung_after_secs",
            "pending_after_secs",
            "max_jobs_per_run",
            "[licenses.keys]",
            "api_per_minute",
            "login_per_minute",
            "[limits]",
            "max_body_bytes",
            "header_read_timeout_secs",
            "body_read_timeout_secs",
            "idle_timeout_secs",
            "long_polls_per_credential",
            "daemon_purge_after_secs",
            "daemons_per_organization",
        ] {
            assert!(
                text.contains(key),
                "config/default.toml does not document {key}"
            );
        }
    }

    #[test]
    fn a_bad_listen_address_names_the_key() {
        let s = Settings {
            listen: "nope".into(),
            ..Settings::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("`listen`"), "{e}");
    }

    #[test]
    fn a_zero_acquire_timeout_is_refused() {
        let s = Settings {
            database_acquire_timeout_secs: 0,
            ..Settings::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("`database_acquire_timeout_secs`"), "{e}");
    }
}
