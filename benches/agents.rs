//! meshmetrics against vmagent and Prometheus in agent mode, on the same synthetic Istio
//! sidecars at the same interval, each agent alone in turn after a warm-up.
//!
//! - vmagent (Debian `victoria-metrics`) and Prometheus agent mode (Debian `prometheus`)
//!   remote-write to a sink that reads and discards the bodies;
//! - meshmetrics exports OTLP/HTTP (zstd, then gzip) to the same sink, which decodes nothing.
//!
//! Figures per agent: CPU seconds (user + system, whole process, from /proc) per million
//! scraped samples, steady and peak resident memory, bytes per active series, and the rate at
//! which it falls behind: in a second phase the interval drops to `MM_SAT_INTERVAL` with
//! `MM_SAT_SIDECARS` targets, far more than any of them can scrape on time, and the samples
//! actually fetched per second is its ceiling. vmagent and meshmetrics (zstd) run in turn
//! `MM_ROUNDS` times (3): the memory of either moves by tens of percent between runs, so
//! their ratio is the median of those pairs, whose runs the table shows.
//!
//!     cargo bench --bench agents                      # 100 sidecars × 2,224 series, 5 s
//!     MM_SIDECARS=20 MM_MEASURE_S=20 cargo bench --bench agents
//!
//! Results go to stdout and, as JSON, to `$MM_BENCH_JSON` when set (`scripts/bench.sh`
//! turns them into docs/benchmarks.md and its chart).

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/workload.rs"]
mod workload;

use fleet::{reply, scrape_targets, serve, serve_sink, sidecar_addr, Sink};
use harness::{cpu_seconds, env_usize, free_port, status_kib, Proc};

use bytes::Bytes;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What the sidecars serve: per sidecar, its current body, replaced each interval with
/// counters advanced, and the count of samples served (what the agents fetched).
struct Sidecars {
    bodies: Vec<RwLock<Bytes>>,
    served_samples: AtomicU64,
    series: Vec<u64>,
}

