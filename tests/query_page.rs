//! The query page in a real headless Chromium: load it, complete a metric and a label name,
//! run a range query, wait for the chart, and check the drawn series and legend against the
//! API's own answer; a screenshot is kept as `target/query-page.png`. Also: the page asks for
//! the API's credentials.

mod common;

use common::webdriver::Browser;
use common::*;
use std::time::Duration;

fn agent_yaml(target: &str, facade: u16, auth: &str) -> String {
    format!(
        "receivers:\n  prometheus:\n    config:\n      scrape_configs:\n        - job_name: mesh\n          scrape_interval: 1s\n          static_configs: [{{targets: ['{target}']}}]\nexporters:\n  promql:\n    endpoint: 127.0.0.1:{facade}\n{auth}service:\n  pipelines:\n    metrics: {{receivers: [prometheus], exporters: [promql]}}\n  telemetry: {{metrics: {{address: ''}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_page_charts_a_range_query_in_chromium() {
    let t = Target::start().await;
    t.set("/metrics", Page::text(istio_like_body(0, 1, None)));
    let facade = free_port();
    let agent = start_agent(&agent_yaml(&t.addr.to_string(), facade, "")).await;
    for step in 2..=5 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        t.set("/metrics", Page::text(istio_like_body(0, step, None)));
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let base = format!("http://127.0.0.1:{facade}");

    let browser = Browser::start().await;
    browser.goto(&format!("{base}/graph")).await;
    browser
        .wait_for(
            "names for completion",
            "return document.body.dataset.names === 'loaded';",
        )
        .await;

    // A metric name, then a label name inside braces, completed with Tab.
    browser.type_into("#expr", "istio_req").await;
    browser
        .wait_for(
            "the metric name offered",
            "return [...document.querySelectorAll('#completions li')].some(li => li.textContent === 'istio_requests_total');",
        )
        .await;
    // Picked with the mouse among the offered names.
    let nth = browser
        .eval("return 1 + [...document.querySelectorAll('#completions li')].findIndex(li => li.textContent === 'istio_requests_total');")
        .await;
    browser
        .click(&format!("#completions li:nth-child({nth})"))
        .await;
    browser.type_into("#expr", "{respo").await;
    browser
        .wait_for(
            "the label name offered",
            "return [...document.querySelectorAll('#completions li')].some(li => li.textContent === 'response_code');",
        )
        .await;
    browser.type_into("#expr", "\u{E004}").await;
    let typed = browser
        .eval("return document.getElementById('expr').value;")
        .await;
    assert_eq!(typed, "istio_requests_total{response_code");

    // A range query, charted.
    let query = "sum by (response_code) (istio_requests_total)";
    browser
        .eval(&format!(
            "document.getElementById('expr').value = {}; return true;",
            serde_json::to_string(query).expect("json")
        ))
        .await;
    browser
        .eval("document.getElementById('range').value = '300'; return true;")
        .await;
    browser.click("#tab-graph").await;
    browser
        .wait_for(
            "the chart",
            "return document.body.dataset.state === 'done' && document.querySelectorAll('#legend li').length > 0;",
        )
        .await;
    let legend = browser
        .eval("return [...document.querySelectorAll('#legend li')].map(li => li.dataset.series);")
        .await;
    let paths = browser
        .eval("return [...document.querySelectorAll('#chart path')].map(p => [p.dataset.series, p.getAttribute('d')]);")
        .await;
    let status = browser
        .eval("return document.getElementById('status').textContent;")
        .await;
    let png = browser.screenshot().await;
    // The table of the instant answer: a row per series.
    browser
        .eval("document.body.dataset.state = ''; return true;")
        .await;
    browser.click("#tab-table").await;
    browser
        .wait_for(
            "the table",
            "return document.body.dataset.state === 'done';",
        )
        .await;
    let rows = browser
        .eval("return [...document.querySelectorAll('#result-table tbody tr')].map(tr => tr.firstChild.textContent);")
        .await;
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/query-page.png");
    std::fs::write(&shot, &png).expect("write screenshot");
    browser.close().await;

    // The series the API gives for the same range, named as the page names them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let (_, body) = http_get(
        &format!(
            "{base}/api/v1/query_range?query={}&start={}&end={now}&step=2",
            go_query_escape(query),
            now - 300.0
        ),
        &[],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut expected: Vec<String> = v["data"]["result"]
        .as_array()
        .expect("matrix")
        .iter()
        .map(|s| {
            format!(
                "{{response_code=\"{}\"}}",
                s["metric"]["response_code"].as_str().unwrap_or("")
            )
        })
        .collect();
    expected.sort();
    let mut shown: Vec<String> = legend
        .as_array()
        .expect("legend")
        .iter()
        .map(|s| s.as_str().unwrap_or("").to_string())
        .collect();
    shown.sort();
    assert!(
        expected.len() >= 2,
        "the data has several response codes: {body}"
    );
    assert_eq!(shown, expected, "legend against the API's series");
    let mut rows: Vec<String> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|s| s.as_str().unwrap_or("").to_string())
        .collect();
    rows.sort();
    assert_eq!(rows, expected, "table rows against the API's series");
    let paths = paths.as_array().expect("paths");
    assert_eq!(paths.len(), expected.len(), "one line per series");
    for p in paths {
        let d = p[1].as_str().unwrap_or("");
        assert!(
            d.starts_with('M') && d.contains('L'),
            "each line joins several points: {p}"
        );
    }
    assert!(
        status
            .as_str()
            .unwrap_or("")
            .contains(&format!("{} series", expected.len())),
        "{status}"
    );
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_page_asks_for_the_apis_credentials() {
    let t = Target::start().await;
    t.set("/metrics", Page::text(istio_like_body(0, 1, None)));
    let facade = free_port();
    let auth = "    auth:\n      basic: [{username: grafana, password: s3cret}]\n    path_prefix: /prometheus\n";
    let agent = start_agent(&agent_yaml(&t.addr.to_string(), facade, auth)).await;
    let base = format!("http://127.0.0.1:{facade}/prometheus");
    // grafana:s3cret
    let creds = [("authorization", "Basic Z3JhZmFuYTpzM2NyZXQ=")];
    for path in ["", "/", "/graph", "/ui/app.js", "/ui/app.css"] {
        let (s, b) = http_get(&format!("{base}{path}"), &[]).await;
        assert_eq!(s, 401, "{path} without credentials: {b}");
        let (s, b) = http_get(&format!("{base}{path}"), &creds).await;
        assert_eq!(s, 200, "{path} with credentials: {b}");
    }
    let (_, page) = http_get(&format!("{base}/graph"), &creds).await;
    assert!(
        page.contains("src=\"/prometheus/ui/app.js\"") && page.contains("id=\"expr\""),
        "{page}"
    );
    // No asset comes from elsewhere.
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    agent.shutdown(Duration::from_secs(5)).await;

    // A façade with a bearer token only (as the deploy overlays run it): a browser's prompt
    // opens the page with the token as the password, under any user name.
    let auth = "    auth:\n      bearer_token: t0ken\n";
    let facade = free_port();
    let agent = start_agent(&agent_yaml(&t.addr.to_string(), facade, auth)).await;
    let base = format!("http://127.0.0.1:{facade}");
    let (s, _) = http_get(&format!("{base}/graph"), &[]).await;
    assert_eq!(s, 401);
    // me:t0ken, then me:wrong
    let token = [("authorization", "Basic bWU6dDBrZW4=")];
    assert_eq!(http_get(&format!("{base}/graph"), &token).await.0, 200);
    let wrong = [("authorization", "Basic bWU6d3Jvbmc=")];
    assert_eq!(
        http_get(&format!("{base}/api/v1/labels"), &wrong).await.0,
        401
    );
    agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_page_charts_recent_checks_in_chromium() {
    let t = Target::start().await;
    t.set("/metrics", Page::text(istio_like_body(1, 1, None)));
    let facade = free_port();
    let agent = start_agent(&agent_yaml(&t.addr.to_string(), facade, "")).await;
    let rate = |window: &str| {
        format!(
            "sum(rate(istio_requests_total{{destination_workload=~\"podinfo-canary\"}}[{window}]))"
        )
    };
    // Five rounds of two checks, the way Flagger repeats them: one answered, one whose window
    // is too short for the 1 s scrapes.
    for step in 2..=6 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        t.set("/metrics", Page::text(istio_like_body(1, step, None)));
        instant_query(facade, &rate("10s")).await;
        instant_query(facade, &rate("500ms")).await;
    }
    let base = format!("http://127.0.0.1:{facade}");

    let browser = Browser::start().await;
    browser.goto(&format!("{base}/debug/canaryz")).await;
    browser
        .wait_for(
            "two checks",
            "return document.querySelectorAll('section.check').length === 2;",
        )
        .await;
    let drawn = browser
        .eval(
            "return [...document.querySelectorAll('section.check')].map(s => ({
                query: s.querySelector('pre').textContent,
                points: s.querySelector('svg polyline').getAttribute('points').trim().split(' ').filter(p => p).length,
                misses: s.querySelectorAll('svg line').length,
                warnings: [...s.querySelectorAll('.warnings li')].map(li => li.textContent),
                about: s.querySelector('p').textContent,
            }));",
        )
        .await;
    let png = browser.screenshot().await;
    std::fs::write(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/canary-page.png"),
        png,
    )
    .expect("screenshot");
    browser.close().await;
    eprintln!("canary page: {drawn:#}");
    let checks = drawn.as_array().expect("sections");
    let find = |window: &str| {
        checks
            .iter()
            .find(|c| {
                c["query"]
                    .as_str()
                    .is_some_and(|q| q.contains(&format!("[{window}]")))
            })
            .unwrap_or_else(|| panic!("{window} check on the page: {drawn}"))
    };
    // The answered check: a value per answer (the first may have had one sample too few).
    let ok = find("10s");
    assert!(ok["points"].as_u64().unwrap_or(0) >= 4, "{ok}");
    assert!(
        ok["about"]
            .as_str()
            .is_some_and(|a| a.contains("5 answers") && a.contains("asked by 127.0.0.1 (")),
        "{ok}"
    );
    // The thin one: no value in any answer, each drawn as a miss, and the reason shown.
    let thin = find("500ms");
    assert_eq!(thin["points"], 0, "{thin}");
    assert_eq!(thin["misses"], 5, "{thin}");
    assert!(
        thin["warnings"]
            .to_string()
            .contains("fewer than two samples"),
        "{thin}"
    );
    drop(agent);
}
