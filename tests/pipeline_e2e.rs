//! End to end: real HTTP targets on 127.0.0.1 → the agent → real OTLP receivers.

mod common;

use common::*;
use opentelemetry_proto::tonic::metrics::v1 as pb;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn config(targets: &[String], exporter: &str, extra_scrape: &str, processors: &str) -> String {
    let list = targets
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: mesh
          scrape_interval: 1s
          scrape_timeout: 900ms
          static_configs:
            - targets: [{list}]
{extra_scrape}
processors:
  batch:
    timeout: 100ms
{processors}
exporters:
{exporter}
service:
  pipelines:
    metrics:
      receivers: [prometheus]
      processors: [batch]
      exporters: [out]
  telemetry:
    metrics:
      address: ""
"#
    )
}

fn find<'a>(
    ms: &'a [(std::collections::HashMap<String, String>, pb::Metric)],
    name: &str,
) -> Vec<&'a (std::collections::HashMap<String, String>, pb::Metric)> {
    ms.iter().filter(|(_, m)| m.name == name).collect()
}

#[tokio::test]
async fn istio_scrape_arrives_over_grpc_with_gzip_headers_and_the_spec_mapping() {
    let target = Target::start().await;
    target.set(
        "/metrics",
        Page {
            gzip: true,
            ..Page::text(istio_sample())
        },
    );
    let (addr, sink) = grpc_sink().await;
    let exporter = format!(
        "  otlp/out:\n    endpoint: {addr}\n    tls: {{insecure: true}}\n    headers:\n      x-honeycomb-team: hcaik_test_key\n      x-honeycomb-dataset: flagger-metrics\n"
    );
    let yaml = config(&[target.addr.to_string()], &exporter, "", "")
        .replace("exporters: [out]", "exporters: [otlp/out]");
    let agent = start_agent(&yaml).await;
    sink.wait_for(WAIT, "the istio request counter", |s| {
        !find(&s.metrics(), "istio_requests_total").is_empty()
    })
    .await;
    agent.shutdown(Duration::from_secs(5)).await;

    let req = &sink.requests()[0];
    assert_eq!(
        req.headers.get("x-honeycomb-team").map(String::as_str),
        Some("hcaik_test_key")
    );
    assert_eq!(
        req.headers.get("x-honeycomb-dataset").map(String::as_str),
        Some("flagger-metrics")
    );
    assert_eq!(
        req.headers.get("grpc-encoding").map(String::as_str),
        Some("gzip")
    );

    // Scrape negotiation as Prometheus does it.
    let h = target.last_headers("/metrics").expect("scraped");
    let accept = h.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(
        accept.starts_with("application/openmetrics-text;version=1.0.0"),
        "{accept}"
    );
    assert!(accept.contains("text/plain;version=0.0.4"), "{accept}");
    assert_eq!(
        h.get("accept-encoding").and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    assert_eq!(
        h.get("x-prometheus-scrape-timeout-seconds")
            .and_then(|v| v.to_str().ok()),
        Some("0.9")
    );

    let ms = sink.metrics();
    let (res, rq) = find(&ms, "istio_requests_total")[0];
    assert_eq!(res.get("service.name").map(String::as_str), Some("mesh"));
    assert_eq!(
        res.get("service.instance.id"),
        Some(&target.addr.to_string())
    );
    assert_eq!(
        res.get("server.address").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(
        res.get("server.port"),
        Some(&target.addr.port().to_string())
    );
    assert_eq!(res.get("url.scheme").map(String::as_str), Some("http"));
    let Some(pb::metric::Data::Sum(sum)) = &rq.data else {
        panic!("counter must be a Sum")
    };
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.aggregation_temporality,
        pb::AggregationTemporality::Cumulative as i32
    );
    let p = &sum.data_points[0];
    let attrs = attrs_map(&p.attributes);
    assert!(
        !attrs.contains_key("job") && !attrs.contains_key("instance"),
        "job/instance stay on the resource"
    );
    assert_eq!(
        attrs.get("reporter").map(String::as_str),
        Some("destination")
    );
    assert!(
        attrs.len() >= 20,
        "istio series carry their labels: {attrs:?}"
    );
    assert!(p.time_unix_nano > 1_600_000_000_000_000_000);

    // Classic histogram: +Inf bound dropped, its count kept.
    let (_, h) = find(&ms, "istio_request_duration_milliseconds")[0];
    let Some(pb::metric::Data::Histogram(hist)) = &h.data else {
        panic!("histogram")
    };
    let hp = &hist.data_points[0];
    assert_eq!(hp.bucket_counts.len(), hp.explicit_bounds.len() + 1);
    assert!(hp.explicit_bounds.iter().all(|b| b.is_finite()));
    assert_eq!(hp.bucket_counts.iter().sum::<u64>(), hp.count);
    assert!(hp.sum.is_some());

    // Synthetic series.
    for name in [
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ] {
        assert!(!find(&ms, name).is_empty(), "{name} missing");
    }
    let (_, up) = find(&ms, "up")[0];
    assert_eq!(value(&number_points(up)[0]), Some(1.0));
    let (_, scraped) = find(&ms, "scrape_samples_scraped")[0];
    assert_eq!(value(&number_points(scraped)[0]), Some(461.0));
}

#[tokio::test]
async fn otlphttp_zstd_protobuf_and_json() {
    for (encoding, compression) in [("proto", "zstd"), ("json", "gzip"), ("proto", "none")] {
        let target = Target::start().await;
        target.set(
            "/metrics",
            Page::text("# TYPE requests counter\nrequests_total{code=\"200\"} 7\n"),
        );
        let (addr, sink) = http_sink().await;
        let exporter = format!(
            "  otlphttp/out:\n    endpoint: http://{addr}\n    encoding: {encoding}\n    compression: {compression}\n    headers: {{x-honeycomb-team: k}}\n"
        );
        let yaml = config(&[target.addr.to_string()], &exporter, "", "")
            .replace("exporters: [out]", "exporters: [otlphttp/out]");
        let agent = start_agent(&yaml).await;
        sink.wait_for(WAIT, "requests_total", |s| {
            !find(&s.metrics(), "requests_total").is_empty()
        })
        .await;
        agent.shutdown(Duration::from_secs(5)).await;
        let r = &sink.requests()[0];
        let ct = if encoding == "json" {
            "application/json"
        } else {
            "application/x-protobuf"
        };
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some(ct));
        let ce = r.headers.get("content-encoding").map(String::as_str);
        assert_eq!(
            ce,
            if compression == "none" {
                None
            } else {
                Some(compression)
            }
        );
        assert_eq!(
            r.headers.get("x-honeycomb-team").map(String::as_str),
            Some("k")
        );
        let ms = sink.metrics();
        let (_, m) = find(&ms, "requests_total")[0];
        assert_eq!(
            value(&number_points(m)[0]),
            Some(7.0),
            "{encoding}/{compression}"
        );
    }
}

