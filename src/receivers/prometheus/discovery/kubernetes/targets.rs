//! Target groups from Kubernetes objects, with the `__meta_kubernetes_*` labels Prometheus sets
//! for each role: same names, same values, same group sources. Pure functions over the
//! objects the watchers keep; no API calls.

use k8s_openapi::api::core::v1::{Container, Endpoints, Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

use super::super::TargetGroup;
use crate::model::relabel::LabelMap;

const META: &str = "__meta_kubernetes_";

/// The objects a role's groups are built from, keyed by `namespace/name` (or `name` for nodes).
#[derive(Default)]
pub struct Objects<'a> {
    pub pods: BTreeMap<String, &'a Pod>,
    pub services: BTreeMap<String, &'a Service>,
    pub nodes: BTreeMap<String, &'a Node>,
    /// `attach_metadata: {node: true}`: add the node's labels to pod and endpoint targets, and
    /// drop pods whose node is not in the (selector-filtered) node store.
    pub attach_node: bool,
}

fn meta_key(name: &str) -> String {
    format!("{META}{name}")
}

/// Prometheus's `strutil.SanitizeLabelName`: anything outside `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn ns_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// `namespace/name` of an object, as used for group sources and store keys.
pub fn object_key(meta: &ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) => ns_name(ns, meta.name.as_deref().unwrap_or("")),
        None => meta.name.clone().unwrap_or_default(),
    }
}

fn s(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// `<resource>_label_*`, `_labelpresent_*`, `_annotation_*`, `_annotationpresent_*`.
fn add_labels_and_annotations(out: &mut LabelMap, meta: &ObjectMeta, resource: &str) {
    for (k, v) in meta.labels.iter().flatten() {
        let ln = sanitize_label_name(k);
        out.insert(meta_key(&format!("{resource}_label_{ln}")), v.clone());
        out.insert(
            meta_key(&format!("{resource}_labelpresent_{ln}")),
            "true".into(),
        );
    }
    for (k, v) in meta.annotations.iter().flatten() {
        let ln = sanitize_label_name(k);
        out.insert(meta_key(&format!("{resource}_annotation_{ln}")), v.clone());
        out.insert(
            meta_key(&format!("{resource}_annotationpresent_{ln}")),
            "true".into(),
        );
    }
}

/// `<role>_name` plus labels and annotations.
fn add_object_meta(out: &mut LabelMap, meta: &ObjectMeta, role: &str) {
    out.insert(meta_key(&format!("{role}_name")), s(&meta.name));
    add_labels_and_annotations(out, meta, role);
}

fn add_node_meta(out: &mut LabelMap, objects: &Objects, node_name: Option<&str>) {
    if let Some(node) = node_name.and_then(|n| objects.nodes.get(n)) {
        add_object_meta(out, &node.metadata, "node");
    }
}

fn pod_ready(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|st| st.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.to_lowercase())
        .unwrap_or_else(|| "unknown".into())
}

/// The labels every pod-backed target carries (Prometheus's `podLabels`).
fn pod_labels(pod: &Pod) -> LabelMap {
    let status = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ls = LabelMap::new();
    ls.insert(meta_key("pod_ip"), s(&status.pod_ip));
    ls.insert(meta_key("pod_ready"), pod_ready(pod));
    ls.insert(meta_key("pod_phase"), s(&status.phase));
    ls.insert(meta_key("pod_node_name"), s(&spec.node_name));
    ls.insert(meta_key("pod_host_ip"), s(&status.host_ip));
    ls.insert(meta_key("pod_uid"), s(&pod.metadata.uid));
    add_object_meta(&mut ls, &pod.metadata, "pod");
    if let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        if !owner.kind.is_empty() {
            ls.insert(meta_key("pod_controller_kind"), owner.kind.clone());
        }
        if !owner.name.is_empty() {
            ls.insert(meta_key("pod_controller_name"), owner.name.clone());
        }
    }
    ls
}

/// Regular containers, then init containers (flagged `true`).
fn containers(pod: &Pod) -> Vec<(&Container, bool)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .map(|c| (c, false))
        .chain(spec.init_containers.iter().flatten().map(|c| (c, true)))
        .collect()
}

