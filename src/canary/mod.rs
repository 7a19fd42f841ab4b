//! `meshmetrics canary check`: what Flagger would conclude from a Canary's analysis right
//! now, and why. It reads the Canary and its MetricTemplates (and their Secrets) from
//! manifests, renders each metric's query as Flagger does (`template.rs`), asks the provider's
//! address (any Prometheus-compatible API, or `--address` for all) with Flagger's request and
//! reading rules, compares the value with the metric's thresholds as Flagger's scheduler
//! does, and prints one row per metric with the answer's warnings (which say why a value is
//! missing: see `promql::explain`).

#[cfg(feature = "kubernetes")]
mod cluster;
pub mod template;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

use template::{collapse_whitespace, render, Model};

/// Flagger's builtin Istio checks (its `observers/istio.go`), asked of its metrics server.
const BUILTIN_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}",
				response_code!~"5.*"
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}"
			}[{{ interval }}]
		)
	) 
	* 100"#;

const BUILTIN_DURATION: &str = r#"
	histogram_quantile(
		0.99,
		sum(
			rate(
				istio_request_duration_milliseconds_bucket{
					reporter="destination",
					destination_workload_namespace="{{ namespace }}",
					destination_workload=~"{{ target }}"
				}[{{ interval }}]
			)
		) by (le)
	)"#;

/// Flagger's default metric interval.
const METRIC_INTERVAL: &str = "1m";
/// Flagger's Prometheus client gives up after this.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the command was asked.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Manifest files or directories; `-` reads standard input. None: read the cluster
    /// through the Kubernetes API (kubeconfig or in-cluster).
    pub files: Vec<String>,
    /// With the cluster: only Canaries of this namespace.
    pub namespace: Option<String>,
    /// Ask every query of this address instead of the templates' own (and the builtin checks
    /// and inline queries, which Flagger asks of its `-metrics-server`).
    pub address: Option<String>,
    /// A bearer token (first line of the file) for every request, instead of the Secrets.
    pub token_file: Option<String>,
    /// Only the Canary of this name.
    pub canary: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Error,
}

/// One metric of one canary, checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub metric: String,
    pub query: Option<String>,
    pub address: Option<String>,
    pub value: Option<f64>,
    pub threshold: String,
    pub verdict: Verdict,
    /// Why it failed or could not be checked, in Flagger's words where it has some.
    pub reason: Option<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CanaryReport {
    pub namespace: String,
    pub name: String,
    pub metrics: Vec<Row>,
    /// What Flagger would do this iteration.
    pub flagger: String,
}

impl CanaryReport {
    pub fn passed(&self) -> bool {
        self.metrics.iter().all(|m| m.verdict == Verdict::Pass)
    }
}

#[derive(Default)]
struct Manifests {
    canaries: Vec<Value>,
    templates: BTreeMap<(String, String), Value>,
    secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
}

fn meta(obj: &Value, key: &str) -> String {
    obj["metadata"][key].as_str().unwrap_or("").to_string()
}

fn namespace_of(obj: &Value) -> String {
    match meta(obj, "namespace") {
        ns if ns.is_empty() => "default".into(),
        ns => ns,
    }
}

fn read_source(path: &str) -> Result<Vec<(String, String)>, String> {
    if path == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| format!("reading standard input: {e}"))?;
        return Ok(vec![("<stdin>".into(), text)]);
    }
    let p = std::path::Path::new(path);
    if p.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(p)
            .map_err(|e| format!("{path}: {e}"))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|f| {
                f.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            out.push((f.display().to_string(), text));
        }
        return Ok(out);
    }
    let text = std::fs::read_to_string(p).map_err(|e| format!("{path}: {e}"))?;
    Ok(vec![(path.to_string(), text)])
}

