//! Hot reload without a gap: the config file is edited 20 times (a target added and removed,
//! a processor changed, the file broken and fixed) while two targets are scraped every second.
//! The unchanged targets must never miss a scrape, the broken edits must leave the running
//! config in place (and say so on zpages), the processor change must take effect, and the
//! query façade must keep its window.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meshmetrics");

struct Setup {
    a: String,
    b: String,
    extra: String,
    facade: u16,
    zpages: u16,
}

/// The config at edit `n`: every edit changes the attributes processor's value; odd edits add
/// a third job.
fn config(s: &Setup, n: usize) -> String {
    let extra = if n % 2 == 1 {
        format!(
            "        - job_name: extra\n          scrape_interval: 1s\n          static_configs: [{{targets: ['{}']}}]\n",
            s.extra
        )
    } else {
        String::new()
    };
    format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: steady
          scrape_interval: 1s
          static_configs: [{{targets: ['{a}', '{b}']}}]
{extra}processors:
  batch: {{timeout: 200ms}}
  attributes/edit:
    actions: [{{key: edit, value: 'v{n}', action: upsert}}]
exporters:
  promql:
    endpoint: 127.0.0.1:{facade}
extensions:
  zpages: {{endpoint: '127.0.0.1:{zpages}'}}
service:
  extensions: [zpages]
  pipelines:
    metrics: {{receivers: [prometheus], processors: [attributes/edit, batch], exporters: [promql]}}
  telemetry: {{metrics: {{address: ''}}}}
",
        a = s.a,
        b = s.b,
        facade = s.facade,
        zpages = s.zpages
    )
}

