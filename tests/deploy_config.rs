//! The agent run exactly as the `daemonset` overlay deploys it: the ConfigMap's config file,
//! in-cluster discovery (service-account token and CA, `KUBERNETES_SERVICE_HOST/PORT`) against a
//! test API server over TLS, `NODE_NAME` from the downward API. It must scrape only its node's
//! pods, export them with their `k8s.*` resource attributes, serve queries, and mark a deleted
//! pod's series stale.
//!
//! The config binds the deployment's fixed ports (9090, 13133, 55679, 8888), so this file
//! holds one test.

mod common;

use common::kube_api::KubeApi;
use common::*;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_meshmetrics");
/// The `token` of the meshmetrics-query-token Secret, as the pod's QUERY_TOKEN.
const QUERY_TOKEN: &str = "flagger-token";
const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/overlays/daemonset/meshmetrics.yaml"
);

fn sidecar_pod(name: &str, node: &str, port: u16, rs: &str, hash: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "test", "uid": format!("uid-{name}"),
            "labels": {"app": "podinfo", "pod-template-hash": hash},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": port.to_string(),
                            "prometheus.io/path": "/stats/prometheus"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                                  "uid": "rs-uid", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {"nodeName": node, "containers": [
            {"name": "podinfod", "image": "ghcr.io/stefanprodan/podinfo:6.7.1",
             "ports": [{"name": "http", "containerPort": 9898, "protocol": "TCP"}]},
            {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.27.1",
             "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}]}
        ]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "hostIP": "10.0.0.1",
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

async fn query(q: &str) -> serde_json::Value {
    let url = format!(
        "http://127.0.0.1:9090/api/v1/query?query={}",
        go_query_escape(q)
    );
    // As Flagger asks, with the token from the MetricTemplates' secretRef.
    let auth = format!("Bearer {QUERY_TOKEN}");
    match try_http_get_with(&url, &[("authorization", &auth)]).await {
        Some((200, body)) => serde_json::from_str(&body).expect("json"),
        _ => json!({}),
    }
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_config_scrapes_its_node_and_serves() {
    let pki = test_pki();
    let api = KubeApi::start_tls(&pki, "service-account-token").await;
    let sa = tempfile::tempdir().expect("tmp");
    std::fs::write(sa.path().join("token"), "service-account-token").expect("token");
    std::fs::write(sa.path().join("ca.crt"), &pki.ca_pem).expect("ca");
    std::fs::write(sa.path().join("namespace"), "flagger-system").expect("ns");

    let here = Target::start().await;
    here.set("/stats/prometheus", Page::text(istio_like_body(0, 1, None)));
    let elsewhere = Target::start().await;
    elsewhere.set("/stats/prometheus", Page::text(istio_like_body(1, 1, None)));
    api.create(sidecar_pod(
        "podinfo-7d9c8-abcde",
        "node-a",
        here.addr.port(),
        "podinfo-7d9c8",
        "7d9c8",
    ));
    api.create(sidecar_pod(
        "podinfo-7d9c8-fghij",
        "node-b",
        elsewhere.addr.port(),
        "podinfo-7d9c8",
        "7d9c8",
    ));
    let (sink_addr, sink) = grpc_sink().await;

    let _agent = ChildGuard(
        Command::new(BIN)
            .args(["--config", CONFIG])
            .env("NODE_NAME", "node-a")
            .env("HONEYCOMB_API_KEY", "test-ingest-key")
            .env("QUERY_TOKEN", QUERY_TOKEN)
            .env("HONEYCOMB_ENDPOINT", format!("http://{sink_addr}"))
            .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", api.addr.port().to_string())
            .env("MESHMETRICS_SERVICE_ACCOUNT_DIR", sa.path())
            .env("STORAGE_DIR", sa.path().join("queue"))
            // The peers' headless Service, here: the one agent itself, by address.
            .env("MESHMETRICS_PEERS", "127.0.0.1:9090")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("agent starts"),
    );

    // The façade answers for this node's pod, with the labels the relabel rules make.
    wait_until("the node-a pod in the façade", || async {
        let r = query(r#"up{job="kubernetes-pods"}"#).await;
        r["data"]["result"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    // Closed by default: no token, no answer.
    let (status, _) = http_get("http://127.0.0.1:9090/api/v1/query?query=up", &[]).await;
    assert_eq!(status, 401);
    let r = query(r#"up{job="kubernetes-pods"}"#).await;
    let series = &r["data"]["result"][0];
    assert_eq!(series["metric"]["pod"], "podinfo-7d9c8-abcde", "{r}");
    assert_eq!(series["metric"]["namespace"], "test");
    assert_eq!(series["metric"]["app"], "podinfo");
    assert_eq!(series["value"][1], "1");
    let r = query(r#"count(istio_requests_total{job="kubernetes-pods"}) > 0"#).await;
    assert_eq!(r["data"]["result"].as_array().map(Vec::len), Some(1), "{r}");

    // Node-local: the other node's pod is never scraped, and the envoy-stats job skips pods
    // already scraped through their merged endpoint.
    assert_eq!(elsewhere.request_count("/stats/prometheus"), 0);
    let r = query(r#"up{job="envoy-stats"}"#).await;
    assert_eq!(r["data"]["result"].as_array().map(Vec::len), Some(0), "{r}");

    // Exported over OTLP with the Honeycomb headers and the pod's Kubernetes attributes.
    sink.wait_for(Duration::from_secs(30), "istio metrics", |s| {
        s.metrics()
            .iter()
            .any(|(_, m)| m.name == "istio_requests_total")
    })
    .await;
    let req = &sink.requests()[0];
    assert_eq!(req.headers["x-honeycomb-team"], "test-ingest-key");
    assert_eq!(req.headers["x-honeycomb-dataset"], "flagger-metrics");
    let (attrs, _) = sink
        .metrics()
        .into_iter()
        .find(|(_, m)| m.name == "istio_requests_total")
        .expect("found");
    for (k, v) in [
        ("service.name", "kubernetes-pods"),
        ("k8s.namespace.name", "test"),
        ("k8s.pod.name", "podinfo-7d9c8-abcde"),
        ("k8s.pod.uid", "uid-podinfo-7d9c8-abcde"),
        ("k8s.node.name", "node-a"),
        ("k8s.replicaset.name", "podinfo-7d9c8"),
        ("k8s.deployment.name", "podinfo"),
        ("k8s.cluster.name", "default"),
    ] {
        assert_eq!(
            attrs.get(k).map(String::as_str),
            Some(v),
            "{k} in {attrs:?}"
        );
    }
    // The pod role yields one target per container port; the relabeled address is the same
    // for both containers, so the container name is not one of a target's attributes here.

    // Discovery used the service account: every request carried its token (the server
    // refuses others) and the watch is on pods of node-a only.
    assert!(api
        .requests()
        .iter()
        .any(|r| r.contains("watch=true") && r.contains("fieldSelector=spec.nodeName%3Dnode-a")));

    let health = try_http_get("http://127.0.0.1:13133/").await;
    assert_eq!(health.map(|h| h.0), Some(200));

    // The pod goes away: its series go stale, as Prometheus would mark them.
    api.delete("Pod", "test/podinfo-7d9c8-abcde");
    wait_until("the deleted pod's series to go stale", || async {
        let r = query(r#"up{job="kubernetes-pods"}"#).await;
        r["data"]["result"].as_array().is_some_and(|a| a.is_empty())
    })
    .await;
}
