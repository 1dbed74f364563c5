//! The operator console in a real browser (Chromium through chromedriver) against the real
//! server, on both backends: what an operator does during a prebuild flood, a job's live logs, and
//! what a member may not do.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::console_browser::Browser;
use crate::helpers::*;

/// Ids of the jobs the API lists for `query` (all of them).
async fn api_ids(app: &TestApp, owner: &str, query: &str) -> Vec<String> {
    let (status, jobs) = app
        .get(
            &format!("/organizations/{DEFAULT_ORG}/provisionerjobs?limit=10000&{query}"),
            Some(owner),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    let mut ids: Vec<String> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// The `data-job-id`s of the rows on the page, sorted.
async fn row_ids(browser: &Browser) -> Vec<String> {
    let ids = browser
        .js("return Array.from(document.querySelectorAll('tr[data-job-id]')).map(r => r.dataset.jobId);")
        .await;
    let mut ids: Vec<String> = serde_json::from_value(ids).unwrap();
    ids.sort();
    ids
}

async fn prebuilds_paused(app: &TestApp, owner: &str) -> bool {
    let (status, body) = app.get("/prebuilds/settings", Some(owner)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["reconciliation_paused"].as_bool().unwrap()
}

/// 50 pending prebuild jobs, 3 pending jobs of the owner (one for a Windows daemon nobody runs)
/// and one running on daemon `mac-1`.
async fn flood(app: &TestApp, owner: &str) -> (String, String) {
    for _ in 0..50 {
        app.enqueue(
            owner,
            json!({"type": "workspace_build", "initiator": "prebuilds", "tags": {"os": "linux"}}),
        )
        .await;
    }
    let windows = app
        .enqueue(
            owner,
            json!({"type": "workspace_build", "tags": {"os": "windows"}}),
        )
        .await;
    for _ in 0..2 {
        app.enqueue(
            owner,
            json!({"type": "template_version_import", "tags": {"os": "linux"}}),
        )
        .await;
    }
    let running = app
        .enqueue(
            owner,
            json!({"type": "workspace_build", "tags": {"os": "mac"}}),
        )
        .await;
    let (job, _) = app
        .acquire("mac-1", json!({"os": "mac"}), 0)
        .await
        .expect("the mac job");
    assert_eq!(job, running["id"].as_str().unwrap());
    (windows["id"].as_str().unwrap().to_string(), job)
}

backend_tests! {
    async fn console_lets_an_owner_see_filter_and_cancel_a_prebuild_flood(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let (windows_job, _running) = flood(&app, &owner).await;
        let browser = Browser::start(&app).await;
        browser.sign_in(OWNER_EMAIL, OWNER_PASSWORD).await;

        // The overview's counts are the API's.
        let (_, queue) = app.get(&format!("/organizations/{DEFAULT_ORG}/queue"), Some(&owner)).await;
        for status in ["pending", "running", "succeeded", "canceled"] {
            let shown = browser.find(&format!("//*[@data-count='{status}']")).await.text().await.unwrap();
            assert_eq!(shown, queue["jobs"][status].to_string(), "{status}");
            assert_eq!(shown, api_ids(&app, &owner, &format!("status={status}")).await.len().to_string());
        }
        let unmatched = browser.find("//*[@data-count='unmatched']").await.text().await.unwrap();
        assert_eq!(unmatched, "53", "the linux and windows jobs wait for daemons nobody runs");
        // It refreshes itself: a new job shows up without a reload.
        app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"os": "linux"}})).await;
        browser.until("the refreshed pending count", "return document.querySelector('[data-count=pending]').textContent === '54';").await;
        browser.screenshot("overview").await;

        // Filter by initiator through the URL...
        browser.goto("/jobs?initiator=prebuilds").await;
        let prebuilds = api_ids(&app, &owner, "initiator=prebuilds").await;
        assert_eq!(prebuilds.len(), 50);
        assert_eq!(row_ids(&browser).await, prebuilds);
        let initiators = browser.js("return Array.from(document.querySelectorAll('tr[data-job-id] td:nth-child(7)')).map(td => td.textContent);").await;
        assert!(initiators.as_array().unwrap().iter().all(|i| i == "prebuilds"), "{initiators}");
        // ...and through the search box, which lands on the same shareable URL form.
        browser.goto("/jobs").await;
        browser.fill("Search", "initiator:owner status:pending").await;
        browser.click_to_load("Apply").await;
        assert_eq!(browser.location().await, "/jobs?status=pending&initiator=owner");
        assert_eq!(row_ids(&browser).await, api_ids(&app, &owner, "status=pending&initiator=owner").await);
        assert_eq!(row_ids(&browser).await.len(), 4);
        browser.screenshot("jobs").await;

        // More than `limit` rows are reachable: page through everything 20 at a time.
        browser.goto("/jobs?limit=20").await;
        let mut seen = row_ids(&browser).await;
        while browser.count("//a[normalize-space()='Older →']").await > 0 {
            browser.click_to_load("Older →").await;
            seen.extend(row_ids(&browser).await);
        }
        seen.sort();
        assert_eq!(seen, api_ids(&app, &owner, "").await, "every job once, over the pages");

        // Bulk cancel of the flood through the confirmation, which states the count.
        browser.goto("/jobs?initiator=prebuilds&status=pending").await;
        browser.click("Cancel matching jobs").await;
        let text = browser.dialog_text().await;
        assert!(text.contains("cancels 50 pending or running jobs"), "{text}");
        assert!(text.contains("initiator:prebuilds status:pending"), "{text}");
        browser.screenshot("jobs-cancel-dialog").await;
        browser.click_to_load("Confirm").await;
        browser.find("//*[@data-flash and normalize-space()='Canceled 50 jobs.']").await;
        assert_eq!(api_ids(&app, &owner, "initiator=prebuilds&status=canceled").await, prebuilds);
        assert_eq!(api_ids(&app, &owner, "status=pending").await.len(), 4, "the owner's jobs stay");

        // One job from its page: it says why it waits, and its cancel is guarded by its status.
        browser.goto(&format!("/jobs/{windows_job}")).await;
        let why = browser.find("//*[@data-why]").await.text().await.unwrap();
        assert!(why.contains("No online daemon matches tags") && why.contains("os=windows"), "{why}");
        browser.screenshot("job").await;
        browser.click("Cancel job").await;
        assert!(browser.dialog_text().await.contains("which is pending"));
        browser.click_to_load("Confirm").await;
        browser.find("//*[@data-job-status='canceled']").await;
        assert_eq!(app.status_of(&owner, &windows_job).await, "canceled");
        assert_eq!(browser.count("//button[normalize-space()='Cancel job']").await, 0);

        browser.goto("/daemons").await;
        let row = browser.find("//tr[td[1][normalize-space()='mac-1']]").await.text().await.unwrap();
        assert!(row.contains("busy") && row.contains("os=mac"), "{row}");
        browser.screenshot("daemons").await;

        // Pause and resume prebuilds from the overview.
        browser.goto("/").await;
        browser.click("Pause prebuilds").await;
        assert!(browser.dialog_text().await.contains("New prebuild jobs will be refused"));
        browser.click_to_load("Confirm").await;
        browser.find("//*[@data-banner='prebuilds-paused']").await;
        assert!(prebuilds_paused(&app, &owner).await);
        browser.screenshot("overview-paused").await;
        browser.click("Resume prebuilds").await;
        browser.click_to_load("Confirm").await;
        browser.find("//button[normalize-space()='Pause prebuilds']").await;
        assert_eq!(browser.count("//*[@data-banner]").await, 0);
        assert!(!prebuilds_paused(&app, &owner).await);

        browser.goto("/licenses").await;
        browser.find("//textarea[@id=//label[normalize-space()='License']/@for]").await;
        browser.screenshot("licenses").await;

        // Sign out ends the session.
        browser.click_to_load("Sign out").await;
        browser.find("//button[normalize-space()='Sign in']").await;
        browser.goto("/jobs").await;
        assert!(browser.location().await.starts_with("/signin?next="));
        browser.close().await;
    }

    async fn console_follows_a_running_jobs_logs_as_the_daemon_writes_them(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        let (id, lease) = app.acquire("builder", json!({}), 0).await.expect("a job");
        let log = |output: &str| json!({"lease_token": lease, "logs": [{"level": "info", "stage": "plan", "output": output}]});
        app.worker(&format!("/jobs/{id}/update"), log("before the page")).await;

        let browser = Browser::start(&app).await;
        browser.sign_in(OWNER_EMAIL, OWNER_PASSWORD).await;
        browser.goto(&format!("/jobs/{id}")).await;
        let has = |text: &str| format!("return document.querySelector('[role=log]').textContent.includes('{text}');");
        browser.until("the earlier line", &has("before the page")).await;
        browser.until("the follow", "return document.querySelector('[role=log]').dataset.following === 'true';").await;
        for line in ["terraform plan: 3 to add", "terraform apply: 1 of 3"] {
            let (status, _) = app.worker(&format!("/jobs/{id}/update"), log(line)).await;
            assert_eq!(status, StatusCode::OK);
            browser.until(line, &has(line)).await;
        }
        browser.screenshot("job-logs").await;
        app.worker(&format!("/jobs/{id}/complete"), json!({"lease_token": lease})).await;
        // The page shows the end: status, timeline, every line, no cancel button.
        browser.find("//*[@data-job-status='succeeded']").await;
        browser.until("the replayed lines", &has("terraform apply: 1 of 3")).await;
        assert_eq!(browser.count("//button[normalize-space()='Cancel job']").await, 0);
        assert_eq!(browser.count("//ol[contains(@class,'timeline')]/li[contains(@class,'todo')]").await, 0);
        browser.close().await;
    }

    async fn console_shows_a_member_no_owner_controls(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        app.member(&owner, "mia").await;
        app.enqueue(&owner, json!({"type": "workspace_build", "initiator": "prebuilds"})).await;
        let browser = Browser::start(&app).await;
        browser.sign_in("mia@example.com", "member-pass-1").await;
        // The member's organization numbers, as the API shows them to members.
        assert_eq!(browser.find("//*[@data-count='pending']").await.text().await.unwrap(), "1");
        let controls = "//button[normalize-space()='Pause prebuilds' or normalize-space()='Resume prebuilds' \
            or normalize-space()='Cancel matching jobs' or normalize-space()='Cancel job' \
            or normalize-space()='Add license'] | //textarea";
        assert_eq!(browser.count(controls).await, 0);
        for page in ["/jobs?initiator=prebuilds", "/daemons"] {
            browser.goto(page).await;
            browser.find("//*[@role='alert' and contains(., 'visible to owners only')]").await;
            assert_eq!(browser.count(controls).await, 0, "{page}");
            assert_eq!(browser.count("//tr[@data-job-id]").await, 0, "{page}");
        }
        browser.goto("/licenses").await;
        browser.find("//h2[normalize-space()='Entitlements']").await;
        assert_eq!(browser.count(controls).await, 0);
        browser.close().await;
    }
}

