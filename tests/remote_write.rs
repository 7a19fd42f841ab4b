//! The `prometheusremotewrite` exporter against real receivers: VictoriaMetrics (Debian
//! `victoria-metrics`) and a Prometheus with its remote-write receiver on. The agent scrapes
//! live targets and writes the same series to both, and keeps them in its query façade: every
//! series arrives, and the same queries asked of the façade and of each receiver give the
//! same answers.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(program: &str, args: impl Fn(&std::path::Path) -> Vec<String>) -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let child = Command::new(program)
        .args(args(dir.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is needed (apt-get install {program}): {e}"));
    Server { child, _dir: dir }
}

async fn wait_up(url: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while !matches!(try_http_get(url).await, Some((200, _))) {
        assert!(Instant::now() < until, "{url} never came up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An instant query's vector as label set → value, sorted.
async fn vector(base: &str, q: &str, at: f64) -> Vec<(String, String)> {
    let url = format!(
        "{base}/api/v1/query?query={}&time={at:.3}",
        go_query_escape(q)
    );
    let (status, body) = http_get(&url, &[]).await;
    assert_eq!(status, 200, "{url}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut out: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let labels: std::collections::BTreeMap<String, String> =
                        serde_json::from_value(r["metric"].clone()).unwrap_or_default();
                    (
                        format!("{labels:?}"),
                        r["value"][1].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_reaches_victoriametrics_and_prometheus_whole() {
    let (vm_port, prom_port, facade) = (free_port(), free_port(), free_port());
    let _vm = start("victoria-metrics", |dir| {
        vec![
            format!("-httpListenAddr=127.0.0.1:{vm_port}"),
            format!("-storageDataPath={}", dir.display()),
            "-retentionPeriod=1d".into(),
            // Answer from what was just written: no hidden recent window, no cache.
            "-search.latencyOffset=0s".into(),
            "-search.disableCache".into(),
            "-loggerLevel=ERROR".into(),
        ]
    });
    let _prom = start("prometheus", |dir| {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, "global: {}\n").expect("write");
        vec![
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--web.enable-remote-write-receiver".into(),
            "--log.level=warn".into(),
        ]
    });
    let vm = format!("http://127.0.0.1:{vm_port}");
    let prom = format!("http://127.0.0.1:{prom_port}");
    wait_up(&format!("{vm}/health")).await;
    wait_up(&format!("{prom}/-/ready")).await;

    let mut targets = Vec::new();
    for pod in 0..3 {
        let t = Target::start().await;
        t.set("/metrics", Page::text(istio_like_body(pod, 0, None)));
        targets.push(t);
    }
    let list: Vec<String> = targets.iter().map(|t| format!("'{}'", t.addr)).collect();
    let yaml = format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: mesh
          scrape_interval: 1s
          scrape_timeout: 900ms
          static_configs: [{{targets: [{}]}}]
processors:
  batch: {{timeout: 200ms}}
exporters:
  prometheusremotewrite/vm:
    endpoint: {vm}/api/v1/write
    external_labels: {{cluster: test}}
  prometheusremotewrite/prom:
    endpoint: {prom}/api/v1/write
    external_labels: {{cluster: test}}
  promql:
    endpoint: 127.0.0.1:{facade}
service:
  pipelines:
    metrics:
      receivers: [prometheus]
      processors: [batch]
      exporters: [prometheusremotewrite/vm, prometheusremotewrite/prom, promql]
  telemetry: {{metrics: {{address: ''}}}}
",
        list.join(", ")
    );
    let agent = start_agent(&yaml).await;
    for step in 1..=5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (pod, t) in targets.iter().enumerate() {
            t.set("/metrics", Page::text(istio_like_body(pod, step, None)));
        }
    }
    // Asked as of one instant: the façade before the agent stops, the receivers after it
    // flushed what it batched. Samples up to that instant are in all three.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
        - 0.5;
    let facade = format!("http://127.0.0.1:{facade}");
    let queries = [
        "sum by (instance) (istio_requests_total)",
        "istio_requests_total{response_code=\"200\"}",
        "count_over_time(istio_requests_total{response_code=\"200\"}[1m])",
        "max by (le) (istio_request_duration_milliseconds_bucket)",
        "up",
    ];
    // The façade's samples carry no external label: the receivers are asked with it and
    // their answers compared without it.
    let ours_series = vector(&facade, "count by (__name__) ({job=\"mesh\"})", at).await;
    assert!(
        ours_series.len() > 5,
        "the façade holds the scrapes: {ours_series:?}"
    );
    let mut ours = Vec::new();
    for q in queries {
        let a = vector(&facade, q, at).await;
        assert!(!a.is_empty(), "{q}: the façade answers nothing");
        ours.push(a);
    }
    agent.shutdown(Duration::from_secs(10)).await;
    let with_cluster = |q: &str| match q {
        "up" => "up{cluster=\"test\"}".to_string(),
        q if q.contains('{') => q.replace('{', "{cluster=\"test\","),
        q => q
            .replace("_total)", "_total{cluster=\"test\"})")
            .replace("_bucket)", "_bucket{cluster=\"test\"})"),
    };
    let until = Instant::now() + Duration::from_secs(20);
    for (name, base) in [("VictoriaMetrics", &vm), ("Prometheus", &prom)] {
        loop {
            let theirs = vector(
                base,
                "count by (__name__) ({job=\"mesh\",cluster=\"test\"})",
                at,
            )
            .await;
            if theirs == ours_series {
                break;
            }
            assert!(
                Instant::now() < until,
                "{name} has other series than the façade:\n ours {ours_series:?}\n theirs {theirs:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // A receiver makes what it was sent searchable within a second or two.
        for (q, ours) in queries.iter().zip(&ours) {
            loop {
                let theirs: Vec<(String, String)> = vector(base, &with_cluster(q), at)
                    .await
                    .into_iter()
                    .map(|(l, v)| (l.replace("\"cluster\": \"test\", ", ""), v))
                    .collect();
                if ours == &theirs {
                    break;
                }
                assert!(
                    Instant::now() < until,
                    "{name}: {q}\n ours   {ours:?}\n theirs {theirs:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        eprintln!("{name}: every series arrived, and the answers equal the façade's");
    }
}
