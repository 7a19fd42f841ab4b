//! Kubernetes service discovery against a test API server speaking the real list/watch
//! protocol. The expected label sets are those Prometheus's own discovery tests assert for the
//! same objects (discovery/kubernetes/*_test.go).

mod common;

use common::kube_api::KubeApi;
use meshmetrics::receivers::prometheus::discovery::kubernetes::{run, KubernetesSdConfig};
use meshmetrics::receivers::prometheus::discovery::{TargetGroup, Update};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

type Labels = BTreeMap<String, String>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn start(api: &KubeApi, extra: &str) -> mpsc::Receiver<Update> {
    let yaml = format!("api_server: {}\n{extra}", api.url());
    let cfg: KubernetesSdConfig = serde_saphyr::from_str(&yaml).expect("config parses");
    cfg.validate().expect("config is valid");
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(cfg, 0, tx));
    rx
}

/// Receives updates until `done` holds for one; returns it.
async fn until(
    rx: &mut mpsc::Receiver<Update>,
    what: &str,
    done: impl Fn(&[TargetGroup]) -> bool,
) -> Vec<TargetGroup> {
    until_keeping(rx, what, &[], done).await
}

/// As [`until`], asserting that every update on the way still has the `kept` addresses.
async fn until_keeping(
    rx: &mut mpsc::Receiver<Update>,
    what: &str,
    kept: &[&str],
    done: impl Fn(&[TargetGroup]) -> bool,
) -> Vec<TargetGroup> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(u)) => {
                let have = addresses(&u.groups);
                for k in kept {
                    assert!(
                        have.iter().any(|a| a == k),
                        "{k} vanished while waiting for {what}: {have:?}"
                    );
                }
                if done(&u.groups) {
                    return u.groups;
                }
            }
            Ok(None) => panic!("discovery stopped while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

fn sorted_targets(g: &TargetGroup) -> Vec<Labels> {
    let mut t = g.targets.clone();
    t.sort_by(|a, b| (a.get("__address__"), a.len()).cmp(&(b.get("__address__"), b.len())));
    t
}

fn assert_group(g: &TargetGroup, source: &str, group: Labels, mut targets: Vec<Labels>) {
    assert_eq!(g.source, source);
    assert_eq!(g.labels, group, "group labels of {source}");
    targets.sort_by(|a, b| (a.get("__address__"), a.len()).cmp(&(b.get("__address__"), b.len())));
    assert_eq!(sorted_targets(g), targets, "targets of {source}");
}

fn multi_port_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "testpod", "namespace": "default", "uid": "abc123",
            "labels": {"test/label": "testvalue"},
            "annotations": {"test/annotation": "testannotationvalue"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "testcontrollerkind",
                                  "name": "testcontrollername", "uid": "c1", "controller": true}]
        },
        "spec": {
            "nodeName": "testnode",
            "containers": [
                {"name": "testcontainer0", "image": "testcontainer0:latest", "ports": [
                    {"name": "testport0", "protocol": "TCP", "containerPort": 9000},
                    {"name": "testport1", "protocol": "UDP", "containerPort": 9001}]},
                {"name": "testcontainer1", "image": "testcontainer1:latest"}
            ]
        },
        "status": {
            "podIP": "1.2.3.4", "hostIP": "2.3.4.5", "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "testcontainer0", "containerID": "docker://a1b2c3d4e5f6",
                 "ready": true, "restartCount": 0, "image": "testcontainer0:latest", "imageID": ""},
                {"name": "testcontainer1", "containerID": "containerd://6f5e4d3c2b1a",
                 "ready": true, "restartCount": 0, "image": "testcontainer1:latest", "imageID": ""}
            ]
        }
    })
}

