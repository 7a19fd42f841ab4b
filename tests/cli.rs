//! The `meshmetrics` binary: CLI, the embedded default config, graceful shutdown on SIGTERM.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_meshmetrics");

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn get(url: &str) -> Option<(u16, String)> {
    try_http_get(url).await
}

#[test]
fn version_and_components() {
    let out = Command::new(BIN).arg("--version").output().expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(BIN)
        .args(["--worker-threads", "0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--worker-threads") && err.contains("0"),
        "{err}"
    );
    let out = Command::new(BIN).arg("components").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for c in [
        "prometheus",
        "batch",
        "filter",
        "attributes",
        "resource",
        "otlp",
        "otlphttp",
        "debug",
        "health_check",
        "zpages",
    ] {
        assert!(
            text.contains(&format!("- {c}\n")),
            "{c} missing from:\n{text}"
        );
    }
}

/// The binary allocates with jemalloc, with the options `src/main.rs` compiles in: asked to
/// print its statistics at exit, jemalloc lists the options it runs with.
#[cfg(feature = "jemalloc")]
#[test]
fn jemalloc_runs_with_the_compiled_in_options() {
    let out = Command::new(BIN)
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let stats = String::from_utf8_lossy(&out.stderr);
    // Lines such as `opt.narenas: 1` and `opt.dirty_decay_ms: 1000 (arenas.dirty_decay_ms: 1000)`.
    for option in [
        "opt.background_thread: true",
        "opt.dirty_decay_ms: 1000",
        "opt.muzzy_decay_ms: 0",
        "opt.narenas: 1",
    ] {
        assert!(
            stats
                .lines()
                .map(str::trim)
                .any(|l| l == option || l.starts_with(&format!("{option} "))),
            "{option} not in:\n{stats}"
        );
    }
}

#[test]
fn validate_lists_every_error_and_exits_1() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "receivers:\n  prometheus: {}\nexporters:\n  debug: {}\nservice:\n  pipelines:\n    metrics:\n      receivers: [prometheus, nope]\n      exporters: [debug, otlp]\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:8:31") && err.contains("receiver nope"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:9:26") && err.contains("exporter otlp"),
        "{err}"
    );
    let good = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.yaml");
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&good)
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_what_is_batched() {
    let target = Target::start().await;
    target.set("/metrics", Page::text("flushed_on_exit 42\n"));
    let (addr, sink) = http_sink().await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("agent.yaml");
    // The batch would wait an hour; only the shutdown flush can deliver it.
    std::fs::write(
        &cfg,
        format!(
            "receivers:\n  prometheus:\n    config:\n      scrape_configs:\n        - job_name: j\n          scrape_interval: 1s\n          static_configs: [{{targets: ['{}']}}]\nprocessors:\n  batch: {{timeout: 1h, send_batch_size: 1000000}}\nexporters:\n  otlphttp:\n    endpoint: http://{addr}\nservice:\n  pipelines:\n    metrics: {{receivers: [prometheus], processors: [batch], exporters: [otlphttp]}}\n  telemetry: {{metrics: {{address: ''}}}}\n",
            target.addr
        ),
    )
    .expect("write");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["--worker-threads", "3"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while target.request_count("/metrics") < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(target.request_count("/metrics") >= 2, "agent scraped");
    assert!(sink.requests().is_empty(), "nothing sent before shutdown");
    sigterm(&child);
    // Wait off the runtime: the sink must keep serving while the agent flushes.
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("exits");
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("(worker threads: 3)"), "{log}");
    let ms = sink.metrics();
    assert!(
        ms.iter().any(|(_, m)| m.name == "flushed_on_exit"),
        "batched data was flushed on SIGTERM"
    );
}

