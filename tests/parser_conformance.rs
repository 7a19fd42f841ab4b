//! Exposition parser conformance on third-party data: the OpenMetrics parser suite (strict
//! verdicts), Prometheus's textparse files, and real Istio / Envoy / exporter scrapes.

use meshmetrics::model::exposition::{validate_openmetrics, Entry, Format, Parser};
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

type Outcome = Result<Vec<(String, Vec<(String, String)>, u64)>, (usize, String)>;

/// Every sample with its labels, or the first error and its line.
fn parse_all(body: &[u8], format: Format, lazy: bool) -> Outcome {
    let mut p = Parser::new(body, format);
    if lazy {
        p = p.with_lazy_labels();
    }
    let mut out = Vec::new();
    loop {
        let entry = p.next_entry().map_err(|e| (e.line, e.message.clone()))?;
        let Some(Entry::Sample(s)) = entry else {
            if entry.is_none() {
                return Ok(out);
            }
            continue;
        };
        let (name, value) = (s.name.to_string(), s.value.to_bits());
        p.take_labels().map_err(|e| (e.line, e.message))?;
        let labels = p.label_pairs();
        out.push((name, labels, value));
    }
}

/// The scrape loop parses label sets only for series it has not seen (`with_lazy_labels`);
/// that must find the same labels, and fail on the same line, as parsing every line does.
#[test]
fn lazy_label_parsing_agrees_with_eager_parsing() {
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut stack = vec![corpora()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("dir").flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_none_or(|x| x != "json" && x != "test")
                && std::fs::metadata(&path)
                    .map(|m| m.len() < 4 << 20)
                    .unwrap_or(false)
            {
                bodies.push(std::fs::read(&path).expect("read"));
            }
        }
    }
    // Hand-made label sets at the edges of the syntax.
    for extra in [
        "a{x=\"}\",y=\"\\\"}\"} 1\n",
        "a{x=\"1\"}} 1\n",
        "a{x=\"1\" , y = \"2\" } 1\n",
        "a{x=\"1\\\"} 1\n",
        "a{x=\"1\",x=\"2\"} 1\n",
        "a{x=1} 1\n",
        "a{,} 1\n",
        "a{x=\"1\"\n",
        "a{x=\"\\\\\"} 1\n",
    ] {
        bodies.push(extra.as_bytes().to_vec());
    }
    // And each body with a byte changed here and there, to reach error paths.
    let originals = bodies.len();
    for i in 0..originals {
        let b = bodies[i].clone();
        if b.is_empty() {
            continue;
        }
        for (k, c) in [b'"', b'}', b'\\', b',', b'{', b'='].iter().enumerate() {
            let mut m = b.clone();
            let at = (b.len() * (2 * k + 1) / 13).min(b.len() - 1);
            m[at] = *c;
            bodies.push(m);
        }
    }
    let mut compared = 0;
    for body in &bodies {
        for format in [Format::Text, Format::OpenMetrics] {
            // Errors must fall on the same line; the message may differ (a line with a bad
            // label set and a bad value reports whichever its parser reached first).
            let eager = parse_all(body, format, false).map_err(|e| e.0);
            let lazy = parse_all(body, format, true).map_err(|e| e.0);
            assert_eq!(
                eager,
                lazy,
                "lazy and eager parsing disagree on:\n{}",
                String::from_utf8_lossy(&body[..body.len().min(2000)])
            );
            compared += 1;
        }
    }
    assert!(compared > 1000, "only {compared} bodies compared");
}
