//! `provq users …`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::ClientArgs;
use super::client::Client;
use super::output::{Format, cell, columns, json as to_json, print_list};

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a member of the default organization (owners only).
    #[command(
        after_help = "Example:\n  provq users create --username alice --email alice@example.com --password 'S3cure-pass'"
    )]
    Create(CreateArgs),
    /// List users with their roles (owners only).
    #[command(
        visible_alias = "ls",
        after_help = "Example:\n  provq users list -o json"
    )]
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Show a user (id, username or `me`).
    Show {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(default_value = "me")]
        user: String,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[arg(long)]
    username: String,
    #[arg(long)]
    email: String,
    #[arg(long, env = "PROVQ_NEW_USER_PASSWORD", hide_env_values = true)]
    password: String,
    /// Full name.
    #[arg(long)]
    name: Option<String>,
}

pub async fn run(cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Create(args) => {
            let client = Client::from_args(&args.client)?;
            let mut body =
                json!({"username": args.username, "email": args.email, "password": args.password});
            if let Some(name) = args.name {
                body["name"] = Value::String(name);
            }
            let user: Value = client.post("/users", &body).await?;
            println!(
                "Created user {} ({}).",
                user["username"].as_str().unwrap_or_default(),
                user["id"].as_str().unwrap_or_default()
            );
        }
        UsersCommand::List { client, output } => {
            let users: Value = Client::from_args(&client)?.get("/users").await?;
            print_list(
                output,
                &users,
                "No users found",
                &columns(&["username", "email", "roles", "id", "created_at"]),
                |u, c| match c {
                    "roles" => roles(u),
                    other => cell(&u[other]),
                },
            );
        }
        UsersCommand::Show { client, user } => {
            let client = Client::from_args(&client)?;
            let user: Value = client.get(&format!("/users/{user}")).await?;
            println!("{}", serde_json::to_string_pretty(&user)?);
        }
    }
    Ok(())
}

/// A user's role names, comma-separated.
fn roles(user: &Value) -> String {
    user["roles"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["name"].as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// `provq whoami`: who the saved session (or --token) is, on which server.
pub async fn whoami(args: ClientArgs, output: Format) -> anyhow::Result<()> {
    let client = Client::from_args(&args)?;
    let me: Value = client.get("/users/me").await?;
    match output {
        Format::Json => {
            let out = json!({"id": me["id"], "username": me["username"], "email": me["email"], "roles": roles(&me).split(',').filter(|r| !r.is_empty()).collect::<Vec<_>>(), "url": client.base_url()});
            println!("{}", to_json(&out));
        }
        Format::Table => println!(
            "{} <{}> ({}) on {}\nid {}",
            cell(&me["username"]),
            cell(&me["email"]),
            roles(&me),
            client.base_url(),
            cell(&me["id"])
        ),
    }
    Ok(())
}
