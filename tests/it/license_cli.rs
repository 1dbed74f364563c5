//! The README walkthrough through the binary: `licenses keygen` → the key line in the server's
//! configuration → `licenses sign` → `licenses add` → a second organization → entitlements.

use std::path::Path;

use serde_json::Value;

use crate::backend_tests;
use crate::cli::{ServeProcess, provq};
use crate::helpers::*;

fn run(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = provq(home).args(args).output().expect("run provq");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs and asserts exit code 0; returns stdout.
fn ok(home: &Path, args: &[&str]) -> String {
    let (code, out, err) = run(home, args);
    assert_eq!(code, 0, "provq {args:?}\nstdout: {out}\nstderr: {err}");
    out
}

backend_tests! {
    async fn an_operator_mints_adds_and_uses_a_license_from_the_command_line(backend: Backend) {
        let (_db, url) = TestDatabase::create(backend).await;
        let home = tempfile::tempdir().unwrap();
        let h = home.path();

        let out = ok(h, &["licenses", "keygen", "--out", "signing.pem"]);
        let kid = out.lines().find_map(|l| l.strip_prefix("kid: ")).expect("kid line").to_string();
        let key_line = out.lines().last().unwrap().to_string();
        assert!(key_line.starts_with(&format!("\"{kid}\" = \"")), "{out}");
        let (code, _, err) = run(h, &["licenses", "keygen", "--out", "signing.pem"]);
        assert_eq!(code, 2, "never overwrites a key: {err}");

        let config = h.join("provq.toml");
        std::fs::write(&config, format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{url}\"\n[prometheus]\nlisten = \"\"\n[licenses.keys]\n{key_line}\n"
        )).unwrap();
        let mut serve = provq(h);
        serve.args(["serve", "--config", config.to_str().unwrap()]);
        let server = ServeProcess::start(serve);
        ok(h, &["login", &server.url, "--username", "admin", "--email", "admin@example.com", "--password", "S3cure-pass"]);

        let (code, _, err) = run(h, &["organizations", "create", "acme"]);
        assert_eq!(code, 1);
        assert!(err.contains("Multiple Organizations is a Premium feature. Contact sales!"), "{err}");

        let license = ok(h, &[
            "licenses", "sign", "--key", "signing.pem", "--kid", &kid,
            "--feature", "multiple_organizations=1", "--feature", "user_limit=10",
            "--expires", "90d", "--grace", "7d",
        ]);
        std::fs::write(h.join("license.jwt"), &license).unwrap();
        let out = ok(h, &["licenses", "add", "--file", "license.jwt"]);
        assert!(out.contains("Added license 1"), "{out}");
        assert!(out.contains("user_limit=10"), "{out}");
        let out = ok(h, &["licenses", "list"]);
        assert!(out.contains("multiple_organizations=1"), "{out}");
        let (code, _, err) = run(h, &["licenses", "add", license.trim()]);
        assert_eq!(code, 1, "the same license twice: {err}");

        let entitlements: Value = serde_json::from_str(&ok(h, &["licenses", "entitlements", "-o", "json"])).unwrap();
        assert_eq!(entitlements["features"]["multiple_organizations"]["entitlement"], "entitled");
        assert_eq!(entitlements["features"]["user_limit"]["limit"], 10);
        let table = ok(h, &["licenses", "entitlements"]);
        assert!(table.contains("multiple_organizations") && table.contains("License: yes"), "{table}");

        let out = ok(h, &["organizations", "create", "acme", "--display-name", "Acme Inc."]);
        assert!(out.contains("Created organization acme"), "{out}");
        let out = ok(h, &["organizations", "list"]);
        assert!(out.contains("Acme Inc.") && out.contains("first-organization"), "{out}");
        let shown: Value = serde_json::from_str(&ok(h, &["organizations", "show", "acme"])).unwrap();
        assert_eq!(shown["display_name"], "Acme Inc.");
        ok(h, &["organizations", "update", "acme", "--name", "acme-corp"]);
        let (code, _, err) = run(h, &["organizations", "update", "acme-corp"]);
        assert_eq!(code, 2, "nothing to change is a usage error: {err}");
        let (code, _, err) = run(h, &["organizations", "delete", "acme-corp"]);
        assert_eq!(code, 2, "no terminal to confirm on, no --yes: {err}");
        let out = ok(h, &["organizations", "delete", "acme-corp", "--yes"]);
        assert!(out.contains("Organization has been deleted."), "{out}");
        let (code, _, err) = run(h, &["organizations", "delete", "default", "--yes"]);
        assert_eq!(code, 1);
        assert!(err.contains("Default organization cannot be deleted."), "{err}");

        ok(h, &["licenses", "delete", "1", "--yes"]);
        let (code, _, err) = run(h, &["organizations", "create", "globex"]);
        assert_eq!(code, 1, "the entitlement left with the license: {err}");
        let (code, _, _) = run(h, &["licenses", "sign", "--key", "signing.pem", "--kid", &kid, "--feature", "oops", "--expires", "1d"]);
        assert_eq!(code, 2);
        server.terminate();
    }
}
