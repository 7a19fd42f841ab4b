//! `memory_limiter` under a load many times what its limit allows: targets whose every scrape
//! brings thousands of new series. Resident memory (the kernel's peak, VmHWM) must stay under
//! `limit_mib`, scrapes must be skipped and counted rather than cut, and the agent must keep
//! answering health checks and queries.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_meshmetrics");
/// Without a limiter this load peaked at 198 MiB, and at 119-123 MiB with a release build
/// running beside the test (a busy machine lands fewer scrapes); with one, at 63-65 MiB.
const LIMIT_MIB: u64 = 90;
const TARGETS: usize = 10;
const SERIES_PER_SCRAPE: usize = 5000;

fn churn_page(target: usize, version: u64) -> Page {
    let mut body = String::with_capacity(SERIES_PER_SCRAPE * 64);
    body.push_str("# TYPE churn_total counter\n");
    for i in 0..SERIES_PER_SCRAPE {
        body.push_str(&format!(
            "churn_total{{target=\"t{target}\",version=\"{version}\",i=\"{i}\"}} {i}\n"
        ));
    }
    Page::text(body)
}

struct Run {
    peak_mib: u64,
    scrapes: f64,
    skipped: f64,
    checks: usize,
    health_ok: usize,
    queries_ok: usize,
}

fn sum_of(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs the agent against `targets` for `secs`, with or without the limiter.
async fn run(targets: &[Target], limiter: bool, secs: u64) -> Run {
    let facade = free_port();
    let health = free_port();
    let telemetry = free_port();
    let list: Vec<String> = targets.iter().map(|t| format!("'{}'", t.addr)).collect();
    let (processor, chain) = if limiter {
        (
            // Scrapes are skipped above 40 MiB (limit minus spike); the spike allowance covers
            // one round of ten 5,000-series scrapes in flight (the limited runs peaked 23-25 MiB above).
            format!("  memory_limiter: {{check_interval: 50ms, limit_mib: {LIMIT_MIB}, spike_limit_mib: 50}}\n"),
            "[memory_limiter, batch]",
        )
    } else {
        (String::new(), "[batch]")
    };
    let yaml = format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: churn
          scrape_interval: 500ms
          scrape_timeout: 500ms
          static_configs: [{{targets: [{targets}]}}]
processors:
{processor}  batch: {{timeout: 200ms}}
exporters:
  promql:
    endpoint: 127.0.0.1:{facade}
extensions:
  health_check: {{endpoint: '127.0.0.1:{health}'}}
service:
  extensions: [health_check]
  pipelines:
    metrics: {{receivers: [prometheus], processors: {chain}, exporters: [promql]}}
  telemetry: {{metrics: {{address: '127.0.0.1:{telemetry}'}}}}
",
        targets = list.join(", ")
    );
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, yaml).expect("write config");
    let agent = ChildGuard(
        Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent starts"),
    );
    let pid = agent.0.id();
    let mut r = Run {
        peak_mib: 0,
        scrapes: 0.0,
        skipped: 0.0,
        checks: 0,
        health_ok: 0,
        queries_ok: 0,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        r.checks += 1;
        if let Some((200, _)) = try_http_get(&format!("http://127.0.0.1:{health}/")).await {
            r.health_ok += 1;
        }
        let q = format!("http://127.0.0.1:{facade}/api/v1/query?query=vector(1)");
        if let Some((200, body)) = try_http_get(&q).await {
            if body.contains(r#""1"]"#) {
                r.queries_ok += 1;
            }
        }
    }
    r.peak_mib = status_kib(pid, "VmHWM:") / 1024;
    let metrics = try_http_get(&format!("http://127.0.0.1:{telemetry}/metrics"))
        .await
        .map(|(_, b)| b)
        .unwrap_or_default();
    r.scrapes = sum_of(&metrics, "meshmetrics_scrapes_total");
    r.skipped = sum_of(&metrics, "meshmetrics_scrapes_skipped_total");
    drop(agent);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_memory_stays_under_the_limit_under_the_load_that_breaks_it() {
    let mut targets = Vec::new();
    for t in 0..TARGETS {
        let target = Target::start().await;
        target.set("/metrics", churn_page(t, 0));
        targets.push(target);
    }
    // New series on every scrape: each version is a fresh set of SERIES_PER_SCRAPE series,
    // 10 targets x 5,000 x 2 scrapes/s = 100,000 new series a second offered.
    {
        let targets = targets.clone();
        tokio::spawn(async move {
            for version in 1.. {
                tokio::time::sleep(Duration::from_millis(500)).await;
                for (t, target) in targets.iter().enumerate() {
                    target.set("/metrics", churn_page(t, version));
                }
            }
        });
    }
    let free = run(&targets, false, 15).await;
    eprintln!(
        "without memory_limiter: peak RSS {} MiB, {} scrapes",
        free.peak_mib, free.scrapes
    );
    assert!(
        free.peak_mib > LIMIT_MIB,
        "the load must break the limit without a limiter ({} MiB)",
        free.peak_mib
    );
    let r = run(&targets, true, 15).await;
    eprintln!(
        "with memory_limiter (limit {LIMIT_MIB} MiB): peak RSS {} MiB, {} scrapes run, {} skipped, health {}/{}, queries {}/{}",
        r.peak_mib, r.scrapes, r.skipped, r.health_ok, r.checks, r.queries_ok, r.checks
    );
    assert!(r.peak_mib > 0, "read the agent's peak memory");
    assert!(
        r.peak_mib < LIMIT_MIB,
        "peak RSS {} MiB over the {LIMIT_MIB} MiB limit",
        r.peak_mib
    );
    assert!(r.skipped > 0.0, "the limiter skipped scrapes");
    assert!(r.scrapes > 0.0, "scrapes ran until the limit");
    assert!(r.health_ok >= r.checks - 1, "health answered throughout");
    assert!(r.queries_ok >= r.checks - 1, "queries answered throughout");
}
