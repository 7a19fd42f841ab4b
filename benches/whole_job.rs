//! The whole job, against the stack it replaces: one meshmetrics agent that exports OTLP and
//! serves Flagger and a dashboard from its window, against vmagent (export) plus a Prometheus
//! server (queries), on the same sidecars with the same query load, each stack in turn.
//!
//! - The sidecars are 10 canaried workloads (`app-K` and `app-K-primary`), ≈2,224 series each
//!   at `sidecar_addr(i)`. Each scraper has its own path and its own clock: its n-th request
//!   to a sidecar returns step n, every sample stamped `base + (n-1) × 5 s`. So every stack
//!   holds exactly the same samples relative to its start, however its scrapes are timed, and
//!   a query asked at the same step of each run must get the same answer.
//! - meshmetrics runs the `daemonset` overlay's pipeline shape: scrape → memory_limiter →
//!   resource → batch → OTLP/gRPC (zstd, persistent queue on disk), and the `promql`
//!   exporter with a 15-minute window fed by a pipeline without `batch`. A second meshmetrics
//!   run feeds the façade from behind `batch` too (one pipeline, as the overlay had it), to
//!   show what that costs in freshness.
//! - The stack: vmagent remote-writes to the same sink; the Prometheus server scrapes the same
//!   sidecars (defaults otherwise). Their CPU and resident memory are added.
//! - While each runs: Flagger's two builtin Istio checks for the 10 canaries every 10 s, and
//!   a 10-panel dashboard (each panel an instant query and a 1 h range at a 15 s step) every
//!   30 s, asked of the façade and of the Prometheus server. Each is asked with `time` set to
//!   the run's step (Flagger sends none and gets "now"), so the answers can be compared.
//! - Freshness: a probe target scraped every second returns its request count; after each
//!   probe scrape, the query endpoint is polled (every 2 ms, or a tenth of the time waited so
//!   far when that is longer) until it answers that count. The
//!   delay from the probe's answer to the query's is the scrape's end to queryable.
//!
//! Run it:
//!
//!     cargo bench --bench whole_job
//!     MM_SIDECARS=30 MM_MEASURE_S=60 cargo bench --bench whole_job     # lighter
//!
//! `MM_STACKS=Meshmetrics` runs one stack only; `MM_BIN=target/release/meshmetrics` runs that
//! build of the agent instead of the benchmark's own.
//!
//! Needs `vmagent` and `prometheus` on the PATH (Debian `victoria-metrics`, `prometheus`).
//! Results go to stdout and, as JSON, to `$MM_BENCH_JSON` when set.

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/workload.rs"]
mod workload;

use fleet::{reply, scrape_targets, serve, serve_sink, sidecar_addr, Sink};
use harness::{cpu_seconds, env_usize, escape, free_port, get, status_kib, Proc};

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const STEP_MS: i64 = 5_000;
const CANARIES: usize = 10;
/// Scrapers, each with its own path (`/m/<scraper>`) and step counters.
const VMAGENT: usize = 0;
const PROMETHEUS: usize = 1;
const MESHMETRICS: usize = 2;
const SCRAPERS: usize = 3;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The workload of sidecar `pod`: canaries `app-K` and primaries `app-K-primary` in turn.
fn workload_of(pod: usize) -> String {
    let app = pod % CANARIES;
    if (pod / CANARIES).is_multiple_of(2) {
        format!("app-{app}-primary")
    } else {
        format!("app-{app}")
    }
}

/// The sidecars and the probe, with per-scraper clocks.
struct Targets {
    models: Vec<workload::Sidecar>,
    /// Per pod and scraper: bodies served.
    steps: Vec<[AtomicU64; SCRAPERS]>,
    /// Per scraper: samples served (the sidecars' side of CPU per sample).
    samples: [AtomicU64; SCRAPERS],
    /// This run's step 1, in ms since the epoch.
    base_ms: AtomicI64,
    /// Per scraper: probe requests served, and when the last one was.
    probe_seq: [AtomicU64; SCRAPERS],
    probe_served: Mutex<[Option<(u64, Instant)>; SCRAPERS]>,
    probe_wake: tokio::sync::Notify,
}