fn decode_secret(obj: &Value) -> BTreeMap<String, String> {
    use base64::Engine;
    let mut out = BTreeMap::new();
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        if let Some(bytes) = v
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        {
            out.insert(k.clone(), String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    for (k, v) in obj["stringData"].as_object().into_iter().flatten() {
        if let Some(s) = v.as_str() {
            out.insert(k.clone(), s.to_string());
        }
    }
    out
}

/// Every document of the files (`-`: standard input; a directory: its YAML and JSON files).
fn read_files(files: &[String]) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for path in files {
        for (name, text) in read_source(path)? {
            let docs: Vec<Value> =
                serde_saphyr::from_multiple(&text).map_err(|e| format!("{name}: {e}"))?;
            out.extend(docs);
        }
    }
    Ok(out)
}

impl Manifests {
    /// Canaries, MetricTemplates and Secrets among `docs` (`List`s opened).
    fn from_docs(docs: Vec<Value>) -> Manifests {
        let mut m = Manifests::default();
        let mut pending = docs;
        while let Some(doc) = pending.pop() {
            let key = (namespace_of(&doc), meta(&doc, "name"));
            match doc["kind"].as_str() {
                Some("Canary") => m.canaries.push(doc),
                Some("MetricTemplate") => {
                    m.templates.insert(key, doc);
                }
                Some("Secret") => {
                    m.secrets.insert(key, decode_secret(&doc));
                }
                Some("List") => {
                    pending.extend(doc["items"].as_array().into_iter().flatten().cloned());
                }
                _ => {}
            }
        }
        // In the order written, as Flagger lists them.
        m.canaries.reverse();
        m
    }
}

/// How a metric's value is judged: Flagger's scheduler has three rules.
#[derive(Clone, Copy)]
enum Rule {
    SuccessRate,
    Duration,
    Custom,
}

struct Credentials {
    token: Option<String>,
    basic: Option<(String, String)>,
}

/// A metric's plan: what to ask where, and how to judge it.
struct Plan {
    query: String,
    address: String,
    credentials: Credentials,
    rule: Rule,
}

fn threshold_text(metric: &Value, rule: Rule) -> String {
    let range = &metric["thresholdRange"];
    let mut parts = Vec::new();
    if let Some(min) = range["min"].as_f64() {
        parts.push(format!("min {min}"));
    }
    if let Some(max) = range["max"].as_f64() {
        parts.push(format!("max {max}"));
    }
    if parts.is_empty() {
        let t = metric["threshold"].as_f64().unwrap_or(0.0);
        parts.push(match rule {
            Rule::SuccessRate => format!("min {t} (threshold)"),
            _ => format!("max {t} (threshold)"),
        });
    }
    parts.join(", ")
}

/// Flagger's comparison (its `scheduler_metrics.go`): `Some(reason)` when the check fails.
fn judge(metric: &Value, rule: Rule, value: f64) -> Option<String> {
    let range = &metric["thresholdRange"];
    let (min, max) = (range["min"].as_f64(), range["max"].as_f64());
    let has_range = metric.get("thresholdRange").is_some_and(|r| !r.is_null());
    let threshold = metric["threshold"].as_f64().unwrap_or(0.0);
    match rule {
        Rule::Duration => {
            // Read as whole milliseconds, as Flagger turns it into a Go Duration.
            let ms = value.trunc();
            if has_range {
                if let Some(m) = min.filter(|m| ms < m.trunc()) {
                    return Some(format!("request duration {ms}ms < {}ms", m.trunc()));
                }
                if let Some(m) = max.filter(|m| ms > m.trunc()) {
                    return Some(format!("request duration {ms}ms > {}ms", m.trunc()));
                }
                None
            } else {
                (ms > threshold.trunc())
                    .then(|| format!("request duration {ms}ms > {}ms", threshold.trunc()))
            }
        }
        Rule::SuccessRate | Rule::Custom => {
            if has_range {
                if let Some(m) = min.filter(|m| value < *m) {
                    return Some(format!("{value:.2} < {m}"));
                }
                if let Some(m) = max.filter(|m| value > *m) {
                    return Some(format!("{value:.2} > {m}"));
                }
                None
            } else {
                match rule {
                    Rule::SuccessRate => (threshold > value)
                        .then(|| format!("success rate {value:.2}% < {threshold}%")),
                    _ => (value > threshold).then(|| format!("{value:.2} > {threshold}")),
                }
            }
        }
    }
}

/// Flagger's reading of a query answer (its Prometheus provider's `RunQuery`).
pub fn read_answer(status: u16, body: &str) -> Result<f64, String> {
    if status >= 400 {
        return Err(format!("error response: Status {status}: {body}"));
    }
    let v: Value = serde_json::from_str(body)
        .map_err(|e| format!("error unmarshaling result: {e}, '{body}'"))?;
    let mut value = None;
    for r in v["data"]["result"].as_array().into_iter().flatten() {
        // A scalar answer's result is `[time, "value"]`: its elements are no objects, and
        // Go's decoder refuses them.
        let Some(obj) = r.as_object() else {
            return Err(format!(
                "error unmarshaling result: cannot unmarshal {r} into a series, '{body}'"
            ));
        };
        if obj.contains_key("values") {
            return Err("query returned multiple values".into());
        }
        if let Some(Value::String(s)) = obj.get("value").and_then(|x| x.get(1)) {
            value = Some(s.parse::<f64>().map_err(|e| e.to_string())?);
        }
    }
    match value {
        Some(f) if !f.is_nan() => Ok(f),
        _ => Err("no values found".into()),
    }
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Asks `query` the way Flagger's client does: (status, body).
async fn ask(client: &HttpClient, plan: &Plan) -> Result<(u16, String), String> {
    let encoded = serde_urlencoded::to_string([("query", collapse_whitespace(&plan.query))])
        .map_err(|e| e.to_string())?;
    let url = format!(
        "{}/api/v1/query?{encoded}",
        plan.address.trim_end_matches('/')
    );
    let mut req = http::Request::get(&url);
    if let Some(t) = &plan.credentials.token {
        req = req.header("authorization", format!("Bearer {t}"));
    } else if let Some((u, p)) = &plan.credentials.basic {
        use base64::Engine;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req = req.header("authorization", format!("Basic {pair}"));
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("request to {url}: {e}"))?;
    let resp = tokio::time::timeout(QUERY_TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("request to {} failed: no answer within 5s", plan.address))?
        .map_err(|e| {
            // hyper's own message ("client error (Connect)") says little; its causes say why.
            let mut why = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                why = format!("{why}: {c}");
                cause = c.source();
            }
            format!("request to {} failed: {why}", plan.address)
        })?;
    let status = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), 16 << 20);
    let body = tokio::time::timeout(QUERY_TIMEOUT, body.collect())
        .await
        .map_err(|_| "error reading body: timed out".to_string())?
        .map_err(|e| format!("error reading body: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn warnings_of(body: &str) -> Vec<String> {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["warnings"].as_array().cloned())
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect()
}

fn model_of(canary: &Value, interval: &str, metric: &Value) -> Model {
    let spec = &canary["spec"];
    let target = spec["targetRef"]["name"].as_str().unwrap_or("").to_string();
    let or_target = |v: &Value| v.as_str().map_or(target.clone(), str::to_string);
    Model {
        name: meta(canary, "name"),
        namespace: namespace_of(canary),
        target: target.clone(),
        service: or_target(&spec["service"]["name"]),
        ingress: or_target(&spec["ingressRef"]["name"]),
        route: or_target(&spec["routeRef"]["name"]),
        interval: interval.to_string(),
        variables: metric["templateVariables"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string)))
            .collect(),
    }
}

