//! `provq provisioner …`: jobs, daemons, keys, and `start` (run a daemon).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::ClientArgs;
use super::client::{Client, ClientError};
use super::jobs::{self, JobsCommand};
use super::output::{Format, cell, columns, print_list, print_typed};
use super::runner::{self, StartArgs};
use crate::wire::daemons::ProvisionerDaemon;

#[derive(Subcommand, Debug)]
pub enum ProvisionerCommand {
    /// Provisioner jobs: list, show, logs, cancel.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// List the organization's daemons with their status.
    #[command(
        visible_alias = "ls",
        after_help = "Example:\n  provq provisioner list -O default"
    )]
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'O', long, default_value = "default")]
        org: String,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Provisioner keys: credentials for daemons, with fixed tags.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run a provisioner daemon that executes a command for every job it acquires.
    #[command(
        after_help = "Examples:\n  provq provisioner start --psk \"$PSK\" --tag os=linux --exec ./run-terraform.sh\n  provq provisioner start --key \"$KEY\" --concurrency 4 --exec 'terraform apply -auto-approve'\n\nThe command gets the job JSON on stdin and PROVQ_JOB_ID, PROVQ_JOB_TYPE, PROVQ_ORGANIZATION_ID,\nPROVQ_INITIATOR_ID, PROVQ_PROVISIONER and PROVQ_JOB_TAGS in its environment. Exit 0 completes\nthe job; any other exit fails it with the exit status and the last output line."
    )]
    Start(StartArgs),
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; it is printed once.
    #[command(after_help = "Example:\n  provq provisioner keys create linux-pool --tag os=linux")]
    Create {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'O', long, default_value = "default")]
        org: String,
        name: String,
        /// A tag daemons using the key get, `key=value` (repeatable).
        #[arg(short = 't', long = "tag")]
        tags: Vec<String>,
    },
    /// List keys (never the secrets).
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'O', long, default_value = "default")]
        org: String,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Delete a key by name; daemons using it can no longer authenticate.
    #[command(visible_alias = "rm")]
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'O', long, default_value = "default")]
        org: String,
        name: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

impl ProvisionerCommand {
    /// Connection and organization of the admin commands (not `start`).
    pub fn target(&self) -> Option<(&ClientArgs, &str)> {
        match self {
            Self::Jobs(cmd) => Some(cmd.target()),
            Self::List { client, org, .. } => Some((client, org)),
            Self::Keys(
                KeysCommand::Create { client, org, .. }
                | KeysCommand::List { client, org, .. }
                | KeysCommand::Delete { client, org, .. },
            ) => Some((client, org)),
            Self::Start(_) => None,
        }
    }
}

pub async fn run(cmd: ProvisionerCommand) -> anyhow::Result<()> {
    match cmd {
        ProvisionerCommand::Jobs(cmd) => jobs::run(cmd).await,
        ProvisionerCommand::List {
            client,
            org,
            output,
        } => {
            let client = Client::from_args(&client)?;
            let daemons: Value = client
                .get(&format!("/organizations/{org}/provisionerdaemons"))
                .await?;
            let names = [
                "name",
                "status",
                "tags",
                "provisioners",
                "key_name",
                "last_seen_at",
                "current_job",
            ];
            print_typed(
                output,
                &daemons,
                "No provisioner daemons found",
                &columns(&names),
                |d: &ProvisionerDaemon, c| match c {
                    "name" => d.name.clone(),
                    "status" => d.status.clone(),
                    "tags" => cell(&json!(d.tags)),
                    "provisioners" => d.provisioners.join(","),
                    "key_name" => d.key_name.clone(),
                    "last_seen_at" => d.last_seen_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    "current_job" => d
                        .current_job
                        .as_ref()
                        .map(|j| j.id.to_string())
                        .unwrap_or_default(),
                    _ => String::new(),
                },
            )
        }
        ProvisionerCommand::Keys(cmd) => keys(cmd).await,
        ProvisionerCommand::Start(args) => runner::run(args).await,
    }
}

async fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create {
            client,
            org,
            name,
            tags,
        } => {
            let mut map = serde_json::Map::new();
            for t in &tags {
                let Some((k, v)) = t.split_once('=') else {
                    return Err(ClientError::Usage(format!(
                        "tag \"{t}\" must look like key=value"
                    ))
                    .into());
                };
                map.insert(k.to_string(), json!(v));
            }
            let client = Client::from_args(&client)?;
            let created: Value = client
                .post(
                    &format!("/organizations/{org}/provisionerkeys"),
                    &json!({"name": name, "tags": map}),
                )
                .await?;
            println!("{}", created["key"].as_str().unwrap_or_default());
            eprintln!("Created key {name}. Store it now: it is not shown again.");
        }
        KeysCommand::List {
            client,
            org,
            output,
        } => {
            let client = Client::from_args(&client)?;
            let keys: Value = client
                .get(&format!("/organizations/{org}/provisionerkeys"))
                .await?;
            let names = ["name", "id", "created_at", "tags"];
            print_list(
                output,
                &keys,
                "No provisioner keys found",
                &columns(&names),
                |k, c| cell(&k[c]),
            );
        }
        KeysCommand::Delete {
            client,
            org,
            name,
            yes,
        } => {
            let client = Client::from_args(&client)?;
            let question =
                format!("Delete provisioner key {name}? Daemons using it can no longer connect.");
            if !super::prompt::confirm(&question, yes)? {
                println!("Nothing deleted.");
                return Ok(());
            }
            client
                .raw(
                    Method::DELETE,
                    &format!("/organizations/{org}/provisionerkeys/{name}"),
                    None::<&Value>,
                )
                .await?;
            println!("Deleted key {name}.");
        }
    }
    Ok(())
}
