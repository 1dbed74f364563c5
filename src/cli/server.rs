//! `provq serve`, `provq migrate` and `provq openapi`: the commands that run in-process.

use clap::{Args, Subcommand};
use migration::{Migrator, MigratorTrait};

use super::ServerArgs;
use crate::config::{Overrides, Settings};
use crate::shutdown::on_termination;
use crate::startup::{Application, SHUTDOWN_DEADLINE};
use crate::store::Store;
use crate::telemetry;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// HTTP API address (overrides `listen`); port 0 picks a free port.
    #[arg(long)]
    listen: Option<String>,
    /// Metrics address (overrides `prometheus.listen`); "" disables.
    #[arg(long)]
    prometheus_listen: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum MigrateCommand {
    /// Apply every pending migration.
    Up(ServerArgs),
    /// Revert the last migration (or --steps N).
    Down {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status(ServerArgs),
}

fn load_settings(server: &ServerArgs, mut overrides: Overrides) -> anyhow::Result<Settings> {
    overrides.database_url = server.database_url.clone();
    Ok(Settings::load(server.config.as_deref(), &overrides)?)
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = load_settings(
        &args.server,
        Overrides {
            listen: args.listen,
            prometheus_listen: args.prometheus_listen,
            database_url: None,
        },
    )?;
    telemetry::init(settings.log_format);
    let app = Application::build(settings).await?;
    let stages = on_termination(Some(SHUTDOWN_DEADLINE))?;
    stages.exit_when_forced();
    announce(&format!("listening on http://{}", app.local_addr()));
    if let Some(addr) = app.metrics_addr() {
        announce(&format!("metrics on http://{addr}/metrics"));
    }
    app.run(stages.graceful.cancelled_owned()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Prints a start-up line. A closed stdout (a supervisor that stopped reading) must not take
/// the daemon down, so write errors are ignored.
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub async fn migrate(cmd: MigrateCommand) -> anyhow::Result<()> {
    let server = match &cmd {
        MigrateCommand::Up(s) | MigrateCommand::Status(s) => s,
        MigrateCommand::Down { server, .. } => server,
    };
    let settings = load_settings(server, Overrides::default())?;
    telemetry::init(settings.log_format);
    let store = Store::connect(&settings).await?;
    let db = store.connection();
    match cmd {
        MigrateCommand::Up(_) => {
            Migrator::up(db, None).await?;
            println!("All migrations applied.");
        }
        MigrateCommand::Down { steps, .. } => {
            Migrator::down(db, Some(steps)).await?;
            println!("Reverted {steps} migration(s).");
        }
        MigrateCommand::Status(_) => {
            let applied: Vec<String> = Migrator::get_applied_migrations(db)
                .await?
                .iter()
                .map(|m| m.name().to_string())
                .collect();
            for m in Migrator::migrations() {
                let state = if applied.iter().any(|a| a == m.name()) {
                    "applied"
                } else {
                    "pending"
                };
                println!("{state:8} {}", m.name());
            }
        }
    }
    Ok(())
}

pub fn print_openapi() -> anyhow::Result<()> {
    println!("{}", crate::api::openapi_document());
    Ok(())
}