fn container_id(pod: &Pod, name: &str, init: bool) -> String {
    let Some(status) = pod.status.as_ref() else {
        return String::new();
    };
    let statuses = if init {
        &status.init_container_statuses
    } else {
        &status.container_statuses
    };
    statuses
        .iter()
        .flatten()
        .find(|c| c.name == name)
        .and_then(|c| c.container_id.clone())
        .unwrap_or_default()
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `role: pod`: one target per container port, one port-less target per container without
/// ports. Pods without an IP yet give an empty group.
pub fn pod_group(pod: &Pod, objects: &Objects) -> TargetGroup {
    let mut tg = TargetGroup {
        source: format!("pod/{}", object_key(&pod.metadata)),
        ..Default::default()
    };
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    if pod_ip.is_empty() {
        return tg;
    }
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if objects.attach_node && !node_name.is_some_and(|n| objects.nodes.contains_key(n)) {
        return tg;
    }
    tg.labels = pod_labels(pod);
    tg.labels
        .insert(meta_key("namespace"), s(&pod.metadata.namespace));
    if objects.attach_node {
        add_node_meta(&mut tg.labels, objects, node_name);
    }
    for (c, init) in containers(pod) {
        let cid = container_id(pod, &c.name, init);
        let base = |address: String| {
            LabelMap::from([
                ("__address__".to_string(), address),
                (meta_key("pod_container_name"), c.name.clone()),
                (meta_key("pod_container_id"), cid.clone()),
                (meta_key("pod_container_image"), s(&c.image)),
                (meta_key("pod_container_init"), init.to_string()),
            ])
        };
        let ports = c.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            tg.targets.push(base(pod_ip.clone()));
            continue;
        }
        for p in ports {
            let mut t = base(join_host_port(&pod_ip, p.container_port.into()));
            t.insert(
                meta_key("pod_container_port_number"),
                p.container_port.to_string(),
            );
            t.insert(meta_key("pod_container_port_name"), s(&p.name));
            t.insert(meta_key("pod_container_port_protocol"), s(&p.protocol));
            tg.targets.push(t);
        }
    }
    tg
}

fn service_labels(svc: &Service) -> LabelMap {
    let mut ls = LabelMap::new();
    ls.insert(meta_key("namespace"), s(&svc.metadata.namespace));
    add_object_meta(&mut ls, &svc.metadata, "service");
    ls
}

/// `role: service`: one target per service port, addressed by the service's DNS name.
pub fn service_group(svc: &Service) -> TargetGroup {
    let mut tg = TargetGroup {
        source: format!("svc/{}", object_key(&svc.metadata)),
        labels: service_labels(svc),
        ..Default::default()
    };
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = s(&spec.type_);
    let host = format!(
        "{}.{}.svc",
        s(&svc.metadata.name),
        s(&svc.metadata.namespace)
    );
    for port in spec.ports.iter().flatten() {
        let mut t = LabelMap::from([
            (
                "__address__".to_string(),
                join_host_port(&host, port.port.into()),
            ),
            (meta_key("service_port_name"), s(&port.name)),
            (meta_key("service_port_number"), port.port.to_string()),
            (meta_key("service_port_protocol"), s(&port.protocol)),
            (meta_key("service_type"), kind.clone()),
        ]);
        if kind == "ExternalName" {
            t.insert(meta_key("service_external_name"), s(&spec.external_name));
        } else {
            t.insert(meta_key("service_cluster_ip"), s(&spec.cluster_ip));
        }
        if kind == "LoadBalancer" {
            t.insert(meta_key("service_loadbalancer_ip"), load_balancer_ips(svc));
        }
        tg.targets.push(t);
    }
    tg
}

/// Status ingress IPs joined with commas, else the deprecated `spec.loadBalancerIP`.
fn load_balancer_ips(svc: &Service) -> String {
    let ips: Vec<String> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if ips.is_empty() {
        svc.spec
            .as_ref()
            .and_then(|s| s.load_balancer_ip.clone())
            .unwrap_or_default()
    } else {
        ips.join(",")
    }
}

