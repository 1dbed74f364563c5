//! `provq provisioner jobs …`: list (and watch), show, logs (follow), create and cancel (one,
//! several, or by filter).

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::ClientArgs;
use super::client::{Client, ClientError};
use super::output::{Format, ago, cell, column_key, json as to_json, print_list};
use super::prompt;
use super::search::FilterArgs;
use crate::wire::jobs::{ProvisionerJob, ProvisionerJobLog, ProvisionerJobStatus};

pub const DEFAULT_COLUMNS: &[&str] = &[
    "created_at",
    "id",
    "type",
    "status",
    "initiator",
    "queue",
    "tags",
];

/// Every column `-c` accepts: the fields of a job, plus `queue` and `initiator` (username).
pub const COLUMNS: &[&str] = &[
    "id",
    "created_at",
    "started_at",
    "completed_at",
    "canceled_at",
    "error",
    "error_code",
    "status",
    "worker_id",
    "worker_name",
    "file_id",
    "tags",
    "queue",
    "queue_position",
    "queue_size",
    "organization_id",
    "initiator",
    "initiator_id",
    "input",
    "type",
    "available_workers",
    "metadata",
    "logs_overflowed",
];

const JOB_TYPES: [&str; 3] = [
    "workspace_build",
    "template_version_import",
    "template_version_dry_run",
];

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  provq provisioner jobs list --initiator prebuilds --status pending\n  provq provisioner jobs ls --search \"initiator:prebuilds status:pending tag:os=linux\"\n  provq provisioner jobs ls -c id,status,worker_name -o json | jq '.[].id'\n  provq provisioner jobs ls --status pending --watch"
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
    #[command(
        after_help = "Examples:\n  provq provisioner jobs logs 5b0b… -f\n  provq provisioner jobs logs 5b0b… -f --exit-status && echo built"
    )]
    Logs {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'O', long, default_value = "default")]
        org: String,
        id: String,
        /// Keep printing new lines until the job has finished, then print its outcome.
        #[arg(short = 'f', long)]
        follow: bool,
        /// With -f: exit 0 only if the job succeeded (1 otherwise).
        #[arg(long, requires = "follow")]
        exit_status: bool,
    },
    /// Enqueue a job (to rehearse the runbook, or to feed a daemon by hand).
    #[command(
        after_help = "Examples:\n  provq provisioner jobs create --type workspace_build --tag os=linux\n  provq provisioner jobs create --type template_version_import --initiator prebuilds -o json"
    )]
    Create(CreateArgs),
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
    #[arg(short = 'l', long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    /// Columns (repeatable or comma-separated): any JSON field of a job, `queue` or `initiator`.
    #[arg(short = 'c', long = "column", value_delimiter = ',')]
    columns: Vec<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Redraw the table every 2 seconds until interrupted.
    #[arg(short = 'w', long, conflicts_with = "output")]
    watch: bool,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[arg(short = 'O', long, default_value = "default")]
    org: String,
    /// The job type.
    #[arg(long = "type", value_parser = JOB_TYPES)]
    job_type: String,
    /// A tag, `key=value` (repeatable).
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Who the job is for: `prebuilds`, a username or an id (owners only; default: you).
    #[arg(short = 'i', long)]
    initiator: Option<String>,
    /// The job's input, a JSON object (e.g. '{"workspace_build_id":"…"}').
    #[arg(long)]
    input: Option<String>,
    /// The provisioner that runs it.
    #[arg(long, default_value = "terraform", value_parser = ["terraform", "echo"])]
    provisioner: String,
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

