//! `provq login URL`: creates the first user when the server has none, else logs in, then saves
//! the URL and token for later commands. `provq logout` ends the session and forgets it.

use clap::Args;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ClientArgs;
use super::client::{Client, ClientError, check_url};
use super::prompt;
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
    /// Password (asked without echo when not given; prefer the prompt or PROVQ_PASSWORD on
    /// shared machines).
    #[arg(long, env = "PROVQ_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct LoginResponse {
    session_token: String,
}

/// Whether the server at `client` is a provq server, and if so whether its first user exists.
async fn first_user_exists(client: &Client, url: &str) -> Result<bool, ClientError> {
    let not_provq = |why: String| {
        ClientError::Failed(format!(
            "{url} is not a provq server ({why}); check the URL and port"
        ))
    };
    match client.get::<Value>("/buildinfo").await {
        Ok(info) if info["deployment_id"].is_string() => {}
        Ok(_) => {
            return Err(not_provq(
                "GET /api/v2/buildinfo has no deployment id".into(),
            ));
        }
        Err(ClientError::Api(f)) => {
            return Err(not_provq(format!(
                "GET /api/v2/buildinfo answered {}",
                f.status
            )));
        }
        Err(e) => return Err(e),
    }
    match client
        .raw(reqwest::Method::GET, "/users/first", None::<&()>)
        .await
    {
        Ok(_) => Ok(true),
        Err(ClientError::Api(f)) if f.status == StatusCode::NOT_FOUND => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn run(args: LoginArgs) -> anyhow::Result<()> {
    let url = check_url(&args.url)?;
    let client = Client::anonymous(&url);
    let first_exists = first_user_exists(&client, &url).await?;
    let email = match args.email {
        Some(e) => e,
        None => prompt::line("Email")?,
    };
    if first_exists {
        let password = match args.password {
            Some(p) => p,
            None => prompt::password("Password")?,
        };
        return finish(&client, &url, &email, &password).await;
    }
    let username = match args.username {
        Some(u) => u,
        None => prompt::line("Username for the first user")?,
    };
    let given = args.password;
    let password = loop {
        let password = match &given {
            Some(p) => p.clone(),
            None => prompt::new_password("Password")?,
        };
        let created: Result<Value, _> = client
            .post(
                "/users/first",
                &json!({"email": email, "username": username, "password": password}),
            )
            .await;
        match created {
            Ok(_) => break password,
            // A password the server finds too weak is asked again, not a reason to start over.
            Err(ClientError::Api(f))
                if given.is_none()
                    && prompt::interactive()
                    && f.status == StatusCode::BAD_REQUEST
                    && f.validations.iter().all(|(field, _)| field == "password")
                    && !f.validations.is_empty() =>
            {
                for (_, why) in &f.validations {
                    eprintln!("{why}");
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    println!("Created the first user {username} (owner).");
    finish(&client, &url, &email, &password).await
}

async fn finish(client: &Client, url: &str, email: &str, password: &str) -> anyhow::Result<()> {
    let login: LoginResponse = match client
        .post(
            "/users/login",
            &json!({"email": email, "password": password}),
        )
        .await
    {
        Ok(l) => l,
        Err(ClientError::Api(f)) if f.status == StatusCode::UNAUTHORIZED => {
            return Err(ClientError::Failed(f.message).into());
        }
        Err(e) => return Err(e.into()),
    };
    let path = session::save(&SavedSession {
        url: url.to_string(),
        token: login.session_token,
    })?;
    println!("Logged in to {url}; session saved to {}.", path.display());
    Ok(())
}

/// Ends the session on the server (when it is reachable) and removes the saved one.
pub async fn logout(args: ClientArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&args)?;
    let ended = client
        .raw(reqwest::Method::POST, "/users/logout", None::<&()>)
        .await;
    let removed = session::remove()?;
    match (ended, removed) {
        (Ok(_), _) => println!("Logged out of {}.", client.base_url()),
        (Err(ClientError::Api(f)), _) if f.status == StatusCode::UNAUTHORIZED => {
            println!("The session had already ended on {}.", client.base_url())
        }
        (Err(e), true) => {
            eprintln!("warning: the server did not end the session: {e}");
            println!("Removed the saved session.");
        }
        (Err(e), false) => return Err(e.into()),
    }
    Ok(())
}