#[tokio::test]
async fn vanished_series_and_failed_scrapes_get_no_recorded_value_points() {
    let target = Target::start().await;
    target.set("/metrics", Page::text("a{k=\"1\"} 1\na{k=\"2\"} 2\n"));
    let (addr, sink) = http_sink().await;
    let exporter = format!("  otlphttp/out:\n    endpoint: http://{addr}\n");
    let yaml = config(&[target.addr.to_string()], &exporter, "", "")
        .replace("exporters: [out]", "exporters: [otlphttp/out]");
    let agent = start_agent(&yaml).await;
    sink.wait_for(WAIT, "both series", |s| {
        find(&s.metrics(), "a")
            .iter()
            .any(|(_, m)| number_points(m).len() == 2)
    })
    .await;
    // Series k=2 disappears.
    target.set("/metrics", Page::text("a{k=\"1\"} 1\n"));
    let stale_k2 = |s: &Sink| {
        find(&s.metrics(), "a").iter().any(|(_, m)| {
            number_points(m).iter().any(|p| {
                p.flags == 1
                    && value(p).is_none()
                    && attrs_map(&p.attributes).get("k").map(String::as_str) == Some("2")
            })
        })
    };
    sink.wait_for(WAIT, "a staleness point for k=2", stale_k2)
        .await;
    // The target breaks: up = 0 and k=1 goes stale.
    target.set(
        "/metrics",
        Page {
            status: 500,
            ..Page::text("boom")
        },
    );
    sink.wait_for(WAIT, "up = 0", |s| {
        find(&s.metrics(), "up")
            .iter()
            .any(|(_, m)| number_points(m).iter().any(|p| value(p) == Some(0.0)))
    })
    .await;
    agent.shutdown(Duration::from_secs(5)).await;
    let ms = sink.metrics();
    let k1_stale = find(&ms, "a").iter().any(|(_, m)| {
        number_points(m).iter().any(|p| {
            p.flags == 1 && attrs_map(&p.attributes).get("k").map(String::as_str) == Some("1")
        })
    });
    assert!(k1_stale, "a failed scrape marks the remaining series stale");
    // Never a NaN value on the wire.
    assert!(ms
        .iter()
        .flat_map(|(_, m)| number_points(m))
        .all(|p| value(&p).is_none_or(|v| !v.is_nan())));
}

