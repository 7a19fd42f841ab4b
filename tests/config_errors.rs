//! Broken configs, each with the message (and place) it must produce.

use meshmetrics::service::Config;

const GOOD: &str = r#"receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: envoy
          static_configs:
            - targets: ["127.0.0.1:15090"]
processors:
  batch: {}
exporters:
  debug: {}
service:
  pipelines:
    metrics:
      receivers: [prometheus]
      processors: [batch]
      exporters: [debug]
"#;

fn errors(yaml: &str) -> String {
    match Config::from_text("bad.yaml", yaml) {
        Ok(_) => panic!("config should be rejected:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_good_config_loads() {
    let c = Config::from_text("good.yaml", GOOD).expect("valid");
    assert_eq!(c.pipelines.len(), 1);
}

#[test]
fn broken_configs_table() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("typo in a top-level key", "recievers: {}\nservice: {pipelines: {}}\n", &["bad.yaml:1:1", "unknown key \"recievers\"", "did you mean \"receivers\""]),
        ("typo in a processor key", &GOOD.replace("batch: {}", "batch: {timout: 1s}"), &["bad.yaml:9:11", "unknown key \"timout\"", "did you mean \"timeout\""]),
        ("an ingest key from an unset variable", &GOOD.replace("debug: {}", "debug: {}\n  otlp:\n    endpoint: 'x:4317'\n    headers:\n      x-honeycomb-team: ${env:MESHMETRICS_TEST_UNSET_KEY}"), &["bad.yaml:12:3", "header \"x-honeycomb-team\" has an empty value (an unset environment variable?)"]),
        ("queue storage that is not configured", &GOOD.replace("debug: {}", "debug: {}\n  otlp: {endpoint: 'x:4317', sending_queue: {storage: file_storage}}"), &["bad.yaml:12:3", "exporters::otlp: sending_queue.storage references extension file_storage which is not configured"]),
        ("queue storage not enabled in the service", &GOOD.replace("debug: {}", "debug: {}\n  otlp: {endpoint: 'x:4317', sending_queue: {storage: file_storage}}\nextensions:\n  file_storage: {directory: /tmp}"), &["exporters::otlp: sending_queue.storage: extension file_storage must also be listed in service.extensions"]),
        ("file_storage directory missing", &GOOD.replace("processors:\n  batch", "extensions:\n  file_storage: {directory: /nonexistent/queue}\nprocessors:\n  batch"), &["extensions::file_storage: directory \"/nonexistent/queue\" does not exist (create it, or set create_directory: true)"]),
        ("unsupported collector component", &GOOD.replace("batch: {}", "batch: {}\n  k8sattributes: {}"), &["bad.yaml:10:3", "\"k8sattributes\" is an OpenTelemetry Collector component that meshmetrics does not support"]),
        ("misspelt component type", &GOOD.replace("debug: {}", "debgu: {}"), &["bad.yaml:11:3", "unknown exporter type \"debgu\"", "did you mean \"debug\""]),
        ("pipeline references a missing exporter", &GOOD.replace("exporters: [debug]", "exporters: [debug, otlp/honeycomb]"), &["bad.yaml:17:26", "references exporter otlp/honeycomb which is not configured"]),
        ("bad duration", &GOOD.replace("batch: {}", "batch: {timeout: 5 seconds}"), &["bad.yaml:9:20", "invalid duration"]),
        ("timeout above interval", &GOOD.replace("- job_name: envoy", "- job_name: envoy\n          scrape_interval: 5s\n          scrape_timeout: 10s"), &["bad.yaml:2:3: receivers::prometheus", "scrape_timeout (10s) greater than scrape_interval (5s)"]),
        ("bad relabel action", &GOOD.replace("- job_name: envoy", "- job_name: envoy\n          relabel_configs:\n            - action: replaace"), &["bad.yaml:7:23", "unknown value \"replaace\"; did you mean \"replace\"?"]),
        ("hashmod without modulus", &GOOD.replace("- job_name: envoy", "- job_name: envoy\n          relabel_configs:\n            - {action: hashmod, source_labels: [a], target_label: b}"), &["hashmod requires a modulus"]),
        ("bad regex", &GOOD.replace("- job_name: envoy", "- job_name: envoy\n          relabel_configs:\n            - {action: keep, source_labels: [a], regex: '(unclosed'}"), &["bad.yaml:7:57", "invalid regular expression \"(unclosed\": unclosed group"]),
        ("OTTL filter", &GOOD.replace("batch: {}", "batch: {}\n  filter:\n    metrics:\n      metric: ['name == \"x\"']").replace("processors: [batch]", "processors: [filter, batch]"), &["bad.yaml:10:3: processors::filter", "OTTL"]),
        ("traces pipeline", &GOOD.replace("    metrics:\n      receivers", "    traces:\n      receivers"), &["meshmetrics handles metrics only"]),
        ("no pipelines", "service: {}\n", &["at least one pipeline"]),
        ("bad env reference", &GOOD.replace("127.0.0.1:15090", "${env:1BAD}"), &["bad.yaml:7:26", "invalid environment variable name"]),
        ("bad compression", &GOOD.replace("debug: {}", "debug: {}\n  otlp: {endpoint: 'x:4317', compression: brotli}"), &["bad.yaml:12:3: exporters::otlp", "compression \"brotli\" is not supported"]),
        ("bad yaml", "receivers: [\n", &["bad.yaml:1:"]),
        ("misspelt log key", &format!("{GOOD}  telemetry: {{logs: {{levle: info}}}}\n"), &["service.telemetry.logs: unknown key \"levle\"; did you mean \"level\"?"]),
        ("logging exporter", &GOOD.replace("debug: {}", "debug: {}\n  logging: {}"), &["\"logging\" is an OpenTelemetry Collector component", "use `debug`, its successor"]),
        ("prometheus exporter", &GOOD.replace("debug: {}", "debug: {}\n  prometheus: {endpoint: ':8889'}"), &["use `promql`"]),
        ("unknown log level", &format!("{GOOD}  telemetry: {{logs: {{level: warning}}}}\n"), &["service.telemetry.logs.level \"warning\" is not one of debug, info, warn, error; did you mean \"warn\"?"]),
        ("two components on one port", &GOOD.replace("debug: {}", "debug: {}\n  promql: {endpoint: '0.0.0.0:13133'}\nextensions:\n  health_check: {endpoint: '127.0.0.1:13133'}").replace("exporters: [debug]", "exporters: [debug, promql]").replace("service:\n", "service:\n  extensions: [health_check]\n"), &["extensions::health_check and exporters::promql both listen on port 13133"]),
        ("otlp receiver without protocols", &GOOD.replace("receivers:\n", "receivers:\n  otlp: {protocols: {}}\n"), &["bad.yaml:2:3: receivers::otlp", "protocols must enable grpc, http or both"]),
        ("otlp auth naming a missing authenticator", &GOOD.replace("receivers:\n", "receivers:\n  otlp: {protocols: {grpc: {auth: {authenticator: bearertokenauth}}}}\n"), &["receivers::otlp: protocols.grpc.auth.authenticator \"bearertokenauth\" must name a bearertokenauth extension listed in service.extensions"]),
        ("bearertokenauth without a token", &GOOD.replace("processors:\n  batch", "extensions:\n  bearertokenauth: {token: ''}\nprocessors:\n  batch"), &["extensions::bearertokenauth: token is empty (is its environment variable set?)"]),
        ("duplicate job", &GOOD.replace("        - job_name: envoy\n", "        - job_name: envoy\n          static_configs: []\n        - job_name: envoy\n"), &["duplicate job_name"]),
    ];
    for (what, yaml, needles) in cases {
        let msg = errors(yaml);
        for n in *needles {
            assert!(msg.contains(n), "{what}: expected {n:?} in:\n{msg}");
        }
    }
}

