//! Why a canary check would fail, said in the answer's `warnings` (the values themselves stay
//! Prometheus's): a window too short for the scrape interval, a workload label that matches
//! nothing while the metric exists, 0/0 from a workload without traffic, and a target that is
//! down. Synthetic Istio sidecars, scraped by the agent, asked the way Flagger asks.

mod common;

use common::*;
use std::time::Duration;

async fn ask(port: u16, q: &str) -> serde_json::Value {
    let v = instant_query(port, q).await;
    assert_eq!(v["status"], "success", "{q}: {v}");
    v
}

fn warnings(v: &serde_json::Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect()
}

/// A sidecar body for `workload` whose counters stay at `step`'s values.
fn sidecar(pod: usize, step: u64, workload: &str) -> Page {
    let body = istio_like_body(pod, step, None)
        .replace("podinfo-primary", workload)
        .replace("podinfo-canary", workload);
    Page::text(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_answers_say_why() {
    // Three sidecars: a busy canary, an idle workload (no traffic: counters never move) and
    // one that will go down.
    let busy = Target::start().await;
    let idle = Target::start().await;
    let doomed = Target::start().await;
    busy.set("/metrics", sidecar(1, 0, "podinfo-canary"));
    idle.set("/metrics", sidecar(2, 0, "idle"));
    doomed.set("/metrics", sidecar(3, 0, "doomed"));
    let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (b, d, still) = (busy.clone(), doomed.clone(), alive.clone());
    tokio::spawn(async move {
        for step in 1.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            b.set("/metrics", sidecar(1, step, "podinfo-canary"));
            if still.load(std::sync::atomic::Ordering::SeqCst) {
                d.set("/metrics", sidecar(3, step, "doomed"));
            }
        }
    });
    let port = free_port();
    let agent = start_agent(&format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: sidecars
          scrape_interval: 2s
          static_configs: [{{targets: ['{}', '{}', '{}']}}]
exporters:
  promql:
    endpoint: 127.0.0.1:{port}
service:
  pipelines:
    metrics: {{receivers: [prometheus], exporters: [promql]}}
  telemetry: {{metrics: {{address: ''}}}}
",
        busy.addr, idle.addr, doomed.addr
    ))
    .await;
    // Three scrapes of each: the interval shows in the data.
    tokio::time::sleep(Duration::from_millis(6500)).await;

    // A healthy check: a value and no warning.
    let rate = |workload: &str, window: &str| {
        format!(
            "sum(rate(istio_requests_total{{reporter=\"destination\",destination_workload=~\"{workload}\"}}[{window}]))"
        )
    };
    let ok = ask(port, &rate("podinfo-canary", "10s")).await;
    assert!(ok["data"]["result"][0]["value"][1].is_string(), "{ok}");
    assert!(warnings(&ok).is_empty(), "{ok}");

    // A window shorter than two scrapes: no value, and the scrape interval named.
    let thin = ask(port, &rate("podinfo-canary", "1s")).await;
    let w = warnings(&thin);
    eprintln!("thin window: {w:?}");
    assert!(
        w.iter()
            .any(|w| w.contains("rate(istio_requests_total[1s])")
                && w.contains("fewer than two samples")
                && w.contains("scraped every 2s")
                && w.contains("at least 4s")),
        "{thin}"
    );

    // A misnamed workload: the label and the values that exist.
    let typo = ask(port, &rate("podinfo-canery", "10s")).await;
    assert_eq!(typo["data"]["result"], serde_json::json!([]), "{typo}");
    let w = warnings(&typo);
    eprintln!("misnamed workload: {w:?}");
    assert!(
        w.iter()
            .any(|w| w.contains("destination_workload=~\"podinfo-canery\"")
                && w.contains("\"podinfo-canary\"")
                && w.contains("\"idle\"")),
        "{typo}"
    );
    let missing = ask(port, "sum(rate(istio_requests_totl[10s]))").await;
    assert!(
        warnings(&missing)
            .iter()
            .any(|w| w.contains("no series named istio_requests_totl")),
        "{missing}"
    );

    // No traffic: 0/0 is NaN ("no values found" for Flagger), and said so.
    let success = "sum(rate(istio_requests_total{destination_workload=\"idle\",response_code!~\"5.*\"}[10s])) / sum(rate(istio_requests_total{destination_workload=\"idle\"}[10s])) * 100";
    let nan = ask(port, success).await;
    assert_eq!(nan["data"]["result"][0]["value"][1], "NaN", "{nan}");
    let w = warnings(&nan);
    eprintln!("no traffic: {w:?}");
    assert!(w.iter().any(|w| w.contains("0/0")), "{nan}");

    // A target that goes down: its series are named as coming from it.
    alive.store(false, std::sync::atomic::Ordering::SeqCst);
    doomed.set(
        "/metrics",
        Page {
            status: 500,
            ..Page::text("")
        },
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let down = ask(port, &rate("doomed", "30s")).await;
    let w = warnings(&down);
    eprintln!("target down: {w:?}");
    assert!(
        w.iter()
            .any(|w| w.contains(&format!("target {} (job sidecars) is down", doomed.addr))),
        "{down}"
    );
    // And only that one.
    assert!(
        !w.iter().any(|w| w.contains(&busy.addr.to_string())),
        "{down}"
    );
    drop(agent);
}

/// A sidecar's view of one workload in namespace `test`: requests answered 200 and 503 at
/// the given rates per second, all within 50 ms, every sample stamped with `ts_ms` so that
/// the agent and Prometheus read identical samples.
fn workload_body(workload: &str, seconds: u64, ok: u64, errors: u64, ts_ms: i64) -> String {
    let labels = |code: &str| {
        format!("reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=\"{workload}\",response_code=\"{code}\"")
    };
    let mut out = String::from("# TYPE istio_requests_total counter\n");
    let counts = [("200", ok * seconds), ("503", errors * seconds)];
    for (code, n) in counts {
        out.push_str(&format!(
            "istio_requests_total{{{}}} {n} {ts_ms}\n",
            labels(code)
        ));
    }
    out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
    for (code, n) in counts {
        for le in ["10", "50", "100", "500", "+Inf"] {
            let c = if le == "10" { n / 2 } else { n };
            out.push_str(&format!(
                "istio_request_duration_milliseconds_bucket{{{},le=\"{le}\"}} {c} {ts_ms}\n",
                labels(code)
            ));
        }
        out.push_str(&format!(
            "istio_request_duration_milliseconds_count{{{}}} {n} {ts_ms}\n",
            labels(code)
        ));
    }
    out
}

/// The manifests `kubectl kustomize` renders for an overlay, as JSON documents.
fn kustomize(overlay: &str) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", overlay])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("kubectl kustomize (kubectl is needed)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).expect("manifests")
}