impl Targets {
    fn reset(&self) {
        for pod in &self.steps {
            for s in pod {
                s.store(0, Ordering::Relaxed);
            }
        }
        for s in self.probe_seq.iter().chain(&self.samples) {
            s.store(0, Ordering::Relaxed);
        }
        self.base_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The step every pod has been served past, by every one of `scrapers`.
    fn complete_step(&self, scrapers: &[usize]) -> u64 {
        self.steps
            .iter()
            .flat_map(|pod| scrapers.iter().map(|&s| pod[s].load(Ordering::Relaxed)))
            .min()
            .unwrap_or(0)
            .saturating_sub(1)
    }

    fn body(&self, pod: usize, scraper: usize) -> String {
        let n = self.steps[pod][scraper].fetch_add(1, Ordering::Relaxed) + 1;
        let ts = self.base_ms.load(Ordering::Relaxed) + (n as i64 - 1) * STEP_MS;
        let mut out = String::with_capacity(1 << 20);
        self.models[pod].render(n, Some(ts), &mut out);
        self.samples[scraper].fetch_add(self.models[pod].series() as u64, Ordering::Relaxed);
        out
    }

    fn probe(&self, scraper: usize) -> String {
        let n = self.probe_seq[scraper].fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut served) = self.probe_served.lock() {
            served[scraper] = Some((n, Instant::now()));
        }
        self.probe_wake.notify_waiters();
        format!("# TYPE mm_probe_seq gauge\nmm_probe_seq {n}\n")
    }
}

fn scraper_of(path: &str, prefix: &str) -> Option<usize> {
    path.strip_prefix(prefix)?
        .parse()
        .ok()
        .filter(|&s| s < SCRAPERS)
}

async fn serve_targets(targets: Arc<Targets>, port: u16) -> u16 {
    for pod in 0..targets.models.len() {
        let listener = tokio::net::TcpListener::bind(sidecar_addr(pod, port))
            .await
            .expect("bind sidecar address (127.x.y.z must route to lo)");
        let targets = targets.clone();
        serve(listener, move |req| {
            let body = scraper_of(req.uri().path(), "/m/")
                .map(|s| targets.body(pod, s))
                .unwrap_or_default();
            async move { reply("text/plain; version=0.0.4", body) }
        });
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let probe_port = listener.local_addr().expect("addr").port();
    serve(listener, move |req| {
        let body = scraper_of(req.uri().path(), "/probe/")
            .map(|s| targets.probe(s))
            .unwrap_or_default();
        async move { reply("text/plain; version=0.0.4", body) }
    });
    probe_port
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Stack {
    /// vmagent exporting, a Prometheus server answering.
    VmagentPrometheus,
    /// meshmetrics, the façade on a pipeline of its own (the `daemonset` overlay).
    Meshmetrics,
    /// meshmetrics, the façade behind `batch` in the export pipeline.
    MeshmetricsBehindBatch,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Stack::VmagentPrometheus => "vmagent + Prometheus server",
            Stack::Meshmetrics => "meshmetrics",
            Stack::MeshmetricsBehindBatch => "meshmetrics, façade behind batch",
        }
    }

    fn scrapers(self) -> &'static [usize] {
        match self {
            Stack::VmagentPrometheus => &[VMAGENT, PROMETHEUS],
            _ => &[MESHMETRICS],
        }
    }

    /// The scraper whose samples the CPU is counted against (the exporting one).
    fn exporter(self) -> usize {
        self.scrapers()[0]
    }

    /// The scraper behind the query endpoint.
    fn querier(self) -> usize {
        *self.scrapers().last().unwrap_or(&MESHMETRICS)
    }
}

struct Setup {
    sidecars: usize,
    port: u16,
    probe_port: u16,
    sink_port: u16,
}

impl Setup {
    fn mesh_job(&self, scraper: usize, indent: &str) -> String {
        format!(
            "{indent}- job_name: mesh\n{indent}  metrics_path: /m/{scraper}\n{indent}  static_configs:\n{}",
            scrape_targets(self.sidecars, self.port, &format!("{indent}    "))
        )
    }

