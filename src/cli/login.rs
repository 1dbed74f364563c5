//! `provq login URL`: creates the first user when the server has none, else logs in, then saves
//! the URL and token for later commands.

use std::io::{BufRead, Write};

use clap::Args;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::client::{Client, ClientError};
use super::session::{self, SavedSession};

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Server URL, e.g. http://127.0.0.1:8080.
    url: String,
    /// Username for the first user (asked when needed and not given).
    #[arg(long)]
    username: Option<String>,
    /// E-mail address (asked when not given).
    #[arg(long)]
    email: Option<String>,
    /// Password (asked when not given; prefer the prompt or PROVQ_PASSWORD on shared machines).
    #[arg(long, env = "PROVQ_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct LoginResponse {
    session_token: String,
}

pub async fn run(args: LoginArgs) -> anyhow::Result<()> {
    let client = Client::anonymous(&args.url);
    let first_exists = match client
        .raw(reqwest::Method::GET, "/users/first", None::<&()>)
        .await
    {
        Ok(_) => true,
        Err(ClientError::Api(f)) if f.status == StatusCode::NOT_FOUND => false,
        Err(e) => return Err(e.into()),
    };
    let email = ask(args.email, "Email")?;
    if !first_exists {
        let username = ask(args.username, "Username for the first user")?;
        let password = ask(args.password.clone(), "Password")?;
        let _: serde_json::Value = client
            .post(
                "/users/first",
                &json!({"email": email, "username": username, "password": password}),
            )
            .await?;
        println!("Created the first user {username} (owner).");
        return finish(&client, &args.url, &email, &password).await;
    }
    let password = ask(args.password, "Password")?;
    finish(&client, &args.url, &email, &password).await
}

async fn finish(client: &Client, url: &str, email: &str, password: &str) -> anyhow::Result<()> {
    let login: LoginResponse = client
        .post(
            "/users/login",
            &json!({"email": email, "password": password}),
        )
        .await?;
    let path = session::save(&SavedSession {
        url: url.trim_end_matches('/').to_string(),
        token: login.session_token,
    })?;
    println!("Logged in to {url}; session saved to {}.", path.display());
    Ok(())
}

/// The flag's value, or a line read from the terminal.
fn ask(value: Option<String>, prompt: &str) -> anyhow::Result<String> {
    if let Some(v) = value {
        return Ok(v);
    }
    eprint!("{prompt}: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim().to_string();
    if line.is_empty() {
        return Err(ClientError::Usage(format!("{prompt} is required")).into());
    }
    Ok(line)
}
