//! Query fan-out when peers fail: a dead or silent agent fails the query with its address
//! (or, with `partial_response`, answers with a warning naming it); once it is back, answers
//! are whole again.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Agent `i`'s façade address.
fn address(port: u16, i: usize) -> String {
    format!("127.0.0.{}:{port}", 20 + i)
}

fn agent_yaml(port: u16, i: usize, target: &str, peers: &[String], partial: bool) -> String {
    let list: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        r#"
receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: shard
          scrape_interval: 200ms
          scrape_timeout: 200ms
          static_configs: [{{targets: ["{target}"]}}]
exporters:
  promql:
    endpoint: "{}"
    peers: {{static: [{}], timeout: 500ms, partial_response: {partial}}}
service:
  pipelines:
    metrics: {{receivers: [prometheus], exporters: [promql]}}
  telemetry: {{metrics: {{address: ""}}}}
"#,
        address(port, i),
        list.join(", ")
    )
}

async fn query(addr: &str, q: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get(
        &format!("http://{addr}/api/v1/query?query={}", go_query_escape(q)),
        &[],
    )
    .await;
    (status, serde_json::from_str(&body).expect("json"))
}

fn scalar_of(v: &serde_json::Value) -> Option<f64> {
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
}

async fn wait_for_sum(addr: &str, want: f64) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = query(addr, "sum(shard_value)").await;
        if status == 200 && scalar_of(&v) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < until,
            "sum(shard_value) never reached {want}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_peer_is_named_never_silently_left_out() {
    let port = free_port();
    let mut targets = Vec::new();
    for i in 0..3 {
        let t = Target::start().await;
        t.set(
            "/metrics",
            Page::text(format!("shard_value{{shard=\"{i}\"}} {}\n", i + 1)),
        );
        targets.push(t);
    }
    let peers: Vec<String> = (0..3).map(|i| address(port, i)).collect();
    let start = |i: usize, partial: bool| {
        let yaml = agent_yaml(port, i, &targets[i].addr.to_string(), &peers, partial);
        async move { start_agent(&yaml).await }
    };
    let a0 = start(0, false).await;
    let a1 = start(1, true).await;
    let a2 = start(2, false).await;
    wait_for_sum(&peers[0], 6.0).await;
    wait_for_sum(&peers[1], 6.0).await;

    // Targets and label values of the whole mesh through any agent, each agent's once (every
    // agent lists itself among its peers).
    for via in &peers {
        let (status, body) = http_get(&format!("http://{via}/api/v1/targets"), &[]).await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let mut urls: Vec<String> = v["data"]["activeTargets"]
            .as_array()
            .expect("active targets")
            .iter()
            .map(|t| t["scrapeUrl"].as_str().unwrap_or("").to_string())
            .collect();
        urls.sort();
        let mut want: Vec<String> = targets
            .iter()
            .map(|t| format!("http://{}/metrics", t.addr))
            .collect();
        want.sort();
        assert_eq!(urls, want, "via {via}");
        let (_, body) = http_get(&format!("http://{via}/api/v1/label/shard/values"), &[]).await;
        assert!(body.contains("[\"0\",\"1\",\"2\"]"), "via {via}: {body}");
    }

    // Agent 2 goes away.
    a2.shutdown(Duration::from_secs(2)).await;
    let (status, v) = query(&peers[0], "sum(shard_value)").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "unavailable");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains(&format!("peer {}", peers[2])), "{msg}");
    assert!(msg.contains("1 of 3 peers did not answer"), "{msg}");
    // With partial responses on: the reachable part, and a warning naming the missing peer.
    let (status, v) = query(&peers[1], "sum(shard_value)").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(scalar_of(&v), Some(3.0));
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains(&peers[2]), "{v}");

    // Back: whole answers again, without a restart of the others.
    let a2 = start(2, false).await;
    wait_for_sum(&peers[0], 6.0).await;
    let (_, v) = query(&peers[1], "sum(shard_value)").await;
    assert!(v.get("warnings").is_none(), "{v}");

    // A peer that accepts connections but never answers costs its timeout, not the query's.
    let silent = std::net::TcpListener::bind("127.0.0.30:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    let mut with_silent = peers.clone();
    with_silent.push(silent_addr.clone());
    let other = free_port();
    let t = Target::start().await;
    t.set("/metrics", Page::text("shard_value{shard=\"x\"} 10\n"));
    let yaml = agent_yaml(other, 5, &t.addr.to_string(), &with_silent, false);
    let a5 = start_agent(&yaml).await;
    let asked = Instant::now();
    let (status, v) = query(&address(other, 5), "sum(shard_value)").await;
    let took = asked.elapsed();
    assert_eq!(status, 503, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("peer {silent_addr}: no answer within")),
        "{msg}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    eprintln!("a silent peer failed the query in {took:?} (peer timeout 500 ms)");
    drop(silent);
    for a in [a0, a1, a2, a5] {
        a.shutdown(Duration::from_secs(2)).await;
    }
}

