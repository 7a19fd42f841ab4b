//! Nothing lost: a backend outage longer than the retry budget, and an agent killed with
//! SIGKILL while batches wait for the backend. The scraped set of points is what the agent's
//! own query façade holds (same pipeline); the delivered set is what a real OTLP/HTTP receiver
//! decoded. Every point scraped must arrive (duplicates are allowed: at-least-once).

mod common;

use common::*;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_meshmetrics");

type Point = (String, i64);

/// A target whose counters advance every 50 ms.
async fn probe_target() -> (Target, Arc<AtomicU64>) {
    let target = Target::start().await;
    let n = Arc::new(AtomicU64::new(0));
    let page = |v: u64| {
        Page::text(format!(
            "# TYPE probe_total counter\nprobe_total{{series=\"a\"}} {v}\nprobe_total{{series=\"b\"}} {}\n",
            v * 2
        ))
    };
    target.set("/metrics", page(0));
    let (n2, t) = (n.clone(), target.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let v = n2.fetch_add(1, Ordering::Relaxed) + 1;
            t.set("/metrics", page(v));
        }
    });
    (target, n)
}

fn config(
    target: &Target,
    sink: std::net::SocketAddr,
    facade: u16,
    storage: Option<&str>,
) -> String {
    let (queue, ext, service_ext) = match storage {
        Some(dir) => (
            "{queue_size: 3, num_consumers: 2, storage: file_storage}".to_string(),
            format!("extensions:\n  file_storage:\n    directory: {dir}\n"),
            "  extensions: [file_storage]\n",
        ),
        None => (
            "{queue_size: 3, num_consumers: 2}".to_string(),
            String::new(),
            "",
        ),
    };
    format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: probe
          scrape_interval: 200ms
          scrape_timeout: 200ms
          static_configs: [{{targets: ['{target}']}}]
processors:
  batch: {{timeout: 100ms}}
exporters:
  otlphttp:
    endpoint: http://{sink}
    retry_on_failure: {{initial_interval: 100ms, max_interval: 200ms, max_elapsed_time: 1s}}
    sending_queue: {queue}
  promql:
    endpoint: 127.0.0.1:{facade}
{ext}service:
{service_ext}  pipelines:
    metrics: {{receivers: [prometheus], processors: [batch], exporters: [otlphttp, promql]}}
  telemetry: {{metrics: {{address: ''}}}}
",
        target = target.addr
    )
}

/// Every (series, ms timestamp) the façade holds for `probe_total`.
async fn scraped(facade: u16) -> BTreeSet<Point> {
    let url = format!(
        "http://127.0.0.1:{facade}/api/v1/query?query={}",
        go_query_escape("probe_total[1h]")
    );
    let (status, body) = http_get(&url, &[]).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut out = BTreeSet::new();
    for s in v["data"]["result"].as_array().into_iter().flatten() {
        let series = s["metric"]["series"].as_str().unwrap_or("").to_string();
        for pair in s["values"].as_array().into_iter().flatten() {
            let ts = pair[0].as_f64().expect("timestamp");
            out.insert((series.clone(), (ts * 1000.0).round() as i64));
        }
    }
    out
}

/// Every `probe_total` point the receiver decoded, with how many times each came.
fn delivered(sink: &Sink) -> BTreeMap<Point, usize> {
    let mut out = BTreeMap::new();
    for (_, m) in sink.metrics() {
        if m.name != "probe_total" {
            continue;
        }
        let points = match m.data {
            Some(Data::Sum(s)) => s.data_points,
            _ => continue,
        };
        for p in points {
            if p.flags & 1 == 1 {
                continue; // staleness marker
            }
            let series = attrs_map(&p.attributes)
                .get("series")
                .cloned()
                .unwrap_or_default();
            *out.entry((series, (p.time_unix_nano / 1_000_000) as i64))
                .or_insert(0) += 1;
        }
    }
    out
}

