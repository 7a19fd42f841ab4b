//! A small W3C WebDriver client driving a real headless Chromium through chromedriver
//! (Debian packages `chromium` and `chromium-driver`): enough to load a page, type, click,
//! read the DOM with a script and take a screenshot.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

async fn call(method: &str, url: &str, body: Option<serde_json::Value>) -> serde_json::Value {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let data = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(data)))
        .expect("request");
    let resp = client
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    assert!(
        status < 300,
        "{method} {url}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    v["value"].clone()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    pub async fn start() -> Browser {
        use std::os::unix::process::CommandExt;
        let port = super::free_port();
        // A process group of its own: the browsers it starts end with it, even when a
        // failing test never closes the session.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("chromedriver is needed (apt-get install chromium chromium-driver): {e}")
            });
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while super::try_http_get(&format!("{base}/status"))
            .await
            .is_none()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("tmp");
        // The flags keep Chromium from reaching for the network, which is closed here.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let v = call("POST", &format!("{base}/session"), Some(caps)).await;
        let session = v["sessionId"].as_str().expect("session id").to_string();
        Browser {
            driver,
            base,
            session,
            _profile: profile,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    pub async fn goto(&self, url: &str) {
        call(
            "POST",
            &self.url("/url"),
            Some(serde_json::json!({"url": url})),
        )
        .await;
    }

    async fn element(&self, css: &str) -> String {
        let v = call(
            "POST",
            &self.url("/element"),
            Some(serde_json::json!({"using": "css selector", "value": css})),
        )
        .await;
        v[ELEMENT].as_str().expect("element").to_string()
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        call(
            "POST",
            &self.url(&format!("/element/{id}/value")),
            Some(serde_json::json!({"text": text})),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        call(
            "POST",
            &self.url(&format!("/element/{id}/click")),
            Some(serde_json::json!({})),
        )
        .await;
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        call(
            "POST",
            &self.url("/execute/sync"),
            Some(serde_json::json!({"script": script, "args": []})),
        )
        .await
    }

    /// Waits until `script` returns true.
    pub async fn wait_for(&self, what: &str, script: &str) {
        let started = Instant::now();
        loop {
            if self.eval(script).await == serde_json::Value::Bool(true) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = call("GET", &self.url("/screenshot"), None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("PNG")
    }

    pub async fn close(self) {
        call("DELETE", &self.url(""), None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and every browser process it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}