/// A peer restarted after the others has a hole in its window: a query needing samples from
/// before its restart fails naming it as warming up (the asking agent too, when it is the
/// one restarted), while a query about now is answered whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_named_as_warming_up() {
    let port = free_port();
    let mut targets = Vec::new();
    for i in 0..2 {
        let t = Target::start().await;
        t.set(
            "/metrics",
            Page::text(format!("shard_value{{shard=\"{i}\"}} {}\n", i + 1)),
        );
        targets.push(t);
    }
    let peers: Vec<String> = (0..2).map(|i| address(port, 10 + i)).collect();
    let start = |i: usize| {
        let yaml = agent_yaml(port, 10 + i, &targets[i].addr.to_string(), &peers, false);
        async move { start_agent(&yaml).await }
    };
    let a0 = start(0).await;
    let a1 = start(1).await;
    wait_for_sum(&peers[0], 3.0).await;
    // Both windows are more than the slack (5 s) old.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let window = "sum(count_over_time(shard_value[6s]))";
    let (status, v) = query(&peers[0], window).await;
    assert_eq!(status, 200, "{v}");

    // Agent 1 restarts: its window now starts later than agent 0's.
    a1.shutdown(Duration::from_secs(2)).await;
    let a1 = start(1).await;
    wait_for_sum(&peers[0], 3.0).await;
    let (status, v) = query(&peers[0], window).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["errorType"], "unavailable");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("peer {}: warming up", peers[1])),
        "{msg}"
    );
    // Asked through the restarted agent itself: it names itself.
    let (status, v) = query(&peers[1], window).await;
    assert_eq!(status, 503, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains("this agent: warming up"), "{msg}");
    // A question about now needs nothing from before the restart.
    let (status, v) = query(&peers[1], "sum(shard_value)").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(scalar_of(&v), Some(3.0));
    for a in [a0, a1] {
        a.shutdown(Duration::from_secs(2)).await;
    }
}

/// Peers found through a DNS name (`localhost`, as a headless Service would be): its
/// agents' series are in the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_found_through_a_dns_name() {
    let (shared, own) = (free_port(), free_port());
    let t_peer = Target::start().await;
    t_peer.set("/metrics", Page::text("shard_value{shard=\"peer\"} 5\n"));
    let t_own = Target::start().await;
    t_own.set("/metrics", Page::text("shard_value{shard=\"own\"} 2\n"));
    let yaml = |endpoint: String, target: &Target, peers: &str| {
        format!(
            "receivers:\n  prometheus:\n    config:\n      scrape_configs:\n        - job_name: shard\n          scrape_interval: 200ms\n          static_configs: [{{targets: [\"{}\"]}}]\nexporters:\n  promql:\n    endpoint: \"{endpoint}\"\n{peers}service:\n  pipelines:\n    metrics: {{receivers: [prometheus], exporters: [promql]}}\n  telemetry: {{metrics: {{address: \"\"}}}}\n",
            target.addr
        )
    };
    let peer = start_agent(&yaml(format!("127.0.0.1:{shared}"), &t_peer, "")).await;
    // `localhost` may also name ::1, where nothing listens: partial answers, with a warning.
    let asker = start_agent(&yaml(
        format!("127.0.0.21:{own}"),
        &t_own,
        &format!(
            "    peers: {{dns: \"localhost:{shared}\", timeout: 500ms, partial_response: true}}\n"
        ),
    ))
    .await;
    wait_for_sum(&format!("127.0.0.21:{own}"), 7.0).await;
    for a in [asker, peer] {
        a.shutdown(Duration::from_secs(2)).await;
    }
}