fn max_gap(times: &[Instant]) -> Duration {
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_edits_without_a_missed_scrape() {
    let (ta, tb, tx) = (
        Target::start().await,
        Target::start().await,
        Target::start().await,
    );
    for t in [&ta, &tb, &tx] {
        t.set("/metrics", Page::text("reload_probe 1\n"));
    }
    let s = Setup {
        a: ta.addr.to_string(),
        b: tb.addr.to_string(),
        extra: tx.addr.to_string(),
        facade: free_port(),
        zpages: free_port(),
    };
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config(&s, 0)).expect("write");
    let agent = ChildGuard(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("agent starts"),
    );
    // Warm up: both targets scraped a few times.
    let deadline = Instant::now() + Duration::from_secs(15);
    while ta.request_count("/metrics") < 3 || tb.request_count("/metrics") < 3 {
        assert!(Instant::now() < deadline, "targets were not scraped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = ta.request_count("/metrics");
    let started = Instant::now();

    let mut refused_seen = false;
    let mut applied = 0;
    for edit in 1..=20 {
        if edit % 4 == 3 {
            // Broken: an unknown key. The running config must stay.
            std::fs::write(
                &path,
                config(&s, edit).replace("batch: {timeout", "batch: {timout"),
            )
            .expect("write");
        } else {
            std::fs::write(&path, config(&s, edit)).expect("write");
            applied = edit;
        }
        let _ = Command::new("kill")
            .args(["-HUP", &agent.0.id().to_string()])
            .status();
        tokio::time::sleep(Duration::from_millis(700)).await;
        if edit % 4 == 3 {
            let (_, body) = http_get(
                &format!("http://127.0.0.1:{}/debug/servicez?format=json", s.zpages),
                &[],
            )
            .await;
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            let last = v["last_reload"].as_str().unwrap_or("");
            assert!(last.starts_with("refused"), "zpages shows the refusal: {v}");
            assert!(last.contains("timout"), "and why: {last}");
            refused_seen = true;
        }
    }
    assert!(refused_seen);
    // Let the last applied edit settle, then look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = started.elapsed();

    for (name, t) in [("a", &ta), ("b", &tb)] {
        let times = t.request_times("/metrics");
        let during: Vec<Instant> = times.into_iter().filter(|at| *at >= started).collect();
        let gap = max_gap(&during);
        eprintln!(
            "target {name}: {} scrapes in {:.1}s across 20 edits, longest gap {:?}",
            during.len(),
            elapsed.as_secs_f64(),
            gap
        );
        assert!(
            gap < Duration::from_millis(1500),
            "target {name} missed a scrape (gap {gap:?})"
        );
        assert!(
            during.len() as f64 >= elapsed.as_secs_f64() - 1.5,
            "target {name}: {} scrapes in {elapsed:?}",
            during.len()
        );
    }
    assert!(ta.request_count("/metrics") > before);
    assert!(tx.request_count("/metrics") > 0, "the added job ran");

    // The last applied edit's processor value is on new data...
    let v = instant_query(s.facade, &format!("reload_probe{{edit=\"v{applied}\"}}")).await;
    assert_eq!(
        v["data"]["result"].as_array().map(Vec::len),
        Some(2),
        "processor change applied: {v}"
    );
    // ...and the façade kept its window: samples from before the first edit are still there.
    let v = instant_query(
        s.facade,
        r#"count_over_time(reload_probe{job="steady",edit="v0"}[1h])"#,
    )
    .await;
    let kept = v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|x| x.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(kept >= 3.0, "samples from before the reloads survive: {v}");
}

/// A reload that validates but cannot start (its health check's port is taken by another
/// process) is refused whole: scraping goes on, servicez names the clash. A reload that
/// changes only the query façade's settings keeps its window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_start_keeps_the_running_config() {
    let target = Target::start().await;
    target.set("/metrics", Page::text("reload_probe 1\n"));
    let (facade, zpages) = (free_port(), free_port());
    let base = |extra_extension: &str, query_settings: &str| {
        format!(
            "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: steady
          scrape_interval: 1s
          static_configs: [{{targets: ['{}']}}]
exporters:
  promql:
    endpoint: 127.0.0.1:{facade}
{query_settings}extensions:
  zpages: {{endpoint: '127.0.0.1:{zpages}'}}
{extra_extension}service:
  extensions: [zpages{}]
  pipelines:
    metrics: {{receivers: [prometheus], exporters: [promql]}}
  telemetry: {{metrics: {{address: ''}}}}
",
            target.addr,
            if extra_extension.is_empty() {
                ""
            } else {
                ", health_check"
            }
        )
    };
    let (agent, dir) = spawn_agent(&base("", ""), Stdio::inherit());
    let path = dir.path().join("config.yaml");
    let deadline = Instant::now() + Duration::from_secs(15);
    while target.request_count("/metrics") < 3 {
        assert!(Instant::now() < deadline, "target was not scraped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();

    // Another process holds the port the new health check wants.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = squatter.local_addr().expect("addr").port();
    let clash = format!("  health_check: {{endpoint: '127.0.0.1:{taken}'}}\n");
    std::fs::write(&path, base(&clash, "")).expect("write");
    let _ = Command::new("kill")
        .args(["-HUP", &agent.0.id().to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, body) = http_get(
        &format!("http://127.0.0.1:{zpages}/debug/servicez?format=json"),
        &[],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let last = v["last_reload"].as_str().unwrap_or("");
    assert!(
        last.starts_with("refused"),
        "servicez shows the refusal: {v}"
    );
    assert!(
        last.contains(&format!(
            "extensions::health_check: cannot listen on 127.0.0.1:{taken}"
        )),
        "and names the clash: {last}"
    );

    // Only the query settings change: the window stays.
    std::fs::write(
        &path,
        base(
            "",
            "    query_timeout: 3s\n    max_samples_per_query: 1000000\n",
        ),
    )
    .expect("write");
    let _ = Command::new("kill")
        .args(["-HUP", &agent.0.id().to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, body) = http_get(
        &format!("http://127.0.0.1:{zpages}/debug/servicez?format=json"),
        &[],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(
        v["last_reload"]
            .as_str()
            .unwrap_or("")
            .starts_with("applied"),
        "{v}"
    );
    let v = instant_query(facade, r#"count_over_time(reload_probe[1h])"#).await;
    let kept = v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|x| x.parse::<f64>().ok())
        .unwrap_or(0.0);
    let scrapes = target.request_count("/metrics") as f64;
    assert!(
        kept >= scrapes - 2.0,
        "the window survived the query settings' change: {kept} samples of {scrapes} scrapes"
    );

    let times: Vec<Instant> = target
        .request_times("/metrics")
        .into_iter()
        .filter(|at| *at >= started)
        .collect();
    let gap = max_gap(&times);
    assert!(
        gap < Duration::from_millis(1500),
        "a scrape was missed (gap {gap:?})"
    );
    drop(squatter);
}
