//! `kubernetes_sd_configs`: Prometheus's Kubernetes service discovery. This file holds its
//! config and checks; `watch.rs` the API client and the watchers (list, then watch from the
//! list's resourceVersion; relist on 410 Gone) that keep a local copy of the objects a role
//! needs, rebuild the role's target groups from it after each burst of changes and report them
//! whole, so the job manager starts and stops scrape loops by difference. Without the
//! `kubernetes` feature (the fuzzing build) the config still loads; discovery reports nothing.

pub mod resource;
#[cfg(feature = "kubernetes")]
pub mod targets;
#[cfg(feature = "kubernetes")]
mod watch;

#[cfg(feature = "kubernetes")]
pub use watch::run;

use serde::Deserialize;

use crate::receivers::prometheus::http_client::with_http_client;

/// Built without the `kubernetes` feature: an empty provider, so a job's other providers
/// still report.
#[cfg(not(feature = "kubernetes"))]
pub async fn run(
    _cfg: KubernetesSdConfig,
    provider: usize,
    tx: tokio::sync::mpsc::Sender<super::Update>,
) {
    tracing::error!("kubernetes_sd_configs: this build has no Kubernetes support");
    let _ = tx
        .send(super::Update {
            provider,
            groups: Vec::new(),
        })
        .await;
    std::future::pending::<()>().await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Pod,
    Service,
    Endpoints,
    EndpointSlice,
    Node,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Pod => "pod",
            Role::Service => "service",
            Role::Endpoints => "endpoints",
            Role::EndpointSlice => "endpointslice",
            Role::Node => "node",
        }
    }

    /// Which resources' selectors a role accepts (as Prometheus checks them).
    fn allowed_selectors(self) -> &'static [Role] {
        match self {
            Role::Pod => &[Role::Pod, Role::Node],
            Role::Service => &[Role::Service],
            Role::Endpoints => &[Role::Pod, Role::Service, Role::Endpoints],
            Role::EndpointSlice => &[Role::Pod, Role::Service, Role::EndpointSlice],
            Role::Node => &[Role::Node],
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceDiscovery {
    /// Also watch the namespace this agent runs in.
    #[serde(default)]
    pub own_namespace: bool,
    /// Namespaces to watch.
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectorConfig {
    /// The role this selector applies to.
    pub role: Role,
    /// A label selector (`app=podinfo`).
    #[serde(default)]
    pub label: Option<String>,
    /// A field selector, e.g. `spec.nodeName=${env:NODE_NAME}` for a node-local DaemonSet.
    #[serde(default)]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachMetadata {
    /// Add `__meta_kubernetes_node_*` labels of the target's node (pod, endpoints roles).
    #[serde(default)]
    pub node: bool,
}

with_http_client! {
    /// One `kubernetes_sd_configs` entry.
    #[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct KubernetesSdConfig {
        /// What becomes a target: `pod`, `service`, `endpoints`, `endpointslice`, `node` or
        /// `ingress`.
        pub role: Role,
        /// The API server's URL; without it, the in-cluster config or `kubeconfig_file`.
        #[serde(default)]
        pub api_server: Option<String>,
        /// A kubeconfig to reach the API server with.
        #[serde(default)]
        pub kubeconfig_file: Option<String>,
        /// Which namespaces to watch (default: all).
        #[serde(default)]
        pub namespaces: NamespaceDiscovery,
        /// Label and field selectors the API server applies before anything is sent.
        #[serde(default)]
        pub selectors: Vec<SelectorConfig>,
        /// Node labels to add to pod targets (`node: true`).
        #[serde(default)]
        pub attach_metadata: AttachMetadata,
    }
}

impl KubernetesSdConfig {
    fn has_http_client_config(&self) -> bool {
        self.http_client().is_set()
    }

    /// Prometheus's checks on the combination of keys.
    pub fn validate(&self) -> Result<(), String> {
        if self.api_server.is_some() && self.kubeconfig_file.is_some() {
            return Err("cannot use 'kubeconfig_file' and 'api_server' simultaneously".into());
        }
        if self.kubeconfig_file.is_some() && self.has_http_client_config() {
            return Err(
                "cannot use a custom HTTP client configuration together with 'kubeconfig_file'"
                    .into(),
            );
        }
        if self.api_server.is_none() && self.has_http_client_config() {
            return Err(
                "to use custom HTTP client configuration please provide the 'api_server' URL explicitly"
                    .into(),
            );
        }
        if self.namespaces.own_namespace
            && (self.api_server.is_some() || self.kubeconfig_file.is_some())
        {
            return Err(
                "'namespaces.own_namespace' works only in-cluster, not with 'api_server' or 'kubeconfig_file'"
                    .into(),
            );
        }
        if let Some(url) = &self.api_server {
            url.parse::<http::Uri>()
                .ok()
                .filter(|u| u.scheme().is_some() && u.host().is_some())
                .ok_or_else(|| format!("api_server {url:?} is not an absolute URL"))?;
        }
        let mut seen = Vec::new();
        for sel in &self.selectors {
            if seen.contains(&sel.role) {
                return Err(format!("duplicated selector role: {}", sel.role.name()));
            }
            seen.push(sel.role);
            let allowed = self.role.allowed_selectors();
            if !allowed.contains(&sel.role) {
                let names: Vec<&str> = allowed.iter().map(|r| r.name()).collect();
                return Err(format!(
                    "{} role supports only {} selectors",
                    self.role.name(),
                    names.join(", ")
                ));
            }
            for (what, v) in [("label", &sel.label), ("field", &sel.field)] {
                if let Some(v) = v {
                    check_selector(v).map_err(|e| format!("{what} selector {v:?}: {e}"))?;
                }
            }
        }
        Ok(())
    }
}

/// A cheap syntax check so a typo fails at load time rather than as a 400 from the API server.
fn check_selector(sel: &str) -> Result<(), String> {
    let mut depth = 0i32;
    for c in sel.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return Err("unbalanced parentheses".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    if sel.contains(",,") || sel.starts_with(',') || sel.ends_with(',') {
        return Err("empty requirement".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> KubernetesSdConfig {
        serde_saphyr::from_str(yaml).expect("parses")
    }

    #[test]
    fn prometheus_combination_rules() {
        assert!(cfg("role: pod\n").validate().is_ok());
        let e = cfg("role: pod\napi_server: https://k:6443\nkubeconfig_file: /k\n")
            .validate()
            .expect_err("exclusive");
        assert!(e.contains("simultaneously"), "{e}");
        let e = cfg("role: pod\nbearer_token: x\n")
            .validate()
            .expect_err("needs api_server");
        assert!(e.contains("api_server"), "{e}");
        let e = cfg("role: service\nselectors: [{role: pod, label: a=b}]\n")
            .validate()
            .expect_err("wrong selector role");
        assert_eq!(e, "service role supports only service selectors");
        let e = cfg("role: pod\nselectors: [{role: pod, field: a=b}, {role: pod, label: x}]\n")
            .validate()
            .expect_err("duplicate");
        assert!(e.contains("duplicated selector role: pod"), "{e}");
        assert!(
            serde_saphyr::from_str::<KubernetesSdConfig>("role: ingres\n").is_err(),
            "unknown roles are refused"
        );
    }
}
