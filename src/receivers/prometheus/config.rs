//! The `prometheus` receiver's config: a Prometheus `scrape_configs` block, verbatim.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

use super::discovery::kubernetes::KubernetesSdConfig;
use super::discovery::{FileSdConfig, StaticConfig};
use super::http_client::with_http_client;
use crate::config::secret::Secret;
use crate::config::tls::TlsClientConfig;
use crate::config::units::{de_opt_bytes, de_opt_duration};
use crate::model::relabel::RelabelConfig;

/// `receivers: prometheus: {config: ...}`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusReceiverConfig {
    /// The embedded Prometheus configuration.
    #[serde(default)]
    pub config: PrometheusConfig,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Defaults for every scrape job.
    #[serde(default)]
    pub global: GlobalConfig,
    /// The scrape jobs.
    #[serde(default)]
    pub scrape_configs: Vec<ScrapeConfig>,
}

/// Prometheus `global:`; only the scrape-related keys apply to an agent.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// Default for every job: how often targets are scraped.
    #[serde(default, deserialize_with = "de_opt_duration")]
    #[schemars(with = "Option<crate::config::units::DurationText>")]
    pub scrape_interval: Option<Duration>,
    /// Default for every job: how long one scrape may take (at most the interval).
    #[serde(default, deserialize_with = "de_opt_duration")]
    #[schemars(with = "Option<crate::config::units::DurationText>")]
    pub scrape_timeout: Option<Duration>,
    /// A Prometheus setting for rules, accepted and unused.
    #[serde(default, deserialize_with = "de_opt_duration")]
    #[schemars(with = "Option<crate::config::units::DurationText>")]
    pub evaluation_interval: Option<Duration>,
    /// Labels added to every scraped series (when not already present).
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Default for every job: the largest scrape body accepted, inflated (0: no limit).
    #[serde(default, deserialize_with = "de_opt_bytes")]
    #[schemars(with = "Option<crate::config::units::ByteSize>")]
    pub body_size_limit: Option<u64>,
    /// Default for every job: most samples one scrape may hold after relabeling (0: no limit);
    /// a scrape over it fails.
    #[serde(default)]
    pub sample_limit: Option<u64>,
    /// Default for every job: most labels on one series (0: no limit).
    #[serde(default)]
    pub label_limit: Option<u64>,
    /// Default for every job: longest label name (0: no limit).
    #[serde(default)]
    pub label_name_length_limit: Option<u64>,
    /// Default for every job: longest label value (0: no limit).
    #[serde(default)]
    pub label_value_length_limit: Option<u64>,
    /// Default for every job: the exposition formats asked for, in order of preference.
    #[serde(default)]
    pub scrape_protocols: Option<Vec<String>>,
}

