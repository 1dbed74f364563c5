//! The URL and token `provq login` saves, so later commands need neither flag.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedSession {
    pub url: String,
    pub token: String,
}

/// `$XDG_CONFIG_HOME/provq/session.json` (usually `~/.config/provq/session.json`).
pub fn path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("provq").join("session.json"))
}

pub fn load() -> Option<SavedSession> {
    let raw = std::fs::read_to_string(path()?).ok()?;
    serde_json::from_str(&raw).ok()
}

/// Writes the session readable by the user only: the token is a credential.
pub fn save(session: &SavedSession) -> anyhow::Result<PathBuf> {
    let path = path().context("cannot find a configuration directory")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let body = serde_json::to_string_pretty(session)?;
    write_private(&path, body.as_bytes())?;
    Ok(path)
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, body: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(body)?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, body: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, body).with_context(|| format!("cannot write {}", path.display()))
}

/// Forgets the saved session; false when there was none.
pub fn remove() -> anyhow::Result<bool> {
    let Some(path) = path() else { return Ok(false) };
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot remove {}", path.display()))),
    }
}
