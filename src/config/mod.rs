//! The building blocks of the collector-style YAML config, below every component: errors that
//! name `file:line:column`, component ids and sections dispatched by type, env and file
//! references (`expand`), layered files (`layers`), durations and sizes (`units`), secrets,
//! TLS and listen addresses. The whole document, its components and its checks are
//! `service::config` and `service::components`.

pub mod expand;
pub mod layers;
mod listen;
pub mod secret;
mod telemetry;
pub mod tls;
pub mod units;
pub mod watch;

pub use listen::{parse_listen_address, same_port};
pub use telemetry::IGNORED_LOG_KEYS;
pub use telemetry::{TelemetryConfig, TelemetryLogsConfig, TelemetryMetricsConfig};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::fmt;
use std::marker::PhantomData;

/// The config the agent runs when started without `--config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.yaml");

/// One config problem, located in the file when the location is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

/// All problems found in one config.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// `type[/name]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    pub kind: String,
    pub name: Option<String>,
}

impl ComponentId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, name) = match s.split_once('/') {
            Some((k, n)) => (k, Some(n)),
            None => (s, None),
        };
        let kind_ok = kind.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !kind_ok {
            return Err(format!(
                "invalid component id {s:?}: the type must be [a-zA-Z][a-zA-Z0-9_]*"
            ));
        }
        if let Some(n) = name {
            if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(format!("invalid component id {s:?}: bad name after '/'"));
            }
        }
        Ok(ComponentId {
            kind: kind.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.kind, n),
            None => f.write_str(&self.kind),
        }
    }
}

/// A kind of component section (`receivers`, `processors`, ...) and its closed set of types.
pub trait ComponentSection: Sized {
    /// Singular name for messages: "receiver".
    const NOUN: &'static str;
    /// Types meshmetrics implements.
    const SUPPORTED: &'static [&'static str];
    /// Collector types users may bring over that meshmetrics does not implement.
    const UNSUPPORTED: &'static [&'static str];
    fn deserialize_typed<'de, A: MapAccess<'de>>(kind: &str, map: &mut A)
        -> Result<Self, A::Error>;
    /// The JSON Schema of each supported type's settings, by type name.
    fn kind_schemas(
        generator: &mut schemars::SchemaGenerator,
    ) -> Vec<(&'static str, schemars::Schema)>;
}

pub fn typed<'de, A: MapAccess<'de>, T: Deserialize<'de> + Default>(
    map: &mut A,
) -> Result<T, A::Error> {
    Ok(map.next_value::<Option<T>>()?.unwrap_or_default())
}

/// What a collector user reaches for instead of a component meshmetrics does not have.
fn equivalent(noun: &str, kind: &str) -> Option<&'static str> {
    Some(match (noun, kind) {
        ("exporter", "logging") => "use `debug`, its successor, with the same verbosity",
        ("exporter", "prometheus") => {
            "use `promql`: it serves Prometheus's query API over the same samples, which a Prometheus can also federate"
        }
        ("processor", "k8sattributes") => {
            "the prometheus receiver's Kubernetes discovery already adds k8s.namespace.name, k8s.pod.name, k8s.node.name and the workload as resource attributes"
        }
        ("processor", "transform") => {
            "use `attributes`/`resource` actions, or `filter` match rules (metric names, strict or regexp) instead of OTTL"
        }
        ("processor", "metricstransform") => {
            "rename or drop with the prometheus receiver's metric_relabel_configs"
        }
        ("processor", "cumulativetodelta") | ("processor", "deltatocumulative") => {
            "meshmetrics keeps Prometheus's cumulative counters as they are scraped"
        }
        ("receiver", "hostmetrics") | ("receiver", "kubeletstats") => {
            "scrape node_exporter or the kubelet's /metrics/cadvisor with the prometheus receiver"
        }
        _ => return None,
    })
}