with_http_client! {
    /// One `scrape_configs` entry.
    #[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ScrapeConfig {
        /// The job's name: the `job` label of its series, unique in the receiver.
        pub job_name: String,
        /// How often targets are scraped (default: the global one).
        #[serde(default, deserialize_with = "de_opt_duration")]
        #[schemars(with = "Option<crate::config::units::DurationText>")]
        pub scrape_interval: Option<Duration>,
        /// How long one scrape may take (default: the global one, at most the interval).
        #[serde(default, deserialize_with = "de_opt_duration")]
        #[schemars(with = "Option<crate::config::units::DurationText>")]
        pub scrape_timeout: Option<Duration>,
        /// The path scraped (a target's `__metrics_path__` label overrides it).
        #[serde(default = "default_metrics_path")]
        pub metrics_path: String,
        /// `http` or `https`.
        #[serde(default = "default_scheme")]
        pub scheme: String,
        /// URL query parameters added to each scrape.
        #[serde(default)]
        pub params: BTreeMap<String, Vec<String>>,
        /// On a clash between a scraped label and a target label, keep the scraped one (otherwise
        /// it becomes `exported_<name>`).
        #[serde(default)]
        pub honor_labels: bool,
        /// Whether the timestamps targets expose are kept (otherwise the scrape's time is used).
        #[serde(default = "yes")]
        pub honor_timestamps: bool,
        /// Whether gzip is asked for.
        #[serde(default = "yes")]
        pub enable_compression: bool,
        /// Whether redirects are followed.
        #[serde(default = "yes")]
        pub follow_redirects: bool,
        /// The exposition formats asked for, in order of preference (`OpenMetricsText1.0.0`,
        /// `OpenMetricsText0.0.1`, `PrometheusText0.0.4`).
        #[serde(default)]
        pub scrape_protocols: Option<Vec<String>>,
        /// Targets listed here.
        #[serde(default)]
        pub static_configs: Vec<StaticConfig>,
        /// Targets read from files.
        #[serde(default)]
        pub file_sd_configs: Vec<FileSdConfig>,
        /// Targets found through the Kubernetes API.
        #[serde(default)]
        pub kubernetes_sd_configs: Vec<KubernetesSdConfig>,
        /// Rules applied to each discovered target; a target they drop is not scraped.
        #[serde(default)]
        pub relabel_configs: Vec<RelabelConfig>,
        /// Rules applied to each scraped series before it is kept.
        #[serde(default)]
        pub metric_relabel_configs: Vec<RelabelConfig>,
        /// Most samples one scrape may hold after relabeling (0: no limit); a scrape over it fails.
        #[serde(default)]
        pub sample_limit: Option<u64>,
        /// Most labels on one series (0: no limit); a scrape over it fails.
        #[serde(default)]
        pub label_limit: Option<u64>,
        /// Longest label name (0: no limit).
        #[serde(default)]
        pub label_name_length_limit: Option<u64>,
        /// Longest label value (0: no limit).
        #[serde(default)]
        pub label_value_length_limit: Option<u64>,
        /// The largest scrape body accepted, inflated (0: no limit); a larger one fails the scrape.
        #[serde(default, deserialize_with = "de_opt_bytes")]
        #[schemars(with = "Option<crate::config::units::ByteSize>")]
        pub body_size_limit: Option<u64>,
    }
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

fn default_scheme() -> String {
    "http".into()
}

fn yes() -> bool {
    true
}

/// Prometheus's defaults.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrape bodies above this are refused unless `body_size_limit` says otherwise (`0` = no
/// limit, Prometheus's default). An agent must not be taken down by one runaway target; vmagent
/// draws the same line at 16 MiB, Istio sidecars expose a few MiB at most.
pub const DEFAULT_BODY_SIZE_LIMIT: u64 = 64 << 20;
/// Label names and values above these fail their scrape unless `label_name_length_limit` /
/// `label_value_length_limit` say otherwise (`0` = no limit, Prometheus's default). A megabyte
/// label would be copied into every point of its series; OTLP backends cut string attributes
/// long before that (Honeycomb at 64 KB).
pub const DEFAULT_LABEL_NAME_LENGTH_LIMIT: u64 = 1 << 10;
pub const DEFAULT_LABEL_VALUE_LENGTH_LIMIT: u64 = 64 << 10;

/// A scrape config with the global defaults folded in and checked.
#[derive(Debug, Clone)]
pub struct ResolvedScrapeConfig {
    pub job_name: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub metrics_path: String,
    pub scheme: String,
    pub params: BTreeMap<String, Vec<String>>,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub enable_compression: bool,
    /// Follow up to 10 redirects, as Prometheus's HTTP client does (default on).
    pub follow_redirects: bool,
    pub openmetrics: bool,
    pub relabel_configs: Vec<RelabelConfig>,
    pub metric_relabel_configs: Vec<RelabelConfig>,
    pub sample_limit: u64,
    pub label_limit: u64,
    pub label_name_length_limit: u64,
    pub label_value_length_limit: u64,
    pub body_size_limit: u64,
    pub external_labels: BTreeMap<String, String>,
    pub authorization: Option<(String, Secret)>,
    pub basic_auth: Option<(String, Secret)>,
    pub tls: TlsClientConfig,
}