impl JobsCommand {
    /// The connection and organization the command talks to (for explaining a 403/404).
    pub fn target(&self) -> (&ClientArgs, &str) {
        match self {
            Self::List(a) => (&a.client, &a.org),
            Self::Show { client, org, .. } | Self::Logs { client, org, .. } => (client, org),
            Self::Create(a) => (&a.client, &a.org),
            Self::Cancel(a) => (&a.client, &a.org),
        }
    }
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
            uuid_arg(&id)?;
            let client = Client::from_args(&client)?;
            let path = format!("/organizations/{org}/provisionerjobs/{id}");
            match output {
                // The server's answer as it came, every field of it.
                Format::Json => println!("{}", to_json(&client.get::<Value>(&path).await?)),
                Format::Table => show(&client, &client.get(&path).await?).await,
            }
            Ok(())
        }
        JobsCommand::Logs {
            client,
            org,
            id,
            follow,
            exit_status,
        } => {
            uuid_arg(&id)?;
            logs(&Client::from_args(&client)?, &org, &id, follow, exit_status).await
        }
        JobsCommand::Create(args) => create(args).await,
        JobsCommand::Cancel(args) => cancel(args).await,
    }
}

/// A job id argument, checked before any request.
fn uuid_arg(id: &str) -> Result<(), ClientError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| ClientError::Usage(format!("\"{id}\" is not a job id (a UUID)")))
}

/// Usernames of initiators, looked up once per id; the id itself when the lookup fails.
pub async fn usernames(client: &Client, jobs: &[ProvisionerJob]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for job in jobs {
        let id = job.initiator_id.to_string();
        if names.contains_key(&id) {
            continue;
        }
        let user: Result<crate::wire::users::User, _> = client.get(&format!("/users/{id}")).await;
        let name = user.map(|u| u.username).unwrap_or_else(|_| id.clone());
        names.insert(id, name);
    }
    names
}

/// A job's queue cell: `position/size` for a pending job, `unmatched` when no online daemon
/// can run it.
pub fn queue_cell(job: &ProvisionerJob) -> String {
    if job.status != ProvisionerJobStatus::Pending {
        return String::new();
    }
    match job.queue_size {
        0 => "unmatched".into(),
        size => format!("{}/{size}", job.queue_position),
    }
}

/// A job's cell for a column, in a table: times as ages, initiators as usernames.
pub fn job_cell(job: &Value, column: &str, names: &HashMap<String, String>) -> String {
    match column {
        "queue" => serde_json::from_value::<ProvisionerJob>(job.clone())
            .map(|job| queue_cell(&job))
            .unwrap_or_default(),
        "initiator" => {
            let id = job["initiator_id"].as_str().unwrap_or_default();
            names.get(id).cloned().unwrap_or_else(|| id.to_string())
        }
        "created_at" | "started_at" | "completed_at" | "canceled_at" => {
            job[column].as_str().map(ago).unwrap_or_default()
        }
        other => cell(&job[other]),
    }
}

