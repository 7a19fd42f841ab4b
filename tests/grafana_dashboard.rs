//! The Grafana wiring in deploy/grafana: the data source points at the query façade with its
//! token and the Prometheus version the façade reports, and every query of every dashboard
//! panel returns data from a running agent scraping itself, exporting over OTLP and answering
//! queries.

mod common;

use common::*;
use std::time::Duration;

fn deploy_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/grafana")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_returns_data_from_a_running_agent() {
    let target = Target::start().await;
    target.set("/metrics", Page::text(istio_like_body(0, 1, None)));
    let (sink_addr, _sink) = grpc_sink().await;
    let (facade, telemetry) = (free_port(), free_port());
    let yaml = format!(
        "receivers:\n  prometheus:\n    config:\n      global: {{scrape_interval: 1s}}\n      scrape_configs:\n        - job_name: mesh\n          static_configs: [{{targets: ['{target}']}}]\n        - job_name: meshmetrics\n          static_configs: [{{targets: ['127.0.0.1:{telemetry}'], labels: {{pod: meshmetrics-0}}}}]\nprocessors:\n  batch: {{timeout: 200ms}}\nexporters:\n  otlp:\n    endpoint: {sink_addr}\n    tls: {{insecure: true}}\n  promql:\n    endpoint: 127.0.0.1:{facade}\nservice:\n  pipelines:\n    metrics: {{receivers: [prometheus], processors: [batch], exporters: [otlp, promql]}}\n  telemetry: {{metrics: {{address: '127.0.0.1:{telemetry}'}}}}\n",
        target = target.addr
    );
    let agent = start_agent(&yaml).await;
    let base = format!("http://127.0.0.1:{facade}");
    // Queries to count (one refused), over a few scrapes so that rates have two samples.
    for step in 2..=6 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        target.set("/metrics", Page::text(istio_like_body(0, step, None)));
        instant_query(facade, "sum(up)").await;
        let (s, _) = http_get(&format!("{base}/api/v1/query?query=sum("), &[]).await;
        assert_eq!(s, 400);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy_file("dashboard.json")).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "a panel per concern");
    let mut empty = Vec::new();
    let mut asked = 0;
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            // Grafana's own variable: at least four scrape intervals.
            let q = expr.replace("$__rate_interval", "1m");
            assert!(
                !q.contains('$'),
                "{expr}: a variable the test does not know"
            );
            let v = instant_query(facade, &q).await;
            asked += 1;
            let n = v["data"]["result"].as_array().map_or(0, Vec::len);
            if n == 0 {
                empty.push(format!("{}: {q}", p["title"]));
            }
        }
    }
    agent.shutdown(Duration::from_secs(5)).await;
    assert!(
        empty.is_empty(),
        "{} of {asked} panel queries returned nothing:\n{}",
        empty.len(),
        empty.join("\n")
    );
}

#[test]
fn the_data_source_points_at_the_facade_with_its_token() {
    let cm: serde_json::Value =
        serde_saphyr::from_str(&deploy_file("datasource.yaml")).expect("ConfigMap");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_datasource"], "1");
    let text = cm["data"]["meshmetrics-datasource.yaml"]
        .as_str()
        .expect("provisioning file");
    let prov: serde_json::Value = serde_saphyr::from_str(text).expect("provisioning YAML");
    let ds = &prov["datasources"][0];
    assert_eq!(ds["type"], "prometheus");
    assert_eq!(ds["uid"], "meshmetrics");
    assert_eq!(ds["url"], "http://meshmetrics.flagger-system:9090");
    assert_eq!(ds["jsonData"]["httpHeaderName1"], "Authorization");
    assert_eq!(
        ds["secureJsonData"]["httpHeaderValue1"],
        "Bearer ${MESHMETRICS_QUERY_TOKEN}"
    );
    // What the façade's buildinfo says by default (prometheus_compat "3").
    assert_eq!(ds["jsonData"]["prometheusVersion"], "3.0.0");
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy_file("dashboard.json")).expect("dashboard JSON");
    assert_eq!(
        dashboard["templating"]["list"][0]["current"]["value"],
        ds["uid"]
    );
}