impl CheckOptions {
    fn credentials(
        &self,
        secret: Option<&BTreeMap<String, String>>,
    ) -> Result<Credentials, String> {
        if let Some(f) = &self.token_file {
            let t = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
            let token = t.lines().next().unwrap_or("").trim().to_string();
            return Ok(Credentials {
                token: Some(token),
                basic: None,
            });
        }
        let Some(s) = secret else {
            return Ok(Credentials {
                token: None,
                basic: None,
            });
        };
        Ok(Credentials {
            token: s.get("token").cloned(),
            basic: match (s.get("username"), s.get("password")) {
                (Some(u), Some(p)) => Some((u.clone(), p.clone())),
                _ => None,
            },
        })
    }

    /// What Flagger would ask for `metric`, or why it could not.
    fn plan(&self, m: &Manifests, canary: &Value, metric: &Value) -> Result<Plan, String> {
        let name = metric["name"].as_str().unwrap_or("");
        let interval = metric["interval"].as_str().unwrap_or("");
        let metrics_server = || {
            self.address.clone().ok_or_else(|| {
                "asked of Flagger's -metrics-server: give its address with --address".to_string()
            })
        };
        if let Some(tref) = metric.get("templateRef").filter(|t| !t.is_null()) {
            let ns = match tref["namespace"].as_str() {
                Some(ns) if !ns.is_empty() => ns.to_string(),
                _ => namespace_of(canary),
            };
            let tname = tref["name"].as_str().unwrap_or("").to_string();
            let Some(t) = m.templates.get(&(ns.clone(), tname.clone())) else {
                return Err(format!(
                    "Metric template {tname}.{ns} error: not among the manifests"
                ));
            };
            let provider = &t["spec"]["provider"];
            let kind = provider["type"].as_str().unwrap_or("");
            if kind != "prometheus" {
                return Err(format!(
                    "provider type {kind:?}: only prometheus providers can be asked"
                ));
            }
            let secret = match provider["secretRef"]["name"].as_str() {
                Some(s) if self.token_file.is_none() => Some(
                    m.secrets
                        .get(&(ns.clone(), s.to_string()))
                        .ok_or_else(|| {
                            format!(
                                "Metric template {tname}.{ns} secret {s} error: not among the manifests (or give --token-file)"
                            )
                        })?,
                ),
                _ => None,
            };
            // Flagger renders a template metric's interval as written, even empty.
            let model = model_of(canary, interval, metric);
            let query = render(t["spec"]["query"].as_str().unwrap_or(""), &model)
                .map_err(|e| format!("Metric template {tname}.{ns} query render error: {e}"))?;
            let address = match &self.address {
                Some(a) => a.clone(),
                None => provider["address"].as_str().unwrap_or("").to_string(),
            };
            return Ok(Plan {
                query,
                address,
                credentials: self.credentials(secret)?,
                rule: Rule::Custom,
            });
        }
        let interval = if interval.is_empty() {
            METRIC_INTERVAL
        } else {
            interval
        };
        let model = model_of(canary, interval, metric);
        // Flagger's builtin queries differ by mesh; these are Istio's (its default).
        let mesh = canary["spec"]["provider"].as_str().unwrap_or("");
        let inline = metric["query"].as_str().is_some_and(|q| !q.is_empty());
        let builtin = matches!(name, "request-success-rate" | "request-duration");
        if builtin && !inline && !(mesh.is_empty() || mesh == "istio") {
            return Err(format!(
                "the builtin {name} check of provider {mesh:?} is not rendered here; only Istio's are"
            ));
        }
        let (text, rule) =
            match (name, metric["query"].as_str()) {
                (_, Some(q)) if !q.is_empty() => (q, Rule::Custom),
                ("request-success-rate", _) => (BUILTIN_SUCCESS_RATE, Rule::SuccessRate),
                ("request-duration", _) => (BUILTIN_DURATION, Rule::Duration),
                _ => return Err(
                    "Metric query failed for no usable metrics template and query were configured"
                        .into(),
                ),
            };
        Ok(Plan {
            query: render(text, &model)?,
            address: metrics_server()?,
            credentials: self.credentials(None)?,
            rule,
        })
    }

