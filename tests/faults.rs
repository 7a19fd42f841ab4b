//! Faults of real networks and disks, against the built binary: a fault-injecting proxy
//! (`common/fault_proxy.rs`) between the agent and its backend, its targets or its peers, and a
//! small tmpfs for the persistent queue. What was scraped (the agent's own query façade, the
//! same pipeline) is compared with what a real OTLP receiver decoded, per series and
//! timestamp (`common/ledger.rs`).

mod common;

use common::fault_proxy::{FaultProxy, Faults};
use common::ledger::{self, Point};
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meshmetrics");

/// A target of `series` counters that all advance every 100 ms.
async fn counter_target(series: usize) -> Target {
    let target = Target::start().await;
    let page = move |v: u64| {
        let mut body = String::from("# TYPE probe_total counter\n");
        for s in 0..series {
            body.push_str(&format!(
                "probe_total{{series=\"s{s}\"}} {}\n",
                v * (s as u64 + 1)
            ));
        }
        Page::text(body)
    };
    target.set("/metrics", page(0));
    let t = target.clone();
    let n = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            t.set("/metrics", page(n.fetch_add(1, Ordering::Relaxed) + 1));
        }
    });
    target
}

/// An Istio sidecar-like target (≈150 series, 20 KB a scrape) advancing every 100 ms.
async fn sidecar_target(pod: usize) -> Target {
    let target = Target::start().await;
    target.set("/metrics", Page::text(istio_like_body(pod, 0, None)));
    let t = target.clone();
    tokio::spawn(async move {
        for step in 1.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            t.set("/metrics", Page::text(istio_like_body(pod, step, None)));
        }
    });
    target
}

/// The knobs the scenarios turn.
struct Setup {
    targets: Vec<String>,
    /// `otlp` (gRPC) or `otlphttp`.
    exporter: &'static str,
    backend: String,
    timeout: &'static str,
    consumers: usize,
    /// Batches the queue keeps in memory when the disk cannot take them.
    memory_batches: usize,
    queue_dir: PathBuf,
    fsync: bool,
    peers: Option<(String, bool)>,
}

impl Setup {
    fn new(
        targets: &[&Target],
        exporter: &'static str,
        backend: String,
        queue_dir: &Path,
    ) -> Setup {
        Setup {
            targets: targets.iter().map(|t| t.addr.to_string()).collect(),
            exporter,
            backend,
            timeout: "2s",
            consumers: 4,
            memory_batches: 20,
            queue_dir: queue_dir.to_path_buf(),
            fsync: false,
            peers: None,
        }
    }

    fn yaml(&self, facade: u16, telemetry: u16, zpages: u16) -> String {
        let targets: Vec<String> = self.targets.iter().map(|t| format!("'{t}'")).collect();
        let peers = match &self.peers {
            Some((addr, partial)) => format!(
                "\n    peers: {{static: ['{addr}'], timeout: 1s, partial_response: {partial}}}"
            ),
            None => String::new(),
        };
        format!(
            "extensions:
  file_storage:
    directory: {dir}
    create_directory: true
    fsync: {fsync}
  zpages:
    endpoint: 127.0.0.1:{zpages}
receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: probe
          scrape_interval: 500ms
          scrape_timeout: 400ms
          static_configs: [{{targets: [{targets}]}}]
processors:
  batch: {{timeout: 200ms}}
exporters:
  {exporter}:
    endpoint: http://{backend}
    timeout: {timeout}
    retry_on_failure: {{initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 5s}}
    sending_queue: {{num_consumers: {consumers}, queue_size: {memory}, storage: file_storage}}
  promql:
    endpoint: 127.0.0.1:{facade}
    retention: 15m{peers}
service:
  extensions: [file_storage, zpages]
  pipelines:
    metrics: {{receivers: [prometheus], processors: [batch], exporters: [{exporter}, promql]}}
  telemetry: {{metrics: {{address: '127.0.0.1:{telemetry}'}}}}
",
            dir = self.queue_dir.display(),
            fsync = self.fsync,
            targets = targets.join(", "),
            exporter = self.exporter,
            backend = self.backend,
            timeout = self.timeout,
            consumers = self.consumers,
            memory = self.memory_batches,
        )
    }
}

