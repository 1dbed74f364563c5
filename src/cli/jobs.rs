//! `provq provisioner jobs …`: list, show, logs (follow) and cancel (one, several, or by filter).

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::ClientArgs;
use super::client::{Client, ClientError};
use super::output::{Format, cell, column_key, json as to_json, paint_status, print_list};
use super::search::FilterArgs;

pub const DEFAULT_COLUMNS: &[&str] = &["created_at", "id", "type", "status", "queue", "tags"];

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  provq provisioner jobs list --initiator prebuilds --status pending\n  provq provisioner jobs ls --search \"initiator:prebuilds status:pending tag:os=linux\"\n  provq provisioner jobs ls -c id,status,worker_name -o json | jq '.[].id'"
    )]
    List(ListArgs),
    /// Show one job.
    #[command(after_help = "Example:\n  provq provisioner jobs show 5b0b…")]
    Show {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'O', long, default_value = "default")]
        org: String,
        id: String,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Print a job's logs; -f follows them until the job ends.
    #[command(after_help = "Example:\n  provq provisioner jobs logs 5b0b… -f")]
    Logs {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'O', long, default_value = "default")]
        org: String,
        id: String,
        /// Keep printing new lines until the job has finished.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Cancel jobs by id, or every pending or running job matching filters (asks first).
    #[command(
        after_help = "Examples:\n  provq provisioner jobs cancel 5b0b… 77c1…\n  provq provisioner jobs cancel --initiator prebuilds --status pending\n  provq provisioner jobs cancel --search \"initiator:prebuilds status:pending\" -y"
    )]
    Cancel(CancelArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Organization (name, id or `default`).
    #[arg(short = 'O', long, default_value = "default")]
    org: String,
    #[command(flatten)]
    filters: FilterArgs,
    /// How many jobs at most (1–10000).
    #[arg(short = 'l', long, default_value_t = 50)]
    limit: u32,
    /// Columns (repeatable or comma-separated): any JSON field of a job, or `queue`.
    #[arg(short = 'c', long = "column", value_delimiter = ',')]
    columns: Vec<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[arg(short = 'O', long, default_value = "default")]
    org: String,
    /// Job ids to cancel.
    #[arg(value_name = "ID")]
    job_ids: Vec<String>,
    #[command(flatten)]
    filters: FilterArgs,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    yes: bool,
}

pub async fn run(cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::List(args) => list(args).await,
        JobsCommand::Show {
            client,
            org,
            id,
            output,
        } => {
            let client = Client::from_args(&client)?;
            let job: Value = client
                .get(&format!("/organizations/{org}/provisionerjobs/{id}"))
                .await?;
            match output {
                Format::Json => println!("{}", to_json(&job)),
                Format::Table => {
                    for (k, v) in job.as_object().into_iter().flatten() {
                        println!("{:<18} {}", format!("{k}:"), cell(v));
                    }
                }
            }
            Ok(())
        }
        JobsCommand::Logs {
            client,
            org,
            id,
            follow,
        } => logs(&Client::from_args(&client)?, &org, &id, follow).await,
        JobsCommand::Cancel(args) => cancel(args).await,
    }
}

/// A job's cell for a column: `queue` is `position/size` for pending jobs.
pub fn job_cell(job: &Value, column: &str) -> String {
    match column {
        "queue" => {
            if job["status"] == "pending" && job["queue_size"].as_i64().unwrap_or(0) > 0 {
                format!("{}/{}", job["queue_position"], job["queue_size"])
            } else {
                String::new()
            }
        }
        "status" => paint_status(job["status"].as_str().unwrap_or_default()),
        other => cell(&job[other]),
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let filters = args.filters.filters()?;
    let columns: Vec<String> = if args.columns.is_empty() {
        DEFAULT_COLUMNS.iter().map(|c| c.to_string()).collect()
    } else {
        args.columns.iter().map(|c| column_key(c)).collect()
    };
    let client = Client::from_args(&args.client)?;
    let mut query = filters.query();
    query.push(("limit".into(), args.limit.to_string()));
    let qs = serde_urlencoded::to_string(&query)?;
    let jobs: Value = client
        .get(&format!("/organizations/{}/provisionerjobs?{qs}", args.org))
        .await?;
    print_list(
        args.output,
        &jobs,
        "No provisioner jobs found",
        &columns,
        job_cell,
    );
    Ok(())
}

fn print_log(line: &Value) {
    println!(
        "{} [{}] {}{}",
        line["created_at"].as_str().unwrap_or_default(),
        line["log_level"].as_str().unwrap_or_default(),
        line["stage"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| format!("{s}: "))
            .unwrap_or_default(),
        line["output"].as_str().unwrap_or_default()
    );
}

async fn logs(client: &Client, org: &str, id: &str, follow: bool) -> anyhow::Result<()> {
    let mut after = 0i64;
    loop {
        // Read the job first: once it has finished, the lines read next are all there will be.
        let finished = if follow {
            let job: Value = client
                .get(&format!("/organizations/{org}/provisionerjobs/{id}"))
                .await?;
            job["completed_at"].is_string()
        } else {
            true
        };
        loop {
            let lines: Value = client
                .get(&format!(
                    "/organizations/{org}/provisionerjobs/{id}/logs?after={after}"
                ))
                .await?;
            let lines = lines.as_array().cloned().unwrap_or_default();
            for line in &lines {
                print_log(line);
                after = after.max(line["id"].as_i64().unwrap_or(after));
            }
            std::io::stdout().flush().ok();
            if lines.len() < 10_000 {
                break;
            }
        }
        if finished {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    let filters = args.filters.filters()?;
    let client = Client::from_args(&args.client)?;
    if !args.job_ids.is_empty() {
        if !filters.is_empty() {
            return Err(ClientError::Usage("give job ids or filters, not both".into()).into());
        }
        for id in &args.job_ids {
            let path = format!("/organizations/{}/provisionerjobs/{id}/cancel", args.org);
            client.raw(Method::POST, &path, None::<&Value>).await?;
            println!("Canceled {id}.");
        }
        return Ok(());
    }
    if filters.is_empty() {
        return Err(ClientError::Usage(
            "refusing to cancel every job: give job ids or at least one filter (--status, --initiator, --tag, --id, --search)".into(),
        )
        .into());
    }
    if !args.yes {
        let mut query = filters.query();
        query.push(("limit".into(), "10000".into()));
        let qs = serde_urlencoded::to_string(&query)?;
        let jobs: Value = client
            .get(&format!("/organizations/{}/provisionerjobs?{qs}", args.org))
            .await?;
        let count = jobs
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|j| j["status"] == "pending" || j["status"] == "running")
                    .count()
            })
            .unwrap_or(0);
        if count == 0 {
            println!("No pending or running jobs match; nothing to cancel.");
            return Ok(());
        }
        eprint!("Cancel {count} job(s) matching these filters? [y/N] ");
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Nothing canceled.");
            return Ok(());
        }
    }
    let result: Value = client
        .post(
            &format!("/organizations/{}/provisionerjobs/cancel", args.org),
            &filters.cancel_body(),
        )
        .await?;
    println!("Canceled {} job(s).", result["count"]);
    Ok(())
}