/// Writes documents as a multi-document stream (JSON is YAML) and runs `canary check` on it.
fn canary_check(
    dir: &std::path::Path,
    name: &str,
    docs: &[serde_json::Value],
    args: &[&str],
) -> (i32, serde_json::Value) {
    let path = dir.join(format!("{name}.yaml"));
    let text: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
    std::fs::write(&path, text.join("\n---\n")).expect("write manifests");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meshmetrics"));
    cmd.args(["canary", "check", "-f"]).arg(&path);
    run_check(name, cmd, args)
}

fn run_check(
    name: &str,
    mut cmd: std::process::Command,
    args: &[&str],
) -> (i32, serde_json::Value) {
    let out = cmd
        .args(args)
        .args(["-o", "json"])
        .output()
        .expect("run canary check");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{name}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn metric<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["canaries"][0]["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["metric"] == name)
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_check_says_what_flagger_would_conclude_and_why() {
    use common::prometheus::start_prometheus;
    // Two workloads: `podinfo` healthy, `podinfo-bad` failing 10 % of its requests.
    let good = Target::start().await;
    let bad = Target::start().await;
    good.set("/metrics", Page::text(""));
    bad.set("/metrics", Page::text(""));
    // Each second's sample is a function of its timestamp alone: whichever scrape sees it,
    // it is the same sample.
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
    };
    let origin = now_ms() / 1000;
    let stamp = move || {
        let second = now_ms() / 1000;
        ((second - origin) as u64, second * 1000)
    };
    let refresh = {
        let (good, bad) = (good.clone(), bad.clone());
        move || {
            let (s, ts) = stamp();
            good.set(
                "/metrics",
                Page::text(workload_body("podinfo", s, 100, 0, ts)),
            );
            bad.set(
                "/metrics",
                Page::text(workload_body("podinfo-bad", s, 90, 10, ts)),
            );
        }
    };
    let targets = format!("'{}', '{}'", good.addr, bad.addr);
    let port = free_port();
    let _agent = start_agent(&format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: sidecars
          scrape_interval: 500ms
          static_configs: [{{targets: [{targets}]}}]
exporters:
  promql:
    endpoint: 127.0.0.1:{port}
    auth: {{bearer_token: canary-check-token}}
service:
  pipelines:
    metrics: {{receivers: [prometheus], exporters: [promql]}}
  telemetry: {{metrics: {{address: ''}}}}
"
    ))
    .await;
    let prom_port = free_port();
    let _prom = start_prometheus(
        &format!(
            "global: {{scrape_interval: 500ms}}\nscrape_configs:\n  - job_name: sidecars\n    static_configs: [{{targets: [{targets}]}}]\n"
        ),
        prom_port,
    );
    // The samples begin once both scrape the targets (Prometheus starts scraping only
    // after its discovery's first 5 s), so both hold every one of them.
    for _ in 0..300 {
        let url = format!(
            "http://127.0.0.1:{prom_port}/api/v1/query?query={}",
            go_query_escape("count(up == 1)")
        );
        if try_http_get(&url)
            .await
            .is_some_and(|(code, body)| code == 200 && body.contains("\"2\""))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // From a second's start, so that the first sample, like every other, is served for a
    // whole second and both scrapers see it.
    tokio::time::sleep(Duration::from_millis(1050 - (now_ms() % 1000) as u64)).await;
    tokio::spawn(async move {
        loop {
            refresh();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(8)).await;

    let dir = tempfile::tempdir().expect("tmp");
    let token = dir.path().join("token");
    std::fs::write(&token, "canary-check-token\n").expect("token");
    let address = format!("http://127.0.0.1:{port}");
    let args = [
        "--address",
        &address,
        "--token-file",
        token.to_str().expect("path"),
    ];
    let docs = kustomize("deploy/overlays/prometheus-honeycomb");
    let with = |f: &dyn Fn(&mut serde_json::Value)| -> Vec<serde_json::Value> {
        docs.iter()
            .cloned()
            .map(|mut d| {
                if d["kind"] == "Canary" {
                    f(&mut d);
                }
                d
            })
            .collect()
    };

    // Healthy: every check passes and Flagger would advance.
    let (code, healthy) = canary_check(dir.path(), "healthy", &docs, &args);
    eprintln!("healthy: {healthy:#}");
    assert_eq!(code, 0, "{healthy}");
    let success = metric(&healthy, "request-success-rate");
    assert_eq!(success["verdict"], "pass");
    assert_eq!(success["value"], 100.0);
    // Flagger's own builtin query, rendered for this canary (white space aside).
    let flagger_text = "sum(rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"podinfo\",response_code!~\"5.*\"}[1m]))/sum(rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"podinfo\"}[1m]))*100";
    let ours: String = success["query"]
        .as_str()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(ours, flagger_text);
    assert!(healthy["canaries"][0]["flagger"]
        .as_str()
        .is_some_and(|f| f.starts_with("advance")));

    // 10 % errors: the success rate fails with its value, the error rates too.
    let (code, failing) = canary_check(
        dir.path(),
        "failing",
        &with(&|d| d["spec"]["targetRef"]["name"] = "podinfo-bad".into()),
        &args,
    );
    assert_eq!(code, 1, "{failing}");
    let success = metric(&failing, "request-success-rate");
    assert_eq!(success["verdict"], "fail", "{success}");
    assert!(
        (success["value"].as_f64().unwrap_or(0.0) - 90.0).abs() < 0.01,
        "{success}"
    );
    assert!(
        success["reason"]
            .as_str()
            .is_some_and(|r| r.contains("< 99")),
        "{success}"
    );
    let errors = metric(&failing, "error-rate-meshmetrics");
    assert_eq!(errors["verdict"], "fail", "{errors}");
    assert!(failing["canaries"][0]["flagger"]
        .as_str()
        .is_some_and(|f| f.contains("halt advancement at request-success-rate")));

    // A misnamed workload: "no values found", and the label and the values that exist.
    let (code, typo) = canary_check(
        dir.path(),
        "typo",
        &with(&|d| d["spec"]["targetRef"]["name"] = "podinfo-canery".into()),
        &args,
    );
    assert_eq!(code, 1);
    let success = metric(&typo, "request-success-rate");
    assert_eq!(success["reason"], "no values found", "{success}");
    let w = success["warnings"].to_string();
    eprintln!("typo: {w}");
    assert!(
        w.contains("destination_workload=~\\\"podinfo-canery\\\"")
            && w.contains("\\\"podinfo\\\"")
            && w.contains("\\\"podinfo-bad\\\""),
        "{success}"
    );

    // A window shorter than two scrapes.
    let (code, thin) = canary_check(
        dir.path(),
        "thin",
        &with(&|d| {
            for m in d["spec"]["analysis"]["metrics"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                m["interval"] = "1s".into();
            }
        }),
        &args,
    );
    assert_eq!(code, 1);
    let success = metric(&thin, "request-success-rate");
    assert_eq!(success["reason"], "no values found", "{success}");
    let w = success["warnings"].to_string();
    eprintln!("thin: {w}");
    assert!(
        w.contains("fewer than two samples") && w.contains("scraped every 1s"),
        "{success}"
    );

    // The templates' own credentials: the Secret's `token`, for the meshmetrics templates.
    let with_token = |docs: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode("canary-check-token");
        docs.into_iter()
            .map(|mut d| {
                if d["kind"] == "Secret" && d["metadata"]["name"] == "meshmetrics-query-token" {
                    d["data"] = serde_json::json!({ "token": token });
                }
                if d["kind"] == "Canary" {
                    let metrics = d["spec"]["analysis"]["metrics"]
                        .as_array_mut()
                        .expect("metrics");
                    metrics.retain(|m| {
                        m["templateRef"]["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("meshmetrics-"))
                    });
                }
                d
            })
            .collect()
    };
    let own = with_token(docs.clone());
    let (code, secret) = canary_check(dir.path(), "secret", &own, &["--address", &address]);
    assert_eq!(code, 0, "the Secret's token is sent: {secret}");
    assert_eq!(
        secret["canaries"][0]["metrics"].as_array().map(Vec::len),
        Some(3)
    );

    // The same objects read from the cluster through the Kubernetes API.
    let api = common::kube_api::KubeApi::start().await;
    for d in &own {
        if matches!(
            d["kind"].as_str(),
            Some("Canary" | "MetricTemplate" | "Secret")
        ) {
            api.create(d.clone());
        }
    }
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: test, cluster: {{server: '{}'}}}}]\nusers: [{{name: test, user: {{}}}}]\ncontexts: [{{name: test, context: {{cluster: test, user: test}}}}]\ncurrent-context: test\n",
            api.url()
        ),
    )
    .expect("kubeconfig");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meshmetrics"));
    cmd.args(["canary", "check", "-n", "test"])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST");
    let (code, from_cluster) = run_check("cluster", cmd, &["--address", &address]);
    assert_eq!(code, 0, "{from_cluster}");
    assert_eq!(from_cluster["canaries"][0]["name"], "podinfo");
    assert_eq!(
        from_cluster["canaries"][0]["metrics"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{from_cluster}"
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("/secrets/meshmetrics-query-token")),
        "the Secret was read: {:?}",
        api.requests()
    );

    // Every rendered query answers as real Prometheus does on the same samples.
    let at = (stamp().1 - 2000) as f64 / 1000.0;
    let mut compared = 0;
    for report in [&healthy, &failing] {
        for m in report["canaries"][0]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(q) = m["query"].as_str() else {
                continue;
            };
            let url = |p: u16| {
                format!(
                    "http://127.0.0.1:{p}/api/v1/query?query={}&time={at}",
                    go_query_escape(q)
                )
            };
            let auth = [("Authorization", "Bearer canary-check-token")];
            let (_, ours) = http_get(&url(port), &auth).await;
            let (_, theirs) = http_get(&url(prom_port), &[]).await;
            let value = |body: &str| {
                let v: serde_json::Value = serde_json::from_str(body).expect("json");
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|x| x.parse::<f64>().ok())
            };
            // Equal to the last bits of a float, as the differential suite compares.
            let same = match (value(&ours), value(&theirs)) {
                (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
                _ => false,
            };
            assert!(same, "{q}\nours {ours}\nPrometheus {theirs}");
            compared += 1;
        }
    }
    eprintln!("{compared} rendered queries answer as Prometheus does");
    assert!(compared >= 12, "{compared}");

    // Any Prometheus-compatible address: the same checks asked of Prometheus itself.
    let prometheus = format!("http://127.0.0.1:{prom_port}");
    let (code, of_prometheus) = canary_check(
        dir.path(),
        "of-prometheus",
        &docs,
        &["--address", &prometheus],
    );
    assert_eq!(code, 0, "{of_prometheus}");
    assert_eq!(
        metric(&of_prometheus, "request-success-rate")["value"],
        100.0
    );
    let (code, of_prometheus) = canary_check(
        dir.path(),
        "of-prometheus-failing",
        &with(&|d| d["spec"]["targetRef"]["name"] = "podinfo-bad".into()),
        &["--address", &prometheus],
    );
    assert_eq!(code, 1, "{of_prometheus}");
    let success = metric(&of_prometheus, "request-success-rate");
    assert!(
        (success["value"].as_f64().unwrap_or(0.0) - 90.0).abs() < 0.01,
        "{success}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanned_out_answers_say_why_with_every_agents_data() {
    // Agent A scrapes nothing of the workload; agent B scrapes its sidecar. Asked through A,
    // the warnings must still name what B holds.
    let sidecar_target = Target::start().await;
    sidecar_target.set("/metrics", sidecar(1, 0, "podinfo-canary"));
    let t = sidecar_target.clone();
    tokio::spawn(async move {
        for step in 1.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            t.set("/metrics", sidecar(1, step, "podinfo-canary"));
        }
    });
    let empty = Target::start().await;
    empty.set("/metrics", Page::text("# nothing here\n"));
    let (pa, pb) = (free_port(), free_port());
    let peers = format!("['127.0.0.1:{pa}', '127.0.0.1:{pb}']");
    let yaml = |port: u16, target: &str| {
        format!(
            "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: sidecars
          scrape_interval: 1s
          static_configs: [{{targets: ['{target}']}}]
exporters:
  promql:
    endpoint: 127.0.0.1:{port}
    peers: {{static: {peers}, timeout: 1s}}
service:
  pipelines:
    metrics: {{receivers: [prometheus], exporters: [promql]}}
  telemetry: {{metrics: {{address: ''}}}}
"
        )
    };
    let _a = start_agent(&yaml(pa, &empty.addr.to_string())).await;
    let _b = start_agent(&yaml(pb, &sidecar_target.addr.to_string())).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let q = |workload: &str, window: &str| {
        format!("sum(rate(istio_requests_total{{destination_workload=~\"{workload}\"}}[{window}]))")
    };
    // A healthy answer through A, with B's samples: no warnings, no second round needed.
    let ok = ask(pa, &q("podinfo-canary", "10s")).await;
    assert!(ok["data"]["result"][0]["value"][1].is_string(), "{ok}");
    assert!(warnings(&ok).is_empty(), "{ok}");
    // Misnamed: the values named are B's.
    let typo = ask(pa, &q("podinfo-canery", "10s")).await;
    let w = warnings(&typo);
    eprintln!("fanned out, misnamed: {w:?}");
    assert!(
        w.iter()
            .any(|w| w.contains("podinfo-canery") && w.contains("\"podinfo-canary\"")),
        "{typo}"
    );
    // Thin: the interval is read from B's samples.
    let thin = ask(pa, &q("podinfo-canary", "500ms")).await;
    let w = warnings(&thin);
    eprintln!("fanned out, thin: {w:?}");
    assert!(
        w.iter()
            .any(|w| w.contains("fewer than two samples") && w.contains("scraped every 1s")),
        "{thin}"
    );
}