/// Signs in over plain HTTP and returns the session cookie's `Set-Cookie` header.
async fn sign_in_http(app: &TestApp, origin: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client
        .post(format!("{}/signin", app.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("email", OWNER_EMAIL),
            ("password", OWNER_PASSWORD),
            ("next", "/jobs"),
        ]));
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    req.send().await.unwrap()
}

fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

backend_tests! {
    async fn console_sign_in_sets_a_strict_cookie_and_pages_never_show_it(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let job = app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        let http = no_redirects();

        // Not signed in: every page sends the browser to sign in, remembering where it was.
        let resp = http.get(format!("{}/jobs?status=pending", app.base)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()["location"], "/signin?next=%2Fjobs%3Fstatus%3Dpending");

        // A wrong password is a 401 page and no cookie.
        let resp = http
            .post(format!("{}/signin", app.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form(&[("email", OWNER_EMAIL), ("password", "wrong-password")]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().get("set-cookie").is_none());
        assert!(resp.text().await.unwrap().contains("Incorrect email or password."));

        let resp = sign_in_http(&app, Some(&app.base)).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()["location"], "/jobs");
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.starts_with("coder_session_token="), "{cookie}");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"), "{cookie}");
        let token = cookie["coder_session_token=".len()..].split(';').next().unwrap().to_string();
        let secret = token.split('-').nth(1).unwrap().to_string();

        // The same session works for the API, and no page shows it.
        let (status, _) = app.get("/users/me", Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
        let id = job["id"].as_str().unwrap();
        for path in ["/", "/jobs", "/jobs?status=pending", &format!("/jobs/{id}"), "/daemons", "/licenses", "/nope"] {
            let resp = http
                .get(format!("{}{path}", app.base))
                .header("Cookie", format!("coder_session_token={token}"))
                .send()
                .await
                .unwrap();
            let expected = if path == "/nope" { StatusCode::NOT_FOUND } else { StatusCode::OK };
            assert_eq!(resp.status(), expected, "{path}");
            assert_eq!(resp.headers()["content-security-policy"], CSP, "{path}");
            assert_eq!(resp.headers()["x-frame-options"], "DENY", "{path}");
            assert_eq!(resp.headers()["cache-control"], "no-store", "{path}");
            assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
            let body = resp.text().await.unwrap();
            assert!(!body.contains(&secret), "{path} shows the session secret");
            assert!(!body.contains("<script>"), "{path} has an inline script");
        }
        // The assets come from the binary.
        for (asset, kind) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
            let resp = http.get(format!("{}/static/{asset}", app.base)).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{asset}");
            assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(kind));
        }

        // Sign out ends the session for the API too, and clears the cookie.
        let resp = http
            .post(format!("{}/signout", app.base))
            .header("Cookie", format!("coder_session_token={token}"))
            .header("Origin", &app.base)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert!(resp.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
        let (status, _) = app.get("/users/me", Some(&token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    async fn console_refuses_sign_in_and_sign_out_from_another_site(backend: Backend) {
        let (app, owner) = spawn_queue_with(backend, |s| s.rate_limit.login_per_minute = 3).await;
        let resp = sign_in_http(&app, Some("https://evil.example")).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers().get("set-cookie").is_none());

        let http = no_redirects();
        for (header, value) in [("Origin", "https://evil.example"), ("Sec-Fetch-Site", "cross-site")] {
            let resp = http
                .post(format!("{}/signout", app.base))
                .header("Cookie", format!("coder_session_token={owner}"))
                .header(header, value)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{header}");
            let (status, _) = app.get("/users/me", Some(&owner)).await;
            assert_eq!(status, StatusCode::OK, "the session survives a cross-site sign-out");
        }

        // Sign-in attempts share the API login's budget per client address (3 here; the
        // owner's login and the refused cross-site attempt used two).
        let resp = sign_in_http(&app, None).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let resp = sign_in_http(&app, None).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    async fn console_jobs_page_reports_bad_filters_and_stays_small_at_its_largest(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let org = app.state.store.default_organization_id().await.unwrap();
        let owner_id = app.state.store.resolve_user("owner").await.unwrap().id;
        for i in 0..provq::console::MAX_ROWS + 5 {
            let tags = provq::domain::tags::Tags::normalize(
                [("os".to_string(), "linux".to_string()), ("pool".to_string(), format!("p{}", i % 7))].into(),
                None,
            ).unwrap();
            app.state.store.enqueue_job(provq::store::jobs::NewJob {
                organization_id: org,
                initiator_id: if i % 2 == 0 { owner_id } else { provq::domain::PREBUILDS_USER_ID },
                job_type: provq::domain::job::JobType::WorkspaceBuild,
                provisioner: provq::domain::job::Provisioner::Terraform,
                tags,
                input: json!({}),
                file_id: uuid::Uuid::nil(),
                metadata: json!({"template_name": "a-template-with-a-long-name", "workspace_name": "ws"}),
            }).await.unwrap();
        }
        let http = no_redirects();
        let get = |path: String| {
            http.get(format!("{}{path}", app.base))
                .header("Cookie", format!("coder_session_token={owner}"))
                .send()
        };
        // The largest page the console serves: MAX_ROWS rows, whatever `limit` asks.
        let resp = get("/jobs?limit=10000".into()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.text().await.unwrap();
        assert_eq!(body.matches("data-job-id=").count() as u64, provq::console::MAX_ROWS);
        assert!(body.len() < 200 * 1024, "the jobs page is {} bytes", body.len());
        assert!(body.contains("rel=\"next\""), "the rest is a page away");

        // Bad filters: one 400 page naming each, nothing listed.
        let resp = get("/jobs?status=done&initiator=nobody&limit=0".into()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = resp.text().await.unwrap();
        for field in ["status", "initiator", "limit"] {
            assert!(body.contains(&format!("<code>{field}</code>")), "{field}: {body}");
        }
        assert!(!body.contains("data-job-id="));
        let resp = get("/jobs?search=color%3Ared".into()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(resp.text().await.unwrap().contains("unknown search key"));

        // The count a bulk-cancel confirmation states, fresh from the store.
        let resp = get("/jobs/count?initiator=prebuilds".into()).await.unwrap();
        let counts: Value = resp.json().await.unwrap();
        let half = (provq::console::MAX_ROWS + 5) / 2;
        assert_eq!(counts, json!({"matching": half, "cancelable": half}));
    }
}
