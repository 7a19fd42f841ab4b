//! Differential test against the real Prometheus server (Debian package `prometheus`):
//! both scrape the same live sidecar-like targets whose samples carry explicit timestamps,
//! then the same queries, evaluated at the same instants, must give identical answers — from
//! one agent, and from eight agents that each scrape a shard and fan queries out to the others.

mod common;

use common::prometheus::{prometheus_version, start_prometheus};
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const PODS: usize = 4;
const UPDATES: u64 = 10;
// Well above the 1 s scrape interval, so neither scraper can miss a version of a body.
const UPDATE_EVERY: Duration = Duration::from_millis(2500);

/// A query result normalised for comparison: label set → value.
#[derive(Debug)]
enum Answer {
    Error(String),
    Scalar(f64),
    Vector(BTreeMap<String, f64>),
    Matrix(BTreeMap<String, Vec<(String, f64)>>),
}

fn parse_answer(body: &str) -> Answer {
    let v: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Answer::Error(format!("bad JSON: {e}: {body}")),
    };
    if v["status"] != "success" {
        return Answer::Error(v["errorType"].as_str().unwrap_or("?").to_string());
    }
    let num = |x: &serde_json::Value| {
        x.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    match v["data"]["resultType"].as_str() {
        Some("scalar") => Answer::Scalar(num(&v["data"]["result"][1])),
        Some("vector") => {
            let mut m = BTreeMap::new();
            for r in v["data"]["result"].as_array().into_iter().flatten() {
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(r["metric"].clone()).unwrap_or_default();
                m.insert(format!("{labels:?}"), num(&r["value"][1]));
            }
            Answer::Vector(m)
        }
        Some("matrix") => {
            let mut m = BTreeMap::new();
            for r in v["data"]["result"].as_array().into_iter().flatten() {
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(r["metric"].clone()).unwrap_or_default();
                let points = r["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| (p[0].to_string(), num(&p[1])))
                    .collect();
                m.insert(format!("{labels:?}"), points);
            }
            Answer::Matrix(m)
        }
        other => Answer::Error(format!("unexpected result type {other:?}")),
    }
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn compare(query: &str, ours: &Answer, theirs: &Answer) -> Result<(), String> {
    match (ours, theirs) {
        (Answer::Error(a), Answer::Error(b)) if a == b => Ok(()),
        (Answer::Scalar(a), Answer::Scalar(b)) if same(*a, *b) => Ok(()),
        (Answer::Vector(a), Answer::Vector(b)) => {
            if a.keys().ne(b.keys()) {
                return Err(format!(
                    "{query}: series differ\n  ours:   {:?}\n  theirs: {:?}",
                    a.keys().collect::<Vec<_>>(),
                    b.keys().collect::<Vec<_>>()
                ));
            }
            for (k, va) in a {
                let vb = b[k];
                if !same(*va, vb) {
                    return Err(format!("{query}: {k}: ours {va} theirs {vb}"));
                }
            }
            Ok(())
        }
        (Answer::Matrix(a), Answer::Matrix(b)) => {
            if a.keys().ne(b.keys()) {
                return Err(format!(
                    "{query}: series differ\n  ours:   {:?}\n  theirs: {:?}",
                    a.keys().collect::<Vec<_>>(),
                    b.keys().collect::<Vec<_>>()
                ));
            }
            for (k, pa) in a {
                let pb = &b[k];
                let equal = pa.len() == pb.len()
                    && pa
                        .iter()
                        .zip(pb)
                        .all(|((ta, va), (tb, vb))| ta == tb && same(*va, *vb));
                if !equal {
                    return Err(format!("{query}: {k}: ours {pa:?} theirs {pb:?}"));
                }
            }
            Ok(())
        }
        _ => Err(format!("{query}: ours {ours:?} theirs {theirs:?}")),
    }
}

/// The `data` of a catalog answer (`series`, `labels`, `label values`, `metadata`), with
/// lists sorted: Prometheus sorts names and values, and lists series in no set order.
fn catalog_data(body: &str) -> Result<serde_json::Value, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("bad JSON: {e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("error: {body}"));
    }
    let mut data = v["data"].clone();
    if let Some(list) = data.as_array_mut() {
        list.sort_by_key(|x| x.to_string());
    }
    Ok(data)
}

/// The catalog questions Grafana asks, over the test's history.
fn catalog_paths(start: &str, end: &str) -> Vec<String> {
    let e = go_query_escape;
    vec![
        "/api/v1/labels".into(),
        format!(
            "/api/v1/labels?match[]={}&start={start}&end={end}",
            e("istio_requests_total")
        ),
        "/api/v1/label/__name__/values".into(),
        "/api/v1/label/destination_workload/values".into(),
        format!(
            "/api/v1/label/instance/values?match[]={}",
            e("envoy_server_live")
        ),
        format!(
            "/api/v1/series?match[]={}&start={start}&end={end}",
            e("istio_requests_total{response_code=\"200\"}")
        ),
        format!(
            "/api/v1/series?match[]={}&match[]={}",
            e("{__name__=~\"envoy_.*\"}"),
            e("up")
        ),
        "/api/v1/metadata?metric=istio_requests_total".into(),
        "/api/v1/metadata?metric=envoy_cluster_upstream_cx_active".into(),
    ]
}

/// The query set: Flagger's builtin Istio checks, Envoy queries, aggregations, joins,
/// subqueries, and the usual functions.
fn queries() -> Vec<String> {
    let ns = "test";
    let mut q: Vec<String> = vec![
        format!("sum(rate(istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"{ns}\",destination_workload=~\"podinfo-canary\",response_code!~\"5.*\"}}[1m])) / sum(rate(istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"{ns}\",destination_workload=~\"podinfo-canary\"}}[1m])) * 100"),
        format!("histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_workload_namespace=\"{ns}\",destination_workload=~\"podinfo-canary\"}}[1m])) by (le))"),
        format!("histogram_quantile(0.5, sum by (le, destination_workload) (rate(istio_request_duration_milliseconds_bucket[30s])))"),
        "sum(rate(envoy_cluster_upstream_rq{response_code!~\"5.*\"}[1m])) by (cluster_name) / sum(rate(envoy_cluster_upstream_rq[1m])) by (cluster_name)".into(),
        "sum by (instance) (increase(envoy_cluster_upstream_rq[30s]))".into(),
        "envoy_cluster_upstream_cx_active".into(),
        "istio_requests_total{response_code=\"503\"}".into(),
        "count by (destination_workload) (istio_requests_total)".into(),
        "avg by (response_code) (rate(istio_requests_total[20s]))".into(),
        "topk(2, rate(istio_requests_total[20s]))".into(),
        "bottomk(1, sum by (instance) (rate(istio_requests_total[20s])))".into(),
        "quantile(0.9, rate(istio_requests_total[20s]))".into(),
        "stddev by (destination_workload) (rate(istio_requests_total[20s]))".into(),
        "max(envoy_cluster_upstream_cx_active) - min(envoy_cluster_upstream_cx_active)".into(),
        "count_values(\"v\", envoy_server_live)".into(),
        "group by (destination_workload) (istio_requests_total)".into(),
        "rate(istio_requests_total{response_code=\"503\"}[20s]) / on(instance) group_left() sum by (instance) (rate(istio_requests_total[20s]))".into(),
        "istio_requests_total{response_code=\"200\"} and on(instance) envoy_cluster_upstream_cx_active > 2".into(),
        "envoy_cluster_upstream_cx_active or on(instance) istio_requests_total{response_code=\"404\"}".into(),
        "istio_requests_total unless on(destination_workload) istio_requests_total{destination_workload=\"podinfo-primary\"}".into(),
        "sum(istio_requests_total) > bool 100".into(),
        "istio_requests_total{response_code=\"404\"} % 3".into(),
        "max_over_time(rate(istio_requests_total{response_code=\"200\"}[10s])[20s:2s])".into(),
        "avg_over_time(sum(istio_requests_total)[30s:5s])".into(),
        "irate(istio_requests_total{response_code=\"200\"}[10s])".into(),
        "delta(envoy_cluster_upstream_cx_active[20s])".into(),
        "idelta(envoy_cluster_upstream_cx_active[20s])".into(),
        "deriv(istio_requests_total{response_code=\"200\"}[20s])".into(),
        "predict_linear(istio_requests_total{response_code=\"200\"}[20s], 60)".into(),
        "changes(envoy_cluster_upstream_cx_active[30s])".into(),
        "resets(envoy_cluster_upstream_cx_active[30s])".into(),
        "count_over_time(envoy_server_live[30s])".into(),
        "min_over_time(envoy_cluster_upstream_cx_active[30s])".into(),
        "stddev_over_time(envoy_cluster_upstream_cx_active[30s])".into(),
        "quantile_over_time(0.75, envoy_cluster_upstream_cx_active[30s])".into(),
        "last_over_time(envoy_cluster_upstream_cx_active[30s])".into(),
        "label_replace(envoy_server_live, \"pod\", \"$1\", \"instance\", \"127.0.0.1:(.*)\")".into(),
        "label_join(envoy_server_live, \"id\", \"-\", \"job\", \"instance\")".into(),
        "absent(nonexistent_metric{job=\"mesh\"})".into(),
        "absent(envoy_server_live)".into(),
        "clamp(envoy_cluster_upstream_cx_active, 2, 5)".into(),
        "timestamp(envoy_server_live)".into(),
        "sort_desc(sum by (instance) (istio_requests_total))".into(),
        "scalar(sum(envoy_server_live))".into(),
        "sum(istio_requests_total offset 5s)".into(),
        "vector(1)".into(),
        "time()".into(),
        "1 - sum(rate(istio_requests_total{response_code=~\"5..\"}[1m])) / sum(rate(istio_requests_total[1m]))".into(),
    ];
    q.push("istio_requests_total + on(instance) envoy_server_live".into());
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_prometheus() {
    differential(1, PODS).await;
}

/// Cluster shape: 8 agents on distinct loopback addresses, each scraping its own shard of
/// the sidecars and listing all 8 as peers (itself included); every query is asked through
/// a different agent and must match one Prometheus scraping every sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanned_out_answers_match_prometheus() {
    differential(8, 16).await;
}

async fn differential(agents: usize, pods: usize) {
    let (major, minor) = prometheus_version();
    let mut targets = Vec::new();
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    for p in 0..pods {
        let t = Target::start().await;
        t.set(
            "/metrics",
            Page::text(istio_like_body(p, 1, Some(start_ms))),
        );
        targets.push(t);
    }
    let scrape_yaml = |ts: &[&Target]| {
        let list = ts
            .iter()
            .map(|t| format!("\"{}\"", t.addr))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: mesh\n    static_configs:\n      - targets: [{list}]\n"
        )
    };
    let port = free_port();
    let _prom = start_prometheus(&scrape_yaml(&targets.iter().collect::<Vec<_>>()), port);
    // Agent i listens on 127.0.0.(10+i) and scrapes every agents-th sidecar from i.
    let facade_port = free_port();
    let address = |i: usize| format!("127.0.0.{}:{facade_port}", 10 + i);
    let peers = if agents > 1 {
        let all: Vec<String> = (0..agents).map(|i| format!("\"{}\"", address(i))).collect();
        format!("    peers: {{static: [{}]}}\n", all.join(", "))
    } else {
        String::new()
    };
    let mut running = Vec::new();
    for i in 0..agents {
        let shard: Vec<&Target> = targets.iter().skip(i).step_by(agents).collect();
        let indented: String = scrape_yaml(&shard)
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect();
        let yaml = format!(
            "receivers:\n  prometheus:\n    config:\n{indented}exporters:\n  promql:\n    endpoint: \"{}\"\n    prometheus_compat: \"{major}.{minor}\"\n{peers}service:\n  pipelines:\n    metrics: {{receivers: [prometheus], exporters: [promql]}}\n  telemetry: {{metrics: {{address: \"\"}}}}\n",
            address(i)
        );
        running.push(start_agent(&yaml).await);
    }
    let ours: Vec<String> = (0..agents).map(address).collect();
    let theirs = format!("127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..200 {
        if try_http_get(&format!("http://{theirs}/-/ready"))
            .await
            .is_some_and(|(s, _)| s == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "prometheus did not become ready on {theirs}");

    // Both must hold the first sample of every pod before the history starts moving.
    let count_q = format!(
        "/api/v1/query?query={}",
        go_query_escape("count(envoy_server_live)")
    );
    let mut both = false;
    for _ in 0..200 {
        let a = try_http_get(&format!("http://{}{count_q}", ours[0]))
            .await
            .map(|(_, b)| parse_answer(&b));
        let b = try_http_get(&format!("http://{theirs}{count_q}"))
            .await
            .map(|(_, b)| parse_answer(&b));
        let full = |x: &Option<Answer>| matches!(x, Some(Answer::Vector(m)) if m.values().next() == Some(&(pods as f64)));
        if full(&a) && full(&b) {
            both = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(both, "both scrapers hold the first samples");

    // Counters advance with explicit timestamps; each body stays up for more than one
    // scrape interval, so both scrapers store exactly the same samples.
    let mut last_ts = start_ms;
    for step in 2..=UPDATES {
        tokio::time::sleep(UPDATE_EVERY).await;
        last_ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        for (p, t) in targets.iter().enumerate() {
            t.set(
                "/metrics",
                Page::text(istio_like_body(p, step, Some(last_ts))),
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let mut failures = Vec::new();
    let mut compared = 0;
    // At the last sample, between samples, and at an earlier point of the history.
    for at_ms in [last_ts + 1000, last_ts - 700, last_ts - 4000] {
        let at = format!("{:.3}", at_ms as f64 / 1000.0);
        for q in queries() {
            let path = format!("/api/v1/query?query={}&time={at}", go_query_escape(&q));
            let via = &ours[compared % agents];
            let (_, a) = http_get(&format!("http://{via}{path}"), &[]).await;
            let (_, b) = http_get(&format!("http://{theirs}{path}"), &[]).await;
            let (ra, rb) = (parse_answer(&a), parse_answer(&b));
            if matches!(rb, Answer::Vector(ref m) if m.is_empty())
                && !q.contains("nonexistent")
                && !q.contains("absent")
            {
                failures.push(format!(
                    "{q}: Prometheus returned nothing; the test data did not arrive"
                ));
            }
            if let Err(e) = compare(&q, &ra, &rb) {
                failures.push(format!("(via {via}) {e}"));
            }
            compared += 1;
        }
    }
    // Range queries over the last 20 s at 2 s, as a dashboard asks them.
    let (start, end) = (
        format!("{:.3}", (last_ts - 20_000) as f64 / 1000.0),
        format!("{:.3}", last_ts as f64 / 1000.0),
    );
    for q in queries()
        .into_iter()
        .filter(|q| !q.contains("absent") && !q.contains("timestamp"))
    {
        let path = format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step=2",
            go_query_escape(&q)
        );
        let via = &ours[compared % agents];
        let (_, a) = http_get(&format!("http://{via}{path}"), &[]).await;
        let (_, b) = http_get(&format!("http://{theirs}{path}"), &[]).await;
        if let Err(e) = compare(&format!("range {q}"), &parse_answer(&a), &parse_answer(&b)) {
            failures.push(format!("(via {via}) {e}"));
        }
        compared += 1;
    }
    // What Grafana's label browser and metric picker ask.
    for path in catalog_paths(&start, &end) {
        let via = &ours[compared % agents];
        let (_, a) = http_get(&format!("http://{via}{path}"), &[]).await;
        let (_, b) = http_get(&format!("http://{theirs}{path}"), &[]).await;
        match (catalog_data(&a), catalog_data(&b)) {
            (Ok(x), Ok(y)) if x == y => {}
            (x, y) => failures.push(format!(
                "(via {via}) {path}:\n  ours:   {x:?}\n  theirs: {y:?}"
            )),
        }
        compared += 1;
    }
    if !failures.is_empty() {
        // Show the raw samples of one series from both sides to help find the cause.
        let raw = format!(
            "/api/v1/query?query={}&time={:.3}",
            go_query_escape(
                "envoy_cluster_upstream_rq{response_code=\"200\",cluster_name=\"xds-grpc\"}[1m]"
            ),
            (last_ts + 1000) as f64 / 1000.0
        );
        let (_, a) = http_get(&format!("http://{}{raw}", ours[0]), &[]).await;
        let (_, b) = http_get(&format!("http://{theirs}{raw}"), &[]).await;
        eprintln!("raw samples, ours:\n{a}\ntheirs:\n{b}");
    }
    // One agent stopped: queries and catalog questions through another fail naming it.
    if agents > 1 {
        let gone = running.remove(agents - 1);
        gone.shutdown(Duration::from_secs(5)).await;
        let stopped = address(agents - 1);
        for path in [
            format!(
                "/api/v1/query?query={}",
                go_query_escape("sum(envoy_server_live)")
            ),
            "/api/v1/label/__name__/values".to_string(),
        ] {
            let (status, body) = http_get(&format!("http://{}{path}", ours[0]), &[]).await;
            if status != 503 || !body.contains(&stopped) {
                failures.push(format!("{path} with {stopped} stopped: {status} {body}"));
            }
        }
    }
    for agent in running {
        agent.shutdown(Duration::from_secs(5)).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} answers ({agents} agents) differ from Prometheus {major}.{minor}:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{compared} answers through {agents} agent(s) match Prometheus {major}.{minor}");
}

/// Whether `ours` has `theirs`'s JSON shape: every key theirs has (with the same kind of
/// value, recursively; extra keys are allowed), lists of like elements. Under `free` keys
/// (label sets and other maps keyed by data), only the kind of the values is compared.
fn conforms(
    ours: &serde_json::Value,
    theirs: &serde_json::Value,
    path: &str,
) -> Result<(), String> {
    use serde_json::Value::{Array, Object};
    const FREE: &[&str] = &[
        "discoveredLabels",
        "labels",
        "metric",
        "droppedTargetCounts",
        "data(metadata)",
        "data(flags)",
    ];
    let free = FREE.iter().any(|f| path.ends_with(f));
    match (ours, theirs) {
        (Object(a), Object(b)) if free => {
            let kinds = |m: &serde_json::Map<std::string::String, serde_json::Value>| {
                m.values()
                    .map(std::mem::discriminant)
                    .collect::<std::collections::HashSet<_>>()
            };
            match (a.values().next(), b.values().next()) {
                (Some(_), Some(_)) if kinds(a) != kinds(b) => {
                    Err(format!("{path}: values of another kind"))
                }
                (Some(x), Some(y)) if x.is_array() => conforms(x, y, &format!("{path}.*")),
                _ => Ok(()),
            }
        }
        (Object(a), Object(b)) => {
            for (k, v) in b {
                let Some(mine) = a.get(k) else {
                    return Err(format!("{path}: no key {k:?}"));
                };
                conforms(mine, v, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Array(a), Array(b)) => match (a.first(), b.first()) {
            (Some(x), Some(y)) => conforms(x, y, &format!("{path}[]")),
            _ => Ok(()),
        },
        (a, b) if std::mem::discriminant(a) == std::mem::discriminant(b) => Ok(()),
        (a, b) => Err(format!("{path}: ours {a} theirs {b}")),
    }
}

/// Every endpoint Grafana's Prometheus data source and common tools call answers in
/// Prometheus's JSON shape, with its status code; `format_query` formats as it does; an
/// unknown API path is a JSON 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_in_prometheus_shape() {
    let (major, minor) = prometheus_version();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let t = Target::start().await;
    t.set("/metrics", Page::text(istio_like_body(0, 1, None)));
    // A second job whose only target relabeling drops: both list it as dropped.
    let scrape = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: mesh\n    static_configs:\n      - targets: [\"{a}\"]\n  - job_name: dropped\n    static_configs:\n      - targets: [\"{a}\"]\n    relabel_configs:\n      - {{action: drop, source_labels: [__address__], regex: '.*'}}\n",
        a = t.addr
    );
    let port = free_port();
    let _prom = start_prometheus(&scrape, port);
    let theirs = format!("127.0.0.1:{port}");
    let facade = free_port();
    let indented: String = scrape.lines().map(|l| format!("      {l}\n")).collect();
    let agent = start_agent(&format!(
        "receivers:\n  prometheus:\n    config:\n{indented}exporters:\n  promql:\n    endpoint: \"127.0.0.1:{facade}\"\n    prometheus_compat: \"{major}.{minor}\"\nservice:\n  pipelines:\n    metrics: {{receivers: [prometheus], exporters: [promql]}}\n  telemetry: {{metrics: {{address: \"\"}}}}\n"
    ))
    .await;
    let ours = format!("127.0.0.1:{facade}");
    // Both have scraped the target (and Prometheus keeps metadata from its scrapes).
    let mut ready = false;
    for _ in 0..200 {
        let probe = "/api/v1/metadata?metric=istio_requests_total";
        let a = try_http_get(&format!("http://{ours}{probe}")).await;
        let b = try_http_get(&format!("http://{theirs}{probe}")).await;
        let has =
            |x: &Option<(u16, String)>| x.as_ref().is_some_and(|(_, b)| b.contains("counter"));
        if has(&a) && has(&b) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "both scraped the target");
    let e = go_query_escape;
    let (start, end) = (
        format!("{:.3}", (now_ms - 60_000) as f64 / 1000.0),
        format!("{:.3}", (now_ms + 60_000) as f64 / 1000.0),
    );
    let paths = [
        "/api/v1/status/buildinfo".to_string(),
        "/api/v1/status/config".into(),
        "/api/v1/status/flags".into(),
        "/api/v1/status/runtimeinfo".into(),
        "/api/v1/targets".into(),
        "/api/v1/targets?state=dropped".into(),
        "/api/v1/targets?state=active&scrapePool=mesh".into(),
        "/api/v1/rules".into(),
        "/api/v1/alerts".into(),
        "/api/v1/metadata".into(),
        "/api/v1/metadata?metric=istio_requests_total&limit=1".into(),
        format!("/api/v1/query_exemplars?query={}&start={start}&end={end}", e("istio_requests_total")),
        format!("/api/v1/query_exemplars?query={}", e("sum(")),
        format!("/api/v1/format_query?query={}", e("sum(rate(istio_requests_total{reporter=\"destination\",response_code!~\"5.*\"}[1m]))by(destination_workload)/ignoring(x)sum(rate(istio_requests_total[1m]))")),
        format!("/api/v1/format_query?query={}", e("histogram_quantile(0.99,sum(rate(istio_request_duration_milliseconds_bucket[1m]))by(le))")),
        format!("/api/v1/format_query?query={}", e("sum(")),
        "/api/v1/labels?limit=2".into(),
        format!("/api/v1/series?match[]={}&start={start}&end={end}", e("up")),
        "/api/v1/series".into(),
        "/api/v1/label/job/values".into(),
        "/api/v1/label/__name__/values?limit=3".into(),
        format!("/api/v1/query?query={}", e("up")),
        format!("/api/v1/query_range?query={}&start={start}&end={end}&step=15", e("up")),
    ];
    let mut failures = Vec::new();
    for path in &paths {
        let (sa, a) = http_get(&format!("http://{ours}{path}"), &[]).await;
        let (sb, b) = http_get(&format!("http://{theirs}{path}"), &[]).await;
        if sa != sb {
            failures.push(format!(
                "{path}: status ours {sa} theirs {sb}\n  ours: {a}\n  theirs: {b}"
            ));
            continue;
        }
        let (Ok(va), Ok(vb)) = (
            serde_json::from_str::<serde_json::Value>(&a),
            serde_json::from_str::<serde_json::Value>(&b),
        ) else {
            failures.push(format!("{path}: not JSON\n  ours: {a}\n  theirs: {b}"));
            continue;
        };
        let endpoint = path
            .split('?')
            .next()
            .and_then(|p| p.rsplit('/').next())
            .unwrap_or("");
        let root = format!("({endpoint})");
        let shaped = |v: &serde_json::Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                if let Some(d) = o.remove("data") {
                    o.insert(format!("data{root}"), d);
                }
            }
            v
        };
        if let Err(why) = conforms(&shaped(&va), &shaped(&vb), "") {
            failures.push(format!("{path}: {why}\n  ours: {a}\n  theirs: {b}"));
        }
        if path.contains("format_query") && va["data"] != vb["data"] {
            failures.push(format!(
                "{path}: formatted differently\n  ours: {a}\n  theirs: {b}"
            ));
        }
        if path.contains("state=dropped") {
            let dropped = va["data"]["droppedTargets"].as_array().map_or(0, Vec::len);
            if dropped != 1 || va["data"]["activeTargets"] != serde_json::json!([]) {
                failures.push(format!("{path}: one dropped target expected: {a}"));
            }
        }
    }
    let version = http_get(&format!("http://{ours}/api/v1/status/buildinfo"), &[])
        .await
        .1;
    if !version.contains(&format!("\"version\":\"{major}.{minor}.0\"")) {
        failures.push(format!(
            "buildinfo gives another Prometheus version: {version}"
        ));
    }
    for path in [
        "/api/v1/nope",
        "/api/v1/status/tsdb_nonexistent",
        "/api/v1/",
    ] {
        let (s, b) = http_get(&format!("http://{ours}{path}"), &[]).await;
        let v: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
        if s != 404 || v["status"] != "error" || v["errorType"] != "not_found" {
            failures.push(format!("{path}: {s} {b}"));
        }
    }
    let (s, b) = http_get(&format!("http://{ours}/nowhere"), &[]).await;
    if s != 404 || b.contains("grpc") {
        failures.push(format!("/nowhere: {s} {b}"));
    }
    agent.shutdown(Duration::from_secs(5)).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
