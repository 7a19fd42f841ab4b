//! A Kubernetes API server for tests: the real list/watch protocol over HTTP for pods,
//! services, endpoints, endpointslices and nodes — resourceVersions, label and field
//! selectors, list pagination, chunked watch streams with ADDED/MODIFIED/DELETED/BOOKMARK
//! events, and `410 Gone` (an ERROR event carrying an `Expired` Status) for a watch that
//! resumes from a compacted resourceVersion. Objects are plain JSON as `kubectl get -o json`
//! shows them.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Default)]
struct Store {
    rv: u64,
    /// (plural, namespace/name) → object.
    objects: BTreeMap<(String, String), Value>,
    /// Every change: (resourceVersion, plural, event type, object).
    history: Vec<(u64, String, &'static str, Value)>,
    /// Watches asking to resume from below this get 410 Gone.
    compacted: u64,
    requests: Vec<String>,
    watches_served: usize,
}

#[derive(Clone)]
struct Shared {
    store: Arc<Mutex<Store>>,
    /// Bumped on every change so open watches wake up.
    changed: watch::Sender<u64>,
    /// Bumped to cut every open watch connection.
    cut: watch::Sender<u64>,
    /// When set, the bearer token every request must carry.
    token: Option<String>,
}

pub struct KubeApi {
    pub addr: SocketAddr,
    shared: Shared,
    scheme: &'static str,
}

fn plural_of(kind: &str) -> &'static str {
    match kind {
        "Pod" => "pods",
        "Service" => "services",
        "Endpoints" => "endpoints",
        "EndpointSlice" => "endpointslices",
        "Node" => "nodes",
        "Secret" => "secrets",
        "Canary" => "canaries",
        "MetricTemplate" => "metrictemplates",
        other => panic!("test API server does not serve kind {other}"),
    }
}

fn list_kind(plural: &str) -> (&'static str, &'static str) {
    match plural {
        "pods" => ("v1", "PodList"),
        "services" => ("v1", "ServiceList"),
        "endpoints" => ("v1", "EndpointsList"),
        "endpointslices" => ("discovery.k8s.io/v1", "EndpointSliceList"),
        "nodes" => ("v1", "NodeList"),
        "secrets" => ("v1", "SecretList"),
        "canaries" => ("flagger.app/v1beta1", "CanaryList"),
        "metrictemplates" => ("flagger.app/v1beta1", "MetricTemplateList"),
        _ => ("v1", "List"),
    }
}

fn kind_of(plural: &str) -> (&'static str, &'static str) {
    match plural {
        "pods" => ("v1", "Pod"),
        "services" => ("v1", "Service"),
        "endpoints" => ("v1", "Endpoints"),
        "endpointslices" => ("discovery.k8s.io/v1", "EndpointSlice"),
        "secrets" => ("v1", "Secret"),
        "canaries" => ("flagger.app/v1beta1", "Canary"),
        "metrictemplates" => ("flagger.app/v1beta1", "MetricTemplate"),
        _ => ("v1", "Node"),
    }
}

fn key_of(obj: &Value) -> String {
    let m = &obj["metadata"];
    match m["namespace"].as_str() {
        Some(ns) => format!("{ns}/{}", m["name"].as_str().unwrap_or("")),
        None => m["name"].as_str().unwrap_or("").to_string(),
    }
}

/// Splits a selector on commas outside parentheses.
fn requirements(sel: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in sel.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

fn label_matches(obj: &Value, sel: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    requirements(sel).iter().all(|r| {
        let r = r.trim();
        if let Some((k, v)) = r.split_once("!=") {
            return get(k.trim()) != Some(v.trim());
        }
        if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
            return get(k.trim()) == Some(v.trim());
        }
        let set = |s: &str| -> Vec<String> {
            s.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|x| x.trim().to_string())
                .collect()
        };
        if let Some((k, vs)) = r.split_once(" notin ") {
            return !get(k.trim()).is_some_and(|v| set(vs).iter().any(|x| x == v));
        }
        if let Some((k, vs)) = r.split_once(" in ") {
            return get(k.trim()).is_some_and(|v| set(vs).iter().any(|x| x == v));
        }
        if let Some(k) = r.strip_prefix('!') {
            return get(k.trim()).is_none();
        }
        get(r).is_some()
    })
}

