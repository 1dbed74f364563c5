//! `provq licenses add|list|delete|entitlements|keygen|sign`.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::ClientArgs;
use super::client::{Client, ClientError};
use super::license_signing::{self, KeygenArgs, SignArgs};
use super::organizations::str_of;
use super::output::{Format, cell, columns, json as to_json, print_list, table};

#[derive(Subcommand, Debug)]
pub enum LicensesCommand {
    /// Add a license to the server (owners).
    #[command(
        after_help = "Examples:\n  provq licenses add eyJhbGciOiJFZERTQSIs...\n  provq licenses add --file license.jwt\n  provq licenses sign ... | provq licenses add -"
    )]
    Add(AddArgs),
    /// List the stored licenses with their claims.
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Delete a license by id.
    #[command(visible_alias = "rm")]
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        id: i32,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// Show what the licenses grant (GET /api/v2/entitlements).
    #[command(visible_alias = "features")]
    Entitlements {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Generate an Ed25519 key pair for signing licenses.
    #[command(after_help = "Example:\n  provq licenses keygen --out license-key.pem")]
    Keygen(KeygenArgs),
    /// Sign a license with a key from `keygen`; prints the license.
    #[command(
        after_help = "Example:\n  provq licenses sign --key license-key.pem --kid provq-1a2b3c4d \\\n    --feature multiple_organizations=1 --feature user_limit=50 --expires 1year --grace 30d"
    )]
    Sign(SignArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The license; `-` reads it from stdin.
    #[arg(conflicts_with = "file", required_unless_present = "file")]
    license: Option<String>,
    /// Read the license from a file.
    #[arg(long)]
    file: Option<PathBuf>,
}

pub async fn run(cmd: LicensesCommand) -> anyhow::Result<()> {
    match cmd {
        LicensesCommand::Add(args) => add(args).await?,
        LicensesCommand::List { client, output } => {
            let licenses: Value = Client::from_args(&client)?.get("/licenses").await?;
            print_licenses(&licenses, output)?;
        }
        LicensesCommand::Delete { client, id, yes } => {
            let client = Client::from_args(&client)?;
            if !super::prompt::confirm(
                &format!("Delete license {id}? Its entitlements end at the next refresh."),
                yes,
            )? {
                println!("Nothing deleted.");
                return Ok(());
            }
            let _: Value = client
                .send(Method::DELETE, &format!("/licenses/{id}"), None::<&Value>)
                .await?;
            println!("Deleted license {id}.");
        }
        LicensesCommand::Entitlements { client, output } => {
            let entitlements: Value = Client::from_args(&client)?.get("/entitlements").await?;
            print_entitlements(&entitlements, output)?;
        }
        LicensesCommand::Keygen(args) => license_signing::keygen(args)?,
        LicensesCommand::Sign(args) => license_signing::sign_license(args)?,
    }
    Ok(())
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&args.client)?;
    let license = match (args.license.as_deref(), &args.file) {
        (_, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        (Some("-"), None) => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
        (Some(text), None) => text.to_string(),
        (None, None) => return Err(ClientError::Usage("give a license or --file".into()).into()),
    };
    let added: Value = client
        .post("/licenses", &json!({"license": license.trim()}))
        .await?;
    println!(
        "Added license {} ({}): {}.",
        added["id"],
        str_of(&added, "uuid"),
        describe_claims(&added["claims"])
    );
    Ok(())
}

/// "account self-signed, premium, user_limit=10, until 2027-01-01".
fn describe_claims(claims: &Value) -> String {
    let mut parts = vec![format!("account {}", str_of(claims, "account_id"))];
    if let Some(set) = claims["feature_set"].as_str().filter(|s| !s.is_empty()) {
        parts.push(set.to_string());
    }
    if let Some(features) = claims["features"].as_object() {
        parts.extend(features.iter().map(|(k, v)| format!("{k}={v}")));
    }
    if claims["trial"].as_bool() == Some(true) {
        parts.push("trial".into());
    }
    parts.push(format!("until {}", date(&claims["license_expires"])));
    parts.join(", ")
}

fn date(value: &Value) -> String {
    value
        .as_i64()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "?".into())
}

fn print_licenses(licenses: &Value, output: Format) -> anyhow::Result<()> {
    print_list(
        output,
        licenses,
        "No licenses found",
        &columns(&["id", "uuid", "uploaded_at", "claims"]),
        |l, c| match c {
            "claims" => describe_claims(&l["claims"]),
            other => cell(&l[other]),
        },
    );
    Ok(())
}

fn print_entitlements(e: &Value, output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        println!("{}", to_json(e));
        return Ok(());
    }
    let features: Vec<Value> = e["features"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, f)| {
            let mut row = f.clone();
            row["feature"] = Value::String(name.clone());
            row
        })
        .collect();
    let names = columns(&["feature", "entitlement", "enabled", "limit", "actual"]);
    println!("{}", table(&names, &features, |f, c| cell(&f[c])));
    let yes_no = |v: &Value| {
        if v.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    println!(
        "License: {}. Trial: {}. Refreshed at {}.",
        yes_no(&e["has_license"]),
        yes_no(&e["trial"]),
        str_of(e, "refreshed_at")
    );
    for (label, key) in [("warning", "warnings"), ("error", "errors")] {
        for message in e[key].as_array().into_iter().flatten() {
            println!("{label}: {}", message.as_str().unwrap_or_default());
        }
    }
    Ok(())
}
