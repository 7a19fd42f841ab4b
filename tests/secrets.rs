//! Secrets never printed: an OTLP ingest key, a scrape bearer token, the façade's bearer token,
//! basic password and the OTLP receiver's token, passed through the environment, must not
//! appear in debug-level logs, in any zpage (HTML or JSON), in /debug/queryz, or in `validate`
//! output, valid or not.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_meshmetrics");
const SECRETS: [(&str, &str); 5] = [
    ("HONEYCOMB_API_KEY", "hcaik_01hsecretKEYvalue123"),
    ("SCRAPE_TOKEN", "scrape-secret-TOKEN-456"),
    ("QUERY_TOKEN", "query-secret-TOKEN-789"),
    ("QUERY_PASSWORD", "basic-secret-PASSWORD-0ab"),
    ("OTLP_TOKEN", "otlp-secret-TOKEN-cde"),
];

fn assert_clean(what: &str, text: &str) {
    for (var, value) in SECRETS {
        assert!(
            !text.contains(value),
            "{var}'s value appears in {what}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_pages_and_validate() {
    let target = Target::start().await;
    target.set("/metrics", Page::text("up_probe 1\n"));
    let (sink_addr, sink) = http_sink().await;
    // The backend refuses the key for good, so the refusal (with its body) is logged.
    sink.outage(Some(Reply::Fail {
        status: 401,
        retry_after: None,
        body: "unknown API key".into(),
    }));
    let (facade, zpages, telemetry, otlp) = (free_port(), free_port(), free_port(), free_port());
    let yaml = format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: probe
          scrape_interval: 200ms
          scrape_timeout: 200ms
          authorization: {{credentials: '${{env:SCRAPE_TOKEN}}'}}
          static_configs: [{{targets: ['{target}']}}]
  otlp:
    protocols:
      http: {{endpoint: '127.0.0.1:{otlp}', auth: {{authenticator: bearertokenauth}}}}
exporters:
  otlphttp:
    endpoint: http://{sink_addr}
    headers: {{x-honeycomb-team: '${{env:HONEYCOMB_API_KEY}}'}}
  promql:
    endpoint: 127.0.0.1:{facade}
    auth:
      bearer_token: '${{env:QUERY_TOKEN}}'
      basic: [{{username: flagger, password: '${{env:QUERY_PASSWORD}}'}}]
extensions:
  zpages: {{endpoint: '127.0.0.1:{zpages}'}}
  bearertokenauth: {{token: '${{env:OTLP_TOKEN}}'}}
service:
  extensions: [zpages, bearertokenauth]
  pipelines:
    metrics: {{receivers: [prometheus, otlp], exporters: [otlphttp, promql]}}
  telemetry:
    metrics: {{address: '127.0.0.1:{telemetry}'}}
    logs: {{level: debug}}
",
        target = target.addr
    );
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, &yaml).expect("write");
    let log = dir.path().join("agent.log");
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    for (k, v) in SECRETS {
        cmd.env(k, v);
    }
    let mut agent = cmd.spawn().expect("agent starts");

    // Let it scrape (with the token), export (refused), and answer authenticated queries.
    sink.wait_for(Duration::from_secs(20), "an export attempt", |s| {
        *s.attempts.lock().expect("lock") > 0
    })
    .await;
    let q = format!("http://127.0.0.1:{facade}/api/v1/query?query=up");
    let token = format!("Bearer {}", SECRETS[2].1);
    let (status, _) = http_get(&q, &[("authorization", &token)]).await;
    assert_eq!(status, 200);
    let (status, _) = http_get(&q, &[("authorization", "Bearer wrong")]).await;
    assert_eq!(status, 401);
    // A push with the OTLP token, and one refused without it.
    let push = |auth: String| {
        let url = format!("http://127.0.0.1:{otlp}/v1/metrics");
        async move {
            http_post(
                &url,
                &[
                    ("content-type", "application/json"),
                    ("authorization", &auth),
                ],
                br#"{"resourceMetrics":[]}"#.to_vec(),
            )
            .await
            .0
        }
    };
    assert_eq!(push(format!("Bearer {}", SECRETS[4].1)).await, 200);
    assert_eq!(push("Bearer wrong".into()).await, 401);
    let headers = target.last_headers("/metrics").expect("scraped");
    assert_eq!(
        headers["authorization"].to_str().ok(),
        Some(format!("Bearer {}", SECRETS[1].1).as_str()),
        "the scrape carried the token"
    );

    let mut pages = Vec::new();
    for page in ["servicez", "pipelinez", "extensionz", "featurez", "targetz"] {
        for suffix in ["", "?format=json"] {
            let url = format!("http://127.0.0.1:{zpages}/debug/{page}{suffix}");
            let (status, body) = http_get(&url, &[]).await;
            assert_eq!(status, 200, "{url}");
            pages.push((url, body));
        }
    }
    let (status, queryz) = http_get(
        &format!("http://127.0.0.1:{facade}/debug/queryz"),
        &[("authorization", &token)],
    )
    .await;
    pages.push(("queryz".into(), format!("{status} {queryz}")));
    let metrics = try_http_get(&format!("http://127.0.0.1:{telemetry}/metrics")).await;
    pages.push(("self metrics".into(), format!("{metrics:?}")));
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = agent.wait();

    for (url, body) in &pages {
        assert_clean(url, body);
    }
    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(logs.contains("DEBUG"), "debug logs were on");
    assert!(
        logs.contains("export failed; dropping data"),
        "the refusal was logged"
    );
    assert_clean("the logs", &logs);

    // validate: a good config, and a broken one holding the same secrets.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        yaml.replace("endpoint: http://", "endpont: http://")
            .replace("scrape_interval: 200ms", "scrape_interval: 200 ms"),
    )
    .expect("write");
    for (file, ok) in [(&cfg, true), (&broken, false)] {
        let mut v = Command::new(BIN);
        v.args(["validate", "--config"]).arg(file);
        for (k, val) in SECRETS {
            v.env(k, val);
        }
        let out = v.output().expect("validate runs");
        assert_eq!(out.status.success(), ok, "{}", file.display());
        assert_clean(
            "validate output",
            &format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        );
    }
}