    /// Checks every canary of the manifests.
    pub async fn run(&self) -> Result<Vec<CanaryReport>, String> {
        let m = if self.files.is_empty() {
            #[cfg(feature = "kubernetes")]
            {
                Manifests::from_docs(cluster::fetch(self.namespace.as_deref()).await?)
            }
            #[cfg(not(feature = "kubernetes"))]
            {
                return Err("this build reads manifests only from files: give -f".into());
            }
        } else {
            Manifests::from_docs(read_files(&self.files)?)
        };
        if m.canaries.is_empty() {
            return Err("no Canary among the manifests".into());
        }
        let client = crate::exporters::otlp::http::client(&Default::default())?;
        let mut reports = Vec::new();
        for canary in &m.canaries {
            let name = meta(canary, "name");
            if self.canary.as_ref().is_some_and(|c| *c != name) {
                continue;
            }
            let spec = &canary["spec"];
            let analysis = if spec["analysis"].is_object() {
                &spec["analysis"]
            } else {
                &spec["canaryAnalysis"]
            };
            let mut rows = Vec::new();
            for metric in analysis["metrics"].as_array().into_iter().flatten() {
                rows.push(self.check(&m, &client, canary, metric).await);
            }
            // Flagger runs the builtin and inline checks first, then the templates', and
            // halts at the first that fails.
            let from_template =
                |metric: &Value| metric.get("templateRef").is_some_and(|t| !t.is_null());
            let metrics: Vec<&Value> = analysis["metrics"]
                .as_array()
                .into_iter()
                .flatten()
                .collect();
            let first_failure = rows
                .iter()
                .zip(&metrics)
                .filter(|(r, _)| r.verdict != Verdict::Pass)
                .min_by_key(|(_, m)| from_template(m))
                .map(|(r, _)| r.metric.clone());
            let threshold = analysis["threshold"].as_u64().unwrap_or(0);
            let flagger = match first_failure {
                None => "advance: every check passes".to_string(),
                Some(metric) => format!(
                    "halt advancement at {metric}: this iteration counts as a failed check (rollback after {threshold})"
                ),
            };
            reports.push(CanaryReport {
                namespace: namespace_of(canary),
                name,
                metrics: rows,
                flagger,
            });
        }
        Ok(reports)
    }

