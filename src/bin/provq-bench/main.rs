//! `provq-bench`: measures provq and prints figures (never a pass/fail test).
//!
//! - `provq-bench list`: latency of the admin job list on a flooded queue (100,000 jobs, 10,000
//!   pending across 20 tag sets, 50 online daemons), on SQLite and PostgreSQL.
//! - `provq-bench flood`: 100,000 pending prebuilds and 1,000 human jobs: list and `GET`
//!   latency, the `/metrics` scrape, the bulk cancel with humans and daemons busy, peak memory.
//! - `provq-bench dispatch`: enqueue and drain throughput through HTTP and straight on the
//!   store, pickup latency of idle long-polling daemons, and the server's memory and CPU.
//! - `provq-bench fleet`: 8 and 1,000 idle long-polling daemons while jobs arrive at 100/s:
//!   claim statements, CPU and pickup latency per job, with the old and the new protocol.
//!
//! Build it in release mode: `cargo run --release --bin provq-bench -- list`.

mod dispatch;
mod fixtures;
mod fleet;
mod flood;
mod list;
mod server;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "provq-bench", about = "Benchmarks that print figures")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Job-list latency on a flooded queue.
    List(list::Args),
    /// Dispatch throughput, pickup latency and cost.
    Dispatch(dispatch::Args),
    /// The flood at scale: list, rank and cancel 100,000 prebuilds while humans keep building.
    Flood(flood::Args),
    /// Many idle daemons: claims, CPU and pickup latency per job.
    Fleet(fleet::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::List(args) => list::run(args).await,
        Command::Dispatch(args) => dispatch::run(args).await,
        Command::Flood(args) => flood::run(args).await,
        Command::Fleet(args) => fleet::run(args).await,
    }
}
