//! The Kubernetes API side of discovery: client config (kubeconfig, `api_server`, or the
//! in-cluster service account), one kube-runtime watcher per resource and namespace, and the
//! rebuild of a role's target groups from the local copy after each burst of changes.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

use super::targets::{self, object_key, Objects};
use super::{KubernetesSdConfig, Role};
use crate::receivers::prometheus::discovery::{TargetGroup, Update};

/// Where Kubernetes mounts a pod's service-account token, CA bundle and namespace.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The service-account directory: `MESHMETRICS_SERVICE_ACCOUNT_DIR` overrides the standard
/// mount (for projected tokens mounted elsewhere).
fn service_account_dir() -> std::path::PathBuf {
    std::env::var_os("MESHMETRICS_SERVICE_ACCOUNT_DIR")
        .map(Into::into)
        .unwrap_or_else(|| SERVICE_ACCOUNT_DIR.into())
}

/// The in-cluster client config, as client-go builds it: `https://$KUBERNETES_SERVICE_HOST:
/// $KUBERNETES_SERVICE_PORT`, verified with the service account's CA, authenticated with its
/// token (re-read as it rotates).
fn in_cluster_config() -> Result<kube::Config, String> {
    let var = |k: &str| {
        std::env::var(k).map_err(|_| {
            format!("{k} is not set: not running in a cluster; set api_server or kubeconfig_file")
        })
    };
    let host = var("KUBERNETES_SERVICE_HOST")?;
    let port = var("KUBERNETES_SERVICE_PORT")?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("https://{host}:{port}");
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("in-cluster API server {url:?}: {e}"))?;
    let dir = service_account_dir();
    let ca = dir.join("ca.crt");
    let pem = std::fs::read(&ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let certs: Result<Vec<Vec<u8>>, _> = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|c| c.map(|c| c.to_vec()))
        .collect();
    let mut kc = kube::Config::new(uri);
    kc.root_cert = Some(certs.map_err(|e| format!("{}: {e}", ca.display()))?);
    kc.auth_info.token_file = Some(dir.join("token").display().to_string());
    if let Ok(ns) = std::fs::read_to_string(dir.join("namespace")) {
        kc.default_namespace = ns.trim().to_string();
    }
    Ok(kc)
}

/// The label and field selectors of `role`'s watches.
fn watch_config(cfg: &KubernetesSdConfig, role: Role) -> watcher::Config {
    let mut wc = watcher::Config::default();
    if let Some(sel) = cfg.selectors.iter().find(|s| s.role == role) {
        if let Some(l) = sel.label.as_deref().filter(|l| !l.is_empty()) {
            wc = wc.labels(l);
        }
        if let Some(f) = sel.field.as_deref().filter(|f| !f.is_empty()) {
            wc = wc.fields(f);
        }
    }
    wc
}

/// Changes arriving within this window after the first one are applied together.
const SETTLE: Duration = Duration::from_millis(100);

/// The API client config: kubeconfig file, explicit `api_server` with Prometheus's HTTP client
/// settings, or the in-cluster service account.
async fn client_config(cfg: &KubernetesSdConfig) -> Result<kube::Config, String> {
    if let Some(path) = &cfg.kubeconfig_file {
        let kc = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| format!("kubeconfig_file {path}: {e}"))?;
        return kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| format!("kubeconfig_file {path}: {e}"));
    }
    let Some(url) = &cfg.api_server else {
        return in_cluster_config();
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("api_server {url:?}: {e}"))?;
    let mut kc = kube::Config::new(uri);
    let tls = &cfg.tls_config;
    kc.accept_invalid_certs = tls.insecure_skip_verify;
    kc.tls_server_name = tls.server_name.clone();
    if let Some(ca) = &tls.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("tls_config.ca_file {ca}: {e}"))?;
        let certs: Result<Vec<Vec<u8>>, _> = rustls_pemfile::certs(&mut pem.as_slice())
            .map(|c| c.map(|c| c.to_vec()))
            .collect();
        kc.root_cert = Some(certs.map_err(|e| format!("tls_config.ca_file {ca}: {e}"))?);
    }
    kc.auth_info.client_certificate = tls.cert_file.clone();
    kc.auth_info.client_key = tls.key_file.clone();
    // A lone bearer_token_file goes to the client as a file, re-read as the token rotates
    // (as Prometheus does); everything else is resolved like a scrape job's credentials.
    let rotating = cfg.authorization.is_none()
        && cfg.bearer_token.is_none()
        && cfg.bearer_token_file.is_some();
    let mut http = cfg.http_client();
    if rotating {
        http.bearer_token_file = None;
    }
    let (credentials, problems) = http.credentials();
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    if rotating {
        kc.auth_info.token_file = cfg.bearer_token_file.clone();
    }
    if let Some((_, token)) = credentials.authorization {
        kc.auth_info.token = Some(token.expose().to_string().into());
    }
    if let Some((user, password)) = credentials.basic_auth {
        kc.auth_info.username = Some(user);
        kc.auth_info.password = Some(password.expose().to_string().into());
    }
    Ok(kc)
}

