//! OpenTelemetry `k8s.*` resource attributes for a target, read from the discovery labels it
//! was found with: no API call per target or sample.

use crate::model::relabel::LabelMap;

const PAIRS: &[(&str, &[&str])] = &[
    ("k8s.namespace.name", &["__meta_kubernetes_namespace"]),
    ("k8s.pod.name", &["__meta_kubernetes_pod_name"]),
    ("k8s.pod.uid", &["__meta_kubernetes_pod_uid"]),
    (
        "k8s.node.name",
        &[
            "__meta_kubernetes_pod_node_name",
            "__meta_kubernetes_endpoint_node_name",
            "__meta_kubernetes_endpointslice_endpoint_node_name",
            "__meta_kubernetes_node_name",
        ],
    ),
    (
        "k8s.container.name",
        &["__meta_kubernetes_pod_container_name"],
    ),
];

fn get<'a>(labels: &'a LabelMap, key: &str) -> Option<&'a str> {
    labels
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The workload attributes the controller reference implies. A ReplicaSet made by a
/// Deployment is named `<deployment>-<pod-template-hash>`; a Job made by a CronJob is named
/// `<cronjob>-<scheduled minute>`. Both suffixes are checked, never guessed.
fn workload(labels: &LabelMap) -> Vec<(String, String)> {
    let (Some(kind), Some(name)) = (
        get(labels, "__meta_kubernetes_pod_controller_kind"),
        get(labels, "__meta_kubernetes_pod_controller_name"),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |k: &str, v: &str| out.push((k.to_string(), v.to_string()));
    match kind {
        "ReplicaSet" => {
            push("k8s.replicaset.name", name);
            let hash = get(labels, "__meta_kubernetes_pod_label_pod_template_hash");
            if let Some(deployment) = hash.and_then(|h| name.strip_suffix(h)?.strip_suffix('-')) {
                push("k8s.deployment.name", deployment);
            }
        }
        "StatefulSet" => push("k8s.statefulset.name", name),
        "DaemonSet" => push("k8s.daemonset.name", name),
        "Job" => {
            push("k8s.job.name", name);
            if let Some((cronjob, minute)) = name.rsplit_once('-') {
                if !minute.is_empty() && minute.bytes().all(|b| b.is_ascii_digit()) {
                    push("k8s.cronjob.name", cronjob);
                }
            }
        }
        _ => {}
    }
    if let Some(d) = get(labels, "__meta_kubernetes_pod_deployment_name") {
        if !out.iter().any(|(k, _)| k == "k8s.deployment.name") {
            out.push(("k8s.deployment.name".into(), d.into()));
        }
    }
    out
}

/// `k8s.*` attributes for a target discovered with `labels` (empty for non-Kubernetes targets).
pub fn k8s_resource_attributes(labels: &LabelMap) -> Vec<(String, String)> {
    if !labels.keys().any(|k| k.starts_with("__meta_kubernetes_")) {
        return Vec::new();
    }
    let mut out: Vec<(String, String)> = PAIRS
        .iter()
        .filter_map(|(attr, sources)| {
            let v = sources.iter().find_map(|s| get(labels, s))?;
            Some((attr.to_string(), v.to_string()))
        })
        .collect();
    out.extend(workload(labels));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn deployment_from_replicaset_and_template_hash() {
        let l = labels(&[
            ("__meta_kubernetes_namespace", "test"),
            ("__meta_kubernetes_pod_name", "podinfo-7d9c8-x2x4z"),
            ("__meta_kubernetes_pod_uid", "0b7f"),
            ("__meta_kubernetes_pod_node_name", "node-a"),
            ("__meta_kubernetes_pod_container_name", "istio-proxy"),
            ("__meta_kubernetes_pod_controller_kind", "ReplicaSet"),
            ("__meta_kubernetes_pod_controller_name", "podinfo-7d9c8"),
            ("__meta_kubernetes_pod_label_pod_template_hash", "7d9c8"),
        ]);
        let a = k8s_resource_attributes(&l);
        let get = |k: &str| a.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("k8s.namespace.name"), Some("test"));
        assert_eq!(get("k8s.pod.uid"), Some("0b7f"));
        assert_eq!(get("k8s.node.name"), Some("node-a"));
        assert_eq!(get("k8s.container.name"), Some("istio-proxy"));
        assert_eq!(get("k8s.replicaset.name"), Some("podinfo-7d9c8"));
        assert_eq!(get("k8s.deployment.name"), Some("podinfo"));
    }

    #[test]
    fn no_guessing_without_evidence() {
        let l = labels(&[
            ("__meta_kubernetes_pod_controller_kind", "ReplicaSet"),
            ("__meta_kubernetes_pod_controller_name", "standalone-rs"),
        ]);
        let a = k8s_resource_attributes(&l);
        assert!(a.iter().all(|(k, _)| k != "k8s.deployment.name"), "{a:?}");
        let cron = labels(&[
            ("__meta_kubernetes_pod_controller_kind", "Job"),
            ("__meta_kubernetes_pod_controller_name", "backup-29012345"),
        ]);
        let a = k8s_resource_attributes(&cron);
        assert!(a.contains(&("k8s.cronjob.name".into(), "backup".into())));
        assert!(k8s_resource_attributes(&labels(&[("__address__", "x:1")])).is_empty());
    }
}