/// Why a component type is not accepted, with a suggestion when it looks like a typo.
pub fn unknown_type_message<C: ComponentSection>(kind: &str) -> String {
    if C::UNSUPPORTED.contains(&kind) {
        let mut msg = format!(
            "{} type {kind:?} is an OpenTelemetry Collector component that meshmetrics does not support (supported: {})",
            C::NOUN,
            C::SUPPORTED.join(", ")
        );
        if let Some(instead) = equivalent(C::NOUN, kind) {
            msg.push_str("; ");
            msg.push_str(instead);
        }
        return msg;
    }
    let mut msg = format!("unknown {} type {kind:?}", C::NOUN);
    if let Some(s) = nearest(kind, C::SUPPORTED.iter().copied()) {
        msg.push_str(&format!("; did you mean {s:?}?"));
    } else {
        msg.push_str(&format!(" (supported: {})", C::SUPPORTED.join(", ")));
    }
    msg
}

/// The closest candidate by edit distance, when it is close enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Marks a `line:column` that an error message carries for itself.
const KEY_POSITION: &str = "§§";

/// Components of one section in file order.
#[derive(Debug, Clone)]
pub struct ComponentMap<C>(
    pub Vec<(ComponentId, C)>,
    /// Line and column of each component's key, for errors found after parsing.
    pub Vec<(usize, usize)>,
);

impl<C> Default for ComponentMap<C> {
    fn default() -> Self {
        ComponentMap(Vec::new(), Vec::new())
    }
}

impl<C> ComponentMap<C> {
    /// Where component `i` is defined.
    pub fn position(&self, i: usize) -> (usize, usize) {
        self.1.get(i).copied().unwrap_or((0, 0))
    }

    pub fn get(&self, id: &ComponentId) -> Option<&C> {
        self.0.iter().find(|(i, _)| i == id).map(|(_, c)| c)
    }
    pub fn ids(&self) -> impl Iterator<Item = &ComponentId> {
        self.0.iter().map(|(i, _)| i)
    }
}

impl<C: ComponentSection> schemars::JsonSchema for ComponentMap<C> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("{}s", C::NOUN).into()
    }
    /// Components by id (`type` or `type/name`), each with its type's settings; empty
    /// settings (`debug:`) take every default.
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut patterns = serde_json::Map::new();
        for (kind, schema) in C::kind_schemas(generator) {
            patterns.insert(
                format!("^{kind}(/[^/\\s]+)?$"),
                serde_json::json!({ "anyOf": [schema, { "type": "null" }] }),
            );
        }
        schemars::json_schema!({
            "type": ["object", "null"],
            "description": format!(
                "{}s by id: `type` or `type/name`, with the type's settings (supported: {}).",
                C::NOUN,
                C::SUPPORTED.join(", ")
            ),
            "patternProperties": patterns,
            "additionalProperties": false
        })
    }
}

impl<'de, C: ComponentSection> Deserialize<'de> for ComponentMap<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<C>(PhantomData<C>);
        impl<'de, C: ComponentSection> Visitor<'de> for V<C> {
            type Value = ComponentMap<C>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a map of {} ids to their settings", C::NOUN)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ComponentMap::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(ComponentId, C)> = Vec::new();
                let mut positions = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    // The deserializer has moved past the key by now, so errors about the key
                    // carry its position themselves (see `yaml_error`).
                    let at = |m: String| {
                        de::Error::custom(format!(
                            "{KEY_POSITION}{}:{}{KEY_POSITION}{m}",
                            key.referenced.line(),
                            key.referenced.column()
                        ))
                    };
                    let id = ComponentId::parse(&key.value).map_err(at)?;
                    if !C::SUPPORTED.contains(&id.kind.as_str()) {
                        return Err(at(unknown_type_message::<C>(&id.kind)));
                    }
                    if out.iter().any(|(i, _)| *i == id) {
                        return Err(at(format!("duplicate {} {id}", C::NOUN)));
                    }
                    let cfg = C::deserialize_typed(&id.kind, &mut map)?;
                    positions.push((
                        key.referenced.line() as usize,
                        key.referenced.column() as usize,
                    ));
                    out.push((id, cfg));
                }
                Ok(ComponentMap(out, positions))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// What the agent's pages show of the config it runs (zpages, the façade's status