/// The agent binary, its stderr appended to `agent.log` in its directory.
struct Agent {
    child: ChildGuard,
    log: PathBuf,
    facade: u16,
    telemetry: u16,
    zpages: u16,
}

impl Agent {
    fn spawn(dir: &Path, setup: &Setup) -> Agent {
        let (facade, telemetry, zpages) = (free_port(), free_port(), free_port());
        let cfg = dir.join("config.yaml");
        std::fs::write(&cfg, setup.yaml(facade, telemetry, zpages)).expect("config");
        let log = dir.join("agent.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("agent starts");
        Agent {
            child: ChildGuard(child),
            log,
            facade,
            telemetry,
            zpages,
        }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS:")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    async fn ready(&self) {
        let url = format!("http://127.0.0.1:{}/-/ready", self.facade);
        for _ in 0..200 {
            if let Some((200, _)) = try_http_get(&url).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("agent not ready; log:\n{}", self.log());
    }

    async fn metric(&self, name: &str) -> f64 {
        self_metric(self.telemetry, name).await
    }

    async fn query(&self, q: &str) -> serde_json::Value {
        instant_query(self.facade, q).await
    }

    async fn points(&self, selector: &str) -> BTreeSet<Point> {
        ledger::facade_points(self.facade, selector, "15m").await
    }

    async fn targetz(&self) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/debug/targetz?format=json", self.zpages);
        let (_, body) = http_get(&url, &[]).await;
        serde_json::from_str(&body).expect("targetz json")
    }
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Targets, a real OTLP receiver behind a fault proxy, and the agent sending to it (its
/// setup tuned by `tune`), once the first batch has arrived.
struct Rig {
    _dir: tempfile::TempDir,
    delivered: ledger::Ledger,
    proxy: FaultProxy,
    agent: Agent,
}

async fn rig(targets: &[Target], exporter: &'static str, tune: impl FnOnce(&mut Setup)) -> Rig {
    let dir = tempfile::tempdir().expect("tmp");
    let (sink, delivered) = match exporter {
        "otlp" => ledger::grpc_ledger("").await,
        _ => ledger::http_ledger("").await,
    };
    let proxy = FaultProxy::start(sink).await;
    let mut setup = Setup::new(
        &targets.iter().collect::<Vec<_>>(),
        exporter,
        proxy.addr.to_string(),
        &dir.path().join("queue"),
    );
    tune(&mut setup);
    let agent = Agent::spawn(dir.path(), &setup);
    agent.ready().await;
    wait_until("first delivery", Duration::from_secs(20), || async {
        delivered.len() > 0
    })
    .await;
    Rig {
        _dir: dir,
        delivered,
        proxy,
        agent,
    }
}

fn result_len(v: &serde_json::Value) -> usize {
    v["data"]["result"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_backend_times_out_queues_on_disk_and_drains_fast() {
    let mut targets = Vec::new();
    for _ in 0..4 {
        targets.push(counter_target(100).await);
    }
    // `_dir` bound, not `..`: the queue's directory must outlive the agent.
    let Rig {
        _dir,
        delivered,
        proxy,
        agent,
    } = rig(&targets, "otlp", |_| {}).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_before = agent.rss_kib();

    // The link dies: the connection of the moment goes silent, new ones are accepted and
    // never answered.
    let blackhole = Duration::from_secs(120);
    let started = Instant::now();
    proxy.update(|f| f.blackhole = true);
    proxy.half_open_existing();
    let mut rss_peak = rss_before;
    while started.elapsed() < blackhole {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss_peak = rss_peak.max(agent.rss_kib());
    }
    let disk = agent.metric("meshmetrics_exporter_queue_disk_bytes").await;
    let age = agent
        .metric("meshmetrics_exporter_queue_oldest_batch_age_seconds")
        .await;
    let lifetimes = proxy.blackholed_lifetimes();
    let up = agent.query("sum(up)").await;
    proxy.update(|f| f.blackhole = false);
    let recovered = Instant::now();

    let longest = lifetimes.iter().max().copied().unwrap_or_default();
    eprintln!(
        "blackhole: {} connections given up by the agent, longest held {longest:?}; queue on disk {:.1} MiB, oldest batch {age:.0} s; RSS {} → peak {} KiB",
        lifetimes.len(),
        disk / 1048576.0,
        rss_before,
        rss_peak
    );
    assert_eq!(
        up["data"]["result"][0]["value"][1], "4",
        "still scraping: {up}"
    );
    // Each request gave up within its 2 s timeout and the next one went out on a new
    // connection: no consumer waited on a dead one for the whole outage.
    assert!(lifetimes.len() >= 10, "new connections: {lifetimes:?}");
    assert!(longest <= Duration::from_secs(6), "held {longest:?}");
    assert!(disk > 2.0 * 1048576.0, "queued on disk: {disk}");
    assert!(age >= 100.0, "queue age visible: {age}");
    let grown_mib = rss_peak.saturating_sub(rss_before) as f64 / 1024.0;
    assert!(
        grown_mib < disk / 1048576.0 / 2.0,
        "memory grew {grown_mib:.1} MiB while {:.1} MiB queued on disk",
        disk / 1048576.0
    );

    // The backlog (two minutes of scrapes) drains at five times the scrape rate or faster.
    let backlog = agent.points("probe_total").await;
    let (lost, _) = delivered.settle(&backlog, Duration::from_secs(60)).await;
    let drain = recovered.elapsed();
    assert_eq!(
        lost,
        0,
        "not delivered: {:?}",
        delivered.missing(&backlog, 5)
    );
    let speed = blackhole.as_secs_f64() / drain.as_secs_f64();
    eprintln!(
        "blackhole: backlog of {} points drained in {drain:?}: {speed:.1}× the scrape rate",
        backlog.len()
    );
    assert!(speed >= 5.0, "drained in {drain:?}");

    let all = agent.points("probe_total").await;
    let (lost, dups) = delivered.settle(&all, Duration::from_secs(20)).await;
    eprintln!(
        "blackhole: {} points scraped, {lost} lost, {dups} duplicated",
        all.len()
    );
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_narrow_link_grows_the_queue_on_disk_not_in_memory() {
    let mut targets = Vec::new();
    for pod in 0..4 {
        targets.push(sidecar_target(pod).await);
    }
    // `_dir` bound, not `..`: the queue's directory must outlive the agent.
    let Rig {
        _dir,
        delivered,
        proxy,
        agent,
    } = rig(&targets, "otlphttp", |s| s.timeout = "30s").await;
    // The data rate, measured on the healthy link.
    let (b0, t0) = (proxy.bytes_up(), Instant::now());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rate = (proxy.bytes_up() - b0) as f64 / t0.elapsed().as_secs_f64();
    let rss_before = agent.rss_kib();

    let cap = (rate / 4.0) as u64;
    proxy.set(Faults {
        latency: Duration::from_millis(500),
        bandwidth: Some(cap),
        ..Faults::default()
    });
    let mut rss_peak = rss_before;
    let mut disk_seen = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        rss_peak = rss_peak.max(agent.rss_kib());
        disk_seen.push(agent.metric("meshmetrics_exporter_queue_disk_bytes").await);
    }
    let depth = agent.metric("otelcol_exporter_queue_size").await;
    let age = agent
        .metric("meshmetrics_exporter_queue_oldest_batch_age_seconds")
        .await;
    eprintln!(
        "slow link: data {:.0} KB/s, link {:.0} KB/s + 500 ms; queue on disk {disk_seen:?} bytes, {depth} batches, oldest {age:.0} s; RSS {rss_before} → peak {rss_peak} KiB",
        rate / 1000.0,
        cap as f64 / 1000.0
    );
    assert!(
        disk_seen.windows(2).all(|w| w[1] > w[0]),
        "the queue grows on disk: {disk_seen:?}"
    );
    assert!(depth > 10.0, "queue depth visible: {depth}");
    assert!(age > 10.0, "queue age visible: {age}");
    let grown = rss_peak.saturating_sub(rss_before) as f64 * 1024.0;
    let queued = disk_seen.last().copied().unwrap_or(0.0);
    assert!(
        grown < queued / 2.0,
        "memory grew {grown} bytes while {queued} bytes queued on disk"
    );

    proxy.set(Faults::default());
    let all = agent
        .points("{__name__=~\"istio_requests_total|envoy_.*\"}")
        .await;
    let (lost, dups) = delivered.settle(&all, Duration::from_secs(90)).await;
    eprintln!(
        "slow link: {} points scraped, {lost} lost, {dups} duplicated",
        all.len()
    );
    assert_eq!(lost, 0, "not delivered: {:?}", delivered.missing(&all, 5));
    wait_until("the queue drains", Duration::from_secs(30), || async {
        agent.metric("meshmetrics_exporter_queue_disk_bytes").await == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_mid_request_are_retried_without_loss() {
    let mut targets = Vec::new();
    for _ in 0..2 {
        targets.push(counter_target(50).await);
    }
    // `_dir` bound, not `..`: the queue's directory must outlive the agent.
    let Rig {
        _dir,
        delivered,
        proxy,
        agent,
    } = rig(&targets, "otlphttp", |_| {}).await;
    // Every other connection is reset part way through its first request; the others are
    // closed under the agent every second, so new connections keep coming.
    proxy.update(|f| f.reset_half_after = Some(300));
    for _ in 0..20 {
        proxy.close_existing();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    proxy.set(Faults::default());
    let all = agent.points("probe_total").await;
    let (lost, dups) = delivered.settle(&all, Duration::from_secs(30)).await;
    let requests = delivered.requests();
    eprintln!(
        "resets: {} connections, {} reset mid-request; {} points scraped, {lost} lost, {dups} delivered twice (at-least-once), {requests} requests accepted",
        proxy.connections(),
        proxy.resets(),
        all.len()
    );
    assert!(proxy.resets() >= 10, "resets happened: {}", proxy.resets());
    assert_eq!(lost, 0, "not delivered: {:?}", delivered.missing(&all, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_reset_or_stalled_mid_body_fails_only_its_own_scrape() {
    let dir = tempfile::tempdir().expect("tmp");
    let healthy = counter_target(50).await;
    let cut = counter_target(50).await;
    let stalled = counter_target(50).await;
    let cut_proxy = FaultProxy::start(cut.addr).await;
    let stall_proxy = FaultProxy::start(stalled.addr).await;
    let (sink, _delivered) = ledger::http_ledger("probe").await;
    let mut setup = Setup::new(
        &[&healthy],
        "otlphttp",
        sink.to_string(),
        &dir.path().join("q"),
    );
    setup.targets.push(cut_proxy.addr.to_string());
    setup.targets.push(stall_proxy.addr.to_string());
    let agent = Agent::spawn(dir.path(), &setup);
    agent.ready().await;
    let (h, c, s) = (
        healthy.addr.to_string(),
        cut_proxy.addr.to_string(),
        stall_proxy.addr.to_string(),
    );
    wait_until("three targets up", Duration::from_secs(20), || async {
        let v = agent.query("up == 1").await;
        result_len(&v) == 3
    })
    .await;

    // Bodies are about 2 KB: the cut and the stall come inside them.
    cut_proxy.update(|f| f.reset_response_after = Some(900));
    stall_proxy.update(|f| f.stall_response_after = Some(900));
    cut_proxy.close_existing();
    stall_proxy.close_existing();
    let scrapes_before = healthy.request_count("/metrics");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let scrapes = healthy.request_count("/metrics") - scrapes_before;
    assert!(
        scrapes >= 7,
        "the healthy target kept its interval: {scrapes} scrapes in 4 s"
    );

    let targetz = agent.targetz().await;
    let find = |addr: &str| {
        targetz
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["url"].as_str().is_some_and(|u| u.contains(addr)))
            .cloned()
            .unwrap_or_else(|| panic!("{addr} on targetz: {targetz}"))
    };
    let (th, tc, ts) = (find(&h), find(&c), find(&s));
    eprintln!("targetz: healthy {th}\ncut {tc}\nstalled {ts}");
    assert_eq!(th["health"], "up", "{th}");
    assert!(th["last_error"].is_null(), "{th}");
    assert_eq!(tc["health"], "down", "{tc}");
    assert_eq!(ts["health"], "down", "{ts}");
    let cut_error = tc["last_error"].as_str().unwrap_or("");
    let stall_error = ts["last_error"].as_str().unwrap_or("");
    assert!(!cut_error.is_empty(), "{tc}");
    assert!(
        stall_error.contains("timeout") || stall_error.contains("timed out"),
        "{ts}"
    );

    // Prometheus's staleness: the series of a failed scrape end at once; the others go on.
    for (addr, expect) in [(&h, 50), (&c, 0), (&s, 0)] {
        let v = agent
            .query(&format!(
                "count(probe_total{{instance=\"{addr}\"}}) or vector(0)"
            ))
            .await;
        let n: f64 = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|x| x.parse().ok())
            .unwrap_or(-1.0);
        assert_eq!(n, expect as f64, "{addr}: {v}");
        let up = agent.query(&format!("up{{instance=\"{addr}\"}}")).await;
        let want = if expect > 0 { "1" } else { "0" };
        assert_eq!(up["data"]["result"][0]["value"][1], want, "{addr}: {up}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_is_named_within_the_peer_timeout_and_its_connection_is_not_reused() {
    let dir = tempfile::tempdir().expect("tmp");
    let (t_far, t_near) = (counter_target(5).await, counter_target(5).await);
    let (sink, _delivered) = ledger::http_ledger("probe").await;
    let far_dir = dir.path().join("far");
    std::fs::create_dir_all(&far_dir).expect("dir");
    let far = Agent::spawn(
        &far_dir,
        &Setup::new(&[&t_far], "otlphttp", sink.to_string(), &far_dir.join("q")),
    );
    far.ready().await;
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", far.facade).parse().expect("addr")).await;
    let asker = |name: &str, partial: bool| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).expect("dir");
        let mut setup = Setup::new(&[&t_near], "otlphttp", sink.to_string(), &d.join("q"));
        setup.peers = Some((proxy.addr.to_string(), partial));
        Agent::spawn(&d, &setup)
    };
    let strict = asker("strict", false);
    let partial = asker("partial", true);
    strict.ready().await;
    partial.ready().await;
    let q = "count(probe_total)";
    let ask = |agent: &Agent| {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}",
            agent.facade,
            go_query_escape(q)
        );
        async move {
            let t = Instant::now();
            let (status, body) = http_get(&url, &[]).await;
            (status, body, t.elapsed())
        }
    };
    for agent in [&strict, &partial] {
        wait_until("both shards answer", Duration::from_secs(20), || async {
            let (status, body, _) = ask(agent).await;
            status == 200 && body.contains("\"10\"")
        })
        .await;
    }
    let peer = proxy.addr.to_string();

    // Half-open: the connection the agents hold goes silent without a FIN.
    proxy.half_open_existing();
    let (status, body, took) = ask(&strict).await;
    eprintln!("half-open peer: {status} in {took:?}: {body}");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&peer), "names the peer: {body}");
    assert!(
        took < Duration::from_millis(2500),
        "within the peer timeout: {took:?}"
    );
    let (status, body, took) = ask(&partial).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("warnings") && body.contains(&peer), "{body}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    // The next question goes out on a new connection, which works.
    let (status, body, took) = ask(&strict).await;
    eprintln!("after the half-open peer: {status} in {took:?}");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"10\""), "{body}");
    assert!(
        took < Duration::from_millis(900),
        "not waiting on the dead connection: {took:?}"
    );

    // Blackholed: every connection is accepted and never answered, for as long as it lasts.
    proxy.update(|f| f.blackhole = true);
    proxy.half_open_existing();
    for _ in 0..3 {
        let (status, body, took) = ask(&strict).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains(&peer), "{body}");
        assert!(
            took < Duration::from_millis(2500),
            "{took:?}: never Flagger's 5 s"
        );
    }
    proxy.update(|f| f.blackhole = false);
    let (status, body, took) = ask(&strict).await;
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_millis(900), "{took:?}");
}

/// A tmpfs of `mib` MiB mounted on `path`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mounting a {mib} MiB tmpfs on {} (needs root)",
            path.display()
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills `dir` until less than `leave` bytes are free.
fn ballast(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).expect("ballast");
    let chunk = vec![0xA5u8; 64 << 10];
    use std::io::Write;
    loop {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(dir)
            .output()
            .expect("df");
        let avail: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        if avail <= leave || f.write_all(&chunk).is_err() {
            break;
        }
        let _ = f.flush();
    }
    path
}

/// Checks every queue segment record by record (length, CRC over seq, points and payload);
/// returns (records, segments) and panics on a corrupt one. Only the tail of the newest
/// segment may be torn (a kill mid-append).
fn check_segments(dir: &Path) -> (usize, usize) {
    let mut segs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let id = name
                        .strip_prefix("seg-")?
                        .strip_suffix(".log")?
                        .parse()
                        .ok()?;
                    Some((id, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    segs.sort();
    let mut records = 0;
    for (i, (_, path)) in segs.iter().enumerate() {
        let data = std::fs::read(path).expect("segment");
        let mut at = 0;
        while at < data.len() {
            let rest = &data[at..];
            let whole = rest.len() >= 20 && {
                let len = u32::from_le_bytes(rest[0..4].try_into().expect("4")) as usize;
                rest.len() >= 20 + len && {
                    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4"));
                    crc == crc32fast::hash(&rest[8..20 + len])
                }
            };
            if !whole {
                assert_eq!(
                    i + 1,
                    segs.len(),
                    "corrupt record in {} at {at}",
                    path.display()
                );
                break;
            }
            let len = u32::from_le_bytes(rest[0..4].try_into().expect("4")) as usize;
            at += 20 + len;
            records += 1;
        }
    }
    (records, segs.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_the_agent_scraping_and_refusals_counted() {
    let dir = tempfile::tempdir().expect("tmp");
    let mount = dir.path().join("small");
    let _fs = Tmpfs::mount(&mount, 4);
    let queue = mount.join("queue");
    let mut targets = Vec::new();
    for _ in 0..4 {
        targets.push(counter_target(100).await);
    }
    let (sink, delivered) = ledger::http_ledger("probe").await;
    let proxy = FaultProxy::start(sink).await;
    proxy.update(|f| f.refuse = true);
    let stuffing = ballast(&mount, 256 << 10);
    let setup = Setup::new(
        &targets.iter().collect::<Vec<_>>(),
        "otlphttp",
        proxy.addr.to_string(),
        &queue,
    );
    let agent = Agent::spawn(dir.path(), &setup);
    agent.ready().await;
    wait_until("the disk fills", Duration::from_secs(30), || async {
        agent.log_count("cannot write to disk") > 0
    })
    .await;
    wait_until("refusals counted", Duration::from_secs(30), || async {
        agent
            .metric("otelcol_exporter_enqueue_failed_metric_points_total")
            .await
            > 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Still scraping and answering.
    let before = agent.query("count_over_time(up[2s])").await;
    assert_eq!(result_len(&before), 4, "{before}");
    let v = agent.query("count(probe_total)").await;
    assert_eq!(v["data"]["result"][0]["value"][1], "400", "{v}");
    assert_eq!(
        agent.log_count("cannot write to disk"),
        1,
        "logged once:\n{}",
        agent.log()
    );
    assert_eq!(
        agent.log_count("sending queue is full"),
        1,
        "logged once:\n{}",
        agent.log()
    );
    check_segments(&queue.join("exporter_otlphttp"));

    // Space comes back: batches are persisted again.
    std::fs::remove_file(&stuffing).expect("free space");
    let disk_before = agent.metric("meshmetrics_exporter_queue_disk_bytes").await;
    wait_until("writing to disk again", Duration::from_secs(30), || async {
        agent.log_count("writing to disk again") == 1
    })
    .await;
    wait_until(
        "the queue grows on disk",
        Duration::from_secs(30),
        || async {
            agent.metric("meshmetrics_exporter_queue_disk_bytes").await > disk_before + 100_000.0
        },
    )
    .await;
    let refused = agent
        .metric("otelcol_exporter_enqueue_failed_metric_points_total")
        .await;
    let (records, segments) = check_segments(&queue.join("exporter_otlphttp"));
    eprintln!("disk full: {refused} points refused and counted; {records} records in {segments} segments, none corrupt");

    // The backend returns: what was stored since the space came back is delivered.
    let resumed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        - 1000;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored: BTreeSet<Point> = agent
        .points("probe_total")
        .await
        .into_iter()
        .filter(|(_, ts)| *ts >= resumed_ms)
        .collect();
    proxy.set(Faults::default());
    wait_until("the queue drains", Duration::from_secs(60), || async {
        agent.metric("otelcol_exporter_queue_size").await == 0.0
            && agent.metric("meshmetrics_exporter_queue_disk_bytes").await == 0.0
    })
    .await;
    let (lost, dups) = delivered.settle(&stored, Duration::from_secs(30)).await;
    eprintln!(
        "disk full: {} points stored after space came back, {lost} lost, {dups} duplicated",
        stored.len()
    );
    assert!(stored.len() > 1000, "{}", stored.len());
    assert_eq!(
        lost,
        0,
        "not delivered: {:?}",
        delivered.missing(&stored, 5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_in_the_middle_of_queue_writes_never_block_the_queue() {
    let dir = tempfile::tempdir().expect("tmp");
    let queue = dir.path().join("queue");
    // Big batches, each synced: the agent spends much of its time writing.
    let mut targets = Vec::new();
    for _ in 0..4 {
        targets.push(counter_target(1000).await);
    }
    let (sink, delivered) = ledger::http_ledger("probe").await;
    let proxy = FaultProxy::start(sink).await;
    proxy.update(|f| f.refuse = true);
    let mut setup = Setup::new(
        &targets.iter().collect::<Vec<_>>(),
        "otlphttp",
        proxy.addr.to_string(),
        &queue,
    );
    setup.fsync = true;
    let mut acknowledged = BTreeSet::new();
    let mut replays = 0;
    for round in 0..20 {
        let agent = Agent::spawn(dir.path(), &setup);
        agent.ready().await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        // What the façade holds went through the pipeline to the exporter as well; a moment
        // later it is in the queue.
        let seen = agent.points("probe_total").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        acknowledged.extend(seen);
        let extra = rand::random::<u64>() % 500;
        tokio::time::sleep(Duration::from_millis(extra)).await;
        let mut child = agent.child;
        child.0.kill().expect("SIGKILL");
        let _ = child.0.wait();
        if round > 0 && agent_log_has(&agent.log, "resending what an earlier run left", round) {
            replays += 1;
        }
    }
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    let torn = log.matches("cutting off a torn write").count();
    assert!(
        !log.contains("corrupt record"),
        "a segment was corrupted:\n{log}"
    );
    let (records, segments) = check_segments(&queue.join("exporter_otlphttp"));
    eprintln!(
        "kills: 20 SIGKILLs while writing; {replays} restarts replayed; {torn} torn tails cut; {records} records in {segments} segments; {} points acknowledged",
        acknowledged.len()
    );
    assert!(replays >= 19, "every restart replayed the queue: {replays}");

    // The backend comes back: everything acknowledged before each kill arrives.
    proxy.set(Faults::default());
    let agent = Agent::spawn(dir.path(), &setup);
    agent.ready().await;
    let (lost, dups) = delivered
        .settle(&acknowledged, Duration::from_secs(90))
        .await;
    eprintln!("kills: {lost} lost, {dups} duplicated");
    assert_eq!(
        lost,
        0,
        "not delivered: {:?}",
        delivered.missing(&acknowledged, 5)
    );
    drop(agent);
}

/// Whether the log holds `needle` at least `times` times.
fn agent_log_has(log: &Path, needle: &str, times: usize) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
        >= times
}