/// `role: node`: the kubelet endpoint; `instance` is the node name.
pub fn node_group(node: &Node) -> Option<TargetGroup> {
    let name = s(&node.metadata.name);
    let status = node.status.clone().unwrap_or_default();
    let mut labels = LabelMap::new();
    labels.insert(
        meta_key("node_provider_id"),
        node.spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_default(),
    );
    for c in status.conditions.iter().flatten() {
        labels.insert(
            meta_key(&format!(
                "node_condition_{}",
                sanitize_label_name(&c.type_.to_lowercase())
            )),
            c.status.to_lowercase(),
        );
    }
    add_object_meta(&mut labels, &node.metadata, "node");
    let mut by_type: BTreeMap<&str, &str> = BTreeMap::new();
    for a in status.addresses.iter().flatten() {
        by_type
            .entry(a.type_.as_str())
            .or_insert(a.address.as_str());
    }
    // Priority as in Kubernetes' node address helper.
    let address = [
        "InternalIP",
        "InternalDNS",
        "ExternalIP",
        "ExternalDNS",
        "LegacyHostIP",
        "Hostname",
    ]
    .iter()
    .find_map(|t| by_type.get(t).copied());
    let Some(address) = address else {
        tracing::warn!(node = %name, "kubernetes_sd: node has no address; skipping it");
        return None;
    };
    let port = status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map(|k| k.port)
        .unwrap_or(0);
    let mut t = LabelMap::from([
        (
            "__address__".to_string(),
            join_host_port(address, port.into()),
        ),
        ("instance".to_string(), name.clone()),
    ]);
    for (ty, a) in by_type {
        t.insert(
            sanitize_label_name(&format!("{META}node_address_{ty}")),
            a.to_string(),
        );
    }
    Some(TargetGroup {
        source: format!("node/{name}"),
        targets: vec![t],
        labels,
    })
}

fn resolve_pod<'a>(objects: &Objects<'a>, r: Option<&ObjectReference>) -> Option<&'a Pod> {
    let r = r?;
    if r.kind.as_deref() != Some("Pod") {
        return None;
    }
    objects
        .pods
        .get(&ns_name(
            r.namespace.as_deref().unwrap_or(""),
            r.name.as_deref().unwrap_or(""),
        ))
        .copied()
}

/// Pod labels plus the container-port labels of the container port matching `port`. The
/// protocol label comes from the endpoint port for `endpoints` and from the container port for
/// `endpointslice` (`protocol: None`), as in Prometheus.
fn pod_port_labels(target: &mut LabelMap, pod: &Pod, port: i32, protocol: Option<&str>) {
    for (k, v) in pod_labels(pod) {
        target.insert(k, v);
    }
    for (c, init) in containers(pod) {
        if let Some(cp) = c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.container_port == port)
        {
            target.insert(meta_key("pod_container_name"), c.name.clone());
            target.insert(meta_key("pod_container_image"), s(&c.image));
            target.insert(meta_key("pod_container_port_name"), s(&cp.name));
            target.insert(meta_key("pod_container_port_number"), port.to_string());
            let protocol = protocol.map_or_else(|| s(&cp.protocol), str::to_string);
            target.insert(meta_key("pod_container_port_protocol"), protocol);
            target.insert(meta_key("pod_container_init"), init.to_string());
            return;
        }
    }
}