    fn probe_job(&self, scraper: usize, indent: &str) -> String {
        format!(
            "{indent}- job_name: probe\n{indent}  scrape_interval: 1s\n{indent}  scrape_timeout: 1s\n{indent}  metrics_path: /probe/{scraper}\n{indent}  static_configs:\n{indent}    - targets: ['127.0.0.1:{}']\n",
            self.probe_port
        )
    }

    fn prometheus_config(&self, scraper: usize, probe: bool) -> String {
        let mut cfg = format!(
            "global: {{scrape_interval: 5s, scrape_timeout: 5s}}\nscrape_configs:\n{}",
            self.mesh_job(scraper, "  ")
        );
        if probe {
            cfg.push_str(&self.probe_job(scraper, "  "));
        }
        cfg
    }

    /// The `daemonset` overlay's components and limits, on loopback: OTLP/gRPC to the sink
    /// instead of Honeycomb, no Kubernetes discovery, no self-scrape. The memory limit is
    /// raised for 100 sidecars on one agent (the overlay's 300 MiB is sized for one node's pods).
    fn meshmetrics_config(&self, dir: &std::path::Path, query_port: u16, split: bool) -> String {
        let pipelines = if split {
            "    metrics/export:\n      receivers: [prometheus]\n      processors: [memory_limiter, resource/cluster, batch]\n      exporters: [otlp/honeycomb]\n    metrics/query:\n      receivers: [prometheus]\n      processors: [memory_limiter]\n      exporters: [promql]\n"
        } else {
            "    metrics:\n      receivers: [prometheus]\n      processors: [memory_limiter, resource/cluster, batch]\n      exporters: [otlp/honeycomb, promql]\n"
        };
        format!(
            "receivers:\n  prometheus:\n    config:\n      global:\n        scrape_interval: 5s\n        scrape_timeout: 5s\n        sample_limit: 50000\n        body_size_limit: 32MiB\n        label_limit: 64\n        label_name_length_limit: 256\n        label_value_length_limit: 4096\n      scrape_configs:\n{}{}\
             processors:\n  memory_limiter: {{check_interval: 1s, limit_mib: 2048, spike_limit_mib: 512}}\n  batch: {{send_batch_size: 8192, timeout: 5s}}\n  resource/cluster:\n    attributes:\n      - {{key: k8s.cluster.name, value: bench, action: upsert}}\n\
             exporters:\n  otlp/honeycomb:\n    endpoint: 127.0.0.1:{sink}\n    tls: {{insecure: true}}\n    compression: zstd\n    headers: {{x-honeycomb-team: bench, x-honeycomb-dataset: flagger-metrics}}\n    sending_queue: {{storage: file_storage}}\n  promql:\n    endpoint: 127.0.0.1:{query_port}\n    retention: 15m\n    prometheus_compat: \"{compat}\"\n\
             extensions:\n  file_storage: {{directory: {queue}, create_directory: true}}\n\
             service:\n  extensions: [file_storage]\n  pipelines:\n{pipelines}  telemetry: {{metrics: {{address: ''}}, logs: {{level: warn}}}}\n",
            self.mesh_job(MESHMETRICS, "        "),
            self.probe_job(MESHMETRICS, "        "),
            sink = self.sink_port,
            compat = harness::prometheus_compat(),
            queue = dir.join("queue").display(),
        )
    }

    /// Starts a stack; returns its processes and its query address.
    fn start(&self, stack: Stack, dir: &std::path::Path) -> (Vec<Proc>, String) {
        let quiet = |mut c: Command| {
            Proc(
                c.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start"),
            )
        };
        let query_port = free_port();
        let addr = format!("127.0.0.1:{query_port}");
        match stack {
            Stack::VmagentPrometheus => {
                let vm_cfg = dir.join("vmagent.yml");
                std::fs::write(&vm_cfg, self.prometheus_config(VMAGENT, false)).expect("write");
                let mut vm = Command::new("vmagent");
                vm.arg(format!("-promscrape.config={}", vm_cfg.display()))
                    .arg(format!(
                        "-remoteWrite.url=http://127.0.0.1:{}/api/v1/write",
                        self.sink_port
                    ))
                    .arg(format!(
                        "-remoteWrite.tmpDataPath={}",
                        dir.join("vm").display()
                    ))
                    .arg(format!("-httpListenAddr=127.0.0.1:{}", free_port()))
                    .arg("-loggerLevel=ERROR");
                let prom = harness::spawn_prometheus(
                    dir,
                    &self.prometheus_config(PROMETHEUS, true),
                    &addr,
                );
                (vec![quiet(vm), prom], addr)
            }
            Stack::Meshmetrics | Stack::MeshmetricsBehindBatch => {
                let cfg = dir.join("meshmetrics.yaml");
                let text = self.meshmetrics_config(dir, query_port, stack == Stack::Meshmetrics);
                std::fs::write(&cfg, text).expect("write");
                let bin = env!("CARGO_BIN_EXE_meshmetrics");
                (vec![quiet(harness::agent_command(bin, &cfg))], addr)
            }
        }
    }
}