/// Which namespaces to watch; `None` means all.
fn namespaces(cfg: &KubernetesSdConfig) -> Result<Option<Vec<String>>, String> {
    let mut names = cfg.namespaces.names.clone();
    if cfg.namespaces.own_namespace {
        let file = service_account_dir().join("namespace");
        let own = std::fs::read_to_string(&file)
            .map_err(|e| format!("namespaces.own_namespace: reading {}: {e}", file.display()))?;
        names.push(own.trim().to_string());
    }
    names.sort();
    names.dedup();
    Ok(if names.is_empty() { None } else { Some(names) })
}

/// An object as the watchers deliver it.
#[derive(Clone)]
enum Object {
    Pod(Box<Pod>),
    Service(Box<Service>),
    Endpoints(Box<Endpoints>),
    EndpointSlice(Box<EndpointSlice>),
    Node(Box<Node>),
}

impl Object {
    fn key(&self) -> String {
        match self {
            Object::Pod(o) => object_key(&o.metadata),
            Object::Service(o) => object_key(&o.metadata),
            Object::Endpoints(o) => object_key(&o.metadata),
            Object::EndpointSlice(o) => object_key(&o.metadata),
            Object::Node(o) => object_key(&o.metadata),
        }
    }
}

enum Change {
    /// A relist began: buffer until `Listed`, then replace the stream's objects at once.
    Relist,
    Listed(Object),
    ListDone,
    Applied(Object),
    Deleted(Object),
}

/// The objects of one watch stream (one resource kind in one namespace, or cluster-wide).
#[derive(Default)]
struct Stream {
    objects: BTreeMap<String, Object>,
    relist: Option<BTreeMap<String, Object>>,
    synced: bool,
}

fn spawn_watch<K>(
    api: Api<K>,
    wc: watcher::Config,
    id: usize,
    wrap: fn(K) -> Object,
    tx: mpsc::Sender<(usize, Change)>,
    tasks: &mut tokio::task::JoinSet<()>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&()).to_string();
    tasks.spawn(async move {
        let mut stream = watcher(api, wc).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            let change = match ev {
                Ok(Event::Init) => Change::Relist,
                Ok(Event::InitApply(o)) => Change::Listed(wrap(o)),
                Ok(Event::InitDone) => Change::ListDone,
                Ok(Event::Apply(o)) => Change::Applied(wrap(o)),
                Ok(Event::Delete(o)) => Change::Deleted(wrap(o)),
                Err(e) => {
                    // The watcher backs off and resumes (relisting after 410 Gone); the
                    // objects seen so far stay in place, so no target is lost meanwhile.
                    tracing::warn!(kind = %kind, error = %e, "kubernetes_sd: watch failed; retrying");
                    continue;
                }
            };
            if tx.send((id, change)).await.is_err() {
                return;
            }
        }
    });
}