/// The scrape loop expects each line to hold the series the same line held last time and
/// checks the guess by hash: series changed in place, at the same length or with the old
/// length ending inside the new line's value, must still be read as written.
#[tokio::test]
async fn series_changed_in_place_are_read_as_written() {
    let target = Target::start().await;
    target.set(
        "/metrics",
        Page::text("a{k=\"1\"} 1\nb{v=\"x y\"} 2\nc 3\n"),
    );
    let (addr, sink) = http_sink().await;
    let exporter = format!("  otlphttp/out:\n    endpoint: http://{addr}\n");
    let yaml = config(&[target.addr.to_string()], &exporter, "", "")
        .replace("exporters: [out]", "exporters: [otlphttp/out]");
    let agent = start_agent(&yaml).await;
    let point = |s: &Sink, name: &str, label: (&str, &str), v: f64| {
        find(&s.metrics(), name).iter().any(|(_, m)| {
            number_points(m).iter().any(|p| {
                value(p) == Some(v)
                    && attrs_map(&p.attributes).get(label.0).map(String::as_str) == Some(label.1)
            })
        })
    };
    sink.wait_for(WAIT, "the first body", |s| point(s, "b", ("v", "x y"), 2.0))
        .await;
    // Same length, other bytes; and an old length that ends after the new value, leaving a
    // timestamp that reads as a value. A timestamp of 7 ms is far older than any window:
    // the sample is dropped as out of bounds (as Prometheus refuses it), and counted.
    target.set(
        "/metrics",
        Page::text("a{k=\"2\"} 5\nb{v=\"x\"} 1 7\nc 3\n"),
    );
    sink.wait_for(WAIT, "the second body", |s| point(s, "a", ("k", "2"), 5.0))
        .await;
    let out_of_bounds = agent
        .telemetry
        .render()
        .lines()
        .find(|l| l.starts_with("meshmetrics_scrape_samples_out_of_bounds_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(
        out_of_bounds.is_some_and(|n| n >= 1.0),
        "the timestamp is read as one, and out of bounds: {out_of_bounds:?}"
    );
    agent.shutdown(Duration::from_secs(5)).await;
    let ms = sink.metrics();
    assert!(
        !point(&sink, "b", ("v", "x"), 1.0),
        "a sample stamped 7 ms is not sent"
    );
    assert!(
        !point(&sink, "b", ("v", "x"), 7.0),
        "the guessed tail never counts"
    );
    let up_down = find(&ms, "up")
        .iter()
        .any(|(_, m)| number_points(m).iter().any(|p| value(p) == Some(0.0)));
    assert!(!up_down, "no scrape failed");
}

#[tokio::test]
async fn a_broken_or_slow_target_does_not_harm_the_others() {
    let good = Target::start().await;
    good.set("/metrics", Page::text("good_metric 1\n"));
    let bad = Target::start().await;
    bad.set("/metrics", Page::text("ok 1\nbad_metric{x=\"1\" 2\n"));
    let slow = Target::start().await;
    slow.set(
        "/metrics",
        Page {
            delay: Duration::from_secs(5),
            ..Page::text("slow 1\n")
        },
    );
    let (addr, sink) = http_sink().await;
    let exporter = format!("  otlphttp/out:\n    endpoint: http://{addr}\n");
    let mut yaml = config(
        &[
            good.addr.to_string(),
            bad.addr.to_string(),
            slow.addr.to_string(),
        ],
        &exporter,
        "",
        "",
    )
    .replace("exporters: [out]", "exporters: [otlphttp/out]");
    yaml.push_str("extensions:\n  zpages:\n    endpoint: 127.0.0.1:0\n");
    yaml = yaml.replace("service:\n", "service:\n  extensions: [zpages]\n");
    let agent = start_agent(&yaml).await;
    // The good target keeps its 1 s cadence although another hangs for 5 s.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(
        good.request_count("/metrics") >= 3,
        "good target scraped {} times",
        good.request_count("/metrics")
    );
    sink.wait_for(WAIT, "good_metric", |s| {
        !find(&s.metrics(), "good_metric").is_empty()
    })
    .await;
    let zp = agent.server_address("zpages").expect("zpages");
    let body = reqwest_get(&format!("http://{zp}/debug/targetz?format=json")).await;
    let targets: serde_json::Value = serde_json::from_str(&body).expect("json");
    let by_url = |needle: &str| {
        targets
            .as_array()
            .expect("array")
            .iter()
            .find(|t| t["url"].as_str().is_some_and(|u| u.contains(needle)))
            .cloned()
            .expect("target listed")
    };
    let b = by_url(&bad.addr.to_string());
    assert_eq!(b["health"], "down");
    let err = b["last_error"].as_str().unwrap_or("");
    assert!(
        err.contains(&format!("http://{}/metrics", bad.addr)) && err.contains("line 2"),
        "{err}"
    );
    let s = by_url(&slow.addr.to_string());
    assert!(
        s["last_error"].as_str().unwrap_or("").contains("timed out"),
        "{s}"
    );
    assert_eq!(by_url(&good.addr.to_string())["health"], "up");
    agent.shutdown(Duration::from_secs(5)).await;
    let ms = sink.metrics();
    assert!(
        find(&ms, "ok").is_empty(),
        "nothing of a malformed body is exported"
    );
    assert!(find(&ms, "up")
        .iter()
        .any(
            |(r, m)| r.get("service.instance.id") == Some(&bad.addr.to_string())
                && number_points(m).iter().any(|p| value(p) == Some(0.0))
        ));
}