    async fn check(
        &self,
        m: &Manifests,
        client: &HttpClient,
        canary: &Value,
        metric: &Value,
    ) -> Row {
        let name = metric["name"].as_str().unwrap_or("").to_string();
        let plan = match self.plan(m, canary, metric) {
            Ok(p) => p,
            Err(e) => {
                return Row {
                    metric: name,
                    query: None,
                    address: None,
                    value: None,
                    threshold: threshold_text(metric, Rule::Custom),
                    verdict: Verdict::Error,
                    reason: Some(e),
                    warnings: Vec::new(),
                }
            }
        };
        let mut row = Row {
            metric: name,
            query: Some(collapse_whitespace(&plan.query).trim().to_string()),
            address: Some(plan.address.clone()),
            value: None,
            threshold: threshold_text(metric, plan.rule),
            verdict: Verdict::Error,
            reason: None,
            warnings: Vec::new(),
        };
        match ask(client, &plan).await {
            Err(e) => row.reason = Some(e),
            Ok((status, body)) => {
                row.warnings = warnings_of(&body);
                match read_answer(status, &body) {
                    Err(e) => {
                        row.verdict = if e == "no values found" {
                            Verdict::Fail
                        } else {
                            Verdict::Error
                        };
                        row.reason = Some(e);
                    }
                    Ok(v) => {
                        row.value = Some(v);
                        match judge(metric, plan.rule, v) {
                            None => row.verdict = Verdict::Pass,
                            Some(why) => {
                                row.verdict = Verdict::Fail;
                                row.reason = Some(why);
                            }
                        }
                    }
                }
            }
        }
        row
    }
}