/// Runs one `kubernetes_sd_configs` entry until the receiver stops.
pub async fn run(cfg: KubernetesSdConfig, provider: usize, tx: mpsc::Sender<Update>) {
    let client = match client_config(&cfg).await.and_then(|c| {
        Client::try_from(c).map_err(|e| format!("building the Kubernetes client: {e}"))
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(role = cfg.role.name(), error = %e, "kubernetes_sd: cannot start");
            return;
        }
    };
    let ns = match namespaces(&cfg) {
        Ok(ns) => ns,
        Err(e) => {
            tracing::error!(error = %e, "kubernetes_sd: cannot start");
            return;
        }
    };
    let (ctx, mut crx) = mpsc::channel::<(usize, Change)>(1024);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n_streams = 0usize;
    let needs: &[Role] = match cfg.role {
        Role::Pod if cfg.attach_metadata.node => &[Role::Pod, Role::Node],
        Role::Pod => &[Role::Pod],
        Role::Service => &[Role::Service],
        Role::Endpoints if cfg.attach_metadata.node => {
            &[Role::Endpoints, Role::Service, Role::Pod, Role::Node]
        }
        Role::Endpoints => &[Role::Endpoints, Role::Service, Role::Pod],
        Role::EndpointSlice if cfg.attach_metadata.node => {
            &[Role::EndpointSlice, Role::Service, Role::Pod, Role::Node]
        }
        Role::EndpointSlice => &[Role::EndpointSlice, Role::Service, Role::Pod],
        Role::Node => &[Role::Node],
    };
    for &kind in needs {
        // Nodes are cluster-scoped; everything else is watched per namespace.
        let scopes: Vec<Option<&str>> = match (&ns, kind) {
            (Some(list), k) if k != Role::Node => list.iter().map(|n| Some(n.as_str())).collect(),
            _ => vec![None],
        };
        for scope in scopes {
            let id = n_streams;
            n_streams += 1;
            let wc = watch_config(&cfg, kind);
            let c = client.clone();
            let t = ctx.clone();
            macro_rules! watch {
                ($ty:ty, $variant:ident) => {{
                    let api: Api<$ty> = match scope {
                        Some(n) => Api::namespaced(c, n),
                        None => Api::all(c),
                    };
                    spawn_watch(
                        api,
                        wc,
                        id,
                        |o| Object::$variant(Box::new(o)),
                        t,
                        &mut tasks,
                    );
                }};
            }
            match kind {
                Role::Pod => watch!(Pod, Pod),
                Role::Service => watch!(Service, Service),
                Role::Endpoints => watch!(Endpoints, Endpoints),
                Role::EndpointSlice => watch!(EndpointSlice, EndpointSlice),
                Role::Node => {
                    let api: Api<Node> = Api::all(c);
                    spawn_watch(api, wc, id, |o| Object::Node(Box::new(o)), t, &mut tasks);
                }
            }
        }
    }
    drop(ctx);
    let mut streams: Vec<Stream> = (0..n_streams).map(|_| Stream::default()).collect();
    let mut sent: Option<Vec<TargetGroup>> = None;
    while let Some(first) = crx.recv().await {
        apply(&mut streams, first);
        // Take in the rest of the burst so one relist of 1,000 pods is one rebuild.
        let deadline = tokio::time::Instant::now() + SETTLE;
        while let Ok(Some(next)) = tokio::time::timeout_at(deadline, crx.recv()).await {
            apply(&mut streams, next);
        }
        // Like Prometheus, report nothing until every watch has listed once.
        if !streams.iter().all(|s| s.synced) {
            continue;
        }
        let groups = build_groups(&cfg, &streams);
        if !crate::receivers::prometheus::discovery::send_if_changed(
            &tx, provider, groups, &mut sent,
        )
        .await
        {
            break;
        }
    }
    tasks.shutdown().await;
}

fn apply(streams: &mut [Stream], (id, change): (usize, Change)) {
    let Some(s) = streams.get_mut(id) else {
        return;
    };
    match change {
        Change::Relist => s.relist = Some(BTreeMap::new()),
        Change::Listed(o) => {
            s.relist
                .get_or_insert_with(BTreeMap::new)
                .insert(o.key(), o);
        }
        Change::ListDone => {
            s.objects = s.relist.take().unwrap_or_default();
            s.synced = true;
        }
        Change::Applied(o) => {
            s.objects.insert(o.key(), o);
        }
        Change::Deleted(o) => {
            s.objects.remove(&o.key());
        }
    }
}

fn build_groups(cfg: &KubernetesSdConfig, streams: &[Stream]) -> Vec<TargetGroup> {
    let mut objects = Objects {
        attach_node: cfg.attach_metadata.node,
        ..Default::default()
    };
    let all = || streams.iter().flat_map(|s| s.objects.iter());
    for (key, o) in all() {
        match o {
            Object::Pod(p) => {
                objects.pods.insert(key.clone(), p);
            }
            Object::Service(svc) => {
                objects.services.insert(key.clone(), svc);
            }
            Object::Node(n) => {
                objects.nodes.insert(key.clone(), n);
            }
            _ => {}
        }
    }
    let mut groups: Vec<TargetGroup> = Vec::new();
    for (_, o) in all() {
        let g = match (cfg.role, o) {
            (Role::Pod, Object::Pod(p)) => Some(targets::pod_group(p, &objects)),
            (Role::Service, Object::Service(s)) => Some(targets::service_group(s)),
            (Role::Node, Object::Node(n)) => targets::node_group(n),
            (Role::Endpoints, Object::Endpoints(e)) => Some(targets::endpoints_group(e, &objects)),
            (Role::EndpointSlice, Object::EndpointSlice(e)) => {
                Some(targets::endpointslice_group(e, &objects))
            }
            _ => None,
        };
        groups.extend(g.filter(|g| !g.targets.is_empty()));
    }
    groups.sort_by(|a, b| a.source.cmp(&b.source));
    groups
}
