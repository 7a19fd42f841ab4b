//! The query façade end to end: live targets → scrape → `promql` exporter → HTTP API, asked
//! the way Flagger asks and parsed the way Flagger parses.

mod common;

use common::*;
use std::time::Duration;

/// What Flagger's Prometheus provider does with a response body (see its provider source).
fn flagger_parse(status: u16, body: &str) -> Result<f64, String> {
    if status >= 400 {
        return Err(format!("error response: {body}"));
    }
    if body.contains("values") {
        return Err("query returned multiple values".into());
    }
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let result = v["data"]["result"]
        .as_array()
        .ok_or("cannot decode result")?;
    let mut value = None;
    for r in result {
        // Each element must be an object with a `value` array; a scalar result fails here.
        let obj = r.as_object().ok_or("cannot decode result element")?;
        if let Some(serde_json::Value::String(s)) = obj.get("value").and_then(|x| x.get(1)) {
            value = Some(s.parse::<f64>().map_err(|e| e.to_string())?);
        }
    }
    match value {
        None => Err("no values found".into()),
        Some(f) if f.is_nan() => Err("no values found".into()),
        Some(f) => Ok(f),
    }
}

/// The builtin request-success-rate template as Flagger renders it: the template's newlines
/// and indentation collapsed to single spaces, leading space included.
fn success_rate_query(ns: &str, target: &str) -> String {
    let tmpl = format!(
        "\n    sum(\n      rate(\n        istio_requests_total{{\n          reporter=\"destination\",\n          destination_workload_namespace=\"{ns}\",\n          destination_workload=~\"{target}\",\n          response_code!~\"5.*\"\n        }}[1m]\n      )\n    )\n    /\n    sum(\n      rate(\n        istio_requests_total{{\n          reporter=\"destination\",\n          destination_workload_namespace=\"{ns}\",\n          destination_workload=~\"{target}\"\n        }}[1m]\n      )\n    )\n    * 100\n  "
    );
    tmpl.split_whitespace()
        .fold(String::from(" "), |mut acc, w| {
            if acc.len() > 1 {
                acc.push(' ');
            }
            acc.push_str(w);
            acc
        })
}

fn duration_query(ns: &str, target: &str) -> String {
    format!(
        " histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_workload_namespace=\"{ns}\",destination_workload=~\"{target}\"}}[1m])) by (le))"
    )
}

async fn agent_with_pods(
    pods: usize,
    extra_exporter: &str,
) -> (
    meshmetrics::service::Running,
    Vec<Target>,
    std::net::SocketAddr,
) {
    let mut targets = Vec::new();
    for p in 0..pods {
        let t = Target::start().await;
        t.set("/stats/prometheus", Page::text(istio_like_body(p, 1, None)));
        targets.push(t);
    }
    let list = targets
        .iter()
        .map(|t| format!("\"{}\"", t.addr))
        .collect::<Vec<_>>()
        .join(", ");
    let yaml = format!(
        r#"
receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: envoy-stats
          scrape_interval: 1s
          metrics_path: /stats/prometheus
          static_configs: [{{targets: [{list}]}}]
exporters:
  promql:
    endpoint: 127.0.0.1:0
{extra_exporter}
service:
  pipelines:
    metrics: {{receivers: [prometheus], exporters: [promql]}}
  telemetry: {{metrics: {{address: ""}}}}
"#
    );
    let agent = start_agent(&yaml).await;
    let addr = agent.server_address("promql").expect("façade listens");
    (agent, targets, addr)
}

