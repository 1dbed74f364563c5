//! Secrets never reach logs or error bodies: session tokens, provisioner keys, the PSK, lease
//! tokens and passwords, across the flows that handle them and failed attempts to use them.

use std::io::Read;
use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::cli::{ServeProcess, provq};
use crate::helpers::*;

const SERVER_PSK: &str = "psk-never-logged-7f3a9c";
const MEMBER_PASSWORD: &str = "member-secret-pw-42";
const WRONG_PASSWORD: &str = "wrong-secret-pw-93";

/// Records every answer so error bodies can be searched too.
struct Client {
    http: reqwest::Client,
    base: String,
    errors: Vec<String>,
}

impl Client {
    async fn call(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = match &body {
            Some(b) => self.http.post(format!("{}{path}", self.base)).json(b),
            None => self.http.get(format!("{}{path}", self.base)),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.as_u16() >= 400 {
            self.errors.push(text.clone());
        }
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// A variant of a secret that is wrong but shaped the same.
fn mangled(secret: &str) -> String {
    let mut s = secret.to_string();
    let last = s.pop().unwrap();
    s.push(if last == 'a' { 'b' } else { 'a' });
    s
}

backend_tests! {
    async fn secrets_never_appear_in_logs_or_error_bodies(backend: Backend) {
        let (_db, url) = TestDatabase::create(backend).await;
        let home = tempfile::tempdir().unwrap();
        let mut cmd = provq(home.path());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--prometheus-listen", "", "--database-url", &url])
            .env("PROVQ_LOG_FORMAT", "json")
            .env("PROVQ_PROVISIONER__DAEMON_PSK", SERVER_PSK)
            .env("RUST_LOG", "debug");
        let mut server = ServeProcess::start(cmd);
        // Drain stderr as it comes so a chatty server never blocks on a full pipe.
        let mut stderr = server.child.stderr.take().unwrap();
        let logs = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stderr.read_to_string(&mut out);
            out
        });
        let mut c = Client { http: http_client(), base: format!("{}/api/v2", server.url), errors: Vec::new() };

        c.call("/users/first", &[], Some(json!({"email": OWNER_EMAIL, "username": "owner", "password": OWNER_PASSWORD}))).await;
        let (_, login) = c.call("/users/login", &[], Some(json!({"email": OWNER_EMAIL, "password": OWNER_PASSWORD}))).await;
        let token = login["session_token"].as_str().unwrap().to_string();
        let auth = [("Coder-Session-Token", token.as_str())];
        c.call("/users", &auth, Some(json!({"email": "m@example.com", "username": "m", "password": MEMBER_PASSWORD}))).await;
        let (_, member) = c.call("/users/login", &[], Some(json!({"email": "m@example.com", "password": MEMBER_PASSWORD}))).await;
        let member_token = member["session_token"].as_str().unwrap().to_string();
        let (status, key) = c.call("/organizations/default/provisionerkeys", &auth, Some(json!({"name": "k1"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        let key = key["key"].as_str().unwrap().to_string();

        // Daemons with the key and the PSK; one of them runs a job with its lease.
        c.call("/organizations/default/provisionerjobs", &auth, Some(json!({"type": "workspace_build"}))).await;
        let (status, acquired) = c.call("/provisionerd/acquire", &[("Coder-Provisioner-Daemon-PSK", SERVER_PSK)], Some(json!({"name": "p", "wait_seconds": 5}))).await;
        assert_eq!(status, StatusCode::OK, "{acquired}");
        let job = acquired["job"]["job_id"].as_str().unwrap().to_string();
        let lease = acquired["job"]["lease_token"].as_str().unwrap().to_string();
        let psk = [("Coder-Provisioner-Daemon-PSK", SERVER_PSK)];
        c.call(&format!("/provisionerd/jobs/{job}/update"), &psk, Some(json!({"lease_token": lease, "logs": [{"level": "info", "output": "hi"}]}))).await;
        c.call(&format!("/provisionerd/jobs/{job}/complete"), &psk, Some(json!({"lease_token": lease}))).await;
        let (status, _) = c.call("/provisionerd/acquire", &[("Coder-Provisioner-Daemon-Key", &key)], Some(json!({"name": "k", "wait_seconds": 0}))).await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        // Failed attempts with wrong secrets of the right shape, and right secrets in wrong places.
        let (bad_token, bad_key, bad_psk, bad_lease) = (mangled(&token), mangled(&key), mangled(SERVER_PSK), mangled(&lease));
        for (status, _) in [
            c.call("/users/me", &[("Coder-Session-Token", &bad_token)], None).await,
            c.call(&format!("/users/me?coder_session_token={bad_token}"), &[], None).await,
            c.call("/users/me", &[("Cookie", &format!("coder_session_token={bad_token}"))], None).await,
            c.call("/users/login", &[], Some(json!({"email": OWNER_EMAIL, "password": WRONG_PASSWORD}))).await,
            c.call("/users/login", &[], Some(json!({"email": "nobody@example.com", "password": WRONG_PASSWORD}))).await,
            c.call("/provisionerd/acquire", &[("Coder-Provisioner-Daemon-Key", &bad_key)], Some(json!({"name": "x", "wait_seconds": 0}))).await,
            c.call("/provisionerd/acquire", &[("Coder-Provisioner-Daemon-PSK", &bad_psk)], Some(json!({"name": "x", "wait_seconds": 0}))).await,
            c.call("/provisionerd/acquire", &[("Coder-Session-Token", &member_token)], Some(json!({"name": "x", "wait_seconds": 0}))).await,
            c.call(&format!("/provisionerd/jobs/{job}/complete"), &psk, Some(json!({"lease_token": bad_lease}))).await,
        ] {
            assert!(status.is_client_error(), "{status}");
        }

        assert_eq!(server.terminate().code(), Some(0));
        let logs = logs.join().unwrap();
        assert!(logs.lines().count() > 10, "too few log lines to prove anything:\n{logs}");
        assert!(logs.contains("/api/v2/provisionerd/acquire"), "request lines are captured:\n{logs}");
        let errors = c.errors.join("\n");
        let secrets = [
            ("owner session token", token.as_str()),
            ("owner token secret", token.split('-').nth(1).unwrap()),
            ("member session token", member_token.as_str()),
            ("provisioner key", key.as_str()),
            ("PSK", SERVER_PSK),
            ("lease token", lease.as_str()),
            ("owner password", OWNER_PASSWORD),
            ("member password", MEMBER_PASSWORD),
            ("wrong password", WRONG_PASSWORD),
            ("wrong token", bad_token.as_str()),
            ("wrong key", bad_key.as_str()),
            ("wrong PSK", bad_psk.as_str()),
            ("wrong lease", bad_lease.as_str()),
        ];
        for (what, secret) in secrets {
            assert!(!logs.contains(secret), "the {what} appears in the logs");
            assert!(!errors.contains(secret), "the {what} appears in an error body:\n{errors}");
        }
        let _ = Stdio::null();
    }
}