#[test]
fn every_error_is_listed_not_just_the_first() {
    let yaml = GOOD
        .replace("exporters: [debug]", "exporters: [nope1]")
        .replace("receivers: [prometheus]", "receivers: [nope2]");
    let msg = errors(&yaml);
    assert!(msg.contains("nope1") && msg.contains("nope2"), "{msg}");
    assert_eq!(msg.lines().count(), 2, "{msg}");
}

#[test]
fn env_expansion_and_dollar_escapes() {
    std::env::set_var("MM_TEST_TARGET", "127.0.0.1:9999");
    let yaml = GOOD
        .replace("127.0.0.1:15090", "${env:MM_TEST_TARGET}")
        .replace("- job_name: envoy", "- job_name: envoy\n          relabel_configs:\n            - {source_labels: [__address__], target_label: x, replacement: '$1-$$literal-${env:MM_UNSET:-dflt}'}");
    let c = Config::from_text("env.yaml", &yaml).expect("valid");
    let meshmetrics::service::components::ReceiverConfig::Prometheus(p) = &c.raw.receivers.0[0].1
    else {
        panic!("the first receiver is the prometheus one");
    };
    let sc = &p.config.scrape_configs[0];
    assert_eq!(sc.static_configs[0].targets[0], "127.0.0.1:9999");
    assert_eq!(sc.relabel_configs[0].replacement, "$1-$literal-dflt");
}

#[test]
fn shipped_configs_are_valid() {
    std::env::set_var("HONEYCOMB_API_KEY", "test");
    for f in ["config/default.yaml", "config/honeycomb.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        Config::load(path.to_str().expect("utf-8 path")).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}
