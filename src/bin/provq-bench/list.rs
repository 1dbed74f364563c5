//! Job-list latency on a flooded queue: the case that motivated the `initiator` filter.

use std::time::Instant;

use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};

use crate::fixtures::{BenchDb, Fill, Targets, fill_daemons, fill_jobs};
use crate::server::InProcess;
use crate::stats::{ms, percentile};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    targets: Targets,
    /// Job counts to fill; a tenth of each is pending.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    sizes: Vec<usize>,
    /// Requests per measured query.
    #[arg(long, default_value_t = 200)]
    requests: usize,
}

const TAG_SETS: usize = 20;
const DAEMONS: usize = 50;
const QUERIES: [&str; 2] = ["limit=50", "status=pending&initiator=prebuilds"];

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut table = Table::new();
    table.set_header(["backend", "jobs", "pending", "query", "p50 ms", "p99 ms"]);
    for &backend in &args.targets.backends {
        for &size in &args.sizes {
            let pending = size / 10;
            let mut db = BenchDb::create(backend, &args.targets.postgres_url).await?;
            let server = InProcess::start(&db.url).await?;
            let owner = server.owner_token().await?;
            let org = server.store().default_organization().await?.id;
            let owner_id = server.owner_id(&owner).await?;
            let bar = ProgressBar::new(size as u64).with_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")?
                    .progress_chars("=> "),
            );
            bar.set_message(format!("filling {} with {size} jobs", backend.name()));
            fill_jobs(
                server.store(),
                org,
                owner_id,
                Fill {
                    total: size,
                    pending,
                    tag_sets: TAG_SETS,
                    prebuild_share: 0.9,
                },
                &bar,
            )
            .await?;
            bar.finish_and_clear();
            fill_daemons(server.store(), org, DAEMONS, TAG_SETS).await?;
            for query in QUERIES {
                let mut samples = Vec::with_capacity(args.requests);
                let url = format!(
                    "{}/api/v2/organizations/default/provisionerjobs?{query}",
                    server.base
                );
                // Warm-up: connection, caches, query plans.
                for _ in 0..5 {
                    server
                        .http
                        .get(&url)
                        .header("Coder-Session-Token", &owner)
                        .send()
                        .await?;
                }
                for _ in 0..args.requests {
                    let started = Instant::now();
                    let resp = server
                        .http
                        .get(&url)
                        .header("Coder-Session-Token", &owner)
                        .send()
                        .await?;
                    anyhow::ensure!(resp.status().is_success(), "{query}: {}", resp.status());
                    let body: serde_json::Value = resp.json().await?;
                    samples.push(started.elapsed());
                    anyhow::ensure!(body.as_array().is_some_and(|a| !a.is_empty()), "empty list");
                }
                table.add_row([
                    backend.name().to_string(),
                    size.to_string(),
                    pending.to_string(),
                    format!("?{query}"),
                    format!("{:.1}", ms(percentile(&mut samples, 50.0))),
                    format!("{:.1}", ms(percentile(&mut samples, 99.0))),
                ]);
            }
            server.stop().await;
            db.drop_now().await;
        }
    }
    println!("{table}");
    println!(
        "{TAG_SETS} tag sets, {DAEMONS} online daemons, 90% of pending jobs are prebuilds; requests are sequential over one keep-alive connection."
    );
    Ok(())
}
