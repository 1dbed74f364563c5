//! `provq organizations list|create|show|update|delete`.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value};

use super::ClientArgs;
use super::client::{Client, ClientError};
use super::output::{Format, columns, print_typed};
use crate::wire::organizations::Organization;

#[derive(Subcommand, Debug)]
pub enum OrganizationsCommand {
    /// List organizations (owners see all, members theirs).
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Create an organization (needs the multiple_organizations entitlement).
    #[command(
        after_help = "Example:\n  provq organizations create acme --display-name 'Acme Inc.'"
    )]
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// Name: alphanumerics separated by single hyphens, at most 32.
        name: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// Show an organization (id, name or `default`) as JSON.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(default_value = "default")]
        organization: String,
    },
    /// Rename or redescribe an organization.
    #[command(after_help = "Example:\n  provq organizations update acme --name acme-corp")]
    Update {
        #[command(flatten)]
        client: ClientArgs,
        organization: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Delete an organization without unfinished jobs or provisioner keys.
    #[command(visible_alias = "rm")]
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        organization: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
}

#[derive(Args, Debug)]
pub struct Fields {
    #[arg(long)]
    display_name: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// Icon URL.
    #[arg(long)]
    icon: Option<String>,
}

impl Fields {
    fn into_body(self, name: Option<String>) -> Map<String, Value> {
        [
            ("name", name),
            ("display_name", self.display_name),
            ("description", self.description),
            ("icon", self.icon),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), Value::String(v))))
        .collect()
    }
}

pub async fn run(cmd: OrganizationsCommand) -> anyhow::Result<()> {
    match cmd {
        OrganizationsCommand::List { client, output } => {
            let orgs: Value = Client::from_args(&client)?.get("/organizations").await?;
            print_typed(
                output,
                &orgs,
                "No organizations found",
                &columns(&["name", "display_name", "id", "default"]),
                |org: &Organization, c| match c {
                    "name" => org.name.clone(),
                    "display_name" => org.display_name.clone(),
                    "id" => org.id.to_string(),
                    "default" if org.is_default => "yes".into(),
                    _ => String::new(),
                },
            )?;
        }
        OrganizationsCommand::Create {
            client,
            name,
            fields,
        } => {
            let body = fields.into_body(Some(name));
            let org: Organization = Client::from_args(&client)?
                .post("/organizations", &body)
                .await?;
            println!("Created organization {} ({}).", org.name, org.id);
        }
        OrganizationsCommand::Show {
            client,
            organization,
        } => {
            let org: Value = Client::from_args(&client)?
                .get(&format!("/organizations/{organization}"))
                .await?;
            println!("{}", serde_json::to_string_pretty(&org)?);
        }
        OrganizationsCommand::Update {
            client,
            organization,
            name,
            fields,
        } => {
            let body = fields.into_body(name);
            if body.is_empty() {
                return Err(ClientError::Usage(
                    "nothing to change: pass --name, --display-name, --description or --icon"
                        .into(),
                )
                .into());
            }
            let org: Organization = Client::from_args(&client)?
                .send(
                    Method::PATCH,
                    &format!("/organizations/{organization}"),
                    Some(&body),
                )
                .await?;
            println!("Updated organization {} ({}).", org.name, org.id);
        }
        OrganizationsCommand::Delete {
            client,
            organization,
            yes,
        } => {
            let client = Client::from_args(&client)?;
            if !super::prompt::confirm(&format!("Delete organization {organization}?"), yes)? {
                println!("Nothing deleted.");
                return Ok(());
            }
            let answer: Value = client
                .send(
                    Method::DELETE,
                    &format!("/organizations/{organization}"),
                    None::<&Value>,
                )
                .await?;
            println!("{}", str_of(&answer, "message"));
        }
    }
    Ok(())
}

pub(super) fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}
