//! The `provq` command tree. Server commands (`serve`, `migrate`) run in-process; every other
//! command is an HTTP client of a running server.

mod client;
mod jobs;
mod license_signing;
mod licenses;
mod login;
mod organizations;
mod output;
mod prebuilds;
mod prompt;
mod provisioner;
mod runner;
mod search;
mod server;
mod session;
mod status;
mod users;
pub mod worker_client;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use client::{Client, ClientError};

/// Exit code of a failed request (contract §8); clap itself exits 2 on bad usage.
pub const EXIT_REQUEST_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "provq",
    version,
    about = "A provisioner job queue daemon with a Coder-compatible admin API",
    long_about = None,
    after_help = "Start here:\n  provq serve                          # run the daemon on ./provq.db\n  provq login http://127.0.0.1:8080     # create the first user or log in"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the server is and who we are; defaults come from what `provq login` saved.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientArgs {
    /// Server URL (default: the one `provq login` saved).
    #[arg(long, env = "PROVQ_URL", global = true)]
    url: Option<String>,
    /// Session token (default: the one `provq login` saved).
    #[arg(
        long,
        env = "PROVQ_SESSION_TOKEN",
        global = true,
        hide_env_values = true
    )]
    token: Option<String>,
}

/// Options shared by the commands that read the daemon's settings.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Configuration file (default: config/default.toml when it exists).
    #[arg(long, env = "PROVQ_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL (overrides `database_url`).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon: HTTP API, background loops, metrics.
    #[command(
        after_help = "Examples:\n  provq serve\n  provq serve --listen 0.0.0.0:8080 --database-url postgres://postgres@127.0.0.1/provq"
    )]
    Serve(server::ServeArgs),
    /// Apply, revert or list database migrations.
    #[command(subcommand)]
    Migrate(server::MigrateCommand),
    /// Print the OpenAPI document of /api/v2.
    Openapi,
    /// Log in to a server (creates the first user when there is none) and save the session.
    #[command(
        after_help = "Examples:\n  provq login http://127.0.0.1:8080\n  provq login http://127.0.0.1:8080 --username admin --email admin@example.com --password 'S3cure-pass'"
    )]
    Login(login::LoginArgs),
    /// Manage users.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Provisioner jobs, daemons and keys; `provisioner start` runs a daemon.
    #[command(subcommand)]
    Provisioner(provisioner::ProvisionerCommand),
    /// Pause or resume prebuild jobs.
    #[command(subcommand)]
    Prebuilds(prebuilds::PrebuildsCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  provq completion bash > /etc/bash_completion.d/provq\n  provq completion zsh > \"${fpath[1]}/_provq\""
    )]
    Completion { shell: clap_complete::Shell },
    /// Manage licenses, see entitlements, and mint licenses with your own key.
    #[command(subcommand)]
    Licenses(licenses::LicensesCommand),
    /// Manage organizations.
    #[command(subcommand, visible_alias = "orgs")]
    Organizations(organizations::OrganizationsCommand),
    /// The queue at a glance: jobs by status, jobs no daemon can run, daemons, prebuilds.
    #[command(
        after_help = "Examples:\n  provq status\n  provq status -O acme -o json | jq .pending_unmatched"
    )]
    Status(status::StatusArgs),
    /// Who you are logged in as, and where.
    Whoami {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: output::Format,
    },
    /// End the session on the server and forget it here.
    Logout(ClientArgs),
}

/// Parses the command line and runs the command; the process exit code comes back.
pub fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_REQUEST_FAILED);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => server::serve(args).await,
        Command::Migrate(cmd) => server::migrate(cmd).await,
        Command::Openapi => server::print_openapi(),
        Command::Login(args) => login::run(args).await,
        Command::Users(cmd) => users::run(cmd).await,
        Command::Provisioner(cmd) => {
            let target = cmd.target().map(|(c, o)| (c.clone(), o.to_string()));
            explain_denied(provisioner::run(cmd).await, target).await
        }
        Command::Prebuilds(cmd) => {
            let target = Some((cmd.client().clone(), String::new()));
            explain_denied(prebuilds::run(cmd).await, target).await
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "provq", &mut std::io::stdout());
            Ok(())
        }
        Command::Licenses(cmd) => licenses::run(cmd).await,
        Command::Organizations(cmd) => organizations::run(cmd).await,
        Command::Status(args) => {
            let target = Some((args.client.clone(), args.org.clone()));
            explain_denied(status::run(args).await, target).await
        }
        Command::Whoami { client, output } => users::whoami(client, output).await,
        Command::Logout(client) => login::logout(client).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(ClientError::Exit(code)) = e.downcast_ref::<ClientError>() {
                return ExitCode::from(*code);
            }
            report(&e);
            let code = match e.downcast_ref::<ClientError>() {
                Some(ClientError::Usage(_)) => EXIT_USAGE,
                _ => EXIT_REQUEST_FAILED,
            };
            ExitCode::from(code)
        }
    }
}

/// A closed stdout (`provq openapi | head`) ends the program quietly instead of with a panic:
/// Rust ignores SIGPIPE, so printing to a closed pipe panics with "Broken pipe", and the reader
/// going away is not an error of ours.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Broken pipe") || message.contains("BrokenPipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// A 403 or 404 on an owner-only command, explained: the owner role is needed, or the
/// organization named with `-O` does not exist.
async fn explain_denied(
    result: anyhow::Result<()>,
    target: Option<(ClientArgs, String)>,
) -> anyhow::Result<()> {
    let Err(error) = result else { return Ok(()) };
    let denied = matches!(
        error.downcast_ref::<ClientError>(),
        Some(ClientError::Api(f)) if f.status == reqwest::StatusCode::FORBIDDEN || f.status == reqwest::StatusCode::NOT_FOUND
    );
    let (Some((args, org)), true) = (target, denied) else {
        return Err(error);
    };
    let Ok(client) = Client::from_args(&args) else {
        return Err(error);
    };
    let Ok(me) = client.get::<serde_json::Value>("/users/me").await else {
        return Err(error);
    };
    let owner = me["roles"]
        .as_array()
        .is_some_and(|rs| rs.iter().any(|r| r["name"] == "owner"));
    if !owner {
        return Err(ClientError::Failed(format!(
            "this command needs the owner role; {} is a member (ask an owner, or log in as one)",
            me["username"].as_str().unwrap_or("you")
        ))
        .into());
    }
    if !org.is_empty()
        && let Err(ClientError::Api(f)) = client
            .get::<serde_json::Value>(&format!("/organizations/{org}"))
            .await
        && f.status == reqwest::StatusCode::NOT_FOUND
    {
        return Err(ClientError::Failed(format!(
            "organization \"{org}\" not found (see provq organizations list)"
        ))
        .into());
    }
    Err(error)
}

fn report(error: &anyhow::Error) {
    if let Some(client) = error.downcast_ref::<ClientError>() {
        eprintln!("{client}");
        return;
    }
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_tree_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