fn field_matches(obj: &Value, sel: &str) -> bool {
    requirements(sel).iter().all(|r| {
        let (path, want, negate) = if let Some((p, v)) = r.split_once("!=") {
            (p, v, true)
        } else if let Some((p, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
            (p, v, false)
        } else {
            panic!("test API server: unsupported field selector {r:?}")
        };
        let mut cur = obj;
        for part in path.trim().split('.') {
            cur = &cur[part];
        }
        let have = cur.as_str().unwrap_or("");
        (have == want.trim()) != negate
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

impl KubeApi {
    fn shared(token: Option<&str>) -> Shared {
        Shared {
            store: Arc::new(Mutex::new(Store {
                rv: 100,
                ..Default::default()
            })),
            changed: watch::channel(0).0,
            cut: watch::channel(0).0,
            token: token.map(str::to_string),
        }
    }

    /// Plain HTTP, no authentication.
    pub async fn start() -> KubeApi {
        let shared = Self::shared(None);
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let addr = super::serve_http(app).await;
        KubeApi {
            addr,
            shared,
            scheme: "http",
        }
    }

    /// HTTPS with the test PKI, requiring `Authorization: Bearer <token>` like a real API
    /// server does for a service account.
    pub async fn start_tls(pki: &super::TestPki, token: &str) -> KubeApi {
        let shared = Self::shared(Some(token));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let addr = super::serve_tls(app, pki).await;
        KubeApi {
            addr,
            shared,
            scheme: "https",
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    fn record(&self, ty: &'static str, mut obj: Value) -> Value {
        let mut st = self.shared.store.lock().expect("lock");
        st.rv += 1;
        let rv = st.rv;
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let plural = plural_of(&kind).to_string();
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("object has metadata");
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        if !meta.contains_key("uid") {
            meta.insert("uid".into(), json!(format!("uid-{rv}")));
        }
        meta.entry("creationTimestamp")
            .or_insert(json!("2026-11-27T07:00:00Z"));
        let key = (plural.clone(), key_of(&obj));
        if ty == "DELETED" {
            st.objects.remove(&key);
        } else {
            st.objects.insert(key, obj.clone());
        }
        st.history.push((rv, plural, ty, obj.clone()));
        drop(st);
        self.shared.changed.send_modify(|v| *v += 1);
        obj
    }

    /// Adds an object (its `kind` decides the resource).
    pub fn create(&self, obj: Value) -> Value {
        self.record("ADDED", obj)
    }

    /// Replaces an existing object.
    pub fn update(&self, obj: Value) -> Value {
        self.record("MODIFIED", obj)
    }

    /// Deletes `kind` `namespace/name` (or `name` for nodes).
    pub fn delete(&self, kind: &str, key: &str) {
        let obj = self
            .shared
            .store
            .lock()
            .expect("lock")
            .objects
            .get(&(plural_of(kind).to_string(), key.to_string()))
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {key}"));
        self.record("DELETED", obj);
    }

    /// Forgets the event history (as etcd compaction does) and cuts every watch: a client
    /// resuming from its last resourceVersion gets 410 Gone and must relist.
    pub fn compact_and_cut(&self) {
        {
            let mut st = self.shared.store.lock().expect("lock");
            st.compacted = st.rv + 1;
            st.history.clear();
        }
        self.cut_watches();
    }

    /// Drops every open watch connection mid-stream.
    pub fn cut_watches(&self) {
        self.shared.cut.send_modify(|v| *v += 1);
    }

    /// Every request line served so far (path and query).
    pub fn requests(&self) -> Vec<String> {
        self.shared.store.lock().expect("lock").requests.clone()
    }

    pub fn watches_served(&self) -> usize {
        self.shared.store.lock().expect("lock").watches_served
    }
}

/// `/api/v1[/namespaces/<ns>]/<plural>[/<name>]`, the same under
/// `/apis/discovery.k8s.io/v1/` and `/apis/flagger.app/v1beta1/`.
fn route(path: &str) -> Option<(Option<String>, String, Option<String>)> {
    let rest = path
        .strip_prefix("/api/v1/")
        .or_else(|| path.strip_prefix("/apis/discovery.k8s.io/v1/"))
        .or_else(|| path.strip_prefix("/apis/flagger.app/v1beta1/"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [plural] => Some((None, plural.to_string(), None)),
        ["namespaces", ns, plural] => Some((Some(ns.to_string()), plural.to_string(), None)),
        ["namespaces", ns, plural, name] => Some((
            Some(ns.to_string()),
            plural.to_string(),
            Some(name.to_string()),
        )),
        _ => None,
    }
}

async fn handle(
    State(shared): State<Shared>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    shared
        .store
        .lock()
        .expect("lock")
        .requests
        .push(uri.to_string());
    if let Some(token) = &shared.token {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given != Some(format!("Bearer {token}").as_str()) {
            let body = status(401, "Unauthorized", "Unauthorized");
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
    }
    let Some((ns, plural, name)) = route(uri.path()) else {
        let body = status(
            404,
            "NotFound",
            &format!("the server could not find {}", uri),
        );
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    };
    if let Some(name) = name {
        let key = format!("{}/{name}", ns.as_deref().unwrap_or(""));
        let st = shared.store.lock().expect("lock");
        return match st.objects.get(&(plural.clone(), key)) {
            Some(o) => axum::Json(o.clone()).into_response(),
            None => {
                let body = status(404, "NotFound", &format!("{plural} \"{name}\" not found"));
                (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
            }
        };
    }
    let matches = {
        let ns = ns.clone();
        let labels = q.get("labelSelector").cloned().unwrap_or_default();
        let fields = q.get("fieldSelector").cloned().unwrap_or_default();
        move |obj: &Value| {
            ns.as_deref()
                .is_none_or(|n| obj["metadata"]["namespace"].as_str() == Some(n))
                && (labels.is_empty() || label_matches(obj, &labels))
                && (fields.is_empty() || field_matches(obj, &fields))
        }
    };
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch_response(shared, plural, q, matches).await;
    }
    let st = shared.store.lock().expect("lock");
    let mut items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((p, _), o)| *p == plural && matches(o))
        .map(|(_, o)| {
            // List items carry neither kind nor apiVersion, as the real server sends them.
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let offset: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let mut meta = json!({"resourceVersion": st.rv.to_string()});
    items = items.into_iter().skip(offset).collect();
    if items.len() > limit {
        items.truncate(limit);
        meta["continue"] = json!((offset + limit).to_string());
    }
    let (api_version, kind) = list_kind(&plural);
    axum::Json(json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "items": items}))
        .into_response()
}

async fn watch_response(
    shared: Shared,
    plural: String,
    q: HashMap<String, String>,
    matches: impl Fn(&Value) -> bool + Send + 'static,
) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300));
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    let mut changed = shared.changed.subscribe();
    let mut cut = shared.cut.subscribe();
    shared.store.lock().expect("lock").watches_served += 1;
    tokio::spawn(async move {
        let line = |v: Value| {
            let mut b = serde_json::to_vec(&v).expect("json");
            b.push(b'\n');
            Ok(b)
        };
        let compacted = shared.store.lock().expect("lock").compacted;
        if from != 0 && from < compacted {
            let msg = format!("too old resource version: {from} ({compacted})");
            let _ = tx
                .send(line(
                    json!({"type": "ERROR", "object": status(410, "Expired", &msg)}),
                ))
                .await;
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sent_up_to = from;
        let (api_version, kind) = kind_of(&plural);
        loop {
            // A cut takes effect before anything recorded after it is sent.
            if cut.has_changed().unwrap_or(true) {
                return;
            }
            let (events, rv) = {
                let st = shared.store.lock().expect("lock");
                let ev: Vec<(u64, &'static str, Value)> = st
                    .history
                    .iter()
                    .filter(|(rv, p, _, o)| *rv > sent_up_to && *p == plural && matches(o))
                    .map(|(rv, _, t, o)| (*rv, *t, o.clone()))
                    .collect();
                (ev, st.rv)
            };
            for (rv, ty, obj) in events {
                if tx
                    .send(line(json!({"type": ty, "object": obj})))
                    .await
                    .is_err()
                {
                    return;
                }
                sent_up_to = sent_up_to.max(rv);
            }
            // Everything up to the snapshot was considered; non-matching events are skipped.
            sent_up_to = sent_up_to.max(rv);
            tokio::select! {
                biased;
                _ = cut.changed() => return,
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tokio::time::sleep(Duration::from_millis(500)), if bookmarks => {
                    let bm = json!({"type": "BOOKMARK", "object": {
                        "kind": kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": sent_up_to.to_string()}}});
                    if tx.send(line(bm)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .expect("response")
}