/// Targets for the container ports of endpoint-backed pods that no endpoint port covered.
fn uncovered_pod_ports(seen: &BTreeMap<String, (&Pod, Vec<i32>)>, out: &mut Vec<LabelMap>) {
    for (pod, covered) in seen.values() {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        if ip.is_empty() {
            continue;
        }
        for (c, init) in containers(pod) {
            for cp in c.ports.iter().flatten() {
                if covered.contains(&cp.container_port) {
                    continue;
                }
                let mut t = LabelMap::from([
                    (
                        "__address__".to_string(),
                        join_host_port(&ip, cp.container_port.into()),
                    ),
                    (meta_key("pod_container_name"), c.name.clone()),
                    (meta_key("pod_container_image"), s(&c.image)),
                    (meta_key("pod_container_port_name"), s(&cp.name)),
                    (
                        meta_key("pod_container_port_number"),
                        cp.container_port.to_string(),
                    ),
                    (meta_key("pod_container_port_protocol"), s(&cp.protocol)),
                    (meta_key("pod_container_init"), init.to_string()),
                ]);
                for (k, v) in pod_labels(pod) {
                    t.insert(k, v);
                }
                out.push(t);
            }
        }
    }
}

/// `role: endpoints`: one target per address and port, with the service's and the backing
/// pod's labels, plus the pod's other container ports.
pub fn endpoints_group(eps: &Endpoints, objects: &Objects) -> TargetGroup {
    let key = object_key(&eps.metadata);
    let mut tg = TargetGroup {
        source: format!("endpoints/{key}"),
        ..Default::default()
    };
    tg.labels
        .insert(meta_key("namespace"), s(&eps.metadata.namespace));
    if let Some(svc) = objects.services.get(&key) {
        tg.labels.extend(service_labels(svc));
    }
    add_object_meta(&mut tg.labels, &eps.metadata, "endpoints");
    let mut seen: BTreeMap<String, (&Pod, Vec<i32>)> = BTreeMap::new();
    for subset in eps.subsets.iter().flatten() {
        for port in subset.ports.iter().flatten() {
            let ready = subset.addresses.iter().flatten().map(|a| (a, "true"));
            let not_ready = subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, "false"));
            for (addr, ready) in ready.chain(not_ready) {
                let protocol = s(&port.protocol);
                let mut t = LabelMap::from([
                    (
                        "__address__".to_string(),
                        join_host_port(&addr.ip, port.port.into()),
                    ),
                    (meta_key("endpoint_port_name"), s(&port.name)),
                    (meta_key("endpoint_port_protocol"), protocol.clone()),
                    (meta_key("endpoint_ready"), ready.to_string()),
                ]);
                if let Some(r) = &addr.target_ref {
                    t.insert(meta_key("endpoint_address_target_kind"), s(&r.kind));
                    t.insert(meta_key("endpoint_address_target_name"), s(&r.name));
                }
                if let Some(n) = &addr.node_name {
                    t.insert(meta_key("endpoint_node_name"), n.clone());
                }
                if let Some(h) = addr.hostname.as_ref().filter(|h| !h.is_empty()) {
                    t.insert(meta_key("endpoint_hostname"), h.clone());
                }
                if objects.attach_node {
                    let node = addr.node_name.clone().or_else(|| {
                        addr.target_ref
                            .as_ref()
                            .filter(|r| r.kind.as_deref() == Some("Node"))
                            .and_then(|r| r.name.clone())
                    });
                    add_node_meta(&mut t, objects, node.as_deref());
                }
                if let Some(pod) = resolve_pod(objects, addr.target_ref.as_ref()) {
                    pod_port_labels(&mut t, pod, port.port, Some(&protocol));
                    seen.entry(object_key(&pod.metadata))
                        .or_insert((pod, Vec::new()))
                        .1
                        .push(port.port);
                }
                tg.targets.push(t);
            }
        }
    }
    uncovered_pod_ports(&seen, &mut tg.targets);
    tg
}