/// Flagger's builtin checks for canary `target`, as its Istio provider writes them.
fn flagger_checks(target: &str) -> [String; 2] {
    let sel = format!(
        "reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"{target}\""
    );
    [
        format!("sum(rate(istio_requests_total{{{sel},response_code!~\"5.*\"}}[1m])) / sum(rate(istio_requests_total{{{sel}}}[1m])) * 100"),
        format!("histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[1m])) by (le))"),
    ]
}

/// A service-mesh dashboard: traffic, errors and latency by workload, sizes, and Envoy.
const DASHBOARD: [&str; 10] = [
    "sum by (destination_workload) (rate(istio_requests_total{reporter=\"destination\"}[1m]))",
    "sum by (destination_workload) (rate(istio_requests_total{reporter=\"destination\",response_code!~\"5.*\"}[1m])) / sum by (destination_workload) (rate(istio_requests_total{reporter=\"destination\"}[1m]))",
    "histogram_quantile(0.5, sum by (le, destination_workload) (rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\"}[1m])))",
    "histogram_quantile(0.9, sum by (le, destination_workload) (rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\"}[1m])))",
    "histogram_quantile(0.99, sum by (le, destination_workload) (rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\"}[1m])))",
    "sum by (destination_workload) (rate(istio_request_bytes_sum{reporter=\"destination\"}[1m]))",
    "sum by (destination_workload) (rate(istio_response_bytes_sum{reporter=\"destination\"}[1m]))",
    "sum by (source_workload) (rate(istio_requests_total{reporter=\"destination\"}[1m]))",
    "sum by (response_code) (rate(istio_requests_total{reporter=\"destination\",response_code=~\"5.*\"}[1m]))",
    "topk(5, sum by (cluster_name) (rate(envoy_cluster_upstream_rq_total[1m])))",
];

/// An answer with times made relative to the query's, so that runs on different clocks can
/// be compared: per series (labels as JSON), its (time offset in ms, value) points.
type Normalized = Vec<(String, Vec<(i64, f64)>)>;