/// Minimal GET over hyper for test assertions.
pub async fn reqwest_get(url: &str) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client.get(url.parse().expect("url")).await.expect("GET");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn retries_honour_retry_after_and_permanent_errors_are_not_retried() {
    let target = Target::start().await;
    target.set("/metrics", Page::text("m 1\n"));
    let (addr, sink) = http_sink().await;
    sink.script([
        Reply::Fail {
            status: 503,
            retry_after: Some(1),
            body: "down".into(),
        },
        Reply::Fail {
            status: 429,
            retry_after: Some(1),
            body: "slow down".into(),
        },
    ]);
    let exporter = format!(
        "  otlphttp/out:\n    endpoint: http://{addr}\n    sending_queue: {{num_consumers: 1}}\n    retry_on_failure: {{initial_interval: 100ms}}\n"
    );
    let yaml = config(&[target.addr.to_string()], &exporter, "", "")
        .replace("exporters: [out]", "exporters: [otlphttp/out]");
    let agent = start_agent(&yaml).await;
    let t0 = tokio::time::Instant::now();
    sink.wait_for(WAIT, "delivery after two refusals", |s| {
        !s.requests().is_empty()
    })
    .await;
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "Retry-After of 1 s was honoured twice"
    );
    agent.shutdown(Duration::from_secs(5)).await;

    // 401: dropped at once, never retried.
    let (addr, sink) = http_sink().await;
    sink.script((0..100).map(|_| Reply::Fail {
        status: 401,
        retry_after: None,
        body: "unknown API key".into(),
    }));
    let exporter = format!(
        "  otlphttp/out:\n    endpoint: http://{addr}\n    sending_queue: {{num_consumers: 1}}\n    retry_on_failure: {{initial_interval: 10ms}}\n"
    );
    let yaml = config(&[target.addr.to_string()], &exporter, "", "")
        .replace("exporters: [out]", "exporters: [otlphttp/out]");
    let agent = start_agent(&yaml).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let sent = agent.telemetry.render();
    agent.shutdown(Duration::from_secs(5)).await;
    let attempts = *sink.attempts.lock().expect("lock");
    assert!(
        (1..=4).contains(&attempts),
        "one attempt per batch, got {attempts}"
    );
    assert!(
        sent.contains(
            "otelcol_exporter_send_failed_metric_points_total{exporter=\"otlphttp/out\"}"
        ),
        "{sent}"
    );
}