/// `role: endpointslice`: as `endpoints`, from `discovery.k8s.io/v1` EndpointSlices.
pub fn endpointslice_group(eps: &EndpointSlice, objects: &Objects) -> TargetGroup {
    let key = object_key(&eps.metadata);
    let mut tg = TargetGroup {
        source: format!("endpointslice/{key}"),
        ..Default::default()
    };
    tg.labels
        .insert(meta_key("namespace"), s(&eps.metadata.namespace));
    tg.labels.insert(
        meta_key("endpointslice_address_type"),
        eps.address_type.clone(),
    );
    add_object_meta(&mut tg.labels, &eps.metadata, "endpointslice");
    let service = eps
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/service-name"))
        .and_then(|name| {
            objects.services.get(&ns_name(
                eps.metadata.namespace.as_deref().unwrap_or(""),
                name,
            ))
        });
    if let Some(svc) = service {
        tg.labels.extend(service_labels(svc));
        // The secondary slice of a dual-stack service would duplicate the primary's targets.
        let spec = svc.spec.clone().unwrap_or_default();
        let dual = matches!(
            spec.ip_family_policy.as_deref(),
            Some("PreferDualStack" | "RequireDualStack")
        );
        if let Some(primary) = spec.ip_families.as_ref().and_then(|f| f.first()) {
            if dual && *primary != eps.address_type {
                return tg;
            }
        }
    }
    let mut seen: BTreeMap<String, (&Pod, Vec<i32>)> = BTreeMap::new();
    for ep in &eps.endpoints {
        for port in eps.ports.iter().flatten() {
            for addr in &ep.addresses {
                let mut t = LabelMap::new();
                t.insert(
                    "__address__".into(),
                    match port.port {
                        Some(p) => join_host_port(addr, p.into()),
                        None => addr.clone(),
                    },
                );
                if let Some(n) = &port.name {
                    t.insert(meta_key("endpointslice_port_name"), n.clone());
                }
                if let Some(p) = &port.protocol {
                    t.insert(meta_key("endpointslice_port_protocol"), p.clone());
                }
                if let Some(p) = port.port {
                    t.insert(meta_key("endpointslice_port"), p.to_string());
                }
                if let Some(p) = &port.app_protocol {
                    t.insert(meta_key("endpointslice_port_app_protocol"), p.clone());
                }
                if let Some(c) = &ep.conditions {
                    for (name, v) in [
                        ("ready", c.ready),
                        ("serving", c.serving),
                        ("terminating", c.terminating),
                    ] {
                        if let Some(v) = v {
                            t.insert(
                                meta_key(&format!("endpointslice_endpoint_conditions_{name}")),
                                v.to_string(),
                            );
                        }
                    }
                }
                if let Some(h) = &ep.hostname {
                    t.insert(meta_key("endpointslice_endpoint_hostname"), h.clone());
                }
                if let Some(r) = &ep.target_ref {
                    t.insert(meta_key("endpointslice_address_target_kind"), s(&r.kind));
                    t.insert(meta_key("endpointslice_address_target_name"), s(&r.name));
                }
                if let Some(n) = &ep.node_name {
                    t.insert(meta_key("endpointslice_endpoint_node_name"), n.clone());
                }
                if let Some(z) = &ep.zone {
                    t.insert(meta_key("endpointslice_endpoint_zone"), z.clone());
                }
                for (k, v) in ep.deprecated_topology.iter().flatten() {
                    let ln = sanitize_label_name(k);
                    t.insert(
                        meta_key(&format!("endpointslice_endpoint_topology_{ln}")),
                        v.clone(),
                    );
                    t.insert(
                        meta_key(&format!("endpointslice_endpoint_topology_present_{ln}")),
                        "true".into(),
                    );
                }
                if objects.attach_node {
                    let node = match &ep.target_ref {
                        Some(r) if r.kind.as_deref() == Some("Node") => r.name.clone(),
                        _ => ep.node_name.clone(),
                    };
                    add_node_meta(&mut t, objects, node.as_deref());
                }
                if let Some(pod) = resolve_pod(objects, ep.target_ref.as_ref()) {
                    let entry = seen
                        .entry(object_key(&pod.metadata))
                        .or_insert((pod, Vec::new()));
                    // Prometheus merges pod labels for every endpoint, and container-port
                    // labels only when the slice port has a number.
                    for (k, v) in pod_labels(pod) {
                        t.insert(k, v);
                    }
                    if let Some(p) = port.port {
                        pod_port_labels(&mut t, pod, p, None);
                        entry.1.push(p);
                    }
                }
                tg.targets.push(t);
            }
        }
    }
    uncovered_pod_ports(&seen, &mut tg.targets);
    tg
}
