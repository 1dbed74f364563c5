//! `provq status`: the queue at a glance, the first command to run during an incident.

use clap::Args;
use serde_json::Value;

use super::ClientArgs;
use super::client::Client;
use super::output::{Format, colour_enabled, colour_status, json as to_json};

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Organization (name, id or `default`).
    #[arg(short = 'O', long, default_value = "default")]
    pub org: String,
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

const STATUSES: [&str; 6] = [
    "pending",
    "running",
    "succeeded",
    "failed",
    "canceling",
    "canceled",
];

/// `90` → `1m30s`: ages an operator reads at a glance.
fn duration(secs: i64) -> String {
    match secs {
        ..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..172_800 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&args.client)?;
    let o: Value = client
        .get(&format!("/organizations/{}/queue", args.org))
        .await?;
    if args.output == Format::Json {
        println!("{}", to_json(&o));
        return Ok(());
    }
    let colour = colour_enabled();
    let paint = |s: &str| if colour { colour_status(s) } else { s.into() };
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    println!(
        "Organization  {}",
        o["organization"]["name"].as_str().unwrap_or_default()
    );
    let jobs: Vec<String> = STATUSES
        .iter()
        .map(|s| format!("{} {}", paint(s), n(&o["jobs"][s])))
        .collect();
    println!("Jobs          {}", jobs.join("  "));
    let oldest = o["oldest_pending_age_seconds"]
        .as_i64()
        .map(duration)
        .unwrap_or_else(|| "-".into());
    println!(
        "Pending       {} no online daemon can run; oldest waiting {oldest}",
        n(&o["pending_unmatched"])
    );
    println!(
        "Last 5 min    {} enqueued, {} finished",
        n(&o["enqueued_last_5m"]),
        n(&o["finished_last_5m"])
    );
    let daemons: Vec<String> = ["idle", "busy", "offline"]
        .iter()
        .map(|s| format!("{} {}", paint(s), n(&o["daemons"][s])))
        .collect();
    println!("Daemons       {}", daemons.join("  "));
    let paused = o["prebuilds_paused"].as_bool().unwrap_or(false);
    println!(
        "Prebuilds     {}",
        if paused {
            "paused (provq prebuilds resume)"
        } else {
            "accepted"
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(super::duration(5), "5s");
        assert_eq!(super::duration(90), "1m30s");
        assert_eq!(super::duration(7_260), "2h01m");
        assert_eq!(super::duration(200_000), "2d07h");
    }
}