fn normalize(body: &str, at_ms: i64) -> Option<Normalized> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let point = |p: &serde_json::Value| -> Option<(i64, f64)> {
        let t = (p[0].as_f64()? * 1000.0).round() as i64 - at_ms;
        Some((t, p[1].as_str()?.parse().ok()?))
    };
    let mut out: Normalized = Vec::new();
    for r in v["data"]["result"].as_array()? {
        let points = match r.get("values") {
            Some(values) => values
                .as_array()?
                .iter()
                .map(point)
                .collect::<Option<_>>()?,
            None => vec![point(&r["value"])?],
        };
        out.push((r["metric"].to_string(), points));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

fn equal(a: &Normalized, b: &Normalized) -> bool {
    let close = |x: f64, y: f64| {
        (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.0 == y.0
                && x.1.len() == y.1.len()
                && x.1
                    .iter()
                    .zip(&y.1)
                    .all(|(p, q)| p.0 == q.0 && close(p.1, q.1))
        })
}

#[derive(Default)]
struct Load {
    /// Latencies (ms) by kind: "flagger", "dashboard instant", "dashboard range".
    latency: BTreeMap<&'static str, Vec<f64>>,
    /// Answers by (kind, step, query index); `None` for an error.
    answers: BTreeMap<(&'static str, u64, usize), Option<Normalized>>,
    errors: Vec<String>,
}

async fn ask(addr: &str, path_query: &str) -> (f64, u16, String) {
    let t = Instant::now();
    let (status, body) = get(&format!("http://{addr}{path_query}")).await;
    (t.elapsed().as_secs_f64() * 1000.0, status, body)
}

/// Flagger's rounds every 2 steps and the dashboard's every 6, from `first` until `last`,
/// each once every scraper of the stack has been served the step after it.
async fn run_load(
    targets: Arc<Targets>,
    stack: Stack,
    addr: String,
    first: u64,
    last: u64,
) -> Load {
    let mut load = Load::default();
    let mut step = first;
    while step <= last {
        while targets.complete_step(stack.scrapers()) < step + 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let base = targets.base_ms.load(Ordering::Relaxed);
        // Between two samples, so that no window edge falls on one.
        let at_ms = base + (step as i64 - 1) * STEP_MS + STEP_MS / 2;
        let at = format!("{:.3}", at_ms as f64 / 1000.0);
        let mut record = |kind: &'static str, i: usize, (ms, status, body): (f64, u16, String)| {
            load.latency.entry(kind).or_default().push(ms);
            let answer = (status == 200).then(|| normalize(&body, at_ms)).flatten();
            if answer.is_none() && load.errors.len() < 5 {
                load.errors.push(format!(
                    "{kind} {i} at step {step}: HTTP {status} {body:.300}"
                ));
            }
            load.answers.insert((kind, step, i), answer);
        };
        if (step - first).is_multiple_of(2) {
            for c in 0..CANARIES {
                for (k, q) in flagger_checks(&format!("app-{c}")).iter().enumerate() {
                    let r = ask(
                        &addr,
                        &format!("/api/v1/query?query={}&time={at}", escape(q)),
                    )
                    .await;
                    record("flagger", c * 2 + k, r);
                }
            }
        }
        if (step - first).is_multiple_of(6) {
            let start = format!("{:.3}", (at_ms - 3_600_000) as f64 / 1000.0);
            for (i, q) in DASHBOARD.iter().enumerate() {
                let r = ask(
                    &addr,
                    &format!("/api/v1/query?query={}&time={at}", escape(q)),
                )
                .await;
                record("dashboard instant", i, r);
                let r = ask(
                    &addr,
                    &format!(
                        "/api/v1/query_range?query={}&start={start}&end={at}&step=15",
                        escape(q)
                    ),
                )
                .await;
                record("dashboard range", i, r);
            }
        }
        step += 2;
    }
    load
}

/// After each probe scrape by `scraper`, polls `addr` until it answers that probe's count
/// (the resolution is 2 ms or a tenth of the delay, whichever is larger):
/// the delays in ms (a probe not seen within 2 s counts as 2,000 ms).
async fn run_freshness(
    targets: Arc<Targets>,
    scraper: usize,
    addr: String,
    until: Instant,
) -> Vec<f64> {
    let url = format!("http://{addr}/api/v1/query?query=mm_probe_seq");
    let mut delays = Vec::new();
    // A probe served before this started is not timed: its delay would include the wait.
    let mut last_seen = targets
        .probe_served
        .lock()
        .ok()
        .and_then(|s| s[scraper])
        .map_or(0, |(n, _)| n);
    while Instant::now() < until {
        let notified = targets.probe_wake.notified();
        let served = targets.probe_served.lock().ok().and_then(|s| s[scraper]);
        let Some((n, at)) = served.filter(|(n, _)| *n > last_seen) else {
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
            continue;
        };
        last_seen = n;
        loop {
            let (_, body) = get(&url).await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let seen = v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|x| x.parse::<f64>().ok())
                .unwrap_or(0.0);
            if seen >= n as f64 || at.elapsed() > Duration::from_secs(2) {
                delays.push(at.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            // Every 2 ms at first, then every tenth of the wait so far: a stack that takes
            // seconds is not charged thousands of polls (each one a query it answers).
            tokio::time::sleep((at.elapsed() / 10).max(Duration::from_millis(2))).await;
        }
    }
    delays
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

struct Figures {
    stack: Stack,
    cpu_s: f64,
    samples: u64,
    steady_rss: u64,
    peak_rss: u64,
    load: Load,
    freshness: Vec<f64>,
}

impl Figures {
    fn cpu_per_million(&self) -> f64 {
        self.cpu_s / (self.samples.max(1) as f64 / 1e6)
    }
}

async fn run_stack(
    setup: &Setup,
    targets: &Arc<Targets>,
    stack: Stack,
    warm: Duration,
    measure: Duration,
) -> Figures {
    targets.reset();
    let dir = tempfile::tempdir().expect("tmp");
    let (procs, addr) = setup.start(stack, dir.path());
    let pids: Vec<u32> = procs.iter().map(|p| p.0.id()).collect();
    let started = Instant::now();
    tokio::time::sleep(warm).await;
    let (cpu0, samples0) = (
        pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>(),
        targets.samples[stack.exporter()].load(Ordering::Relaxed),
    );
    let first = (warm.as_millis() as i64 / STEP_MS) as u64;
    let last = first + (measure.as_millis() as i64 / STEP_MS) as u64 - 2;
    let until = started + warm + measure;
    let load = tokio::spawn(run_load(targets.clone(), stack, addr.clone(), first, last));
    let fresh = tokio::spawn(run_freshness(targets.clone(), stack.querier(), addr, until));
    let mut rss = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(
            pids.iter()
                .map(|&p| status_kib(p, "VmRSS:") * 1024)
                .sum::<u64>(),
        );
    }
    let cpu_s = pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>() - cpu0;
    let samples = targets.samples[stack.exporter()].load(Ordering::Relaxed) - samples0;
    let peak_rss = pids.iter().map(|&p| status_kib(p, "VmHWM:") * 1024).sum();
    // The last rounds may finish a little after the window: they are part of the load.
    let load = load.await.expect("load");
    let freshness = fresh.await.expect("freshness");
    rss.sort();
    drop(procs);
    Figures {
        stack,
        cpu_s,
        samples,
        steady_rss: rss.get(rss.len() / 2).copied().unwrap_or(0),
        peak_rss,
        load,
        freshness,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let sidecars = env_usize("MM_SIDECARS", 100);
    let warm = Duration::from_secs(env_usize("MM_WARMUP_S", 30) as u64);
    let measure = Duration::from_secs(env_usize("MM_MEASURE_S", 120) as u64);
    let models = (0..sidecars)
        .map(|p| workload::Sidecar::of_workload(p, &workload_of(p)))
        .collect::<Vec<_>>();
    let series: usize = models.iter().map(|m| m.series()).sum();
    let targets = Arc::new(Targets {
        steps: (0..sidecars).map(|_| Default::default()).collect(),
        models,
        samples: Default::default(),
        base_ms: AtomicI64::new(now_ms()),
        probe_seq: Default::default(),
        probe_served: Mutex::new([None; SCRAPERS]),
        probe_wake: tokio::sync::Notify::new(),
    });
    let port = free_port();
    let probe_port = serve_targets(targets.clone(), port).await;
    let sink = Arc::new(Sink::default());
    let sink_port = serve_sink(sink.clone()).await;
    let setup = Setup {
        sidecars,
        port,
        probe_port,
        sink_port,
    };
    println!(
        "{sidecars} sidecars ({CANARIES} canaried workloads) × ~{} series = {series} series every 5 s; warm-up {warm:?}, measured {measure:?}",
        series / sidecars.max(1)
    );
    let mut results = Vec::new();
    let only = std::env::var("MM_STACKS").ok();
    for stack in [
        Stack::VmagentPrometheus,
        Stack::Meshmetrics,
        Stack::MeshmetricsBehindBatch,
    ] {
        if only
            .as_ref()
            .is_some_and(|o| !o.split(',').any(|s| s.trim() == format!("{stack:?}")))
        {
            continue;
        }
        let f = run_stack(&setup, &targets, stack, warm, measure).await;
        println!(
            "  {:<34} {:6.2} CPU-s ({:.2} per million samples), steady {:6.1} MiB, peak {:6.1} MiB, freshness median {:.1} ms p99 {:.1} ms",
            stack.name(),
            f.cpu_s,
            f.cpu_per_million(),
            f.steady_rss as f64 / 1048576.0,
            f.peak_rss as f64 / 1048576.0,
            quantile(&f.freshness, 0.5),
            quantile(&f.freshness, 0.99),
        );
        for e in &f.load.errors {
            println!("    error: {e}");
        }
        results.push(f);
    }
    report(&results, sidecars, series, measure);
}

fn report(results: &[Figures], sidecars: usize, series: usize, measure: Duration) {
    let mib = |b: u64| b as f64 / 1048576.0;
    println!();
    println!("| stack | CPU-s | CPU-s per million samples | steady RSS | peak RSS | freshness median | freshness p99 | Flagger check median | p99 | dashboard range median |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for f in results {
        let lat = |k: &str, q: f64| f.load.latency.get(k).map_or(f64::NAN, |v| quantile(v, q));
        println!(
            "| {} | {:.2} | {:.2} | {:.1} MiB | {:.1} MiB | {:.1} ms | {:.1} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            f.stack.name(),
            f.cpu_s,
            f.cpu_per_million(),
            mib(f.steady_rss),
            mib(f.peak_rss),
            quantile(&f.freshness, 0.5),
            quantile(&f.freshness, 0.99),
            lat("flagger", 0.5),
            lat("flagger", 0.99),
            lat("dashboard range", 0.5),
        );
    }
    let reference = results.iter().find(|f| f.stack == Stack::VmagentPrometheus);
    let mut comparisons = Vec::new();
    for f in results
        .iter()
        .filter(|f| f.stack != Stack::VmagentPrometheus)
    {
        let Some(r) = reference else { break };
        let (mut same, mut differ) = (0, Vec::new());
        for (key, theirs) in &r.load.answers {
            match (theirs, f.load.answers.get(key).cloned().flatten()) {
                (Some(a), Some(b)) if equal(a, &b) => same += 1,
                _ => differ.push(*key),
            }
        }
        let missing = f
            .load
            .answers
            .keys()
            .filter(|k| !r.load.answers.contains_key(k))
            .count();
        println!();
        println!(
            "{}: CPU {:.3}× the stack's (goal ≤ 0.1), steady RSS {:.3}× (goal ≤ 0.25); answers equal {same} of {} (+{missing} asked of one only)",
            f.stack.name(),
            f.cpu_s / r.cpu_s.max(1e-9),
            f.steady_rss as f64 / r.steady_rss.max(1) as f64,
            r.load.answers.len(),
        );
        for (kind, step, i) in differ.iter().take(5) {
            println!("  differs: {kind} {i} at step {step}");
        }
        comparisons.push(serde_json::json!({
            "stack": f.stack.name(),
            "cpu_ratio": f.cpu_s / r.cpu_s.max(1e-9),
            "rss_ratio": f.steady_rss as f64 / r.steady_rss.max(1) as f64,
            "answers": r.load.answers.len(),
            "answers_equal": same,
            "differ": differ.iter().take(20).map(|(k, s, i)| format!("{k} {i} at step {s}")).collect::<Vec<_>>(),
        }));
    }
    if let Ok(path) = std::env::var("MM_BENCH_JSON") {
        let json = serde_json::json!({
            "sidecars": sidecars,
            "series": series,
            "measure_s": measure.as_secs(),
            "stacks": results.iter().map(|f| {
                let lat = |k: &str, q: f64| f.load.latency.get(k).map_or(f64::NAN, |v| quantile(v, q));
                serde_json::json!({
                    "name": f.stack.name(),
                    "cpu_s": f.cpu_s,
                    "samples": f.samples,
                    "cpu_s_per_million": f.cpu_per_million(),
                    "steady_rss": f.steady_rss,
                    "peak_rss": f.peak_rss,
                    "freshness_median_ms": quantile(&f.freshness, 0.5),
                    "freshness_p99_ms": quantile(&f.freshness, 0.99),
                    "freshness_probes": f.freshness.len(),
                    "freshness_ms": f.freshness,
                    "queries": f.load.latency.values().map(Vec::len).sum::<usize>(),
                    "flagger_median_ms": lat("flagger", 0.5),
                    "flagger_p99_ms": lat("flagger", 0.99),
                    "dashboard_instant_median_ms": lat("dashboard instant", 0.5),
                    "dashboard_range_median_ms": lat("dashboard range", 0.5),
                    "errors": f.load.errors,
                })
            }).collect::<Vec<_>>(),
            "comparisons": comparisons,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json"))
            .expect("write json");
    }
}
