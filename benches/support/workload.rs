//! A synthetic Istio sidecar: ≈2,190 series like a real one — `istio_requests_total` and the
//! `istio_request_*` histograms with Istio's 25 labels and 20 duration buckets, Envoy cluster
//! counters, gauges and histograms for 20 clusters — whose counters advance on every render.
//!
//! Bodies are rendered from per-series prefixes built once, so serving them costs the
//! scrapers under test as little as possible.

#![allow(dead_code)]

use std::fmt::Write;

/// Istio's default duration buckets (ms) and +Inf: 20 bounds.
const DURATION_BUCKETS: [&str; 20] = [
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
    "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
];
const SIZE_BUCKETS: [&str; 20] = [
    "1", "5", "10", "50", "100", "500", "1000", "5000", "10000", "50000", "100000", "500000",
    "1e+06", "5e+06", "1e+07", "5e+07", "1e+08", "5e+08", "1e+09", "+Inf",
];
const CODES: [&str; 5] = ["200", "201", "404", "500", "503"];
const SOURCES: [&str; 4] = [
    "flagger-loadtester",
    "frontend",
    "checkout",
    "istio-ingressgateway",
];

enum Kind {
    Counter {
        rate: u64,
    },
    Gauge {
        base: u64,
    },
    /// Cumulative bucket `index` of 20, for a series whose count grows by `rate`.
    Bucket {
        rate: u64,
        index: usize,
    },
    Sum {
        rate: u64,
        mean: u64,
    },
}

struct Line {
    prefix: String,
    kind: Kind,
}

/// One sidecar's series, rendered at any step.
pub struct Sidecar {
    lines: Vec<Line>,
    header: String,
}

impl Sidecar {
    /// Pod `pod` of podinfo: the even ones the primary's, the odd ones the canary's.
    pub fn new(pod: usize) -> Sidecar {
        let workload = if pod.is_multiple_of(2) {
            "podinfo-primary"
        } else {
            "podinfo-canary"
        };
        Sidecar::of_workload(pod, workload)
    }