/// Waits until every scraped point has been delivered; returns (lost, duplicated).
async fn settle(sink: &Sink, expected: &BTreeSet<Point>, wait: Duration) -> (usize, usize) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let got = delivered(sink);
        let lost = expected.iter().filter(|p| !got.contains_key(p)).count();
        if lost == 0 || tokio::time::Instant::now() > deadline {
            let dups = got.values().map(|n| n - 1).sum();
            return (lost, dups);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn unavailable() -> Reply {
    Reply::Fail {
        status: 503,
        retry_after: None,
        body: "backend unavailable".into(),
    }
}

fn throttled() -> Reply {
    Reply::Fail {
        status: 429,
        retry_after: Some(1),
        body: "slow down".into(),
    }
}

/// 503s, then 429s with Retry-After, for 4 s against a 1 s retry budget and a 3-batch queue.
async fn outage_scenario(storage: Option<&str>) -> (usize, usize, usize) {
    let (target, _n) = probe_target().await;
    let (sink_addr, sink) = http_sink().await;
    let facade = free_port();
    let agent = start_agent(&config(&target, sink_addr, facade, storage)).await;
    sink.wait_for(Duration::from_secs(10), "first delivery", |s| {
        !delivered(s).is_empty()
    })
    .await;
    sink.outage(Some(unavailable()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    sink.outage(Some(throttled()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    sink.outage(None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let expected = scraped(facade).await;
    let (lost, dups) = settle(&sink, &expected, Duration::from_secs(20)).await;
    agent.shutdown(Duration::from_secs(5)).await;
    (expected.len(), lost, dups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retry_budget_loses_nothing_with_a_persistent_queue() {
    let dir = tempfile::tempdir().expect("tmp");
    let (scraped_points, lost, dups) =
        outage_scenario(Some(&dir.path().display().to_string())).await;
    eprintln!("persistent queue: {scraped_points} points scraped, {lost} lost, {dups} duplicated");
    assert!(scraped_points > 40, "enough data to mean something");
    assert_eq!(lost, 0, "points lost through the outage");

    // The same outage with the in-memory queue alone loses data: the scenario is real.
    let (scraped_points, lost, _) = outage_scenario(None).await;
    eprintln!("memory queue: {scraped_points} points scraped, {lost} lost");
    assert!(lost > 0, "the in-memory queue should have overflowed");
}

fn spawn_agent(config: &std::path::Path) -> ChildGuard {
    ChildGuard(
        Command::new(BIN)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("agent starts"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_queued_when_the_agent_is_killed_are_delivered_after_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let queue_dir = dir.path().join("queue");
    let (target, _n) = probe_target().await;
    let (sink_addr, sink) = http_sink().await;
    let facade = free_port();
    let cfg_path = dir.path().join("config.yaml");
    std::fs::write(
        &cfg_path,
        config(
            &target,
            sink_addr,
            facade,
            Some(&queue_dir.display().to_string()),
        )
        .replace("directory:", "create_directory: true\n    directory:"),
    )
    .expect("write config");

    sink.outage(Some(unavailable()));
    let mut agent = spawn_agent(&cfg_path);
    // Let batches pile up on disk while the backend refuses everything.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut expected = BTreeSet::new();
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some((200, _)) = try_http_get(&format!("http://127.0.0.1:{facade}/-/ready")).await {
            expected = scraped(facade).await;
            if expected.len() >= 30 {
                break;
            }
        }
    }
    assert!(expected.len() >= 30, "scraping ran: {}", expected.len());
    // Everything in that snapshot has had time to reach the disk queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let on_disk = std::fs::read_dir(queue_dir.join("exporter_otlphttp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(on_disk > 0, "segments on disk before the kill");
    agent.0.kill().expect("SIGKILL");
    let _ = agent.0.wait();
    assert!(
        delivered(&sink).is_empty(),
        "nothing got through the outage"
    );

    // Restart on the same directory; the backend recovers a moment later.
    agent = spawn_agent(&cfg_path);
    tokio::time::sleep(Duration::from_secs(1)).await;
    sink.outage(None);
    let (lost, dups) = settle(&sink, &expected, Duration::from_secs(30)).await;
    eprintln!(
        "crash: {} points scraped before SIGKILL, {lost} lost, {dups} duplicated",
        expected.len()
    );
    assert_eq!(lost, 0, "points queued before the crash were lost");
    drop(agent);
}