#[tokio::test]
async fn grpc_permanent_and_retryable_codes() {
    let target = Target::start().await;
    target.set("/metrics", Page::text("m 1\n"));
    let (addr, sink) = grpc_sink().await;
    // Unavailable (14) is retried; Unauthenticated (16) afterwards is not.
    sink.script([Reply::Fail {
        status: 14,
        retry_after: None,
        body: "unavailable".into(),
    }]);
    let exporter = format!(
        "  otlp/out:\n    endpoint: {addr}\n    compression: zstd\n    tls: {{insecure: true}}\n    sending_queue: {{num_consumers: 1}}\n    retry_on_failure: {{initial_interval: 100ms}}\n"
    );
    let yaml = config(&[target.addr.to_string()], &exporter, "", "")
        .replace("exporters: [out]", "exporters: [otlp/out]");
    let agent = start_agent(&yaml).await;
    sink.wait_for(WAIT, "delivery after Unavailable", |s| {
        !s.requests().is_empty()
    })
    .await;
    assert_eq!(
        sink.requests()[0]
            .headers
            .get("grpc-encoding")
            .map(String::as_str),
        Some("zstd")
    );
    agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn relabeling_limits_and_honor_labels() {
    let target = Target::start().await;
    target.set(
        "/metrics",
        Page::text("keep_me{job=\"app\",instance=\"x\"} 1\ndrop_me 2\nrename_me 3\n"),
    );
    let (addr, sink) = http_sink().await;
    let exporter = format!("  otlphttp/out:\n    endpoint: http://{addr}\n");
    let extra = r#"          relabel_configs:
            - target_label: env
              replacement: canary
          metric_relabel_configs:
            - source_labels: [__name__]
              regex: drop_me
              action: drop
            - source_labels: [__name__]
              regex: rename_(.*)
              target_label: __name__
              replacement: renamed_$1
"#;
    let yaml = config(&[target.addr.to_string()], &exporter, extra, "")
        .replace("exporters: [out]", "exporters: [otlphttp/out]");
    let agent = start_agent(&yaml).await;
    sink.wait_for(WAIT, "renamed_me", |s| {
        !find(&s.metrics(), "renamed_me").is_empty()
    })
    .await;
    agent.shutdown(Duration::from_secs(5)).await;
    let ms = sink.metrics();
    assert!(find(&ms, "drop_me").is_empty());
    let (res, keep) = find(&ms, "keep_me")[0];
    // honor_labels false: clashing scraped labels become exported_*.
    let a = attrs_map(&number_points(keep)[0].attributes);
    assert_eq!(a.get("exported_job").map(String::as_str), Some("app"));
    assert_eq!(a.get("exported_instance").map(String::as_str), Some("x"));
    assert_eq!(a.get("env").map(String::as_str), Some("canary"));
    assert_eq!(res.get("service.name").map(String::as_str), Some("mesh"));
    let (_, post) = find(&ms, "scrape_samples_post_metric_relabeling")[0];
    assert_eq!(value(&number_points(post)[0]), Some(2.0));
}

#[tokio::test]
async fn limits_fail_the_whole_scrape() {
    let big: String = (0..50).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
    let cases = [
        ("sample_limit: 10", big.clone(), "sample_limit"),
        ("body_size_limit: 100B", big.clone(), "body size limit"),
        (
            "label_limit: 2",
            "m{a=\"1\",b=\"2\"} 1\n".to_string(),
            "label_limit",
        ),
        (
            "label_value_length_limit: 3",
            "m{a=\"12345\"} 1\n".to_string(),
            "label_value_length_limit",
        ),
    ];
    for (limit, body, needle) in cases {
        let target = Target::start().await;
        // The gzip case also checks that the limit applies to the inflated body.
        target.set(
            "/metrics",
            Page {
                gzip: true,
                ..Page::text(body)
            },
        );
        let (addr, sink) = http_sink().await;
        let exporter = format!("  otlphttp/out:\n    endpoint: http://{addr}\n");
        let extra = format!("          {limit}\n");
        let yaml = config(&[target.addr.to_string()], &exporter, &extra, "")
            .replace("exporters: [out]", "exporters: [otlphttp/out]");
        let agent = start_agent(&yaml).await;
        sink.wait_for(WAIT, "up", |s| !find(&s.metrics(), "up").is_empty())
            .await;
        let status = agent
            .agent
            .targets
            .active
            .lock()
            .expect("lock")
            .values()
            .next()
            .cloned()
            .expect("target");
        agent.shutdown(Duration::from_secs(5)).await;
        let ms = sink.metrics();
        let (_, up) = find(&ms, "up")[0];
        assert_eq!(value(&number_points(up)[0]), Some(0.0), "{limit}");
        assert!(
            find(&ms, "m").is_empty(),
            "{limit}: nothing of the body is exported"
        );
        let err = status.last_error.unwrap_or_default();
        assert!(err.contains(needle), "{limit}: {err}");
    }
}

#[tokio::test]
async fn openmetrics_created_becomes_start_time_and_filter_resource_processors_apply() {
    let target = Target::start().await;
    target.set(
        "/metrics",
        Page::openmetrics(
            "# TYPE rq counter\n# HELP rq Requests.\nrq_total{code=\"200\"} 10\nrq_created{code=\"200\"} 1700000000.25\n# TYPE noise gauge\nnoise 1\n# EOF\n",
        ),
    );
    let (addr, sink) = http_sink().await;
    let exporter = format!("  otlphttp/out:\n    endpoint: http://{addr}\n");
    let processors = "  filter/noise:\n    metrics:\n      exclude:\n        match_type: regexp\n        metric_names: ['^noise$', '^scrape_.*']\n  resource/env:\n    attributes:\n      - {key: deployment.environment, value: canary, action: upsert}\n";
    let yaml = config(&[target.addr.to_string()], &exporter, "", processors)
        .replace("exporters: [out]", "exporters: [otlphttp/out]")
        .replace(
            "processors: [batch]",
            "processors: [filter/noise, resource/env, batch]",
        );
    let agent = start_agent(&yaml).await;
    sink.wait_for(WAIT, "rq_total", |s| {
        !find(&s.metrics(), "rq_total").is_empty()
    })
    .await;
    agent.shutdown(Duration::from_secs(5)).await;
    let ms = sink.metrics();
    assert!(find(&ms, "noise").is_empty() && find(&ms, "scrape_duration_seconds").is_empty());
    assert!(
        find(&ms, "rq_created").is_empty(),
        "_created is a start time, not a metric"
    );
    let (res, rq) = find(&ms, "rq_total")[0];
    assert_eq!(
        res.get("deployment.environment").map(String::as_str),
        Some("canary")
    );
    assert_eq!(rq.description, "Requests.");
    assert_eq!(
        number_points(rq)[0].start_time_unix_nano,
        1_700_000_000_250_000_000
    );
}

#[tokio::test]
async fn file_sd_targets_come_and_go_with_staleness_on_removal() {
    let a = Target::start().await;
    a.set("/metrics", Page::text("from_a 1\n"));
    let b = Target::start().await;
    b.set("/metrics", Page::text("from_b 1\n"));
    let dir = tempfile::tempdir().expect("tmp");
    let sd = dir.path().join("targets.json");
    let write = |targets: &[String]| {
        let list = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(",");
        // Write then rename, as config management tools do.
        let tmp = dir.path().join("targets.json.tmp");
        std::fs::write(
            &tmp,
            format!("[{{\"targets\":[{list}],\"labels\":{{\"env\":\"canary\"}}}}]"),
        )
        .expect("write");
        std::fs::rename(&tmp, &sd).expect("rename");
    };
    write(&[a.addr.to_string()]);
    let (addr, sink) = http_sink().await;
    let yaml = format!(
        "receivers:\n  prometheus:\n    config:\n      scrape_configs:\n        - job_name: sd\n          scrape_interval: 1s\n          file_sd_configs: [{{files: ['{}/*.json'], refresh_interval: 1m}}]\nexporters:\n  otlphttp:\n    endpoint: http://{addr}\nservice:\n  pipelines:\n    metrics: {{receivers: [prometheus], exporters: [otlphttp]}}\n  telemetry: {{metrics: {{address: ''}}}}\n",
        dir.path().display()
    );
    let agent = start_agent(&yaml).await;
    sink.wait_for(WAIT, "from_a", |s| !find(&s.metrics(), "from_a").is_empty())
        .await;
    let (_, m) = find(&sink.metrics(), "from_a")[0].clone();
    let attrs = attrs_map(&number_points(&m)[0].attributes);
    assert_eq!(
        attrs.get("env").map(String::as_str),
        Some("canary"),
        "group labels reach the series"
    );
    // b appears, a goes away.
    write(&[b.addr.to_string()]);
    sink.wait_for(WAIT, "from_b", |s| !find(&s.metrics(), "from_b").is_empty())
        .await;
    sink.wait_for(WAIT, "staleness for the removed target", |s| {
        find(&s.metrics(), "from_a")
            .iter()
            .any(|(_, m)| number_points(m).iter().any(|p| p.flags == 1))
            && find(&s.metrics(), "up").iter().any(|(r, m)| {
                r.get("service.instance.id") == Some(&a.addr.to_string())
                    && number_points(m).iter().any(|p| p.flags == 1)
            })
    })
    .await;
    let scrapes_of_a = a.request_count("/metrics");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        a.request_count("/metrics"),
        scrapes_of_a,
        "a removed target is no longer scraped"
    );
    agent.shutdown(Duration::from_secs(5)).await;
}