impl PrometheusConfig {
    /// Applies `global:` defaults and Prometheus's checks to each scrape config.
    pub fn resolve(&self) -> Result<Vec<ResolvedScrapeConfig>, Vec<String>> {
        let mut errors = Vec::new();
        let mut out = Vec::new();
        let mut names = std::collections::HashSet::new();
        let g = &self.global;
        let g_interval = g.scrape_interval.unwrap_or(DEFAULT_SCRAPE_INTERVAL);
        let g_timeout = g
            .scrape_timeout
            .unwrap_or(DEFAULT_SCRAPE_TIMEOUT.min(g_interval));
        for sc in &self.scrape_configs {
            let job = &sc.job_name;
            let mut err = |m: String| errors.push(format!("scrape_configs job {job:?}: {m}"));
            if job.is_empty() {
                err("job_name must not be empty".into());
            }
            if !names.insert(job.clone()) {
                err("duplicate job_name".into());
            }
            let interval = sc.scrape_interval.unwrap_or(g_interval);
            // Prometheus: an unset timeout is the global one, capped at the interval.
            let timeout = sc.scrape_timeout.unwrap_or(g_timeout.min(interval));
            if interval.is_zero() {
                err("scrape_interval must be above 0".into());
            }
            if timeout > interval {
                err(format!(
                    "scrape_timeout ({}) greater than scrape_interval ({})",
                    crate::config::units::format_duration(timeout),
                    crate::config::units::format_duration(interval)
                ));
            }
            if sc.scheme != "http" && sc.scheme != "https" {
                err(format!("scheme must be http or https, not {:?}", sc.scheme));
            }
            if !sc.metrics_path.starts_with('/') {
                err(format!(
                    "metrics_path {:?} must start with '/'",
                    sc.metrics_path
                ));
            }
            for (i, r) in sc
                .relabel_configs
                .iter()
                .chain(sc.metric_relabel_configs.iter())
                .enumerate()
            {
                if let Err(m) = r.validate() {
                    err(format!("relabel rule {}: {m}", i + 1));
                }
            }
            let (credentials, problems) = sc.http_client().credentials();
            for m in problems {
                err(m);
            }
            let protocols = sc.scrape_protocols.as_ref().or(g.scrape_protocols.as_ref());
            let openmetrics = match protocols {
                None => true,
                Some(p) => p.iter().any(|x| x.starts_with("OpenMetricsText")),
            };
            for (i, k) in sc.kubernetes_sd_configs.iter().enumerate() {
                if let Err(m) = k.validate() {
                    err(format!("kubernetes_sd_configs entry {}: {m}", i + 1));
                }
            }
            for d in &sc.file_sd_configs {
                if d.files.is_empty() {
                    err("file_sd_configs entry lists no files".into());
                }
            }
            out.push(ResolvedScrapeConfig {
                job_name: job.clone(),
                interval,
                timeout,
                metrics_path: sc.metrics_path.clone(),
                scheme: sc.scheme.clone(),
                params: sc.params.clone(),
                honor_labels: sc.honor_labels,
                honor_timestamps: sc.honor_timestamps,
                enable_compression: sc.enable_compression,
                follow_redirects: sc.follow_redirects,
                openmetrics,
                relabel_configs: sc.relabel_configs.clone(),
                metric_relabel_configs: sc.metric_relabel_configs.clone(),
                sample_limit: sc.sample_limit.or(g.sample_limit).unwrap_or(0),
                label_limit: sc.label_limit.or(g.label_limit).unwrap_or(0),
                label_name_length_limit: sc
                    .label_name_length_limit
                    .or(g.label_name_length_limit)
                    .unwrap_or(DEFAULT_LABEL_NAME_LENGTH_LIMIT),
                label_value_length_limit: sc
                    .label_value_length_limit
                    .or(g.label_value_length_limit)
                    .unwrap_or(DEFAULT_LABEL_VALUE_LENGTH_LIMIT),
                body_size_limit: sc
                    .body_size_limit
                    .or(g.body_size_limit)
                    .unwrap_or(DEFAULT_BODY_SIZE_LIMIT),
                external_labels: g.external_labels.clone(),
                authorization: credentials.authorization,
                basic_auth: credentials.basic_auth,
                tls: sc.tls_config.clone(),
            });
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}