    /// Pod `pod` of the Deployment `workload` (`destination_workload`).
    pub fn of_workload(pod: usize, workload: &str) -> Sidecar {
        let mut lines = Vec::new();
        let istio_labels = |source: &str, code: &str| {
            format!(
                "connection_security_policy=\"mutual_tls\",destination_app=\"podinfo\",destination_canonical_revision=\"latest\",destination_canonical_service=\"podinfo\",destination_cluster=\"Kubernetes\",destination_principal=\"spiffe://cluster.local/ns/test/sa/podinfo\",destination_service=\"podinfo.test.svc.cluster.local\",destination_service_name=\"podinfo\",destination_service_namespace=\"test\",destination_version=\"v1\",destination_workload=\"{workload}\",destination_workload_namespace=\"test\",grpc_response_status=\"\",reporter=\"destination\",request_protocol=\"http\",response_code=\"{code}\",response_flags=\"-\",source_app=\"{source}\",source_canonical_revision=\"latest\",source_canonical_service=\"{source}\",source_cluster=\"Kubernetes\",source_principal=\"spiffe://cluster.local/ns/test/sa/{source}\",source_version=\"unknown\",source_workload=\"{source}\",source_workload_namespace=\"test\""
            )
        };
        for (si, source) in SOURCES.iter().enumerate() {
            for (ci, code) in CODES.iter().enumerate() {
                let rate = (20 + pod as u64 + si as u64) / (1 + ci as u64 * 3);
                let l = istio_labels(source, code);
                lines.push(Line {
                    prefix: format!("istio_requests_total{{{l}}} "),
                    kind: Kind::Counter { rate },
                });
                for (name, buckets) in [
                    ("istio_request_duration_milliseconds", &DURATION_BUCKETS),
                    ("istio_request_bytes", &SIZE_BUCKETS),
                    ("istio_response_bytes", &SIZE_BUCKETS),
                ] {
                    for (bi, le) in buckets.iter().enumerate() {
                        lines.push(Line {
                            prefix: format!("{name}_bucket{{{l},le=\"{le}\"}} "),
                            kind: Kind::Bucket { rate, index: bi },
                        });
                    }
                    lines.push(Line {
                        prefix: format!("{name}_sum{{{l}}} "),
                        kind: Kind::Sum {
                            rate,
                            mean: 40 + pod as u64,
                        },
                    });
                    lines.push(Line {
                        prefix: format!("{name}_count{{{l}}} "),
                        kind: Kind::Counter { rate },
                    });
                }
            }
        }
        for c in 0..20 {
            let cluster = format!("outbound|{}||svc-{c}.test.svc.cluster.local", 8000 + c);
            for (i, name) in [
                "upstream_rq_total",
                "upstream_rq_completed",
                "upstream_cx_total",
                "upstream_cx_destroy",
                "upstream_cx_connect_fail",
                "upstream_rq_timeout",
                "upstream_rq_retry",
                "upstream_rq_pending_total",
                "upstream_cx_rx_bytes_total",
                "upstream_cx_tx_bytes_total",
                "lb_healthy_panic",
                "update_success",
                "update_attempt",
                "upstream_rq_cancelled",
            ]
            .iter()
            .enumerate()
            {
                lines.push(Line {
                    prefix: format!("envoy_cluster_{name}{{cluster_name=\"{cluster}\"}} "),
                    kind: Kind::Counter {
                        rate: 1 + (i as u64 + c) % 7,
                    },
                });
            }
            for class in ["2xx", "3xx", "4xx", "5xx"] {
                lines.push(Line {
                    prefix: format!("envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"{class}\",cluster_name=\"{cluster}\"}} "),
                    kind: Kind::Counter { rate: if class == "2xx" { 50 } else { 1 } },
                });
            }
            for (i, name) in [
                "upstream_cx_active",
                "upstream_rq_active",
                "membership_healthy",
                "membership_total",
            ]
            .iter()
            .enumerate()
            {
                lines.push(Line {
                    prefix: format!("envoy_cluster_{name}{{cluster_name=\"{cluster}\"}} "),
                    kind: Kind::Gauge { base: i as u64 + c },
                });
            }
            for (bi, le) in DURATION_BUCKETS.iter().enumerate() {
                lines.push(Line {
                    prefix: format!("envoy_cluster_upstream_rq_time_bucket{{cluster_name=\"{cluster}\",le=\"{le}\"}} "),
                    kind: Kind::Bucket { rate: 50, index: bi },
                });
            }
            lines.push(Line {
                prefix: format!(
                    "envoy_cluster_upstream_rq_time_sum{{cluster_name=\"{cluster}\"}} "
                ),
                kind: Kind::Sum { rate: 50, mean: 12 },
            });
            lines.push(Line {
                prefix: format!(
                    "envoy_cluster_upstream_rq_time_count{{cluster_name=\"{cluster}\"}} "
                ),
                kind: Kind::Counter { rate: 50 },
            });
        }
        for g in [
            "envoy_server_live",
            "envoy_server_uptime",
            "envoy_server_memory_allocated",
            "envoy_server_concurrency",
        ] {
            lines.push(Line {
                prefix: format!("{g} "),
                kind: Kind::Gauge { base: 1 },
            });
        }
        let header = "# TYPE istio_requests_total counter\n# TYPE istio_request_duration_milliseconds histogram\n# TYPE istio_request_bytes histogram\n# TYPE istio_response_bytes histogram\n# TYPE envoy_cluster_upstream_rq_time histogram\n".to_string();
        Sidecar { lines, header }
    }

    pub fn series(&self) -> usize {
        self.lines.len()
    }

    /// The exposition body after `step` updates, each sample stamped `ts_ms` when given.
    pub fn render(&self, step: u64, ts_ms: Option<i64>, out: &mut String) {
        out.clear();
        out.push_str(&self.header);
        for l in &self.lines {
            out.push_str(&l.prefix);
            let v = match l.kind {
                Kind::Counter { rate } => step * rate,
                Kind::Gauge { base } => base + step % 5,
                Kind::Bucket { rate, index } => {
                    // Cumulative: a latency distribution that fills the first buckets.
                    let total = step * rate;
                    let frac = ((index as u64 + 1) * 100 / 12).min(100);
                    if index == 19 {
                        total
                    } else {
                        total * frac / 100
                    }
                }
                Kind::Sum { rate, mean } => step * rate * mean,
            };
            let _ = write!(out, "{v}");
            if let Some(t) = ts_ms {
                let _ = write!(out, " {t}");
            }
            out.push('\n');
        }
    }
}
