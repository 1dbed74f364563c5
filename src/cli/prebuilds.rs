//! `provq prebuilds pause|resume|status`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::ClientArgs;
use super::client::Client;

#[derive(Subcommand, Debug)]
pub enum PrebuildsCommand {
    /// Stop accepting prebuild jobs (those initiated by the `prebuilds` user).
    #[command(after_help = "Example:\n  provq prebuilds pause")]
    Pause(ClientArgs),
    /// Accept prebuild jobs again.
    Resume(ClientArgs),
    /// Show whether prebuilds are paused.
    Status(ClientArgs),
}

impl PrebuildsCommand {
    pub fn client(&self) -> &ClientArgs {
        match self {
            Self::Pause(a) | Self::Resume(a) | Self::Status(a) => a,
        }
    }
}

pub async fn run(cmd: PrebuildsCommand) -> anyhow::Result<()> {
    let (args, paused) = match &cmd {
        PrebuildsCommand::Pause(a) => (a, Some(true)),
        PrebuildsCommand::Resume(a) => (a, Some(false)),
        PrebuildsCommand::Status(a) => (a, None),
    };
    let client = Client::from_args(args)?;
    let settings: Value = match paused {
        Some(p) => {
            client
                .send(
                    Method::PUT,
                    "/prebuilds/settings",
                    Some(&json!({"reconciliation_paused": p})),
                )
                .await?
        }
        None => client.get("/prebuilds/settings").await?,
    };
    let now = settings["reconciliation_paused"].as_bool().unwrap_or(false);
    println!(
        "Prebuilds are {}.",
        if now {
            "paused"
        } else {
            "running (not paused)"
        }
    );
    Ok(())
}