/// Environment values are expanded per value, after parsing, as the collector does: a key
/// holding `: `, ` #` and quotes arrives intact in the header it fills, and a value with a
/// line break arrives intact in the attribute it sets.
#[tokio::test]
async fn environment_values_holding_yaml_syntax_arrive_intact() {
    const KEY: &str = "hcaik: part #not-a-comment \"dq\" 'sq'";
    const MULTILINE: &str = "first line\nsecond: line";
    std::env::set_var("MM_TEST_KEY_WITH_YAML_SYNTAX", KEY);
    std::env::set_var("MM_TEST_VALUE_WITH_LINE_BREAK", MULTILINE);
    let target = Target::start().await;
    target.set("/metrics", Page::text("requests_total 7\n"));
    let (addr, sink) = http_sink().await;
    let exporter = format!(
        "  otlphttp/out:\n    endpoint: http://{addr}\n    headers:\n      x-honeycomb-team: ${{env:MM_TEST_KEY_WITH_YAML_SYNTAX}}\n"
    );
    let processors = "  attributes/note:\n    actions:\n      - key: note\n        value: ${env:MM_TEST_VALUE_WITH_LINE_BREAK}\n        action: upsert\n";
    let yaml = config(&[target.addr.to_string()], &exporter, "", processors)
        .replace("exporters: [out]", "exporters: [otlphttp/out]")
        .replace(
            "processors: [batch]",
            "processors: [attributes/note, batch]",
        );
    let agent = start_agent(&yaml).await;
    sink.wait_for(WAIT, "requests_total", |s| {
        !find(&s.metrics(), "requests_total").is_empty()
    })
    .await;
    agent.shutdown(Duration::from_secs(5)).await;
    let r = &sink.requests()[0];
    assert_eq!(
        r.headers.get("x-honeycomb-team").map(String::as_str),
        Some(KEY)
    );
    let ms = sink.metrics();
    let (_, m) = find(&ms, "requests_total")[0];
    let attrs = attrs_map(&number_points(m)[0].attributes);
    assert_eq!(attrs.get("note").map(String::as_str), Some(MULTILINE));
}
