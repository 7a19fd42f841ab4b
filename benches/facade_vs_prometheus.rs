//! The query façade against a Prometheus server on the same data, in one run:
//! query latency (Flagger's builtin checks and a heavy aggregation) and resident memory for
//! a 15-minute window at a 5 s scrape interval.
//!
//! Both scrape the same synthetic sidecars. Each scraper has its own synthetic clock: every
//! request to `/s/<scraper>/<pod>` returns the next 5 s step (timestamps in the body, the last
//! 15 minutes), so both store exactly the same samples however fast they scrape.
//!
//!     cargo bench --bench facade_vs_prometheus
//!     MM_SIDECARS=50 cargo bench --bench facade_vs_prometheus   # ≈110k series
//!
//! Needs `prometheus` on the PATH (Debian package `prometheus`).

#[path = "support/harness.rs"]
mod harness;
#[path = "support/workload.rs"]
mod workload;

use harness::{env_usize, free_port, rss_bytes, same_answer, settle, time_query};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEPS: u64 = 180; // 15 minutes at 5 s
const STEP_MS: i64 = 5_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sidecars = env_usize("MM_SIDECARS", 10);
    let repeats = env_usize("MM_QUERY_REPEATS", 15);
    let models: Arc<Vec<workload::Sidecar>> =
        Arc::new((0..sidecars).map(workload::Sidecar::new).collect());
    let series: usize = models.iter().map(|m| m.series()).sum();
    let base_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        - STEPS as i64 * STEP_MS;
    // Per (scraper, pod) step counters.
    let steps: Arc<HashMap<(u8, usize), AtomicU64>> = Arc::new(
        (0..2u8)
            .flat_map(|s| (0..sidecars).map(move |p| ((s, p), AtomicU64::new(0))))
            .collect(),
    );

    let app = {
        let models = models.clone();
        let steps = steps.clone();
        axum::Router::new().route(
            "/s/{scraper}/{pod}",
            axum::routing::get(
                move |axum::extract::Path((scraper, pod)): axum::extract::Path<(u8, usize)>| {
                    let models = models.clone();
                    let steps = steps.clone();
                    async move {
                        let Some(counter) = steps.get(&(scraper, pod)) else {
                            return String::new();
                        };
                        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                        // Once the window is in (the last step served twice more), the
                        // targets fall silent: both servers go idle before the timing, as
                        // Flagger's queries would find them, instead of re-reading the last
                        // step forever. The samples carry timestamps, so neither marks them
                        // stale.
                        if n > STEPS + 2 {
                            return String::new();
                        }
                        let step = n.min(STEPS);
                        let mut body = String::with_capacity(1 << 20);
                        models[pod].render(step, Some(base_ms + step as i64 * STEP_MS), &mut body);
                        body
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gen = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let targets = |scraper: u8| -> String {
        (0..sidecars)
            .map(|p| format!("        - targets: ['{gen}']\n          labels: {{__metrics_path__: /s/{scraper}/{p}, pod: pod-{p}}}\n"))
            .collect()
    };
    let dir = tempfile::tempdir().expect("tmp");
    // Each scrape fetches the next step, so the interval only sets the pace. At 200 ms the
    // Prometheus server here fell behind and timed out on a third of its scrapes (each lost
    // one step of samples); with the timeout equal to the interval a slow scraper just takes
    // longer, and both end up holding the same samples.
    let interval = std::env::var("MM_FACADE_INTERVAL").unwrap_or_else(|_| "500ms".into());

    // Prometheus.
    let prom_port = free_port();
    let prom = harness::spawn_prometheus(
        dir.path(),
        &format!("global: {{scrape_interval: {interval}, scrape_timeout: {interval}}}\nscrape_configs:\n  - job_name: mesh\n    static_configs:\n{}", targets(0).replace("        ", "      ")),
        &format!("127.0.0.1:{prom_port}"),
    );

    // meshmetrics, optimised, with only the façade.
    // Built by cargo for this benchmark, with its optimised profile.
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_meshmetrics"));
    let mm_port = free_port();
    let mm_cfg = dir.path().join("meshmetrics.yaml");
    std::fs::write(
        &mm_cfg,
        format!(
            "receivers:\n  prometheus:\n    config:\n      global: {{scrape_interval: {interval}, scrape_timeout: {interval}}}\n      scrape_configs:\n        - job_name: mesh\n          static_configs:\n{}exporters:\n  promql:\n    endpoint: 127.0.0.1:{mm_port}\n    retention: 20m\n    prometheus_compat: \"2.42\"\nservice:\n  pipelines:\n    metrics: {{receivers: [prometheus], exporters: [promql]}}\n  telemetry: {{metrics: {{address: ''}}, logs: {{level: warn}}}}\n",
            targets(1).replace("        - ", "            - ").replace("          labels", "              labels")
        ),
    )
    .expect("write");
    let mm = harness::spawn_agent(&bin, &mm_cfg);

    let t0 = Instant::now();
    println!("ingesting {sidecars} sidecars × ~{} series = {series} series, {STEPS} steps (15 min at 5 s) into both ...", series / sidecars.max(1));
    loop {
        let done = steps
            .iter()
            .all(|(_, c)| c.load(Ordering::Relaxed) >= STEPS + 2);
        if done {
            break;
        }
        if t0.elapsed() > Duration::from_secs(1200) {
            panic!("ingest did not finish in 20 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ingest_s = t0.elapsed().as_secs_f64();
    settle(&[mm.0.id(), prom.0.id()], Duration::from_secs(120)).await;
    // Holding the window, before any query has allocated anything.
    let (mm_idle_rss, prom_idle_rss) = (rss_bytes(mm.0.id()), rss_bytes(prom.0.id()));
    let end_ms = base_ms + STEPS as i64 * STEP_MS;
    let at = format!("{:.3}", end_ms as f64 / 1000.0);
    // A scrape that failed (a timeout under load) still advanced its target's step, so that
    // scraper misses those samples and its answers may differ slightly: say how many.
    let now = format!(
        "{:.3}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64()
    );
    let mut failed_scrapes = Vec::new();
    for addr in [
        format!("127.0.0.1:{mm_port}"),
        format!("127.0.0.1:{prom_port}"),
    ] {
        let q =
            "sum(count_over_time(up{job=\"mesh\"}[1h])) - sum(sum_over_time(up{job=\"mesh\"}[1h]))";
        let timed = time_query(&[&addr], q, &now, 1).await;
        let v: serde_json::Value = serde_json::from_str(&timed[0].1).unwrap_or_default();
        let failed = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        failed_scrapes.push(failed);
    }
    println!(
        "failed scrapes during ingest: meshmetrics {}, Prometheus {}",
        failed_scrapes[0], failed_scrapes[1]
    );

    let queries = [
        ("flagger success rate", "sum(rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"podinfo-canary\",response_code!~\"5.*\"}[1m])) / sum(rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"podinfo-canary\"}[1m])) * 100"),
        ("flagger p99 duration", "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"podinfo-canary\"}[1m])) by (le))"),
        ("heavy aggregation", "histogram_quantile(0.5, sum by (le, destination_workload) (rate(istio_request_duration_milliseconds_bucket[1m])))"),
    ];
    println!();
    let mut report = Vec::new();
    println!("| query | meshmetrics median | Prometheus median | ratio | same answer |");
    println!("|---|---|---|---|---|");
    for (name, q) in queries {
        let (ours, theirs) = (
            format!("127.0.0.1:{mm_port}"),
            format!("127.0.0.1:{prom_port}"),
        );
        let timed = time_query(&[&ours, &theirs], q, &at, repeats).await;
        let ((a, mm_answer), (b, prom_answer)) = (&timed[0], &timed[1]);
        let agree = same_answer(mm_answer, prom_answer);
        if !agree {
            eprintln!(
                "{name}: answers differ\n  meshmetrics: {mm_answer}\n  Prometheus:  {prom_answer}"
            );
        }
        report.push(serde_json::json!({
            "query": name,
            "meshmetrics_ms": a.as_secs_f64() * 1000.0,
            "prometheus_ms": b.as_secs_f64() * 1000.0,
            "same_answer": agree,
        }));
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2}× | {} |",
            a.as_secs_f64() * 1000.0,
            b.as_secs_f64() * 1000.0,
            a.as_secs_f64() / b.as_secs_f64(),
            agree
        );
    }
    let (mm_rss, prom_rss) = (rss_bytes(mm.0.id()), rss_bytes(prom.0.id()));
    let samples = series as f64 * STEPS as f64;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!();
    println!("| process | resident after ingest | after the queries | bytes/series (after ingest) | bytes/sample (after ingest) |");
    println!("|---|---|---|---|---|");
    for (name, idle, rss) in [
        ("meshmetrics", mm_idle_rss, mm_rss),
        ("Prometheus", prom_idle_rss, prom_rss),
    ] {
        println!(
            "| {name} | {:.1} MiB | {:.1} MiB | {:.0} | {:.2} |",
            mib(idle),
            mib(rss),
            idle as f64 / series as f64,
            idle as f64 / samples
        );
    }
    println!();
    println!(
        "memory ratio meshmetrics/Prometheus: {:.2}× after ingest, {:.2}× after the queries (goal ≤ 0.15)  (ingest took {ingest_s:.0} s)",
        mm_idle_rss as f64 / prom_idle_rss.max(1) as f64,
        mm_rss as f64 / prom_rss.max(1) as f64
    );
    let flagger: Vec<f64> = report
        .iter()
        .filter(|q| {
            q["query"]
                .as_str()
                .is_some_and(|n| n.starts_with("flagger"))
        })
        .map(|q| {
            q["meshmetrics_ms"].as_f64().unwrap_or(f64::NAN)
                / q["prometheus_ms"].as_f64().unwrap_or(f64::NAN)
        })
        .collect();
    println!(
        "Flagger's checks: latency {} of Prometheus's (goal ≤ 0.5 each)",
        flagger
            .iter()
            .map(|r| format!("{r:.2}×"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Ok(path) = std::env::var("MM_BENCH_JSON") {
        let json = serde_json::json!({
            "sidecars": sidecars,
            "series": series,
            "samples": samples,
            "queries": report,
            "failed_scrapes": {"meshmetrics": failed_scrapes[0], "prometheus": failed_scrapes[1]},
            "meshmetrics_rss": mm_rss,
            "prometheus_rss": prom_rss,
            "meshmetrics_rss_after_ingest": mm_idle_rss,
            "prometheus_rss_after_ingest": prom_idle_rss,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json"))
            .expect("write json");
    }
}