#[tokio::test]
async fn default_config_scrapes_itself_and_serves_health_and_zpages() {
    let child = Command::new(BIN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut healthy = false;
    for _ in 0..100 {
        if let Some((200, body)) = get("http://127.0.0.1:13133/").await {
            assert!(body.contains("Server available"));
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "health_check answers 200");
    // The first self-scrape lands within one 10 s interval.
    let mut up = false;
    for _ in 0..150 {
        if let Some((200, body)) = get("http://127.0.0.1:55679/debug/targetz?format=json").await {
            if body.contains("\"health\":\"up\"") {
                up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the agent scrapes its own telemetry endpoint");
    let (code, metrics) = get("http://127.0.0.1:8888/metrics")
        .await
        .expect("self metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("otelcol_receiver_accepted_metric_points_total"),
        "{metrics}"
    );
    // The query façade answers Flagger's health check.
    let (code, body) = get("http://127.0.0.1:9090/api/v1/query?query=vector(1)")
        .await
        .expect("façade");
    assert_eq!(code, 200);
    assert!(
        body.contains("\"value\":[") && body.contains(",\"1\"]"),
        "{body}"
    );
    for page in ["servicez", "pipelinez", "extensionz", "featurez", "targetz"] {
        let (code, _) = get(&format!("http://127.0.0.1:55679/debug/{page}"))
            .await
            .expect("zpage");
        assert_eq!(code, 200, "{page}");
    }
    sigterm(&child);
    let out = child.wait_with_output().expect("exits");
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    // The runtime's workers: half the CPUs by default.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = format!("(worker threads: {})", (cores / 2).max(1));
    assert!(log.contains(&workers), "{workers} not in:\n{log}");
    assert!(
        log.contains("Metrics: resource metrics: 1"),
        "debug exporter logs what it would send:\n{log}"
    );
    // Written to a pipe, as `kubectl logs` reads it: no colour codes.
    assert!(!log.contains('\x1b'), "ANSI escapes in a piped log:\n{log}");
}

/// `encoding: json` writes one object per line with the collector's field names.
#[test]
fn json_logs_have_the_collectors_fields() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: nothing
          static_configs: [{targets: ['127.0.0.1:1']}]
exporters:
  debug: {}
service:
  pipelines:
    metrics: {receivers: [prometheus], exporters: [debug]}
  telemetry:
    metrics: {address: ''}
    logs: {level: info, encoding: json}
",
    )
    .expect("write");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    sigterm(&child);
    let out = child.wait_with_output().expect("exits");
    let log = String::from_utf8_lossy(&out.stderr);
    let mut lines = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
        for key in ["level", "ts", "caller", "msg"] {
            assert!(v[key].is_string(), "{key} missing in {line}");
        }
        assert!(["debug", "info", "warn", "error"].contains(&v["level"].as_str().unwrap_or("")));
        assert!(v["ts"].as_str().unwrap_or("").ends_with('Z'), "{line}");
        lines += 1;
    }
    assert!(lines >= 2, "{log}");
    assert!(
        log.contains("\"msg\":\"starting scrape loop\"") && log.contains("\"job\":\"nothing\""),
        "message and fields: {log}"
    );
    assert!(!log.contains('\x1b'));
}

/// A wrong ingest key: the backend answers every export 401. The health check (with the
/// collector's `check_collector_pipeline`) turns red within its threshold, exporterz shows
/// the 401 and what the backend said, and the log says "dropping data" once, not per batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_turns_health_red_and_shows_on_exporterz() {
    let backend = axum::Router::new().route(
        "/v1/metrics",
        axum::routing::post(|| async {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                r#"{"error":"unknown API key - check your credentials"}"#,
            )
        }),
    );
    let sink = serve_http(backend).await;
    let target = Target::start().await;
    target.set("/metrics", Page::text("app_up 1\n"));
    let (health, zpages) = (free_port(), free_port());
    let yaml = format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: app
          scrape_interval: 200ms
          scrape_timeout: 200ms
          static_configs: [{{targets: ['{}']}}]
processors:
  batch: {{timeout: 100ms}}
exporters:
  otlphttp/honeycomb:
    endpoint: http://{sink}
    headers: {{x-honeycomb-team: wrong-key}}
extensions:
  health_check:
    endpoint: 127.0.0.1:{health}
    check_collector_pipeline: {{enabled: true, interval: 1m, exporter_failure_threshold: 3}}
  zpages: {{endpoint: '127.0.0.1:{zpages}'}}
service:
  extensions: [health_check, zpages]
  pipelines:
    metrics: {{receivers: [prometheus], processors: [batch], exporters: [otlphttp/honeycomb]}}
  telemetry: {{metrics: {{address: ''}}}}
",
        target.addr
    );
    let (mut agent, _dir) = spawn_agent(&yaml, Stdio::piped());
    let health_url = format!("http://127.0.0.1:{health}/");
    let mut red = None;
    for _ in 0..100 {
        if let Some((503, body)) = get(&health_url).await {
            red = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let red = red.expect("health turned red within 10 s");
    assert!(
        red.contains("exporter otlphttp/honeycomb") && red.contains("failed attempts"),
        "{red}"
    );
    let (code, body) = get(&format!(
        "http://127.0.0.1:{zpages}/debug/exporterz?format=json"
    ))
    .await
    .expect("exporterz");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let e = &v[0];
    assert_eq!(e["exporter"], "otlphttp/honeycomb", "{v}");
    assert_eq!(e["last_error"], "HTTP 401", "{v}");
    assert!(
        e["last_error_body"]
            .as_str()
            .unwrap_or("")
            .contains("unknown API key"),
        "{v}"
    );
    assert!(e["points_refused"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(e["points_sent"], 0, "{v}");
    let (code, page) = get(&format!("http://127.0.0.1:{zpages}/debug/exporterz"))
        .await
        .expect("exporterz");
    assert_eq!(code, 200);
    assert!(page.contains("unknown API key"), "{page}");
    sigterm(&agent.0);
    let mut log = String::new();
    if let Some(mut err) = agent.0.stderr.take() {
        std::io::Read::read_to_string(&mut err, &mut log).expect("log");
    }
    assert!(!log.contains('\x1b'), "no ANSI escapes:\n{log}");
    let drops = log.matches("dropping data").count();
    assert_eq!(
        drops, 1,
        "logged once a minute at most, not per batch:\n{log}"
    );
    assert!(log.contains("points_dropped"), "{log}");
}

/// Collector habits carried over: two `--config` files merged (maps merged, lists replaced,
/// later wins) and `--set`, shown by `validate --print`; `--feature-gates` accepted, an
/// unknown gate warned about; collector log keys without effect accepted with a warning.
#[test]
fn layered_configs_set_and_feature_gates() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = dir.path().join("base.yaml");
    let over = dir.path().join("override.yaml");
    std::fs::write(
        &base,
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: a
          static_configs: [{targets: ['127.0.0.1:1']}]
processors:
  batch: {timeout: 1s, send_batch_size: 100}
exporters:
  debug: {}
  otlphttp: {endpoint: 'http://127.0.0.1:4318', headers: {x-honeycomb-team: s3cret-key}}
service:
  pipelines:
    metrics: {receivers: [prometheus], processors: [batch], exporters: [debug, otlphttp]}
  telemetry:
    logs: {level: info, sampling: {initial: 10}}
",
    )
    .expect("write");
    std::fs::write(
        &over,
        "processors:
  batch: {send_batch_size: 500}
service:
  pipelines:
    metrics: {exporters: [debug]}
",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["validate", "--print", "--config"])
        .arg(&base)
        .arg("--config")
        .arg(&over)
        .args([
            "--set=processors::batch::timeout=2s",
            "--feature-gates=+pkg.translator.prometheus.NormalizeName,-scrape.cache,exporter.made.up",
        ])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let json_end = stdout.rfind('}').expect("a document") + 1;
    let doc: serde_json::Value = serde_json::from_str(&stdout[..json_end]).expect("json");
    let batch = &doc["processors"]["batch"];
    assert_eq!(batch["timeout"], "2s", "--set wins: {doc}");
    assert_eq!(batch["send_batch_size"], 500, "the later file wins: {doc}");
    assert_eq!(
        doc["service"]["pipelines"]["metrics"]["exporters"],
        serde_json::json!(["debug"]),
        "lists are replaced: {doc}"
    );
    assert_eq!(
        doc["service"]["pipelines"]["metrics"]["receivers"],
        serde_json::json!(["prometheus"]),
        "maps are merged: {doc}"
    );
    assert_eq!(
        doc["exporters"]["otlphttp"]["headers"]["x-honeycomb-team"], "<redacted>",
        "{doc}"
    );
    assert!(!stdout.contains("s3cret-key"));
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(
        stderr.contains(
            "warning: service.telemetry.logs.sampling is a collector setting with no effect"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("feature gate \"exporter.made.up\" is unknown"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"scrape.cache\" is always enabled"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("NormalizeName"),
        "a known gate asked on: {stderr}"
    );
}