/// Columns from `-c`, checked against [`COLUMNS`] before any request.
fn parse_columns(raw: &[String]) -> Result<Vec<String>, ClientError> {
    if raw.is_empty() {
        return Ok(DEFAULT_COLUMNS.iter().map(|c| c.to_string()).collect());
    }
    let mut out = Vec::new();
    for c in raw {
        let key = column_key(c);
        if !COLUMNS.contains(&key.as_str()) {
            return Err(ClientError::Usage(format!(
                "unknown column \"{c}\"; valid columns: {}",
                COLUMNS.join(", ")
            )));
        }
        out.push(key);
    }
    Ok(out)
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let filters = args.filters.filters()?;
    let columns = parse_columns(&args.columns)?;
    let client = Client::from_args(&args.client)?;
    let mut query = filters.query();
    query.push(("limit".into(), args.limit.to_string()));
    let path = format!(
        "/organizations/{}/provisionerjobs?{}",
        args.org,
        serde_urlencoded::to_string(&query)?
    );
    loop {
        let jobs: Value = client.get(&path).await?;
        let rows: Vec<ProvisionerJob> = serde_json::from_value(jobs.clone())?;
        let names = if args.output == Format::Table && columns.iter().any(|c| c == "initiator") {
            usernames(&client, &rows).await
        } else {
            HashMap::new()
        };
        if args.watch {
            // Home, clear the screen, then the frame: the table redraws in place.
            print!("\x1b[H\x1b[2J");
            println!(
                "Every 2s: provq provisioner jobs list   {}\n",
                chrono::Local::now().format("%H:%M:%S")
            );
        }
        print_list(
            args.output,
            &jobs,
            "No provisioner jobs found",
            &columns,
            |j, c| job_cell(j, c, &names),
        );
        if rows.len() == args.limit as usize {
            eprintln!(
                "Showing the newest {} jobs; more may match (raise --limit, up to 10000).",
                args.limit
            );
        }
        if !args.watch {
            return Ok(());
        }
        std::io::stdout().flush().ok();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// `jobs show` as a reader goes through a job: what it is, where it is, when, and how it ended.
async fn show(client: &Client, job: &ProvisionerJob) {
    let names = usernames(client, std::slice::from_ref(job)).await;
    let time = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.map(|t| t.to_rfc3339())
            .map(|t| format!("{t} ({})", ago(&t)))
            .unwrap_or_default()
    };
    let initiator = job.initiator_id.to_string();
    let mut fields: Vec<(&str, String)> = vec![
        ("ID", job.id.to_string()),
        ("Status", cell(&json!(job.status))),
        ("Type", cell(&json!(job.job_type))),
        (
            "Initiator",
            names.get(&initiator).cloned().unwrap_or(initiator),
        ),
        ("Tags", cell(&json!(job.tags))),
        ("Queue", queue_cell(job)),
        ("Created", time(Some(job.created_at))),
        ("Started", time(job.started_at)),
        ("Completed", time(job.completed_at)),
        ("Canceled", time(job.canceled_at)),
        ("Worker", job.worker_name.clone()),
        ("Error", job.error.clone().unwrap_or_default()),
        ("Error code", job.error_code.clone().unwrap_or_default()),
    ];
    fields.retain(|(_, v)| !v.is_empty());
    for (k, v) in fields {
        println!("{:<12} {v}", format!("{k}:"));
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let mut tags = serde_json::Map::new();
    for t in &args.tags {
        let (k, v) = super::search::tag_pair(t)?;
        tags.insert(k, json!(v));
    }
    let mut body = json!({"type": args.job_type, "provisioner": args.provisioner, "tags": tags});
    if let Some(input) = &args.input {
        let parsed: Value = serde_json::from_str(input)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                ClientError::Usage(format!("--input must be a JSON object, not {input}"))
            })?;
        body["input"] = parsed;
    }
    if let Some(i) = &args.initiator {
        body["initiator"] = json!(i);
    }
    let client = Client::from_args(&args.client)?;
    let job: Value = client
        .post(
            &format!("/organizations/{}/provisionerjobs", args.org),
            &body,
        )
        .await?;
    match args.output {
        Format::Json => println!("{}", to_json(&job)),
        Format::Table => println!("{}", cell(&job["id"])),
    }
    Ok(())
}

fn print_log(line: &ProvisionerJobLog) {
    let stage = if line.stage.is_empty() {
        String::new()
    } else {
        format!("{}: ", line.stage)
    };
    println!(
        "{} [{}] {stage}{}",
        line.created_at.to_rfc3339(),
        line.log_level,
        line.output
    );
}

/// What a followed job is waiting for, to say it once per change.
fn waiting_note(job: &ProvisionerJob) -> Option<String> {
    if job.status != ProvisionerJobStatus::Pending {
        return None;
    }
    Some(match job.queue_size {
        0 => format!(
            "Job is pending and no online daemon can run it (tags: {}); waiting for one.",
            cell(&json!(job.tags))
        ),
        size => format!(
            "Job is pending, position {} of {size} in its queue.",
            job.queue_position
        ),
    })
}