async fn serve_sidecars(sidecars: Arc<Sidecars>, count: usize, port: u16) {
    for i in 0..count {
        let listener = tokio::net::TcpListener::bind(sidecar_addr(i, port))
            .await
            .expect("bind sidecar address (127.x.y.z must route to lo)");
        let sidecars = sidecars.clone();
        serve(listener, move |_req| {
            let body = sidecars.bodies[i]
                .read()
                .map(|b| b.clone())
                .unwrap_or_default();
            sidecars
                .served_samples
                .fetch_add(sidecars.series[i], Ordering::Relaxed);
            async move { reply("text/plain; version=0.0.4", body) }
        });
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Scraper {
    Vmagent,
    PromAgent,
    MeshmetricsZstd,
    MeshmetricsGzip,
}

impl Scraper {
    fn name(self) -> &'static str {
        match self {
            Scraper::Vmagent => "vmagent",
            Scraper::PromAgent => "Prometheus agent",
            Scraper::MeshmetricsZstd => "meshmetrics (OTLP zstd)",
            Scraper::MeshmetricsGzip => "meshmetrics (OTLP gzip)",
        }
    }
}

/// Prometheus's scrape config; the remote-write section only for Prometheus (vmagent takes
/// its URL as a flag and refuses unknown sections).
fn prometheus_config(count: usize, port: u16, interval_ms: u64, sink: Option<u16>) -> String {
    let mut cfg = format!(
        "global: {{scrape_interval: {interval_ms}ms, scrape_timeout: {interval_ms}ms}}\n\
         scrape_configs:\n  - job_name: mesh\n    static_configs:\n{}",
        scrape_targets(count, port, "      ")
    );
    if let Some(sink) = sink {
        cfg.push_str(&format!(
            "remote_write:\n  - url: http://127.0.0.1:{sink}/api/v1/write\n"
        ));
    }
    cfg
}

fn meshmetrics_config(
    count: usize,
    port: u16,
    interval_ms: u64,
    sink: u16,
    compression: &str,
) -> String {
    format!(
        "receivers:\n  prometheus:\n    config:\n      global: {{scrape_interval: {interval_ms}ms, scrape_timeout: {interval_ms}ms}}\n      scrape_configs:\n        - job_name: mesh\n          static_configs:\n{}\
         processors:\n  batch: {{}}\n\
         exporters:\n  otlphttp:\n    endpoint: http://127.0.0.1:{sink}\n    compression: {compression}\n\
         service:\n  pipelines:\n    metrics: {{receivers: [prometheus], processors: [batch], exporters: [otlphttp]}}\n  telemetry: {{metrics: {{address: ''}}, logs: {{level: warn}}}}\n",
        scrape_targets(count, port, "            ")
    )
}

fn start(agent: Scraper, dir: &std::path::Path, cfg_text: &str, sink: u16) -> Proc {
    let cfg = dir.join("agent.yaml");
    std::fs::write(&cfg, cfg_text).expect("write config");
    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("data dir");
    let mut cmd = match agent {
        Scraper::Vmagent => {
            let mut c = Command::new("vmagent");
            c.arg(format!("-promscrape.config={}", cfg.display()))
                .arg(format!(
                    "-remoteWrite.url=http://127.0.0.1:{sink}/api/v1/write"
                ))
                .arg(format!("-remoteWrite.tmpDataPath={}", data.display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{}", free_port()))
                .arg("-loggerLevel=ERROR");
            c
        }
        Scraper::PromAgent => {
            let mut c = Command::new("prometheus");
            c.arg("--enable-feature=agent")
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.agent.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
                .arg("--log.level=error");
            c
        }
        Scraper::MeshmetricsZstd | Scraper::MeshmetricsGzip => {
            harness::agent_command(env!("CARGO_BIN_EXE_meshmetrics"), &cfg)
        }
    };
    Proc(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} could not start: {e}", agent.name())),
    )
}

#[derive(Clone)]
struct Figures {
    agent: Scraper,
    /// Which of the alternating rounds (0 outside them).
    round: usize,
    cpu_s: f64,
    samples: u64,
    steady_rss: u64,
    peak_rss: u64,
    series: u64,
    sink_bytes: u64,
    sink_requests: u64,
    behind_at: f64,
}

impl Figures {
    fn cpu_per_million(&self) -> f64 {
        self.cpu_s / (self.samples as f64 / 1e6)
    }

    fn rss_ratio(&self, other: &Figures) -> f64 {
        self.steady_rss as f64 / other.steady_rss.max(1) as f64
    }
}

struct Run {
    sidecars: Arc<Sidecars>,
    sink: Arc<Sink>,
    sink_port: u16,
    port: u16,
    count: usize,
}

impl Run {
    fn config(&self, agent: Scraper, count: usize, interval_ms: u64) -> String {
        match agent {
            Scraper::Vmagent => prometheus_config(count, self.port, interval_ms, None),
            Scraper::PromAgent => {
                prometheus_config(count, self.port, interval_ms, Some(self.sink_port))
            }
            Scraper::MeshmetricsZstd => {
                meshmetrics_config(count, self.port, interval_ms, self.sink_port, "zstd")
            }
            Scraper::MeshmetricsGzip => {
                meshmetrics_config(count, self.port, interval_ms, self.sink_port, "gzip")
            }
        }
    }

    /// Steady state at the configured interval: CPU per sample and memory.
    async fn steady(
        &self,
        agent: Scraper,
        interval_ms: u64,
        warm: Duration,
        measure: Duration,
    ) -> Figures {
        let dir = tempfile::tempdir().expect("tmp");
        let p = start(
            agent,
            dir.path(),
            &self.config(agent, self.count, interval_ms),
            self.sink_port,
        );
        let pid = p.0.id();
        tokio::time::sleep(warm).await;
        let (cpu0, samples0) = (
            cpu_seconds(pid),
            self.sidecars.served_samples.load(Ordering::Relaxed),
        );
        let (req0, bytes0) = (
            self.sink.requests.load(Ordering::Relaxed),
            self.sink.bytes.load(Ordering::Relaxed),
        );
        let mut rss = Vec::new();
        let t = Instant::now();
        while t.elapsed() < measure {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss.push(status_kib(pid, "VmRSS:") * 1024);
        }
        let cpu_s = cpu_seconds(pid) - cpu0;
        let samples = self.sidecars.served_samples.load(Ordering::Relaxed) - samples0;
        let peak_rss = status_kib(pid, "VmHWM:") * 1024;
        rss.sort();
        let series: u64 = self.sidecars.series.iter().take(self.count).sum();
        Figures {
            agent,
            round: 0,
            cpu_s,
            samples,
            steady_rss: rss.get(rss.len() / 2).copied().unwrap_or(0),
            peak_rss,
            series,
            sink_bytes: self.sink.bytes.load(Ordering::Relaxed) - bytes0,
            sink_requests: self.sink.requests.load(Ordering::Relaxed) - req0,
            behind_at: 0.0,
        }
    }

    /// Samples per second actually fetched when asked for far more than the agent can do.
    async fn ceiling(
        &self,
        agent: Scraper,
        count: usize,
        interval_ms: u64,
        measure: Duration,
    ) -> f64 {
        let dir = tempfile::tempdir().expect("tmp");
        let _p = start(
            agent,
            dir.path(),
            &self.config(agent, count, interval_ms),
            self.sink_port,
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        let s0 = self.sidecars.served_samples.load(Ordering::Relaxed);
        let t = Instant::now();
        tokio::time::sleep(measure).await;
        (self.sidecars.served_samples.load(Ordering::Relaxed) - s0) as f64
            / t.elapsed().as_secs_f64()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let count = env_usize("MM_SIDECARS", 100);
    let interval_ms = env_usize("MM_INTERVAL_MS", 5000) as u64;
    let warm = Duration::from_secs(env_usize("MM_WARMUP_S", 15) as u64);
    let measure = Duration::from_secs(env_usize("MM_MEASURE_S", 30) as u64);
    let sat_count = env_usize("MM_SAT_SIDECARS", 200);
    let sat_interval_ms = env_usize("MM_SAT_INTERVAL_MS", 250) as u64;
    let sat_measure = Duration::from_secs(env_usize("MM_SAT_MEASURE_S", 15) as u64);
    let only: Option<String> = std::env::var("MM_AGENTS").ok();
    let rounds = env_usize("MM_ROUNDS", 3).max(1);
    let total = count.max(sat_count);

    let models: Vec<workload::Sidecar> = (0..total).map(workload::Sidecar::new).collect();
    let series: Vec<u64> = models.iter().map(|m| m.series() as u64).collect();
    let sidecars = Arc::new(Sidecars {
        bodies: (0..total).map(|_| RwLock::new(Bytes::new())).collect(),
        served_samples: AtomicU64::new(0),
        series,
    });
    // Counters advance once per steady interval (also during the saturation phase: rendering
    // every body that often would take a core from the agents), on a thread of their own so
    // serving a body is one clone of `Bytes`.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (sidecars, stop) = (sidecars.clone(), stop.clone());
        let mut text = String::new();
        let mut render = move |step: u64| {
            for (i, m) in models.iter().enumerate() {
                m.render(step, None, &mut text);
                if let Ok(mut b) = sidecars.bodies[i].write() {
                    *b = Bytes::copy_from_slice(text.as_bytes());
                }
            }
        };
        render(1);
        std::thread::spawn(move || {
            let mut step = 1;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(interval_ms));
                step += 1;
                render(step);
            }
        });
    }
    let port = free_port();
    serve_sidecars(sidecars.clone(), total, port).await;
    let sink = Arc::new(Sink::default());
    let sink_port = serve_sink(sink.clone()).await;
    let run = Run {
        sidecars: sidecars.clone(),
        sink: sink.clone(),
        sink_port,
        port,
        count,
    };
    let per_sidecar = run.sidecars.series[0];
    println!(
        "{count} sidecars × ~{per_sidecar} series every {interval_ms} ms = {} samples/s; warm-up {warm:?}, measured {measure:?}",
        run.sidecars.series.iter().take(count).sum::<u64>() * 1000 / interval_ms
    );

    let wanted = |agent: Scraper| {
        only.as_ref()
            .is_none_or(|only| only.split(',').any(|a| agent.name().starts_with(a.trim())))
    };
    let print = |f: &Figures, round: &str| {
        println!(
            "  {:<26}{round:<10} {:6.2} CPU-s per million samples, steady {:6.1} MiB, peak {:6.1} MiB, sink {} requests {:.1} MiB",
            f.agent.name(),
            f.cpu_per_million(),
            f.steady_rss as f64 / 1048576.0,
            f.peak_rss as f64 / 1048576.0,
            f.sink_requests,
            f.sink_bytes as f64 / 1048576.0
        );
    };
    // vmagent and meshmetrics in turn, `rounds` times: either one's memory moves by tens of
    // percent between runs, so their ratio is the median of alternating pairs.
    let mut results: Vec<Figures> = Vec::new();
    let mut pairs: Vec<(Figures, Figures)> = Vec::new();
    for round in 1..=rounds {
        let mut pair = Vec::new();
        for agent in [Scraper::Vmagent, Scraper::MeshmetricsZstd] {
            if wanted(agent) {
                let mut f = run.steady(agent, interval_ms, warm, measure).await;
                f.round = round;
                print(&f, &format!(" round {round}"));
                pair.push(f);
            }
        }
        match <[Figures; 2]>::try_from(pair) {
            Ok([vm, mm]) => pairs.push((vm, mm)),
            // Only one of the two asked for (MM_AGENTS): its last round is the one reported.
            Err(one) if round == rounds => results.extend(one),
            Err(_) => {}
        }
    }
    for agent in [Scraper::PromAgent, Scraper::MeshmetricsGzip] {
        if wanted(agent) {
            let f = run.steady(agent, interval_ms, warm, measure).await;
            print(&f, "");
            results.push(f);
        }
    }
    // The table and the ceilings use each agent's median-memory run of the rounds.
    let median_pair = {
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        let ratio = |i: usize| pairs[i].1.rss_ratio(&pairs[i].0);
        order.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)));
        order.get(order.len() / 2).copied()
    };
    for (i, (vm, mm)) in pairs.iter().enumerate() {
        if Some(i) == median_pair {
            results.insert(0, mm.clone());
            results.insert(0, vm.clone());
        }
    }
    if sat_count > 0 {
        for f in results.iter_mut() {
            if f.agent == Scraper::MeshmetricsGzip {
                continue;
            }
            f.behind_at = run
                .ceiling(f.agent, sat_count, sat_interval_ms, sat_measure)
                .await;
            println!(
                "  {:<26} ceiling {:.0} samples/s ({} sidecars every {} ms asked {} samples/s)",
                f.agent.name(),
                f.behind_at,
                sat_count,
                sat_interval_ms,
                run.sidecars.series.iter().take(sat_count).sum::<u64>() * 1000 / sat_interval_ms
            );
        }
    }
    stop.store(true, Ordering::Relaxed);

    let find = |a: Scraper| results.iter().find(|f| f.agent == a);
    println!();
    println!("| agent | CPU-s per million samples | steady RSS | peak RSS | bytes per series | ceiling (samples/s) |");
    println!("|---|---|---|---|---|---|");
    for f in &results {
        println!(
            "| {} | {:.2} | {:.1} MiB | {:.1} MiB | {:.0} | {} |",
            f.agent.name(),
            f.cpu_per_million(),
            f.steady_rss as f64 / 1048576.0,
            f.peak_rss as f64 / 1048576.0,
            f.steady_rss as f64 / f.series as f64,
            if f.behind_at > 0.0 {
                format!("{:.0}", f.behind_at)
            } else {
                "–".into()
            }
        );
    }
    if !pairs.is_empty() {
        println!();
        println!("| round | vmagent steady RSS | meshmetrics steady RSS | ratio |");
        println!("|---|---|---|---|");
        for (vm, mm) in &pairs {
            println!(
                "| {} | {:.1} MiB | {:.1} MiB | {:.2}× |",
                vm.round,
                vm.steady_rss as f64 / 1048576.0,
                mm.steady_rss as f64 / 1048576.0,
                mm.rss_ratio(vm)
            );
        }
    }
    if let (Some(mm), Some(prom), Some(vm)) = (
        find(Scraper::MeshmetricsZstd),
        find(Scraper::PromAgent),
        find(Scraper::Vmagent),
    ) {
        println!();
        println!(
            "ratios: CPU per sample vs Prometheus agent {:.2}× (goal ≤ 0.1), vs vmagent {:.2}×; peak RSS vs vmagent {:.2}×; steady RSS vs vmagent {:.2}× (median of {} alternating pairs; goal ≤ 1.2); ceiling vs Prometheus agent {:.2}× (goal ≥ 3)",
            mm.cpu_per_million() / prom.cpu_per_million(),
            mm.cpu_per_million() / vm.cpu_per_million(),
            mm.peak_rss as f64 / vm.peak_rss.max(1) as f64,
            mm.rss_ratio(vm),
            pairs.len(),
            mm.behind_at / prom.behind_at.max(1.0),
        );
    }
    if let Ok(path) = std::env::var("MM_BENCH_JSON") {
        let json = serde_json::json!({
            "sidecars": count,
            "series_per_sidecar": per_sidecar,
            "interval_ms": interval_ms,
            "measure_s": measure.as_secs(),
            "saturation": {"sidecars": sat_count, "interval_ms": sat_interval_ms},
            "rounds": pairs.iter().map(|(vm, mm)| serde_json::json!({
                "round": vm.round,
                "vmagent_steady_rss": vm.steady_rss,
                "meshmetrics_steady_rss": mm.steady_rss,
                "vmagent_cpu_s_per_million": vm.cpu_per_million(),
                "meshmetrics_cpu_s_per_million": mm.cpu_per_million(),
            })).collect::<Vec<_>>(),
            "agents": results.iter().map(|f| serde_json::json!({
                "name": f.agent.name(),
                "cpu_s_per_million": f.cpu_per_million(),
                "cpu_s": f.cpu_s,
                "samples": f.samples,
                "steady_rss": f.steady_rss,
                "peak_rss": f.peak_rss,
                "series": f.series,
                "sink_bytes": f.sink_bytes,
                "sink_requests": f.sink_requests,
                "ceiling_samples_per_s": f.behind_at,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json"))
            .expect("write json");
    }
}