/// The reports as text: a block per canary, a line per metric, its query and warnings below.
pub fn render_text(reports: &[CanaryReport]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!("Canary {}/{}\n", r.namespace, r.name));
        out.push_str(&format!(
            "  {:<28} {:>14}  {:<24} {}\n",
            "METRIC", "VALUE", "THRESHOLD", "VERDICT"
        ));
        for m in &r.metrics {
            let value = m.value.map_or("-".to_string(), |v| format!("{v:.4}"));
            let verdict = match (&m.verdict, &m.reason) {
                (Verdict::Pass, _) => "pass".to_string(),
                (Verdict::Fail, Some(why)) => format!("fail: {why}"),
                (Verdict::Error, Some(why)) => format!("error: {why}"),
                (v, None) => format!("{v:?}").to_lowercase(),
            };
            out.push_str(&format!(
                "  {:<28} {:>14}  {:<24} {verdict}\n",
                m.metric, value, m.threshold
            ));
            if let Some(q) = &m.query {
                out.push_str(&format!("      query: {q}\n"));
            }
            for w in &m.warnings {
                out.push_str(&format!("      warning: {w}\n"));
            }
        }
        out.push_str(&format!("  Flagger would {}\n\n", r.flagger));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_like_flagger_reads_them() {
        let v = |s: &str| {
            format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{s}]}}}}"#)
        };
        assert_eq!(
            read_answer(200, &v(r#"{"metric":{},"value":[1,"99.5"]}"#)),
            Ok(99.5)
        );
        // The last series wins.
        assert_eq!(
            read_answer(
                200,
                &v(r#"{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}"#)
            ),
            Ok(2.0)
        );
        assert_eq!(read_answer(200, &v("")), Err("no values found".into()));
        assert_eq!(
            read_answer(200, &v(r#"{"metric":{},"value":[1,"NaN"]}"#)),
            Err("no values found".into())
        );
        // A JSON number is not read.
        assert_eq!(
            read_answer(200, &v(r#"{"metric":{},"value":[1,5]}"#)),
            Err("no values found".into())
        );
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#;
        assert!(read_answer(200, scalar).is_err_and(|e| e.contains("unmarshal")));
        let matrix = v(r#"{"metric":{},"values":[[1,"1"]]}"#);
        assert_eq!(
            read_answer(200, &matrix),
            Err("query returned multiple values".into())
        );
        assert!(read_answer(503, "down").is_err_and(|e| e.contains("Status 503")));
    }

    #[test]
    fn builtin_checks_are_planned_for_istio_only() {
        let canary = |provider: &str| {
            serde_json::json!({"metadata": {"name": "podinfo", "namespace": "test"},
                "spec": {"provider": provider, "targetRef": {"name": "podinfo"}}})
        };
        let metric = serde_json::json!({"name": "request-success-rate", "interval": "30s"});
        let opts = CheckOptions {
            address: Some("http://127.0.0.1:9090".into()),
            ..Default::default()
        };
        let m = Manifests::default();
        let plan = opts.plan(&m, &canary("istio"), &metric).expect("istio");
        assert!(plan.query.contains("destination_workload=~\"podinfo\""));
        assert!(plan.query.contains("}[30s]"));
        let e = opts
            .plan(&m, &canary("linkerd"), &metric)
            .err()
            .expect("linkerd");
        assert!(e.contains("only Istio's"), "{e}");
        // Without an address, the builtin checks cannot be asked: Flagger's metrics server.
        let e = CheckOptions::default()
            .plan(&m, &canary(""), &metric)
            .err()
            .expect("no address");
        assert!(e.contains("--address"), "{e}");
    }

    #[test]
    fn thresholds_are_judged_like_flaggers_scheduler() {
        let m = |j: &str| serde_json::from_str::<Value>(j).expect("json");
        let range = m(r#"{"thresholdRange":{"min":99}}"#);
        assert!(judge(&range, Rule::SuccessRate, 98.9).is_some());
        assert!(judge(&range, Rule::SuccessRate, 99.0).is_none());
        // Durations are whole milliseconds: 500.9 ms is 500 ms, within a max of 500.
        let max = m(r#"{"thresholdRange":{"max":500}}"#);
        assert!(judge(&max, Rule::Duration, 500.9).is_none());
        assert!(judge(&max, Rule::Duration, 501.0).is_some());
        // Without a range: success rate below the threshold fails, anything else above it.
        let t = m(r#"{"threshold":99}"#);
        assert!(judge(&t, Rule::SuccessRate, 98.0).is_some());
        assert!(judge(&t, Rule::Custom, 98.0).is_none());
        assert!(judge(&t, Rule::Custom, 100.0).is_some());
    }
}
