//! A real Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`, started per
//! test) against the real server: the console as an operator uses it. Each chromedriver runs in
//! its own process group, killed as a whole when the test ends, even by a panic, so no Chromium
//! outlives its test.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};

/// How long any one condition may take to hold.
const WAIT: Duration = Duration::from_secs(20);

/// Kills chromedriver's whole process group (Chromium and its helpers) when dropped.
struct DriverGuard(Child);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

pub struct Browser {
    pub client: Client,
    pub base: String,
    backend: Backend,
    // Dropped after the client.
    _driver: DriverGuard,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session pointed at `app`.
    pub async fn start(app: &TestApp) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (apt-get install chromium chromium-driver)");
        let driver = DriverGuard(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not listen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let caps = json!({"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900"],
        }});
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.as_object().expect("an object").clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Self {
            client,
            base: app.base.clone(),
            backend: app.backend,
            _driver: driver,
        }
    }

    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigation");
        self.until(
            "the page's script to run",
            "return document.body && document.body.dataset.ready === 'true';",
        )
        .await;
    }

    /// The path and query the browser is at.
    pub async fn location(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Runs `script` (a function body that returns a value) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("script runs")
    }

    /// Waits until `script` returns `true`.
    pub async fn until(&self, what: &str, script: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Value::Bool(true)) = self.client.execute(script, vec![]).await {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let url = self.location().await;
                panic!("timed out waiting for {what} (at {url})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for an element matching the XPath and returns it.
    pub async fn find(&self, xpath: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(xpath))
            .await
            .unwrap_or_else(|e| panic!("no element {xpath}: {e}"))
    }

    /// How many elements match the XPath right now.
    pub async fn count(&self, xpath: &str) -> usize {
        self.client
            .find_all(Locator::XPath(xpath))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// Clicks the button (or link) with this visible name.
    pub async fn click(&self, name: &str) {
        self.find(&format!(
            "//*[(self::button or self::a) and normalize-space()='{name}']"
        ))
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {name}: {e}"));
    }

    /// Clicks a button or link that loads a new page (a link, a form, an action that reloads)
    /// and waits until the new page's script has run.
    pub async fn click_to_load(&self, name: &str) {
        self.js("document.body.dataset.stale = 'true'; return true;")
            .await;
        self.click(name).await;
        self.until(
            &format!("the page after {name}"),
            "return document.body && !document.body.dataset.stale && document.body.dataset.ready === 'true';",
        )
        .await;
    }

    /// Types into the form field labelled `label`.
    pub async fn fill(&self, label: &str, text: &str) {
        let field = self
            .find(&format!(
                "//*[@id=//label[normalize-space()='{label}']/@for]"
            ))
            .await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("typing");
    }

    /// The open confirmation dialog's text.
    pub async fn dialog_text(&self) -> String {
        self.find("//dialog[@role='dialog' and @open]")
            .await
            .text()
            .await
            .expect("dialog text")
    }

    /// Signs in through the form and waits for the overview.
    pub async fn sign_in(&self, email: &str, password: &str) {
        self.goto("/").await;
        assert!(
            self.location().await.starts_with("/signin"),
            "not sent to sign in"
        );
        self.fill("Email", email).await;
        self.fill("Password", password).await;
        self.click("Sign in").await;
        self.find("//nav[@aria-label='Main']//a[normalize-space()='Overview']")
            .await;
        self.until(
            "the overview",
            "return document.body.dataset.ready === 'true' && location.pathname === '/';",
        )
        .await;
    }

    /// Saves a screenshot of the page as `<name>.png`: into `PROVQ_SCREENSHOTS` when set
    /// (the README's images come from there), else into the test's scratch folder. Only the
    /// SQLite run writes, so both backends do not race for one file.
    pub async fn screenshot(&self, name: &str) {
        if self.backend != Backend::Sqlite {
            return;
        }
        let dir = std::env::var("PROVQ_SCREENSHOTS")
            .unwrap_or_else(|_| format!("{}/console-screenshots", env!("CARGO_TARGET_TMPDIR")));
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(format!("{dir}/{name}.png"), png).expect("screenshot written");
    }

    pub async fn close(self) {
        let Self {
            client, _driver, ..
        } = self;
        client.close().await.ok();
    }
}
