//! Exposition parser conformance on third-party data: the OpenMetrics parser suite (strict
//! verdicts), Prometheus's textparse files, and real Istio / Envoy / exporter scrapes.

use meshmetrics::receivers::prometheus::exposition::{validate_openmetrics, Entry, Format, Parser};
use std::path::PathBuf;

fn corpora() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora");
    assert!(p.is_dir(), "test corpora not found at {}", p.display());
    p
}

fn count_samples(body: &[u8], format: Format) -> Result<usize, String> {
    let mut p = Parser::new(body, format);
    let mut n = 0;
    while let Some(e) = p.next_entry().map_err(|e| e.to_string())? {
        if matches!(e, Entry::Sample(_)) {
            n += 1;
        }
    }
    Ok(n)
}

#[test]
fn openmetrics_suite_verdicts() {
    let dir = corpora().join("openmetrics-parsers/parsers");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("suite dir")
        .map(|e| e.expect("entry").path())
        .collect();
    cases.sort();
    let (mut parse_ok, mut reject_ok) = (0, 0);
    let mut wrong = Vec::new();
    for case in &cases {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(case.join("test.json")).expect("test.json"))
                .expect("json");
        let should_parse = meta["shouldParse"].as_bool().expect("shouldParse");
        let body = std::fs::read(case.join("metrics")).expect("metrics");
        let got = validate_openmetrics(&body);
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        match (should_parse, &got) {
            (true, Ok(_)) => parse_ok += 1,
            (false, Err(e)) => {
                assert!(
                    !e.message.is_empty() && e.line > 0,
                    "{name}: rejection must say why and where"
                );
                reject_ok += 1
            }
            (true, Err(e)) => wrong.push(format!("{name}: should parse, got {e}")),
            (false, Ok(_)) => wrong.push(format!("{name}: should be rejected, parsed")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!((parse_ok, reject_ok), (44, 167));
}

#[test]
fn istio_sidecar_scrape_has_461_series() {
    let body = std::fs::read(
        corpora().join("envoy-istio-samples/datadog/istio-1.11.4-sidecar-merged.txt"),
    )
    .expect("istio sample");
    assert_eq!(count_samples(&body, Format::Text), Ok(461));
}

#[test]
fn textparse_and_exporter_files_parse_to_their_sample_counts() {
    let c = corpora();
    let cases: &[(&str, Format, usize)] = &[
        (
            "prometheus-textparse/testdata/alltypes.237mfs.prom.txt",
            Format::Text,
            1857,
        ),
        (
            "prometheus-textparse/testdata/alltypes.237mfs.nometa.prom.txt",
            Format::Text,
            1857,
        ),
        (
            "prometheus-textparse/testdata/alltypes.5mfs.om.txt",
            Format::OpenMetrics,
            53,
        ),
        (
            "prometheus-textparse/testdata/1histogram.om.txt",
            Format::OpenMetrics,
            42,
        ),
        (
            "exporter-samples/node_exporter/e2e-output.txt",
            Format::Text,
            3026,
        ),
        (
            "exporter-samples/cadvisor/prometheus_metrics.prom",
            Format::Text,
            287,
        ),
        (
            "exporter-samples/cadvisor/prometheus_machine_metrics.prom",
            Format::Text,
            66,
        ),
        (
            "envoy-istio-samples/kuma/envoy-histograms-with-scoped.prom",
            Format::Text,
            528,
        ),
        (
            "envoy-istio-samples/kuma/envoy-mixed-profile-basic.prom",
            Format::Text,
            50,
        ),
        (
            "envoy-istio-samples/kuma/envoy-gauges.prom",
            Format::Text,
            36,
        ),
        (
            "envoy-istio-samples/kuma/envoy-counters.prom",
            Format::Text,
            25,
        ),
    ];
    for (file, format, want) in cases {
        let body = std::fs::read(c.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(count_samples(&body, *format), Ok(*want), "{file}");
    }
}

#[test]
fn textparse_om_samples_are_strictly_valid_where_upstream_is() {
    // The OpenMetrics testdata with negative buckets and a sum is accepted by Prometheus but
    // is not strict OpenMetrics; the single-histogram file is.
    let body = std::fs::read(corpora().join("prometheus-textparse/testdata/1histogram.om.txt"))
        .expect("file");
    assert!(validate_openmetrics(&body).is_ok());
}

#[test]
fn node_exporter_textfile_cases_parse() {
    let dir = corpora().join("exporter-samples/node_exporter/textfile");
    for e in std::fs::read_dir(&dir).expect("dir") {
        let path = e.expect("entry").path();
        let body = std::fs::read(&path).expect("file");
        let r = count_samples(&body, Format::Text);
        assert!(r.is_ok(), "{}: {:?}", path.display(), r);
    }
}
