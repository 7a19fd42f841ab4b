//! Canaries, MetricTemplates and the templates' Secrets, read from the cluster through the
//! Kubernetes API (the kubeconfig in `KUBECONFIG` or `~/.kube/config`, else in-cluster): the
//! same objects Flagger reads, with the caller's permissions.

use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

fn flagger(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("flagger.app", "v1beta1", kind),
        plural,
    )
}

/// Each object as `kubectl get -o json` shows it, its kind set (list items carry none).
fn documents(items: Vec<DynamicObject>, api_version: &str, kind: &str) -> Vec<Value> {
    items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .map(|mut v| {
            v["apiVersion"] = api_version.into();
            v["kind"] = kind.into();
            v
        })
        .collect()
}

/// Canaries (of `namespace`, or all), every MetricTemplate, and the Secrets the templates
/// name.
pub async fn fetch(namespace: Option<&str>) -> Result<Vec<Value>, String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes API to read Canaries from (give -f for files): {e}"))?;
    let canaries = flagger("Canary", "canaries");
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &canaries),
        None => Api::all_with(client.clone(), &canaries),
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Canaries: {e}"))?;
    let mut out = documents(list.items, "flagger.app/v1beta1", "Canary");
    let templates: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &flagger("MetricTemplate", "metrictemplates"),
    );
    let list = templates
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing MetricTemplates: {e}"))?;
    let templates = documents(list.items, "flagger.app/v1beta1", "MetricTemplate");
    let secrets = kube::core::ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&());
    for t in &templates {
        let Some(name) = t["spec"]["provider"]["secretRef"]["name"].as_str() else {
            continue;
        };
        let ns = t["metadata"]["namespace"].as_str().unwrap_or("default");
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &secrets);
        // A Secret that cannot be read shows on the metrics that need it.
        if let Ok(s) = api.get(name).await {
            out.extend(documents(vec![s], "v1", "Secret"));
        }
    }
    out.extend(templates);
    Ok(out)
}