/// The pod behind the endpoints and endpointslice cases.
fn backing_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "testpod", "namespace": "default", "uid": "deadbeef"},
        "spec": {"nodeName": "testnode", "containers": [
            {"name": "c1", "image": "c1:latest",
             "ports": [{"name": "mainport", "containerPort": 9000, "protocol": "TCP"}]},
            {"name": "c2", "image": "c2:latest",
             "ports": [{"name": "sideport", "containerPort": 9001, "protocol": "TCP"}]}
        ]},
        "status": {"hostIP": "2.3.4.5", "podIP": "1.2.3.4"}
    })
}

fn backing_pod_labels() -> Labels {
    labels(&[
        ("__meta_kubernetes_pod_name", "testpod"),
        ("__meta_kubernetes_pod_ip", "1.2.3.4"),
        ("__meta_kubernetes_pod_ready", "unknown"),
        ("__meta_kubernetes_pod_phase", ""),
        ("__meta_kubernetes_pod_node_name", "testnode"),
        ("__meta_kubernetes_pod_host_ip", "2.3.4.5"),
        ("__meta_kubernetes_pod_uid", "deadbeef"),
    ])
}

fn with(mut base: Labels, extra: &[(&str, &str)]) -> Labels {
    base.extend(labels(extra));
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_role_labels_match_prometheus() {
    let api = KubeApi::start().await;
    api.create(multi_port_pod());
    let mut rx = start(&api, "role: pod\n");
    let groups = until(&mut rx, "the pod", |g| g.len() == 1).await;
    let c0 = |addr: &str, port: &str, name: &str, proto: &str| {
        labels(&[
            ("__address__", addr),
            ("__meta_kubernetes_pod_container_name", "testcontainer0"),
            (
                "__meta_kubernetes_pod_container_image",
                "testcontainer0:latest",
            ),
            ("__meta_kubernetes_pod_container_port_name", name),
            ("__meta_kubernetes_pod_container_port_number", port),
            ("__meta_kubernetes_pod_container_port_protocol", proto),
            ("__meta_kubernetes_pod_container_init", "false"),
            (
                "__meta_kubernetes_pod_container_id",
                "docker://a1b2c3d4e5f6",
            ),
        ])
    };
    assert_group(
        &groups[0],
        "pod/default/testpod",
        labels(&[
            ("__meta_kubernetes_pod_name", "testpod"),
            ("__meta_kubernetes_namespace", "default"),
            ("__meta_kubernetes_pod_label_test_label", "testvalue"),
            ("__meta_kubernetes_pod_labelpresent_test_label", "true"),
            (
                "__meta_kubernetes_pod_annotation_test_annotation",
                "testannotationvalue",
            ),
            (
                "__meta_kubernetes_pod_annotationpresent_test_annotation",
                "true",
            ),
            ("__meta_kubernetes_pod_node_name", "testnode"),
            ("__meta_kubernetes_pod_ip", "1.2.3.4"),
            ("__meta_kubernetes_pod_host_ip", "2.3.4.5"),
            ("__meta_kubernetes_pod_ready", "true"),
            ("__meta_kubernetes_pod_phase", "Running"),
            ("__meta_kubernetes_pod_uid", "abc123"),
            (
                "__meta_kubernetes_pod_controller_kind",
                "testcontrollerkind",
            ),
            (
                "__meta_kubernetes_pod_controller_name",
                "testcontrollername",
            ),
        ]),
        vec![
            c0("1.2.3.4:9000", "9000", "testport0", "TCP"),
            c0("1.2.3.4:9001", "9001", "testport1", "UDP"),
            labels(&[
                ("__address__", "1.2.3.4"),
                ("__meta_kubernetes_pod_container_name", "testcontainer1"),
                (
                    "__meta_kubernetes_pod_container_image",
                    "testcontainer1:latest",
                ),
                ("__meta_kubernetes_pod_container_init", "false"),
                (
                    "__meta_kubernetes_pod_container_id",
                    "containerd://6f5e4d3c2b1a",
                ),
            ]),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_service_roles_match_prometheus() {
    let api = KubeApi::start().await;
    api.create(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "test", "labels": {"test-label": "testvalue"},
                     "annotations": {"test-annotation": "testannotationvalue"}},
        "spec": {"providerID": "aws:///nl-north-7b/i-03149834983492827"},
        "status": {"addresses": [{"type": "InternalIP", "address": "1.2.3.4"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}
    }));
    api.create(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "testservice", "namespace": "default",
                     "labels": {"test-label": "testvalue"},
                     "annotations": {"test-annotation": "testannotationvalue"}},
        "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1", "ports": [
            {"name": "testport0", "protocol": "TCP", "port": 30900},
            {"name": "testport1", "protocol": "UDP", "port": 30901}]}
    }));
    api.create(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "testservice-lb-ingress", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1",
                 "ports": [{"name": "testport", "protocol": "TCP", "port": 31900}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.15"}, {"ip": "2001:db8::1"}]}}
    }));
    let mut nodes = start(&api, "role: node\n");
    let groups = until(&mut nodes, "the node", |g| g.len() == 1).await;
    assert_group(
        &groups[0],
        "node/test",
        labels(&[
            ("__meta_kubernetes_node_name", "test"),
            (
                "__meta_kubernetes_node_provider_id",
                "aws:///nl-north-7b/i-03149834983492827",
            ),
            ("__meta_kubernetes_node_label_test_label", "testvalue"),
            ("__meta_kubernetes_node_labelpresent_test_label", "true"),
            (
                "__meta_kubernetes_node_annotation_test_annotation",
                "testannotationvalue",
            ),
            (
                "__meta_kubernetes_node_annotationpresent_test_annotation",
                "true",
            ),
        ]),
        vec![labels(&[
            ("__address__", "1.2.3.4:10250"),
            ("instance", "test"),
            ("__meta_kubernetes_node_address_InternalIP", "1.2.3.4"),
        ])],
    );

    let mut services = start(&api, "role: service\n");
    let groups = until(&mut services, "both services", |g| g.len() == 2).await;
    let port = |addr: &str, name: &str, num: &str, proto: &str| {
        labels(&[
            ("__address__", addr),
            ("__meta_kubernetes_service_port_name", name),
            ("__meta_kubernetes_service_port_number", num),
            ("__meta_kubernetes_service_port_protocol", proto),
            ("__meta_kubernetes_service_type", "ClusterIP"),
            ("__meta_kubernetes_service_cluster_ip", "10.0.0.1"),
        ])
    };
    assert_group(
        &groups[0],
        "svc/default/testservice",
        labels(&[
            ("__meta_kubernetes_service_name", "testservice"),
            ("__meta_kubernetes_namespace", "default"),
            ("__meta_kubernetes_service_label_test_label", "testvalue"),
            ("__meta_kubernetes_service_labelpresent_test_label", "true"),
            (
                "__meta_kubernetes_service_annotation_test_annotation",
                "testannotationvalue",
            ),
            (
                "__meta_kubernetes_service_annotationpresent_test_annotation",
                "true",
            ),
        ]),
        vec![
            port("testservice.default.svc:30900", "testport0", "30900", "TCP"),
            port("testservice.default.svc:30901", "testport1", "30901", "UDP"),
        ],
    );
    assert_group(
        &groups[1],
        "svc/default/testservice-lb-ingress",
        labels(&[
            ("__meta_kubernetes_service_name", "testservice-lb-ingress"),
            ("__meta_kubernetes_namespace", "default"),
        ]),
        vec![labels(&[
            ("__address__", "testservice-lb-ingress.default.svc:31900"),
            ("__meta_kubernetes_service_port_name", "testport"),
            ("__meta_kubernetes_service_port_number", "31900"),
            ("__meta_kubernetes_service_port_protocol", "TCP"),
            ("__meta_kubernetes_service_type", "LoadBalancer"),
            ("__meta_kubernetes_service_cluster_ip", "10.0.0.1"),
            (
                "__meta_kubernetes_service_loadbalancer_ip",
                "192.168.1.15,2001:db8::1",
            ),
        ])],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_endpointslice_roles_match_prometheus() {
    let api = KubeApi::start().await;
    api.create(backing_pod());
    api.create(json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "testendpoints", "namespace": "default"},
        "subsets": [{
            "addresses": [{"ip": "4.3.2.1",
                           "targetRef": {"kind": "Pod", "name": "testpod", "namespace": "default"}}],
            "ports": [{"name": "testport", "port": 9000, "protocol": "TCP"}]
        }]
    }));
    api.create(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "testendpoints", "namespace": "default"},
        "addressType": "IPv4",
        "ports": [{"name": "testport", "port": 9000, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["4.3.2.1"],
                       "targetRef": {"kind": "Pod", "name": "testpod", "namespace": "default"},
                       "conditions": {"ready": false}}]
    }));
    let container = |name: &str, port_name: &str, port: &str| {
        labels(&[
            ("__meta_kubernetes_pod_container_name", name),
            (
                "__meta_kubernetes_pod_container_image",
                &format!("{name}:latest"),
            ),
            ("__meta_kubernetes_pod_container_port_name", port_name),
            ("__meta_kubernetes_pod_container_port_number", port),
            ("__meta_kubernetes_pod_container_port_protocol", "TCP"),
            ("__meta_kubernetes_pod_container_init", "false"),
        ])
    };
    let side = with(
        with(backing_pod_labels(), &[("__address__", "1.2.3.4:9001")]),
        &container("c2", "sideport", "9001")
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    let main = |extra: &[(&str, &str)]| {
        let mut l = backing_pod_labels();
        l.extend(container("c1", "mainport", "9000"));
        l.extend(labels(extra));
        l
    };

    let mut eps = start(&api, "role: endpoints\n");
    let groups = until(&mut eps, "the endpoints", |g| g.len() == 1).await;
    assert_group(
        &groups[0],
        "endpoints/default/testendpoints",
        labels(&[
            ("__meta_kubernetes_endpoints_name", "testendpoints"),
            ("__meta_kubernetes_namespace", "default"),
        ]),
        vec![
            main(&[
                ("__address__", "4.3.2.1:9000"),
                ("__meta_kubernetes_endpoint_port_name", "testport"),
                ("__meta_kubernetes_endpoint_port_protocol", "TCP"),
                ("__meta_kubernetes_endpoint_ready", "true"),
                ("__meta_kubernetes_endpoint_address_target_kind", "Pod"),
                ("__meta_kubernetes_endpoint_address_target_name", "testpod"),
            ]),
            side.clone(),
        ],
    );

    let mut slices = start(
        &api,
        "role: endpointslice\nnamespaces: {names: [default]}\n",
    );
    let groups = until(&mut slices, "the slice", |g| g.len() == 1).await;
    assert_group(
        &groups[0],
        "endpointslice/default/testendpoints",
        labels(&[
            ("__meta_kubernetes_endpointslice_address_type", "IPv4"),
            ("__meta_kubernetes_endpointslice_name", "testendpoints"),
            ("__meta_kubernetes_namespace", "default"),
        ]),
        vec![
            main(&[
                ("__address__", "4.3.2.1:9000"),
                ("__meta_kubernetes_endpointslice_address_target_kind", "Pod"),
                (
                    "__meta_kubernetes_endpointslice_address_target_name",
                    "testpod",
                ),
                (
                    "__meta_kubernetes_endpointslice_endpoint_conditions_ready",
                    "false",
                ),
                ("__meta_kubernetes_endpointslice_port", "9000"),
                ("__meta_kubernetes_endpointslice_port_name", "testport"),
                ("__meta_kubernetes_endpointslice_port_protocol", "TCP"),
            ]),
            side,
        ],
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices")),
        "namespaced watch used: {:?}",
        api.requests()
    );
}

