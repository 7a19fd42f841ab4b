//! The built agent against callers who mean it harm: every attack is thrown at one running
//! process, and after each the process must be alive, answer a fresh `vector(1)` within a
//! second, have kept scraping without missing an interval, and have stayed under a stated
//! peak resident memory (the kernel's VmHWM). Each refusal must be Prometheus's JSON error
//! (or a gRPC status) with the right type and a reason.

mod common;

use common::*;
use meshmetrics::exporters::promql::peer::proto;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The agent's peak resident memory through every attack. Measured on this config: about
/// 40 MiB idle (debug build), and no attack may add more than this allows.
const PEAK_MIB: u64 = 200;
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Agent {
    child: ChildGuard,
    query: u16,
    otlp_grpc: u16,
    otlp_http: u16,
    zpages: u16,
    target: Target,
    _dir: tempfile::TempDir,
}

impl Agent {
    async fn start(auth: &str) -> Agent {
        let target = Target::start().await;
        let (query, otlp_grpc, otlp_http, zpages) =
            (free_port(), free_port(), free_port(), free_port());
        let yaml = format!(
            "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: app
          scrape_interval: {}s
          scrape_timeout: 900ms
          static_configs: [{{targets: ['{}']}}]
  otlp:
    protocols:
      grpc: {{endpoint: '127.0.0.1:{otlp_grpc}'}}
      http: {{endpoint: '127.0.0.1:{otlp_http}'}}
exporters:
  promql:
    endpoint: 127.0.0.1:{query}
{auth}extensions:
  zpages: {{endpoint: '127.0.0.1:{zpages}'}}
service:
  extensions: [zpages]
  pipelines:
    metrics: {{receivers: [prometheus, otlp], exporters: [promql]}}
  telemetry: {{metrics: {{address: ''}}}}
",
            SCRAPE_INTERVAL.as_secs(),
            target.addr
        );
        let (child, dir) = spawn_agent(&yaml, Stdio::null());
        let agent = Agent {
            child,
            query,
            otlp_grpc,
            otlp_http,
            zpages,
            target,
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(20);
        while try_http_get(&agent.url("/-/ready")).await.is_none() {
            assert!(Instant::now() < until, "the agent never listened");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        agent
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.query)
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Alive, a fresh `vector(1)` within a second, scraping on time, memory bounded.
    async fn still_well(&mut self, after: &str) {
        assert!(
            self.child.0.try_wait().expect("wait").is_none(),
            "the agent died after {after}"
        );
        let asked = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(1),
            try_http_get(&self.url("/api/v1/query?query=vector(1)")),
        )
        .await;
        let Ok(Some((200, body))) = answer else {
            panic!("no vector(1) within 1 s after {after}: {answer:?}");
        };
        assert!(body.contains(r#""1"]"#), "{after}: {body}");
        assert!(asked.elapsed() < Duration::from_secs(1));
        let times = self.target.request_times("/metrics");
        let worst = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        assert!(
            worst < SCRAPE_INTERVAL * 19 / 10,
            "a scrape interval was missed by {after}: gap of {worst:?}"
        );
        let peak = status_kib(self.pid(), "VmHWM:") / 1024;
        assert!(peak < PEAK_MIB, "peak RSS {peak} MiB after {after}");
        eprintln!(
            "after {after}: alive, vector(1) in {:?}, worst scrape gap {worst:?}, peak {peak} MiB",
            asked.elapsed()
        );
    }

    async fn post_query(&self, path: &str, query: &str) -> (u16, serde_json::Value) {
        let form = format!("query={}", go_query_escape(query));
        let (status, body) = http_post_form(&self.url(path), &form).await;
        (status, serde_json::from_str(&body).expect("JSON error"))
    }

    async fn get(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        let (status, body) = http_get(&self.url(path_and_query), &[]).await;
        (status, serde_json::from_str(&body).expect("JSON"))
    }
}

fn refused(answer: &(u16, serde_json::Value), status: u16, kind: &str, reason: &str) {
    let (s, v) = answer;
    assert_eq!(*s, status, "{v}");
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["errorType"], kind, "{v}");
    let msg = v["error"].as_str().unwrap_or("");
    assert!(msg.contains(reason), "{reason:?} not in {msg:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_survives_every_attack() {
    let mut agent = Agent::start("").await;
    let ahead = now_ms() + 3_600_000;
    agent.target.set(
        "/metrics",
        Page::text(format!(
            "# TYPE app_requests counter\napp_requests_total{{code=\"200\"}} 10\napp_requests_total{{code=\"500\"}} 1\nfuture_sample 1 {ahead}\nancient_sample 1 1000\n"
        )),
    );
    tokio::time::sleep(SCRAPE_INTERVAL * 3).await;
    agent.still_well("start").await;

    // 200,000 nested parentheses (≈400 KB): refused before anything recurses.
    let deep = format!("{}1{}", "(".repeat(200_000), ")".repeat(200_000));
    let a = agent.post_query("/api/v1/query", &deep).await;
    refused(&a, 400, "bad_data", "nested too deeply");
    let chain = format!("1{}", " + 1".repeat(100_000));
    let a = agent.post_query("/api/v1/query", &chain).await;
    refused(&a, 400, "bad_data", "nested too deeply");
    agent.still_well("deep nesting").await;

    // Extreme ranges and steps: checked arithmetic, Prometheus's resolution limit.
    let a = agent
        .get("/api/v1/query_range?query=1&start=-1e17&end=1e17&step=0.001")
        .await;
    refused(&a, 400, "bad_data", "start");
    let a = agent
        .get("/api/v1/query_range?query=1&start=0&end=9000000000&step=0.001")
        .await;
    refused(&a, 400, "bad_data", "exceeded maximum resolution");
    let a = agent
        .get("/api/v1/query?query=vector(1)%20offset%20-100000000000d&time=1e15")
        .await;
    assert!(a.0 == 200 || a.0 == 400, "{a:?}");
    agent.still_well("extreme ranges").await;

    // Billion-step subqueries, refused before the first step.
    for q in [
        "sum_over_time(vector(1)[100000d:1ms])",
        "count_over_time(vector(1)[60d:1s])",
        "max_over_time(rate(app_requests_total[1m])[1000d:1ms])",
    ] {
        let started = Instant::now();
        let a = agent.post_query("/api/v1/query", q).await;
        assert_eq!(a.0, 422, "{q}: {}", a.1);
        assert_eq!(a.1["errorType"], "execution", "{q}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{q} refused at once"
        );
    }
    let a = agent
        .post_query("/api/v1/query", "count_over_time(vector(1)[60d:1s])")
        .await;
    refused(&a, 422, "execution", "max_query_memory");
    agent.still_well("huge subqueries").await;

    // Many large regexes.
    let many = (0..65)
        .map(|i| format!("app_requests_total{{code=~\"{i}.*|x{i}\"}}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let a = agent.post_query("/api/v1/query", &many).await;
    refused(&a, 400, "bad_data", "regex matchers");
    let big = format!("app_requests_total{{code=~\"{}\"}}", ".{1000}".repeat(8));
    let a = agent.post_query("/api/v1/query", &big).await;
    refused(&a, 400, "bad_data", "compiles to more than");
    let long = format!("app_requests_total{{code=~\"{}\"}}", "a|".repeat(40_000));
    let a = agent.post_query("/api/v1/query", &long).await;
    refused(&a, 400, "bad_data", "over the limit");
    agent.still_well("large regexes").await;

    // Unbounded series/labels calls, twenty at once, with and without `limit`.
    let calls = (0..20).map(|i| {
        let path = match i % 4 {
            0 => "/api/v1/series?match[]=%7B__name__%3D~%22.%2B%22%7D".to_string(),
            1 => "/api/v1/labels".to_string(),
            2 => "/api/v1/label/__name__/values".to_string(),
            _ => "/api/v1/series?match[]=%7B__name__%3D~%22.%2B%22%7D&limit=2".to_string(),
        };
        let url = agent.url(&path);
        async move { http_get(&url, &[]).await }
    });
    for (status, body) in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    let (_, limited) = agent
        .get("/api/v1/series?match[]=%7B__name__%3D~%22.%2B%22%7D&limit=2")
        .await;
    assert_eq!(limited["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(limited["warnings"][0], "results truncated due to limit");
    agent.still_well("parallel series and labels scans").await;

    // 3,000 half-sent requests held open: every other caller is still served.
    let port = agent.query;
    let held = tokio::task::spawn_blocking(move || {
        let mut held = Vec::new();
        for _ in 0..3000 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(
                    b"GET /api/v1/query?query=vector(1) HTTP/1.1\r\nHost: x\r\nX-Slow: ",
                );
                held.push(s);
            }
        }
        held
    })
    .await
    .expect("connections");
    assert!(held.len() >= 2900, "only {} connections opened", held.len());
    agent.still_well("3,000 half-sent requests").await;
    drop(held);

    // An OTLP request that decodes to far more than its body: empty ResourceMetrics,
    // two bytes each on the wire, a hundred bytes each decoded.
    let bomb: Vec<u8> = std::iter::repeat_n([0x0a, 0x00], 8 << 20)
        .flatten()
        .collect();
    let (status, _, body) = http_post(
        &format!("http://127.0.0.1:{}/v1/metrics", agent.otlp_http),
        &[("content-type", "application/x-protobuf")],
        bomb,
    )
    .await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("decode to about"));
    let grpc_bomb: Vec<u8> = std::iter::repeat_n([0x0a, 0x00], (4 << 20) / 2 - 8)
        .flatten()
        .collect();
    let status = otlp_grpc_raw(agent.otlp_grpc, grpc_bomb).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    agent.still_well("OTLP decode bombs").await;

    // Future and ancient timestamps: dropped before the store, counted on targetz.
    let (_, v) = agent.get("/api/v1/query?query=future_sample").await;
    assert_eq!(v["data"]["result"], serde_json::json!([]), "{v}");
    let (_, v) = agent.get("/api/v1/query?query=ancient_sample").await;
    assert_eq!(v["data"]["result"], serde_json::json!([]), "{v}");
    let (_, v) = agent.get("/api/v1/query?query=app_requests_total").await;
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(2), "{v}");
    let (_, targetz) = http_get(
        &format!(
            "http://127.0.0.1:{}/debug/targetz?format=json",
            agent.zpages
        ),
        &[],
    )
    .await;
    let targetz: serde_json::Value = serde_json::from_str(&targetz).expect("json");
    assert_eq!(targetz[0]["last_out_of_bounds"], 2, "{targetz}");
    agent.still_well("out-of-bounds timestamps").await;
}

/// Sends `body` as an OTLP/gRPC Export message, as is, and returns the status.
async fn otlp_grpc_raw(port: u16, body: Vec<u8>) -> tonic::Status {
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use prost::Message;
    // Encoded by prost from the same bytes: the body is a valid request of empty messages.
    let req = ExportMetricsServiceRequest::decode(body.as_slice()).expect("valid protobuf");
    let mut client = MetricsServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect")
        .max_encoding_message_size(64 << 20);
    match client.export(req).await {
        Ok(_) => tonic::Status::ok("accepted"),
        Err(s) => s,
    }
}

async fn peer_select(
    port: u16,
    authorization: Option<&str>,
    selectors: Vec<proto::Selector>,
) -> Result<proto::SelectResponse, tonic::Status> {
    let mut client = proto::peer_client::PeerClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let mut req = tonic::Request::new(proto::SelectRequest {
        selectors,
        max_samples: 0,
        asker_window_from_ms: 0,
    });
    if let Some(a) = authorization {
        req.metadata_mut()
            .insert("authorization", a.parse().expect("header"));
    }
    client.select(req).await.map(tonic::Response::into_inner)
}

fn selector(matchers: &[(i32, &str, &str)]) -> proto::Selector {
    proto::Selector {
        matchers: matchers
            .iter()
            .map(|(kind, name, value)| proto::Matcher {
                kind: *kind,
                name: name.to_string(),
                value: value.to_string(),
            })
            .collect(),
        min_time_ms: 0,
        max_time_ms: i64::MAX,
        needs_from_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_api_asks_for_the_query_apis_credentials() {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("flagger:s3cret");
    // (the config's auth, what the peer API admits, what the query API admits)
    let cases = [
        (
            "    auth: {bearer_token: t0ken}\n".to_string(),
            "Bearer t0ken".to_string(),
            "Bearer t0ken".to_string(),
        ),
        (
            "    auth: {basic: [{username: flagger, password: s3cret}]}\n".to_string(),
            format!("Basic {basic}"),
            format!("Basic {basic}"),
        ),
        // The peer API's own credentials: the query API's no longer admit there.
        (
            "    auth: {bearer_token: t0ken}\n    peers: {static: ['127.0.0.1:1'], auth: {bearer_token: p33r}}\n".to_string(),
            "Bearer p33r".to_string(),
            "Bearer t0ken".to_string(),
        ),
    ];
    for (auth, good, api) in cases {
        let mut agent = Agent::start(&auth).await;
        agent.target.set("/metrics", Page::text("app_up 1\n"));
        tokio::time::sleep(SCRAPE_INTERVAL * 2).await;
        let every = || vec![selector(&[(2, "__name__", ".+")])];
        // Without credentials, with wrong ones: refused, whatever is asked.
        let mut wrong = vec![None, Some("Bearer nope"), Some("Basic Zm9vOmJhcg==")];
        if good != api {
            wrong.push(Some(api.as_str()));
        }
        for header in wrong {
            let e = peer_select(agent.query, header, every())
                .await
                .expect_err("refused");
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{auth} {header:?}");
            let e = peer_select(agent.query, header, vec![selector(&[])])
                .await
                .expect_err("refused");
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
        // With them: the query API's own.
        let got = peer_select(agent.query, Some(&good), every())
            .await
            .expect("answered");
        // Each series names its labels as indices into the answer's pair table.
        assert!(got.series.iter().any(|s| s.label_refs.iter().any(|&r| got
            .label_pairs
            .get(r as usize)
            .is_some_and(|l| l.name == "__name__" && l.value == "app_up"))));
        // Empty selectors, or ones matching everything with empty matches: refused.
        for sels in [
            vec![],
            vec![selector(&[])],
            vec![selector(&[(0, "job", "")])],
            vec![selector(&[(2, "__name__", ".*")])],
        ] {
            let e = peer_select(agent.query, Some(&good), sels.clone())
                .await
                .expect_err("refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{sels:?}");
        }
        let too_many = vec![selector(&[(2, "__name__", ".+")]); 600];
        let e = peer_select(agent.query, Some(&good), too_many)
            .await
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        // The HTTP API asks the same.
        let (status, _) = http_get(&agent.url("/api/v1/query?query=vector(1)"), &[]).await;
        assert_eq!(status, 401);
        let (status, _) = http_get(
            &agent.url("/api/v1/query?query=vector(1)"),
            &[("authorization", &api)],
        )
        .await;
        assert_eq!(status, 200);
        assert!(agent.child.0.try_wait().expect("wait").is_none());
    }
}

/// A backend that answers every export with what no consumer should trust: a Retry-After of
/// millennia, then an endless error body. The agent stays up and bounded, no consumer stays
/// stuck, and once the backend behaves the data flows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_reply_stalls_the_exporter() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let mode = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (m, a) = (mode.clone(), accepted.clone());
    let backend = axum::Router::new().route(
        "/v1/metrics",
        axum::routing::post(move |_body: axum::body::Bytes| {
            let (m, a) = (m.clone(), a.clone());
            async move {
                use axum::response::IntoResponse;
                match m.load(Ordering::Relaxed) {
                    0 => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "18446744073709551615")],
                        "later",
                    )
                        .into_response(),
                    1 => {
                        let chunk = bytes::Bytes::from(vec![b'x'; 64 << 10]);
                        let endless = futures_util::stream::repeat_with(move || {
                            Ok::<_, std::io::Error>(chunk.clone())
                        });
                        (
                            axum::http::StatusCode::BAD_REQUEST,
                            axum::body::Body::from_stream(endless),
                        )
                            .into_response()
                    }
                    _ => {
                        a.fetch_add(1, Ordering::Relaxed);
                        (
                            [("content-type", "application/x-protobuf")],
                            Vec::<u8>::new(),
                        )
                            .into_response()
                    }
                }
            }
        }),
    );
    let sink = serve_http(backend).await;
    let target = Target::start().await;
    target.set("/metrics", Page::text("app_up 1\n"));
    let telemetry = free_port();
    let yaml = format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: app
          scrape_interval: 200ms
          scrape_timeout: 200ms
          static_configs: [{{targets: ['{}']}}]
processors:
  batch: {{timeout: 100ms}}
exporters:
  otlphttp:
    endpoint: http://{sink}
    timeout: 2s
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 1s}}
    sending_queue: {{num_consumers: 2, queue_size: 10}}
service:
  pipelines:
    metrics: {{receivers: [prometheus], processors: [batch], exporters: [otlphttp]}}
  telemetry: {{metrics: {{address: '127.0.0.1:{telemetry}'}}}}
",
        target.addr
    );
    let (mut child, _dir) = spawn_agent(&yaml, Stdio::null());
    tokio::time::sleep(Duration::from_secs(3)).await;
    mode.store(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    mode.store(2, Ordering::Relaxed);
    let until = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::Relaxed) < 3 {
        assert!(
            Instant::now() < until,
            "exports never resumed once the backend behaved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "the agent died"
    );
    let peak = status_kib(child.0.id(), "VmHWM:") / 1024;
    assert!(peak < PEAK_MIB, "peak RSS {peak} MiB");
    eprintln!(
        "exports resumed {} times after hostile replies; peak {peak} MiB",
        accepted.load(Ordering::Relaxed)
    );
}