/// Advances every pod's counters once a second for `secs` seconds.
async fn advance(targets: &[Target], from: u64, secs: u64) {
    for step in from..from + secs {
        for (p, t) in targets.iter().enumerate() {
            t.set(
                "/stats/prometheus",
                Page::text(istio_like_body(p, step, None)),
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagger_builtin_metrics_and_health_check() {
    let auth = "    auth:\n      bearer_token: flagger-token\n      basic: [{username: flagger, password: s3cret}]\n";
    let (agent, targets, addr) = agent_with_pods(4, auth).await;
    advance(&targets, 2, 6).await;
    let base = format!("http://{addr}");
    let get = |q: String, headers: Vec<(&'static str, &'static str)>| {
        let url = format!("{base}/api/v1/query?query={}", go_query_escape(&q));
        async move { http_get(&url, &headers).await }
    };
    let bearer = vec![("authorization", "Bearer flagger-token")];

    // Flagger's health check.
    let (s, b) = get("vector(1)".into(), bearer.clone()).await;
    assert_eq!(flagger_parse(s, &b), Ok(1.0), "{b}");

    // Success rate: a primary pod answers 503 once per 22 (pod 0) or 24 (pod 2) requests, a
    // canary pod 3 times per 26 or 28; the mix lies between the pods' own ratios.
    let (s, b) = get(
        success_rate_query("test", "podinfo-primary"),
        bearer.clone(),
    )
    .await;
    let primary = flagger_parse(s, &b).expect("primary success rate");
    assert!(
        (100.0 * 21.0 / 22.0 - 1e-9..=100.0 * 23.0 / 24.0 + 1e-9).contains(&primary),
        "primary {primary}"
    );
    let (s, b) = get(success_rate_query("test", "podinfo-canary"), bearer.clone()).await;
    let canary = flagger_parse(s, &b).expect("canary success rate");
    assert!(
        (100.0 * 23.0 / 26.0 - 1e-9..=100.0 * 25.0 / 28.0 + 1e-9).contains(&canary),
        "canary {canary}"
    );

    // p99 duration in milliseconds, finite.
    let (s, b) = get(duration_query("test", "podinfo-.*"), bearer.clone()).await;
    let p99 = flagger_parse(s, &b).expect("p99");
    assert!(p99.is_finite() && p99 > 0.0, "{p99}");

    // A bearer token sent twice, and Basic auth, are both accepted.
    let (s, b) = get(
        "vector(1)".into(),
        vec![
            ("authorization", "Bearer flagger-token"),
            ("authorization", "Bearer flagger-token"),
        ],
    )
    .await;
    assert_eq!(flagger_parse(s, &b), Ok(1.0));
    let (s, b) = get(
        "vector(1)".into(),
        vec![("authorization", "Basic ZmxhZ2dlcjpzM2NyZXQ=")],
    )
    .await;
    assert_eq!(flagger_parse(s, &b), Ok(1.0));
    // Wrong or missing credentials: 401, which Flagger reports as an error with the body.
    let (s, b) = get("vector(1)".into(), vec![("authorization", "Bearer nope")]).await;
    assert_eq!(s, 401);
    assert!(flagger_parse(s, &b).is_err());
    let (s, _) = get("vector(1)".into(), vec![]).await;
    assert_eq!(s, 401);

    // Empty and NaN answers are failures for Flagger ("no values found").
    let (s, b) = get(success_rate_query("test", "nonexistent"), bearer.clone()).await;
    assert_eq!(flagger_parse(s, &b), Err("no values found".into()), "{b}");
    let (s, b) = get("vector(0/0)".into(), bearer.clone()).await;
    assert!(b.contains("\"NaN\""), "{b}");
    assert_eq!(flagger_parse(s, &b), Err("no values found".into()));
    // A scalar result does not decode for Flagger.
    let (s, b) = get("1".into(), bearer.clone()).await;
    assert_eq!(s, 200);
    assert!(flagger_parse(s, &b).is_err(), "{b}");
    // A syntax error is HTTP 400 with Prometheus's error shape.
    let (s, b) = get("sum(rate(".into(), bearer.clone()).await;
    assert_eq!(s, 400);
    assert!(
        b.starts_with("{\"status\":\"error\",\"errorType\":\"bad_data\""),
        "{b}"
    );

    // queryz shows what was asked and answered, and never the token.
    let (s, z) = http_get(
        &format!("{base}/debug/queryz?format=json"),
        &[("authorization", "Bearer flagger-token")],
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        z.contains("istio_requests_total") && z.contains("vector, 1 series"),
        "{z}"
    );
    assert!(!z.contains("flagger-token") && !z.contains("s3cret"));
    agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_endpoints_shapes() {
    let (agent, targets, addr) = agent_with_pods(2, "").await;
    advance(&targets, 2, 3).await;
    let base = format!("http://{addr}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();

    // query_range: matrix with `values`.
    let url = format!(
        "{base}/api/v1/query_range?query={}&start={}&end={}&step=1",
        go_query_escape("sum by (destination_workload) (istio_requests_total)"),
        now - 2.0,
        now
    );
    let (s, b) = http_get(&url, &[]).await;
    assert_eq!(s, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["data"]["resultType"], "matrix");
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        v["data"]["result"][0]["values"].as_array().map(Vec::len),
        Some(3)
    );

    // POST form, explicit time, string and scalar results.
    let (s, b) = http_post_form(
        &format!("{base}/api/v1/query"),
        &format!("query=time()&time={now}"),
    )
    .await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["data"]["resultType"], "scalar");
    let (s, b) = http_get(&format!("{base}/api/v1/query?query=%22hello%22"), &[]).await;
    assert_eq!(s, 200);
    assert!(
        b.contains("\"resultType\":\"string\"") && b.contains("\"hello\""),
        "{b}"
    );

    // series, labels, label values, buildinfo.
    let (s, b) = http_get(
        &format!(
            "{base}/api/v1/series?match[]={}",
            go_query_escape("envoy_server_live")
        ),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["data"][0]["job"], "envoy-stats");
    let (_, b) = http_get(&format!("{base}/api/v1/labels"), &[]).await;
    assert!(
        b.contains("\"destination_workload\"") && b.contains("\"__name__\""),
        "{b}"
    );
    let (_, b) = http_get(
        &format!("{base}/api/v1/label/destination_workload/values"),
        &[],
    )
    .await;
    assert!(
        b.contains("[\"podinfo-canary\",\"podinfo-primary\"]"),
        "{b}"
    );
    let (s, b) = http_get(&format!("{base}/api/v1/status/buildinfo"), &[]).await;
    assert_eq!(s, 200);
    assert!(b.contains("\"version\""));
    assert_eq!(http_get(&format!("{base}/-/healthy"), &[]).await.0, 200);
    assert_eq!(http_get(&format!("{base}/-/ready"), &[]).await.0, 200);

    // Bad parameters are bad_data.
    let (s, b) = http_get(&format!("{base}/api/v1/query?query=up&time=yesterday"), &[]).await;
    assert_eq!(s, 400, "{b}");
    let (s, _) = http_get(
        &format!("{base}/api/v1/query_range?query=up&start=10&end=5&step=1"),
        &[],
    )
    .await;
    assert_eq!(s, 400);
    // Execution errors are 422.
    let (s, b) = http_get(
        &format!(
            "{base}/api/v1/query?query={}",
            go_query_escape("istio_requests_total + on() istio_requests_total")
        ),
        &[],
    )
    .await;
    assert_eq!(s, 422, "{b}");
    assert!(b.contains("\"errorType\":\"execution\""));
    agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_end_by_limit_or_timeout_and_the_agent_keeps_working() {
    let limits = "    query_timeout: 1s\n    max_samples_per_query: 500\n";
    let (agent, targets, addr) = agent_with_pods(4, limits).await;
    advance(&targets, 2, 3).await;
    let base = format!("http://{addr}");
    let q = |s: &str| format!("{base}/api/v1/query?query={}", go_query_escape(s));

    // Every histogram series over a ten-year range: stopped by the sample limit (4 pods ×
    // 60 bucket series × 5 samples is above the configured 500).
    let (s, b) = http_get(
        &q("count_over_time({__name__=~\"istio_.+_bucket\"}[10y])"),
        &[],
    )
    .await;
    assert_eq!(s, 422, "{}", &b[..b.len().min(300)]);
    assert!(b.contains("too many samples"), "{}", &b[..b.len().min(300)]);

    // A deep subquery: stopped by the query timeout, answered as Prometheus's timeout error.
    let started = std::time::Instant::now();
    let (s, b) = http_get(
        &q("sum_over_time(rate({__name__=~\".+\"}[1m:1ms])[5m:1ms])"),
        &[],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "ended by the 1 s timeout"
    );
    assert!(s == 503 || s == 422, "{s} {}", &b[..b.len().min(300)]);
    assert!(
        b.contains("timed out") || b.contains("too many samples"),
        "{}",
        &b[..b.len().min(300)]
    );

    // A subquery of more steps than the query may hold points is refused before its first
    // step, even when its steps would hold nothing.
    let started = std::time::Instant::now();
    let (s, b) = http_get(&q("absent_over_time(nonexistent_metric[1d:1ms])"), &[]).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once"
    );
    assert_eq!(s, 422, "{b}");
    assert!(b.contains("too many samples"), "{b}");

    // Millions of cheap steps, each subquery within the limits: only the timeout stops it.
    let started = std::time::Instant::now();
    let nested = "absent_over_time(absent_over_time(absent_over_time(nonexistent_metric[400ms:1ms])[400ms:1ms])[400ms:1ms])";
    let (s, b) = http_get(&q(nested), &[]).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "ended by the 1 s timeout"
    );
    assert_eq!(s, 503, "{b}");
    assert_eq!(b, "{\"status\":\"error\",\"errorType\":\"timeout\",\"error\":\"query timed out in expression evaluation\"}");

    // A duration too large for the parser (it panics on it; found by fuzzing): a clear
    // bad_data answer, not a dropped connection.
    let (s, b) = http_get(&q("up offset -50666666666666666666666666666666666"), &[]).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("\"errorType\":\"bad_data\""), "{b}");
    assert!(b.contains("unparseable query"), "{b}");

    // The agent kept scraping meanwhile.
    let before = agent.stores()[0]
        .1
        .stats
        .appended
        .load(std::sync::atomic::Ordering::Relaxed);
    advance(&targets, 5, 2).await;
    let after = agent.stores()[0]
        .1
        .stats
        .appended
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(after > before, "ingest continued: {before} → {after}");
    let (s, b) = http_get(&q("vector(1)"), &[]).await;
    assert_eq!(flagger_parse(s, &b), Ok(1.0));
    agent.shutdown(Duration::from_secs(5)).await;
}
