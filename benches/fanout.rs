//! Query fan-out latency: N agent processes on distinct loopback addresses, each scraping its
//! own synthetic sidecars, with one of them asked Flagger's queries (fanning out to all N),
//! against a real Prometheus server scraping every sidecar itself, and one agent process doing
//! the same — same samples, same queries, one run. The ratio that counts is fan-out over
//! Prometheus. Also counts what a fan-out moves: the peers' answers in bytes.
//!
//!     cargo bench --bench fanout
//!     MM_FANOUT_PEERS=8,32,64 MM_SIDECARS_PER_PEER=2 cargo bench --bench fanout
//!
//! Needs `prometheus` on the PATH (Debian package `prometheus`).

#[path = "support/harness.rs"]
mod harness;
#[path = "support/workload.rs"]
mod workload;

use harness::{env_usize, escape, free_port, get, rss_bytes, same_answer, spawn_agent, time_query};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Two minutes of history at 5 s: enough for Flagger's `[1m]` rates.
const STEPS: u64 = 24;
const STEP_MS: i64 = 5_000;

fn agent_config(addr: &str, targets: &[String], peers: &[String]) -> String {
    let mut t = String::new();
    for path in targets {
        let (gen, path) = path.split_once('/').unwrap_or((path, ""));
        let pod = path.rsplit('/').next().unwrap_or("");
        t.push_str(&format!(
            "            - targets: ['{gen}']\n              labels: {{__metrics_path__: /{path}, pod: p{pod}}}\n"
        ));
    }
    let peers = if peers.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = peers.iter().map(|p| format!("'{p}'")).collect();
        format!("    peers: {{static: [{}]}}\n", list.join(", "))
    };
    format!(
        "receivers:\n  prometheus:\n    config:\n      global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n      scrape_configs:\n        - job_name: mesh\n          static_configs:\n{t}exporters:\n  promql:\n    endpoint: {addr}\n    prometheus_compat: \"{}\"\n{peers}service:\n  pipelines:\n    metrics: {{receivers: [prometheus], exporters: [promql]}}\n  telemetry: {{metrics: {{address: ''}}, logs: {{level: warn}}}}\n",
        harness::prometheus_compat()
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let per_peer = env_usize("MM_SIDECARS_PER_PEER", 2);
    let repeats = env_usize("MM_QUERY_REPEATS", 15);
    let sizes: Vec<usize> = std::env::var("MM_FANOUT_PEERS")
        .unwrap_or_else(|_| "8,32".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // Built by cargo for this benchmark, with its optimised profile.
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_meshmetrics"));
    let model = Arc::new(workload::Sidecar::new(1));
    println!("| peers | series | fan-out median | Prometheus median | ratio | single agent median | peers' answers | same answer |");
    println!("|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        let sidecars = n * per_peer;
        let base_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
            - STEPS as i64 * STEP_MS;
        // One step counter per (scraper, sidecar): scraper 0 is the fleet, 1 the single
        // agent, 2 Prometheus.
        let steps: Arc<Vec<AtomicU64>> =
            Arc::new((0..3 * sidecars).map(|_| AtomicU64::new(0)).collect());
        // Once every scraper has the whole history, targets answer 404: queries are then
        // timed on an idle machine, not against 2 × N scrapes rendering and parsing bodies.
        let ingested = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let app = {
            let (model, steps, ingested) = (model.clone(), steps.clone(), ingested.clone());
            axum::Router::new().route(
                "/s/{scraper}/{pod}",
                axum::routing::get(
                    move |axum::extract::Path((scraper, pod)): axum::extract::Path<(
                        usize,
                        usize,
                    )>| {
                        let (model, steps) = (model.clone(), steps.clone());
                        let ingested = ingested.clone();
                        async move {
                            let Some(c) = steps.get(scraper * sidecars + pod) else {
                                return Err(axum::http::StatusCode::NOT_FOUND);
                            };
                            if ingested.load(Ordering::Relaxed) {
                                return Err(axum::http::StatusCode::NOT_FOUND);
                            }
                            let step = (c.fetch_add(1, Ordering::Relaxed) + 1).min(STEPS);
                            let mut body = String::with_capacity(1 << 20);
                            model.render(step, Some(base_ms + step as i64 * STEP_MS), &mut body);
                            // Distinct pods: every sidecar's series are its own.
                            Ok(body.replace("podinfo-", &format!("pod{pod}-podinfo-")))
                        }
                    },
                ),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let gen = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let peers: Vec<String> = (0..n)
            .map(|i| format!("127.0.{}.{}:{port}", 1 + i / 250, 1 + i % 250))
            .collect();
        let mut procs = Vec::new();
        for (i, addr) in peers.iter().enumerate() {
            let targets: Vec<String> = (0..per_peer)
                .map(|k| format!("{gen}/s/0/{}", i * per_peer + k))
                .collect();
            // Agent 0 is the one asked: it fans out to all (itself included).
            let fan = if i == 0 { peers.clone() } else { Vec::new() };
            let cfg = dir.path().join(format!("agent{i}.yaml"));
            std::fs::write(&cfg, agent_config(addr, &targets, &fan)).expect("write");
            procs.push(spawn_agent(&bin, &cfg));
        }
        let single_port = free_port();
        let single = format!("127.0.0.1:{single_port}");
        let targets: Vec<String> = (0..sidecars).map(|p| format!("{gen}/s/1/{p}")).collect();
        let cfg = dir.path().join("single.yaml");
        std::fs::write(&cfg, agent_config(&single, &targets, &[])).expect("write");
        procs.push(spawn_agent(&bin, &cfg));
        let prom_port = free_port();
        let prom = format!("127.0.0.1:{prom_port}");
        let mut prom_targets = String::new();
        for p in 0..sidecars {
            prom_targets.push_str(&format!(
                "      - targets: ['{gen}']\n        labels: {{__metrics_path__: /s/2/{p}, pod: p{p}}}\n"
            ));
        }
        procs.push(harness::spawn_prometheus(
            dir.path(),
            &format!("global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n  - job_name: mesh\n    static_configs:\n{prom_targets}"),
            &prom,
        ));
        let t0 = Instant::now();
        while !steps.iter().all(|c| c.load(Ordering::Relaxed) >= STEPS + 2) {
            assert!(t0.elapsed() < Duration::from_secs(600), "ingest too slow");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        ingested.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let at = format!("{:.3}", (base_ms + STEPS as i64 * STEP_MS) as f64 / 1000.0);
        let q = "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"pod1-podinfo-canary\"}[1m])) by (le))";
        let q2 = "sum(rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"test\",response_code!~\"5.*\"}[1m])) / sum(rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"test\"}[1m])) * 100";
        for (name, query) in [("p99 of one workload", q), ("mesh-wide success rate", q2)] {
            let timed = time_query(&[&peers[0], &prom, &single], query, &at, repeats).await;
            let ((a, fanned), (p, theirs), (b, alone)) =
                (timed[0].clone(), timed[1].clone(), timed[2].clone());
            // What the peers sent: the raw samples of the selectors, read from a range query
            // of the same selectors through the single agent (same series, same window).
            let moved = answer_bytes(&single, query, &at).await;
            let agree = same_answer(&fanned, &theirs) && same_answer(&fanned, &alone);
            if !agree {
                eprintln!("{name}: answers differ\n  fan-out: {fanned}\n  prometheus: {theirs}\n  single:  {alone}");
            }
            println!(
                "| {n} ({name}) | {} | {:.2} ms | {:.2} ms | {:.2}× | {:.2} ms | {} | {agree} |",
                sidecars * model.series(),
                a.as_secs_f64() * 1000.0,
                p.as_secs_f64() * 1000.0,
                a.as_secs_f64() / p.as_secs_f64(),
                b.as_secs_f64() * 1000.0,
                moved
            );
        }
        // Memory: one leaf agent (its sidecars only) and the agent holding everything.
        let leaf = procs.get(1).map_or(0, |p| rss_bytes(p.0.id()));
        let all = procs.get(n).map_or(0, |p| rss_bytes(p.0.id()));
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "|   | memory: leaf agent {:.1} MiB ({} series), single agent {:.1} MiB ({} series), {:.0} B/series | | | | | |",
            mib(leaf),
            per_peer * model.series(),
            mib(all),
            sidecars * model.series(),
            all.saturating_sub(leaf) as f64 / ((sidecars - per_peer).max(1) * model.series()) as f64
        );
        drop(procs);
        server.abort();
    }
}

/// The series and samples the query's selectors read — what the peers send between them —
/// counted through the agent holding everything (each selector over its window).
async fn answer_bytes(single: &str, query: &str, at: &str) -> String {
    let selectors: Vec<&str> = query
        .match_indices("istio_")
        .map(|(i, _)| {
            let rest = &query[i..];
            let end = rest.find("[1m]").unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    let (mut series, mut samples, mut bytes) = (0usize, 0usize, 0usize);
    let mut pairs = std::collections::HashSet::new();
    for s in selectors {
        let url = format!(
            "http://{single}/api/v1/query?query={}&time={at}",
            escape(&format!("{s}[1m]"))
        );
        let (_, body) = get(&url).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        for r in v["data"]["result"].as_array().into_iter().flatten() {
            series += 1;
            let n = r["values"].as_array().map_or(0, |a| a.len());
            samples += n;
            // Protobuf as the peers send it: each distinct label pair once (two strings with
            // their tags), about 2 B per label of a series pointing into them, and about 15 B a
            // sample (a varint millisecond timestamp and a double).
            let labels = r["metric"].as_object().map_or(0, |m| {
                m.iter()
                    .map(|(k, v)| {
                        let v = v.as_str().unwrap_or("");
                        2 + if pairs.insert((k.clone(), v.to_string())) {
                            k.len() + v.len() + 6
                        } else {
                            0
                        }
                    })
                    .sum::<usize>()
            });
            bytes += labels + 15 * n;
        }
    }
    format!("{series} series, {samples} samples, ≈{} KiB", bytes / 1024)
}
