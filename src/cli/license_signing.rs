//! `provq licenses keygen` and `provq licenses sign`: a license authority of one's own. Both run
//! offline; the signing code is the library's, the same the tests mint their licenses with.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use chrono::Utc;
use clap::Args;

use super::client::ClientError;
use crate::domain::license::entitlements::FEATURES;
use crate::domain::license::{LicenseSpec, MAX_TERM, generate_key, sign};

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, mode 0600; never overwritten).
    #[arg(long, default_value = "provq-license-key.pem")]
    out: PathBuf,
    /// Key id the servers will know the key by (default: provq-<8 random hex digits>).
    #[arg(long)]
    kid: Option<String>,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// Private key file written by `provq licenses keygen`.
    #[arg(long)]
    key: PathBuf,
    /// Key id: the name of the key under [licenses.keys].
    #[arg(long)]
    kid: String,
    /// A feature and its value, e.g. multiple_organizations=1 or user_limit=50 (repeatable).
    #[arg(long = "feature", value_name = "NAME=N", value_parser = parse_feature)]
    features: Vec<(String, i64)>,
    /// A bundle of features: enterprise (all but multiple_organizations) or premium (all).
    #[arg(long, value_parser = ["enterprise", "premium"])]
    feature_set: Option<String>,
    /// Length of the licensed term from now, e.g. 30d, 1year (at most 5 years).
    #[arg(long, value_parser = humantime::parse_duration)]
    expires: std::time::Duration,
    /// Grace period after the term: features keep working, with warnings.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    grace: std::time::Duration,
    /// Mark the license as a trial (expiry warnings start 7 days ahead instead of 30).
    #[arg(long)]
    trial: bool,
    /// Lock the license to a deployment id (see GET /api/v2/buildinfo); repeatable.
    #[arg(long = "deployment-id", value_name = "ID")]
    deployment_ids: Vec<String>,
    #[arg(long, default_value = "self-signed")]
    account_id: String,
    #[arg(long, default_value = "provq")]
    account_type: String,
}

fn parse_feature(raw: &str) -> Result<(String, i64), String> {
    let (name, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=N, got {raw:?}"))?;
    let value = value
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("the value of {name} must be an integer"))?;
    Ok((name.trim().to_string(), value))
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let key = generate_key(args.kid)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(&args.out) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(ClientError::Usage(format!(
                "{} exists; refusing to overwrite a signing key (choose another --out)",
                args.out.display()
            ))
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", args.out.display())),
    };
    file.write_all(key.private_pem.as_bytes())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("kid: {}", key.kid);
    println!(
        "private key: {} (keep it secret: it signs licenses)",
        args.out.display()
    );
    println!("Add this line under [licenses.keys] in every server's configuration:");
    println!("{}", key.config_line());
    Ok(())
}

pub fn sign_license(args: SignArgs) -> anyhow::Result<()> {
    let now = Utc::now();
    let usage = |m: String| anyhow::Error::from(ClientError::Usage(m));
    let term = chrono::Duration::from_std(args.expires)
        .ok()
        .filter(|t| *t > chrono::Duration::zero() && *t <= MAX_TERM)
        .ok_or_else(|| usage("--expires must be more than 0 and at most 5 years".into()))?;
    let grace =
        chrono::Duration::from_std(args.grace).map_err(|_| usage("--grace is too long".into()))?;
    for (name, _) in &args.features {
        if !FEATURES.contains(&name.as_str()) {
            eprintln!("warning: provq does not know the feature {name:?}; servers will ignore it");
        }
    }
    let mut spec = LicenseSpec::new(now, term);
    spec.features = args.features.into_iter().collect::<BTreeMap<_, _>>();
    spec.feature_set = args.feature_set.unwrap_or_default();
    spec.trial = args.trial;
    spec.grace = grace;
    spec.deployment_ids = args.deployment_ids;
    spec.account_id = args.account_id;
    spec.account_type = args.account_type;
    let pem = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read the signing key {}", args.key.display()))?;
    println!("{}", sign(&spec.claims(now), &args.kid, &pem)?);
    Ok(())
}
