//! TLS on both sides (exporter to an HTTPS OTLP receiver, scrapes of HTTPS targets) and
//! hostile scrape bodies: truncated, binary, never ending, far over the size limit, a gzip
//! bomb. Each fails its own scrape with a clear error; a good target next to them is unharmed.

mod common;

use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn agent_yaml(targets: &str, scrape_extra: &str, exporter: &str) -> String {
    format!(
        r#"
receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: j
          scrape_interval: 1s
          scrape_timeout: 800ms
{scrape_extra}
          static_configs: [{{targets: [{targets}]}}]
exporters:
{exporter}
service:
  pipelines:
    metrics: {{receivers: [prometheus], exporters: [out]}}
  telemetry: {{metrics: {{address: ""}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlphttp_over_tls_verifies_the_server() {
    let pki = test_pki();
    let dir = tempfile::tempdir().expect("tmp");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write ca");
    let target = Target::start().await;
    target.set("/metrics", Page::text("tls_ok 1\n"));

    // With the CA: delivered.
    let (addr, sink) = https_sink(&pki).await;
    let exporter = format!(
        "  otlphttp/out:\n    endpoint: https://127.0.0.1:{}\n    tls: {{ca_file: {}}}\n",
        addr.port(),
        ca.display()
    );
    let agent = start_agent(
        &agent_yaml(&format!("\"{}\"", target.addr), "", &exporter)
            .replace("[out]", "[otlphttp/out]"),
    )
    .await;
    sink.wait_for(WAIT, "delivery over TLS", |s| {
        s.metrics().iter().any(|(_, m)| m.name == "tls_ok")
    })
    .await;
    agent.shutdown(Duration::from_secs(5)).await;

    // Without it (bundled web roots only): the self-signed server is refused, nothing arrives.
    let (addr, sink) = https_sink(&pki).await;
    let exporter = format!("  otlphttp/out:\n    endpoint: https://127.0.0.1:{}\n    retry_on_failure: {{enabled: false}}\n", addr.port());
    let agent = start_agent(
        &agent_yaml(&format!("\"{}\"", target.addr), "", &exporter)
            .replace("[out]", "[otlphttp/out]"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let failed = agent.telemetry.render();
    agent.shutdown(Duration::from_secs(5)).await;
    assert!(
        sink.requests().is_empty(),
        "an unverified server must not receive data"
    );
    assert!(
        failed.contains(
            "otelcol_exporter_send_failed_metric_points_total{exporter=\"otlphttp/out\"}"
        ),
        "{failed}"
    );

    // insecure_skip_verify: delivered (and only because it was asked for).
    let (addr, sink) = https_sink(&pki).await;
    let exporter = format!("  otlphttp/out:\n    endpoint: https://127.0.0.1:{}\n    tls: {{insecure_skip_verify: true}}\n", addr.port());
    let agent = start_agent(
        &agent_yaml(&format!("\"{}\"", target.addr), "", &exporter)
            .replace("[out]", "[otlphttp/out]"),
    )
    .await;
    sink.wait_for(WAIT, "delivery with verification off", |s| {
        !s.requests().is_empty()
    })
    .await;
    agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_scrape_with_ca_file_and_auth_headers() {
    let pki = test_pki();
    let dir = tempfile::tempdir().expect("tmp");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write ca");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |h: axum::http::HeaderMap| {
            let seen = seen2.clone();
            async move {
                let auth = h
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                seen.lock().expect("lock").push(auth);
                "secure_metric 7\n"
            }
        }),
    );
    let addr = serve_tls(app, &pki).await;
    let (sink_addr, sink) = http_sink().await;
    let extra = format!(
        "          scheme: https\n          tls_config: {{ca_file: {}}}\n          authorization: {{credentials: scrape-token}}\n",
        ca.display()
    );
    let exporter = format!("  otlphttp/out:\n    endpoint: http://{sink_addr}\n");
    let yaml = agent_yaml(&format!("\"127.0.0.1:{}\"", addr.port()), &extra, &exporter)
        .replace("[out]", "[otlphttp/out]");
    let agent = start_agent(&yaml).await;
    sink.wait_for(WAIT, "secure_metric", |s| {
        s.metrics().iter().any(|(_, m)| m.name == "secure_metric")
    })
    .await;
    agent.shutdown(Duration::from_secs(5)).await;
    assert_eq!(seen.lock().expect("lock")[0], "Bearer scrape-token");
    let ms = sink.metrics();
    let (res, _) = ms
        .iter()
        .find(|(_, m)| m.name == "secure_metric")
        .expect("metric");
    assert_eq!(res.get("url.scheme").map(String::as_str), Some("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_fail_only_their_own_scrape() {
    use axum::body::Body;
    use futures_util::stream;
    // A body that never ends: a line every 50 ms, forever.
    let endless = || {
        let s = stream::unfold(0u64, |i| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((
                Ok::<_, std::io::Error>(axum::body::Bytes::from(format!(
                    "endless{{i=\"{i}\"}} 1\n"
                ))),
                i + 1,
            ))
        });
        Body::from_stream(s)
    };
    // 256 MiB of zeros, gzip-compressed to a few hundred kilobytes.
    let bomb = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![b'0'; 1 << 20];
        for _ in 0..256 {
            e.write_all(&zeros).expect("gzip");
        }
        e.finish().expect("gzip")
    };
    let big: String = (0..20_000)
        .map(|i| format!("big_metric{{i=\"{i}\"}} 1\n"))
        .collect();
    let app = axum::Router::new()
        .route(
            "/truncated",
            axum::routing::get(|| async { "ok_before 1\nbroken{a=\"b" }),
        )
        .route(
            "/binary",
            axum::routing::get(|| async { vec![0u8, 159, 146, 150, 255, 0, 10, 1, 2] }),
        )
        .route(
            "/endless",
            axum::routing::get(move || async move { endless() }),
        )
        .route(
            "/big",
            axum::routing::get(move || {
                let big = big.clone();
                async move { big }
            }),
        )
        .route(
            "/bomb",
            axum::routing::get(move || {
                let bomb = bomb.clone();
                async move {
                    (
                        [("content-encoding", "gzip"), ("content-type", "text/plain")],
                        bomb,
                    )
                }
            }),
        )
        .route("/good", axum::routing::get(|| async { "good_metric 1\n" }));
    let addr = serve_http(app).await;
    let (sink_addr, sink) = http_sink().await;
    // One job per path, sharing a 64 KiB body limit (the big body is ~500 KiB).
    let mut jobs = String::new();
    for p in ["truncated", "binary", "endless", "big", "bomb", "good"] {
        jobs.push_str(&format!(
            "        - job_name: {p}\n          scrape_interval: 1s\n          scrape_timeout: 800ms\n          metrics_path: /{p}\n          body_size_limit: 64KiB\n          static_configs: [{{targets: ['{addr}']}}]\n"
        ));
    }
    let t0 = std::time::Instant::now();
    let (by, rss) = run_jobs(&jobs, sink_addr, Duration::from_millis(3500)).await;
    let expect_err = |job: &str, needle: &str| {
        let s = by(job);
        let e = s.last_error.clone().unwrap_or_default();
        assert_eq!(s.health, "down", "{job}");
        assert!(
            e.contains(needle) && e.contains(&format!("http://{addr}/{job}")),
            "{job}: {e}"
        );
    };
    expect_err("truncated", "line 2");
    expect_err("binary", "line 1");
    expect_err("endless", "timed out");
    expect_err("big", "body size limit");
    expect_err("bomb", "body size limit");
    assert_eq!(by("good").health, "up");
    assert!(by("good").last_scrape_unix_ms > 0);
    // Nothing of a failed body is exported, and the bomb never inflated into memory.
    let ms = sink.metrics();
    for bad in ["ok_before", "endless", "big_metric"] {
        assert!(!ms.iter().any(|(_, m)| m.name == bad), "{bad} leaked");
    }
    assert!(ms.iter().any(|(_, m)| m.name == "good_metric"));
    assert!(
        rss < 512 << 20,
        "resident memory stayed bounded: {rss} bytes"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
}

/// With no limits configured: a target streaming 10 million series (~330 MB) is cut off at the
/// default body size limit, a 1 MB label value and a 2 KB label name are refused by the
/// default label length limits, and a well-behaved target next to them keeps working. Memory
/// stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_million_series_and_megabyte_labels_are_refused() {
    use axum::body::Body;
    use futures_util::{stream, StreamExt};
    let flood = || {
        // 10,000 chunks of 1,000 series each, generated as they are read.
        let s = stream::iter(0..10_000u64).map(|chunk| {
            let mut b = String::with_capacity(40_000);
            for i in 0..1000u64 {
                b.push_str(&format!("flood_total{{n=\"{}\"}} 1\n", chunk * 1000 + i));
            }
            Ok::<_, std::io::Error>(axum::body::Bytes::from(b))
        });
        Body::from_stream(s)
    };
    let huge_label = format!("wide{{blob=\"{}\"}} 1\n", "x".repeat(1 << 20));
    let long_name = format!("named{{{}=\"v\"}} 1\n", "n".repeat(2048));
    let app = axum::Router::new()
        .route("/flood", axum::routing::get(move || async move { flood() }))
        .route(
            "/wide",
            axum::routing::get(move || {
                let b = huge_label.clone();
                async move { b }
            }),
        )
        .route(
            "/named",
            axum::routing::get(move || {
                let b = long_name.clone();
                async move { b }
            }),
        )
        .route("/good", axum::routing::get(|| async { "good_metric 1\n" }));
    let addr = serve_http(app).await;
    let (sink_addr, sink) = http_sink().await;
    let mut jobs = String::new();
    for (p, extra) in [("flood", ""), ("wide", ""), ("named", ""), ("good", "")] {
        jobs.push_str(&format!(
            "        - job_name: {p}\n          scrape_interval: 2s\n          scrape_timeout: 2s\n          metrics_path: /{p}\n{extra}          static_configs: [{{targets: ['{addr}']}}]\n"
        ));
    }
    let (by, rss) = run_jobs(&jobs, sink_addr, Duration::from_millis(4500)).await;
    let flood = by("flood");
    let e = flood.last_error.clone().unwrap_or_default();
    assert_eq!(flood.health, "down");
    assert!(
        e.contains("body size limit of 67108864 bytes exceeded"),
        "flood: {e}"
    );
    let wide = by("wide");
    let e = wide.last_error.clone().unwrap_or_default();
    assert_eq!(wide.health, "down");
    assert!(e.contains("label_value_length_limit exceeded"), "wide: {e}");
    let named = by("named");
    let e = named.last_error.clone().unwrap_or_default();
    assert_eq!(named.health, "down");
    assert!(e.contains("label_name_length_limit exceeded"), "named: {e}");
    assert_eq!(by("good").health, "up");
    let names: Vec<String> = sink.metrics().into_iter().map(|(_, m)| m.name).collect();
    assert!(names.iter().any(|n| n == "good_metric"));
    assert!(
        !names
            .iter()
            .any(|n| n == "flood_total" || n == "wide" || n == "named"),
        "nothing of a refused body is exported"
    );
    eprintln!(
        "10M-series flood and 1 MiB label refused; test process RSS {} MiB",
        rss >> 20
    );
    assert!(rss < 600 << 20, "memory bounded: {} MiB", rss >> 20);
}

/// A body that arrives in frames of every size (chunked encoding, cut mid-line, mid-label
/// and mid-escape; small frames are joined, large ones read where they arrived) gives
/// exactly what the same body served whole gives, and a malformed line cut across frames is
/// named by its line number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_small_frames_reads_as_when_whole() {
    use axum::body::Body;
    use futures_util::{stream, StreamExt};
    let mut body = String::from("# HELP rq Request latency.\n# TYPE rq histogram\n");
    for pod in 0..200 {
        for (le, n) in [("0.1", 3), ("1", 7), ("+Inf", 9)] {
            body.push_str(&format!(
                "rq_bucket{{pod=\"p{pod}\",path=\"/a,b=\\\"c\\\"\",le=\"{le}\"}} {}\n",
                n + pod
            ));
        }
        body.push_str(&format!(
            "rq_sum{{pod=\"p{pod}\",path=\"/a,b=\\\"c\\\"\"}} 4.5\n"
        ));
        body.push_str(&format!(
            "rq_count{{pod=\"p{pod}\",path=\"/a,b=\\\"c\\\"\"}} {}\n",
            9 + pod
        ));
        body.push_str(&format!("# TYPE up_{pod} gauge\nup_{pod} {pod}.25\n"));
    }
    // Line 3,001 is broken (a label value never closed), after 30 kB of good lines.
    let mut broken: String = (0..3000).map(|i| format!("m{i} 1\n")).collect();
    broken.push_str("g{x=\"unclosed} 7\nh 8\n");
    // Frames of every size, small and large, cutting lines anywhere.
    let in_frames = |text: String| {
        let bytes = text.into_bytes();
        let mut frames = Vec::new();
        let (mut at, mut i) = (0, 0);
        while at < bytes.len() {
            let n = [1, 2, 8_200, 3, 9_001, 7, 8_192, 11, 13][i % 9].min(bytes.len() - at);
            frames.push(Ok::<_, std::io::Error>(axum::body::Bytes::copy_from_slice(
                &bytes[at..at + n],
            )));
            (at, i) = (at + n, i + 1);
        }
        Body::from_stream(stream::iter(frames).then(|f| async move {
            tokio::task::yield_now().await;
            f
        }))
    };
    let app = {
        let (whole, framed, broken_framed) = (body.clone(), body.clone(), broken.clone());
        axum::Router::new()
            .route("/whole", axum::routing::get(move || async move { whole }))
            .route(
                "/frames",
                axum::routing::get(move || {
                    let b = framed.clone();
                    async move { in_frames(b) }
                }),
            )
            .route(
                "/broken",
                axum::routing::get(move || {
                    let b = broken_framed.clone();
                    async move { in_frames(b) }
                }),
            )
    };
    let addr = serve_http(app).await;
    let (sink_addr, sink) = http_sink().await;
    let mut jobs = String::new();
    for p in ["whole", "frames", "broken"] {
        jobs.push_str(&format!(
            "        - job_name: {p}\n          scrape_interval: 1s\n          metrics_path: /{p}\n          static_configs: [{{targets: ['{addr}']}}]\n"
        ));
    }
    let (by, _) = run_jobs(&jobs, sink_addr, Duration::from_millis(2500)).await;
    assert_eq!(by("frames").health, "up");
    let e = by("broken").last_error.unwrap_or_default();
    assert!(e.contains("parse error at line 3001"), "broken: {e}");
    // Each job's points, times left out.
    let times = regex::Regex::new(r"(start_)?time_unix_nano: \d+").expect("regex");
    let points = |job: &str| -> std::collections::BTreeSet<String> {
        sink.metrics()
            .into_iter()
            .filter(|(r, m)| {
                r.get("service.name").map(String::as_str) == Some(job)
                    && !m.name.starts_with("scrape_")
                    && m.name != "up"
            })
            .map(|(_, m)| times.replace_all(&format!("{m:?}"), "").into_owned())
            .collect()
    };
    let (whole, framed) = (points("whole"), points("frames"));
    assert_eq!(whole.len(), 201, "one histogram and 200 gauges");
    assert_eq!(framed, whole);
}

/// Runs the agent on `jobs` (scrape_configs entries) exporting to `sink` for `wait`; returns a
/// lookup of each job's last scrape status and the process's resident memory then.
async fn run_jobs(
    jobs: &str,
    sink: std::net::SocketAddr,
    wait: Duration,
) -> (impl Fn(&str) -> meshmetrics::agent::TargetStatus, u64) {
    let yaml = format!(
        "receivers:\n  prometheus:\n    config:\n      scrape_configs:\n{jobs}exporters:\n  otlphttp:\n    endpoint: http://{sink}\nservice:\n  pipelines:\n    metrics: {{receivers: [prometheus], exporters: [otlphttp]}}\n  telemetry: {{metrics: {{address: ''}}}}\n"
    );
    let agent = start_agent(&yaml).await;
    tokio::time::sleep(wait).await;
    let statuses: Vec<_> = agent
        .agent
        .targets
        .active
        .lock()
        .expect("lock")
        .values()
        .cloned()
        .collect();
    let rss = meshmetrics::telemetry::process_stats()
        .map(|(r, _)| r)
        .unwrap_or(0);
    agent.shutdown(Duration::from_secs(5)).await;
    let by = move |job: &str| {
        statuses
            .iter()
            .find(|s| s.job == job)
            .cloned()
            .expect("status")
    };
    (by, rss)
}

/// How a hand-written HTTP/1.1 target treats its connections.
#[derive(Clone, Copy, PartialEq, Debug)]
enum ConnectionHabit {
    /// Serves request after request on one connection.
    KeepAlive,
    /// Answers without `Connection: close`, then closes: the agent learns it only when it
    /// uses the connection again (an idle timeout shorter than the scrape interval).
    ClosesWhileIdle,
    /// Answers with `Connection: close` and closes.
    SaysClose,
}

/// A target written on raw TCP, so that connections and request lines can be counted and
/// read exactly. Returns its address, the connections accepted and the request heads read.
async fn raw_target(
    habit: ConnectionHabit,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (count, seen) = (accepted.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut sock = BufReader::new(sock);
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        match sock.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => head.push_str(&line),
                        }
                    }
                    seen.lock().expect("lock").push(head);
                    let body = "raw_metric 1\n";
                    let close = if habit == ConnectionHabit::SaysClose {
                        "Connection: close\r\n"
                    } else {
                        ""
                    };
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n{close}\r\n{body}",
                        body.len()
                    );
                    if sock.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    if habit != ConnectionHabit::KeepAlive {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, heads)
}

/// A target's connection is kept between scrapes, and a target that closes it (while idle,
/// or saying so) costs no scrape: each one succeeds on a new connection. Requests carry the
/// path as the request target and the URL's host and port as `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_kept_and_closed_ones_cost_no_scrape() {
    let habits = [
        ConnectionHabit::KeepAlive,
        ConnectionHabit::ClosesWhileIdle,
        ConnectionHabit::SaysClose,
    ];
    let mut targets = Vec::new();
    let mut jobs = String::new();
    for (i, habit) in habits.into_iter().enumerate() {
        let (addr, accepted, heads) = raw_target(habit).await;
        jobs.push_str(&format!(
            "        - job_name: t{i}\n          scrape_interval: 500ms\n          scrape_timeout: 400ms\n          static_configs: [{{targets: ['{addr}']}}]\n"
        ));
        targets.push((habit, addr, accepted, heads));
    }
    let (sink_addr, sink) = http_sink().await;
    let (by, _) = run_jobs(&jobs, sink_addr, Duration::from_millis(3200)).await;
    for (i, (habit, addr, accepted, heads)) in targets.iter().enumerate() {
        let status = by(&format!("t{i}"));
        assert_eq!(status.health, "up", "{habit:?}: {:?}", status.last_error);
        let heads = heads.lock().expect("lock").clone();
        assert!(heads.len() >= 4, "{habit:?}: {} scrapes", heads.len());
        for head in &heads {
            assert!(head.starts_with("GET /metrics HTTP/1.1\r\n"), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains(&format!("\r\nhost: {addr}\r\n")),
                "{head}"
            );
        }
        let connections = accepted.load(std::sync::atomic::Ordering::SeqCst);
        // A scrape cut short by the shutdown may have connected without sending.
        match habit {
            ConnectionHabit::KeepAlive => assert_eq!(connections, 1, "one connection kept"),
            _ => assert!(
                (heads.len()..=heads.len() + 1).contains(&connections),
                "{habit:?}: a new one per scrape: {connections} for {} requests",
                heads.len()
            ),
        }
        // Every scrape of every target succeeded: `up` was never 0.
        let ups: Vec<f64> = sink
            .metrics()
            .iter()
            .filter(|(attrs, m)| {
                m.name == "up" && attrs.get("service.name") == Some(&format!("t{i}"))
            })
            .flat_map(|(_, m)| number_points(m))
            .filter_map(|p| value(&p))
            .collect();
        assert!(ups.len() >= 4, "{habit:?}: {ups:?}");
        assert!(ups.iter().all(|&u| u == 1.0), "{habit:?}: {ups:?}");
    }
}

/// Redirects, as Prometheus follows them: a relative one is followed with the target's
/// credentials, one to another host name is followed without them, a loop stops after 10,
/// and a job with `follow_redirects: false` fails its scrape with the redirect's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_as_prometheus_does() {
    use std::sync::{Arc, Mutex};
    // (path asked, Authorization sent)
    type Asked = Vec<(String, Option<String>)>;
    let seen: Arc<Mutex<Asked>> = Arc::default();
    let port = free_port();
    let record = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
            let record = record.clone();
            async move {
                use axum::response::IntoResponse;
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                record
                    .lock()
                    .expect("lock")
                    .push((uri.path().to_string(), auth));
                let found = |to: String| {
                    (axum::http::StatusCode::FOUND, [("location", to)], "").into_response()
                };
                match uri.path() {
                    "/metrics" => found("real".into()),
                    "/cross" => found(format!("http://localhost:{port}/real-cross")),
                    "/loop" => found("/loop".into()),
                    "/real" => "redirected_ok 1\n".into_response(),
                    "/real-cross" => "redirected_cross 1\n".into_response(),
                    _ => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }
        },
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let facade = free_port();
    let job = |name: &str, path: &str, extra: &str| {
        format!(
            "        - job_name: {name}\n          scrape_interval: 500ms\n          scrape_timeout: 500ms\n          metrics_path: {path}\n          authorization: {{credentials: s3cret}}\n{extra}          static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        )
    };
    let yaml = format!(
        "receivers:\n  prometheus:\n    config:\n      scrape_configs:\n{}{}{}{}exporters:\n  promql:\n    endpoint: 127.0.0.1:{facade}\nservice:\n  pipelines:\n    metrics: {{receivers: [prometheus], exporters: [promql]}}\n  telemetry: {{metrics: {{address: ''}}}}\n",
        job("relative", "/metrics", ""),
        job("cross", "/cross", ""),
        job("looping", "/loop", ""),
        job("refused", "/metrics", "          follow_redirects: false\n"),
    );
    let agent = start_agent(&yaml).await;
    let until = std::time::Instant::now() + WAIT;
    let up = |job: &str| format!("up{{job=\"{job}\"}}");
    loop {
        let v = instant_query(facade, "count(up)").await;
        if v["data"]["result"][0]["value"][1] == "4" {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "not every job scraped: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (job, want) in [
        ("relative", "1"),
        ("cross", "1"),
        ("looping", "0"),
        ("refused", "0"),
    ] {
        let v = instant_query(facade, &up(job)).await;
        assert_eq!(v["data"]["result"][0]["value"][1], want, "{job}: {v}");
    }
    let v = instant_query(facade, "redirected_ok").await;
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(1), "{v}");
    let seen = seen.lock().expect("lock").clone();
    let auth_at = |path: &str| {
        seen.iter()
            .find(|(p, _)| p == path)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("{path} never asked: {seen:?}"))
    };
    assert_eq!(
        auth_at("/real").as_deref(),
        Some("Bearer s3cret"),
        "same host keeps it"
    );
    assert_eq!(
        auth_at("/real-cross"),
        None,
        "another host name does not get it"
    );
    let loops = seen.iter().filter(|(p, _)| p == "/loop").count();
    assert!(loops >= 11, "the loop was followed 10 times: {loops}");
    agent.shutdown(Duration::from_secs(2)).await;
}