async fn logs(
    client: &Client,
    org: &str,
    id: &str,
    follow: bool,
    exit_status: bool,
) -> anyhow::Result<()> {
    let mut after = 0i64;
    let mut note: Option<String> = None;
    loop {
        // Read the job first: once it has finished, the lines read next are all there will be.
        let job: Option<ProvisionerJob> = if follow {
            Some(
                client
                    .get(&format!("/organizations/{org}/provisionerjobs/{id}"))
                    .await?,
            )
        } else {
            None
        };
        loop {
            let lines: Vec<ProvisionerJobLog> = client
                .get(&format!(
                    "/organizations/{org}/provisionerjobs/{id}/logs?after={after}"
                ))
                .await?;
            for line in &lines {
                print_log(line);
                after = after.max(line.id);
            }
            std::io::stdout().flush().ok();
            if lines.len() < 10_000 {
                break;
            }
        }
        let Some(job) = job else { return Ok(()) };
        if job.completed_at.is_some() {
            let status = job.status.as_str();
            match job.error.as_deref().filter(|e| !e.is_empty()) {
                Some(error) => println!("Job {id} {status}: {error}"),
                None => println!("Job {id} {status}."),
            }
            if exit_status && job.status != ProvisionerJobStatus::Succeeded {
                return Err(ClientError::Exit(1).into());
            }
            return Ok(());
        }
        let now = waiting_note(&job);
        if now.is_some() && now != note {
            eprintln!("{}", now.as_deref().unwrap_or_default());
        }
        note = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    let filters = args.filters.filters()?;
    if !args.job_ids.is_empty() {
        if !filters.is_empty() {
            return Err(ClientError::Usage("give job ids or filters, not both".into()).into());
        }
        for id in &args.job_ids {
            uuid_arg(id)?;
        }
        let client = Client::from_args(&args.client)?;
        return cancel_each(&client, &args.org, &args.job_ids).await;
    }
    if filters.is_empty() {
        return Err(ClientError::Usage(
            "refusing to cancel every job: give job ids or at least one filter (--status, --initiator, --tag, --id, --search)".into(),
        )
        .into());
    }
    if !args.yes && !prompt::interactive() {
        return Err(ClientError::Usage(format!(
            "refusing to cancel every pending or running job matching {} without a terminal to confirm on: pass --yes",
            filters.describe()
        ))
        .into());
    }
    let client = Client::from_args(&args.client)?;
    if !args.yes {
        let mut query = filters.query();
        query.push(("limit".into(), "10000".into()));
        let qs = serde_urlencoded::to_string(&query)?;
        let jobs: Vec<ProvisionerJob> = client
            .get(&format!("/organizations/{}/provisionerjobs?{qs}", args.org))
            .await?;
        let count = jobs
            .iter()
            .filter(|j| {
                matches!(
                    j.status,
                    ProvisionerJobStatus::Pending | ProvisionerJobStatus::Running
                )
            })
            .count();
        if count == 0 {
            println!("No pending or running jobs match; nothing to cancel.");
            return Ok(());
        }
        let question = format!(
            "Cancel {count} pending or running job(s) matching {}?",
            filters.describe()
        );
        if !prompt::confirm(&question, false)? {
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

/// Cancels each id in turn, reporting each; one failure does not stop the others.
async fn cancel_each(client: &Client, org: &str, ids: &[String]) -> anyhow::Result<()> {
    let mut failed = 0;
    for id in ids {
        let path = format!("/organizations/{org}/provisionerjobs/{id}");
        match client
            .raw(Method::POST, &format!("{path}/cancel"), None::<&Value>)
            .await
        {
            Ok(_) => {
                let status = client
                    .get::<ProvisionerJob>(&path)
                    .await
                    .ok()
                    .map(|j| j.status);
                match status {
                    Some(ProvisionerJobStatus::Canceling) => {
                        println!("{id}: canceling (its daemon is stopping it)")
                    }
                    _ => println!("{id}: canceled"),
                }
            }
            Err(e) => {
                failed += 1;
                let why = match &e {
                    ClientError::Api(f) => f.message.clone(),
                    other => other.to_string(),
                };
                eprintln!("{id}: not canceled: {why}");
            }
        }
    }
    if failed > 0 {
        return Err(ClientError::Exit(1).into());
    }
    Ok(())
}
