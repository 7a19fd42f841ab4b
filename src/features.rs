//! Feature gates, as the collector names its switchable behaviours. meshmetrics' own are
//! fixed (listed on featurez); `--feature-gates` is accepted so that a collector's command
//! line carries over, and what it asks is shown beside them.

use std::sync::OnceLock;

/// The gates this build has, with their state and what they do.
pub const KNOWN: &[(&str, &str, &str)] = &[
    (
        "scrape.cache",
        "enabled",
        "Series seen before skip label parsing and relabeling",
    ),
    (
        "scrape.staleness",
        "enabled",
        "Vanished series and failed scrapes emit NoRecordedValue points",
    ),
    (
        "receiver.prometheus.openmetrics",
        "enabled",
        "OpenMetrics 1.0 is preferred in content negotiation",
    ),
    (
        "pkg.translator.prometheus.NormalizeName",
        "enabled",
        "OTLP names become Prometheus names with unit and _total suffixes (receiver) and back (exporter)",
    ),
];

/// What `--feature-gates` asked, for featurez: (id, asked enabled).
static REQUESTED: OnceLock<Vec<(String, bool)>> = OnceLock::new();

/// Records the `--feature-gates` values (`+id`, `-id`, `id`) and returns a warning for each
/// that changes nothing: unknown, or asking a fixed gate to be off.
pub fn requested(gates: &[String]) -> Vec<String> {
    let parsed: Vec<(String, bool)> = gates
        .iter()
        .map(|g| g.trim())
        .filter(|g| !g.is_empty())
        .map(|g| match g.strip_prefix('-') {
            Some(id) => (id.to_string(), false),
            None => (g.trim_start_matches('+').to_string(), true),
        })
        .collect();
    let warnings = parsed
        .iter()
        .filter_map(|(id, on)| match KNOWN.iter().find(|(k, _, _)| k == id) {
            None => Some(format!(
                "feature gate {id:?} is unknown to meshmetrics; ignored"
            )),
            Some(_) if !on => Some(format!(
                "feature gate {id:?} is always enabled in meshmetrics; -{id} ignored"
            )),
            Some(_) => None,
        })
        .collect();
    let _ = REQUESTED.set(parsed);
    warnings
}

/// Every gate for featurez: (id, state, description), the known ones first, then what was
/// asked that changes nothing.
pub fn listed() -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = KNOWN
        .iter()
        .map(|(id, st, d)| (id.to_string(), st.to_string(), d.to_string()))
        .collect();
    for (id, on) in REQUESTED.get().into_iter().flatten() {
        if !KNOWN.iter().any(|(k, _, _)| k == id) {
            let asked = if *on { "enabled" } else { "disabled" };
            out.push((
                id.clone(),
                format!("{asked} on the command line; unknown, no effect"),
                String::new(),
            ));
        }
    }
    out
}
