//! `provq users …`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::ClientArgs;
use super::client::Client;

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a member of the default organization (owners only).
    #[command(
        after_help = "Example:\n  provq users create --username alice --email alice@example.com --password 'S3cure-pass'"
    )]
    Create(CreateArgs),
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
        UsersCommand::Show { client, user } => {
            let client = Client::from_args(&client)?;
            let user: Value = client.get(&format!("/users/{user}")).await?;
            println!("{}", serde_json::to_string_pretty(&user)?);
        }
    }
    Ok(())
}