/// endpoints), kept apart from the components' settings.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverview {
    /// Where it came from (a path, or `<default>`).
    pub source: String,
    /// The config as loaded, secrets redacted, as YAML (`/api/v1/status/config`).
    pub redacted_yaml: String,
    pub pipelines: Vec<Pipeline>,
    pub extensions: Vec<ComponentId>,
    /// The port of its zpages extension, when it has one.
    pub zpages_port: Option<String>,
}

/// A pipeline with its component ids resolved.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: String,
    pub receivers: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
}

pub const TOP_KEYS: &[&str] = &[
    "receivers",
    "processors",
    "exporters",
    "extensions",
    "connectors",
    "service",
];

/// Turns a serde-saphyr error into ours, adding a suggestion for an unknown key.
pub fn yaml_error(file: &str, e: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = e
        .location()
        .map(|l| (l.line() as usize, l.column() as usize))
        .unwrap_or((0, 0));
    let (mut line, mut column) = (line, column);
    let mut message = e.without_snippet().to_string();
    // serde-saphyr appends " at line N, column M"; we print the position up front.
    if let Some(k) = message.rfind(" at line ") {
        message.truncate(k);
    }
    // A position the message carries itself wins (errors about map keys).
    let mut parts = message.splitn(3, KEY_POSITION);
    if let (Some(_), Some(pos), Some(rest)) = (parts.next(), parts.next(), parts.next()) {
        if let Some((l, c)) = pos.split_once(':') {
            line = l.parse().unwrap_or(line);
            column = c.parse().unwrap_or(column);
        }
        message = rest.to_string();
    }
    let original = message.clone();
    let unknown = original
        .strip_prefix("unknown field `")
        .map(|r| ("key", r))
        .or_else(|| {
            original
                .strip_prefix("unknown variant `")
                .map(|r| ("value", r))
        });
    if let Some((what, rest)) = unknown {
        if let Some((key, tail)) = rest.split_once('`') {
            let expected: Vec<&str> = tail
                .split_once("expected one of ")
                .or_else(|| tail.split_once("expected "))
                .map(|(_, list)| {
                    list.split(", ")
                        .map(|s| s.trim_matches(|c| c == '`' || c == ' '))
                        .collect()
                })
                .unwrap_or_default();
            let pool: Vec<&str> = if expected.is_empty() {
                TOP_KEYS.to_vec()
            } else {
                expected
            };
            message = format!("unknown {what} {key:?}");
            match nearest(key, pool.iter().copied()) {
                Some(s) => message.push_str(&format!("; did you mean {s:?}?")),
                None => message.push_str(&format!(" (expected one of: {})", pool.join(", "))),
            }
        }
    }
    ConfigError {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

pub fn loc_error(file: &str, s: &Spanned<String>, message: String) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        line: s.referenced.line() as usize,
        column: s.referenced.column() as usize,
        message,
    }
}

pub fn resolve_refs<C>(
    file: &str,
    section: &str,
    pipeline: &str,
    refs: &[Spanned<String>],
    defined: &ComponentMap<C>,
    errors: &mut Vec<ConfigError>,
) -> Vec<ComponentId> {
    let mut out = Vec::new();
    for r in refs {
        match ComponentId::parse(&r.value) {
            Ok(id) if defined.get(&id).is_some() => {
                if out.contains(&id) {
                    errors.push(loc_error(
                        file,
                        r,
                        format!("pipeline {pipeline:?} lists {section} {id} twice"),
                    ));
                } else {
                    out.push(id);
                }
            }
            Ok(id) => {
                let names: Vec<String> = defined.ids().map(|i| i.to_string()).collect();
                let mut m = format!(
                    "pipeline {pipeline:?} references {section} {id} which is not configured"
                );
                if let Some(s) = nearest(&r.value, names.iter().map(String::as_str)) {
                    m.push_str(&format!("; did you mean {s:?}?"));
                }
                errors.push(loc_error(file, r, m));
            }
            Err(m) => errors.push(loc_error(file, r, m)),
        }
    }
    out
}