fn pod(name: &str, node: &str, ip: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "mesh", "uid": format!("uid-{name}"),
                     "labels": {"app": "podinfo"},
                     "annotations": {"prometheus.io/scrape": "true",
                                     "prometheus.io/port": port.to_string()}},
        "spec": {"nodeName": node, "containers": [
            {"name": "app", "image": "podinfo:6",
             "ports": [{"name": "http-envoy-prom", "containerPort": port, "protocol": "TCP"}]}]},
        "status": {"podIP": ip, "hostIP": "10.0.0.1", "phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn addresses(groups: &[TargetGroup]) -> Vec<String> {
    let mut a: Vec<String> = groups
        .iter()
        .flat_map(|g| g.targets.iter().map(|t| t["__address__"].clone()))
        .collect();
    a.sort();
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_follow_churn_and_survive_410_and_dropped_watches() {
    let api = KubeApi::start().await;
    api.create(pod("a", "n1", "10.1.0.1", 15090));
    api.create(pod("b", "n1", "10.1.0.2", 15090));
    let mut rx = start(&api, "role: pod\n");
    until(&mut rx, "two pods", |g| g.len() == 2).await;

    // A pod without an IP yet has no targets; it appears once scheduled and started.
    let mut c = pod("c", "n1", "", 15090);
    api.create(c.clone());
    c["status"]["podIP"] = json!("10.1.0.3");
    api.update(c);
    let g = until(&mut rx, "pod c with its IP", |g| g.len() == 3).await;
    assert_eq!(
        addresses(&g),
        ["10.1.0.1:15090", "10.1.0.2:15090", "10.1.0.3:15090"]
    );
    api.delete("Pod", "mesh/a");
    let g = until(&mut rx, "pod a gone", |g| g.len() == 2).await;
    assert_eq!(addresses(&g), ["10.1.0.2:15090", "10.1.0.3:15090"]);

    // History compacted and every watch cut; a pod arrives while the agent is disconnected.
    // The agent must relist (410 Gone), keep b and c throughout, and pick up d.
    let watches = api.watches_served();
    api.compact_and_cut();
    api.create(pod("d", "n1", "10.1.0.4", 15090));
    let kept = ["10.1.0.2:15090", "10.1.0.3:15090"];
    let g = until_keeping(&mut rx, "pod d after the relist", &kept, |g| g.len() == 3).await;
    assert_eq!(
        addresses(&g),
        ["10.1.0.2:15090", "10.1.0.3:15090", "10.1.0.4:15090"]
    );
    assert!(api.watches_served() > watches, "watch was re-established");
    let relists = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("/api/v1/pods?") && !r.contains("watch=true"))
        .count();
    assert!(relists >= 2, "410 forced a relist: {:?}", api.requests());

    // A plain dropped connection resumes from the last resourceVersion.
    api.cut_watches();
    api.delete("Pod", "mesh/b");
    let kept = ["10.1.0.3:15090", "10.1.0.4:15090"];
    let g = until_keeping(&mut rx, "pod b gone after the reconnect", &kept, |g| {
        g.len() == 2
    })
    .await;
    assert_eq!(addresses(&g), kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_local_selectors_split_the_cluster() {
    let api = KubeApi::start().await;
    for (i, node) in ["n1", "n2", "n1", "n3", "n2"].iter().enumerate() {
        api.create(pod(&format!("p{i}"), node, &format!("10.2.0.{i}"), 15090));
    }
    let mut seen = Vec::new();
    for node in ["n1", "n2", "n3"] {
        let mut rx = start(
            &api,
            &format!("role: pod\nselectors: [{{role: pod, field: spec.nodeName={node}}}]\n"),
        );
        let g = until(&mut rx, node, |g| !g.is_empty()).await;
        for grp in &g {
            assert_eq!(grp.labels["__meta_kubernetes_pod_node_name"], node);
        }
        seen.extend(addresses(&g));
    }
    seen.sort();
    let all: Vec<String> = (0..5).map(|i| format!("10.2.0.{i}:15090")).collect();
    assert_eq!(
        seen, all,
        "every pod exactly once across the node-local agents"
    );
    assert!(api
        .requests()
        .iter()
        .any(|r| r.contains("fieldSelector=spec.nodeName%3Dn2")));
}
