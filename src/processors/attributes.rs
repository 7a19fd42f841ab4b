//! The `attributes` processor (data-point attributes, i.e. sample labels) and the `resource`
//! processor (resource attributes): `actions: [{key, action, value | from_attribute}]`.

use serde::Deserialize;
use sha1::{Digest, Sha1};

use super::Processor;
use crate::model::Metrics;

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    /// The actions, in order (`attributes:` is accepted too).
    #[serde(default, alias = "attributes")]
    pub actions: Vec<AttributeAction>,
    /// Collector include/exclude clauses on attributes processors are not supported.
    #[serde(default)]
    pub include: Option<serde_json::Value>,
    /// Collector include/exclude clauses are not supported (refused).
    #[serde(default)]
    pub exclude: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributeAction {
    /// The attribute (label) the action works on.
    pub key: String,
    /// What to do: `insert` (only when absent), `update` (only when present), `upsert`,
    /// `delete`, or `hash` (the value's SHA-1). The collector's `extract` and `convert` are
    /// refused.
    pub action: ActionKind,
    /// The value `insert`, `update` and `upsert` set.
    #[serde(default)]
    pub value: Option<String>,
    /// Take the value from this other attribute instead of `value`.
    #[serde(default)]
    pub from_attribute: Option<String>,
    /// A collector request-context source; not available here (refused with `insert`, `update`
    /// and `upsert`).
    #[serde(default)]
    pub from_context: Option<String>,
    /// A collector setting for `extract`, which is refused; other actions ignore it.
    #[serde(default)]
    pub pattern: Option<String>,
    /// A collector setting for `convert`, which is refused.
    #[serde(default)]
    pub converted_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Insert,
    Update,
    Upsert,
    Delete,
    Hash,
    Extract,
    Convert,
}

/// The `resource` processor's settings: actions on resource attributes.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The actions, in order (`actions:` is accepted too).
    #[serde(default, alias = "actions")]
    pub attributes: Vec<AttributeAction>,
}

impl ResourceConfig {
    fn as_actions(&self) -> AttributesConfig {
        AttributesConfig {
            actions: self.attributes.clone(),
            ..AttributesConfig::default()
        }
    }

    /// The `resource` processor of these settings.
    pub fn stage(&self) -> Result<super::Stage, String> {
        let p = ResourceProcessor::new(&self.as_actions())?;
        Ok(super::Stage::sync(Box::new(p)))
    }

    pub fn validate(&self) -> Result<(), String> {
        self.as_actions().validate()
    }
}

impl AttributesConfig {
    /// The `attributes` processor of these settings: actions on each sample's labels.
    pub fn attributes_stage(&self) -> Result<super::Stage, String> {
        Ok(super::Stage::sync(Box::new(AttributesProcessor::new(
            self,
        )?)))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.include.is_some() || self.exclude.is_some() {
            return Err("include/exclude on attribute processors is not supported; \
                        put a filter processor in a separate pipeline instead"
                .into());
        }
        if self.actions.is_empty() {
            return Err("at least one action is required".into());
        }
        for a in &self.actions {
            match a.action {
                ActionKind::Extract | ActionKind::Convert => {
                    return Err(format!(
                        "action {:?} on key {:?} is not supported (supported: insert, update, upsert, delete, hash)",
                        format!("{:?}", a.action).to_lowercase(),
                        a.key
                    ))
                }
                ActionKind::Insert | ActionKind::Update | ActionKind::Upsert => {
                    if a.value.is_none() == a.from_attribute.is_none() || a.from_context.is_some() {
                        return Err(format!(
                            "action on key {:?} needs exactly one of value or from_attribute",
                            a.key
                        ));
                    }
                }
                ActionKind::Delete | ActionKind::Hash => {}
            }
            if a.key.is_empty() {
                return Err("action with an empty key".into());
            }
        }
        Ok(())
    }
}

/// Applies the actions to a key/value list in place.
fn apply(
    actions: &[AttributeAction],
    get: &dyn Fn(&str) -> Option<String>,
    set: &mut dyn FnMut(&str, Option<String>),
) {
    for a in actions {
        let current = get(&a.key);
        let new_value = || -> Option<String> {
            match (&a.value, &a.from_attribute) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(src)) => get(src),
                _ => None,
            }
        };
        match a.action {
            ActionKind::Insert if current.is_none() => {
                if let Some(v) = new_value() {
                    set(&a.key, Some(v));
                }
            }
            ActionKind::Update if current.is_some() => {
                if let Some(v) = new_value() {
                    set(&a.key, Some(v));
                }
            }
            ActionKind::Upsert => {
                if let Some(v) = new_value() {
                    set(&a.key, Some(v));
                }
            }
            ActionKind::Delete if current.is_some() => set(&a.key, None),
            ActionKind::Hash => {
                if let Some(v) = current {
                    set(&a.key, Some(hex::encode(Sha1::digest(v.as_bytes()))));
                }
            }
            _ => {}
        }
    }
}

/// `attributes`: acts on every sample's labels.
pub struct AttributesProcessor {
    actions: Vec<AttributeAction>,
}

impl AttributesProcessor {
    pub fn new(cfg: &AttributesConfig) -> Result<Self, String> {
        cfg.validate()?;
        Ok(AttributesProcessor {
            actions: cfg.actions.clone(),
        })
    }
}

impl Processor for AttributesProcessor {
    fn process(&mut self, mut metrics: Metrics) -> Option<Metrics> {
        for r in &mut metrics.resources {
            for f in &mut r.families {
                for s in &mut f.samples {
                    // Each action sees the result of the ones before it.
                    let mut work = s.labels.clone();
                    for a in &self.actions {
                        let mut changes: Vec<(String, Option<String>)> = Vec::new();
                        let get = |k: &str| work.get(k).map(str::to_string);
                        apply(std::slice::from_ref(a), &get, &mut |k, v| {
                            changes.push((k.to_string(), v))
                        });
                        for (k, v) in changes {
                            work = match v {
                                Some(v) => work.with(&k, &v),
                                None => work.without(&k),
                            };
                        }
                    }
                    s.labels = work;
                }
            }
        }
        Some(metrics)
    }
}

/// `resource`: acts on resource attributes.
pub struct ResourceProcessor {
    actions: Vec<AttributeAction>,
}

impl ResourceProcessor {
    pub fn new(cfg: &AttributesConfig) -> Result<Self, String> {
        cfg.validate()?;
        Ok(ResourceProcessor {
            actions: cfg.actions.clone(),
        })
    }
}

impl Processor for ResourceProcessor {
    fn process(&mut self, mut metrics: Metrics) -> Option<Metrics> {
        for r in &mut metrics.resources {
            for a in &self.actions {
                let snapshot = r.resource.clone();
                let get = |k: &str| {
                    snapshot
                        .iter()
                        .find(|(rk, _)| rk == k)
                        .map(|(_, v)| v.clone())
                };
                let res = &mut r.resource;
                apply(std::slice::from_ref(a), &get, &mut |k, v| match v {
                    Some(v) => match res.iter_mut().find(|(rk, _)| rk == k) {
                        Some(slot) => slot.1 = v,
                        None => res.push((k.to_string(), v)),
                    },
                    None => res.retain(|(rk, _)| rk != k),
                });
            }
        }
        Some(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Labels, MetricFamily, MetricKind, ResourceMetrics, Sample};

    fn labels_of(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }
    use std::sync::Arc;

    fn data() -> Metrics {
        Metrics {
            resources: vec![ResourceMetrics {
                resource: vec![
                    ("service.name".into(), "app".into()),
                    ("secret".into(), "s3".into()),
                ],
                scope_name: String::new(),
                scope_version: String::new(),
                families: vec![MetricFamily {
                    name: Arc::from("up"),
                    kind: MetricKind::Gauge,
                    help: Arc::from(""),
                    unit: Arc::from(""),
                    samples: vec![Sample {
                        name: Arc::from("up"),
                        labels: labels_of(&[("pod", "p1"), ("user", "bob")]),
                        value: 1.0,
                        timestamp_ms: 0,
                    }],
                }],
            }],
        }
    }

    #[test]
    fn attribute_actions() {
        let cfg: AttributesConfig = serde_saphyr::from_str(
            "actions:\n  - {key: env, value: prod, action: insert}\n  - {key: pod, value: x, action: insert}\n  - {key: pod_copy, from_attribute: pod, action: upsert}\n  - {key: user, action: hash}\n  - {key: pod, action: delete}\n",
        )
        .expect("parses");
        let out = AttributesProcessor::new(&cfg)
            .expect("valid")
            .process(data())
            .expect("data");
        let l = &out.resources[0].families[0].samples[0].labels;
        assert_eq!(l.get("env"), Some("prod"));
        assert_eq!(l.get("pod"), None);
        assert_eq!(l.get("pod_copy"), Some("p1"));
        assert_eq!(
            l.get("user"),
            Some(hex::encode(Sha1::digest(b"bob")).as_str())
        );
    }

    #[test]
    fn resource_actions_and_unsupported() {
        let cfg: AttributesConfig = serde_saphyr::from_str(
            "actions:\n  - {key: deployment.environment, value: canary, action: upsert}\n  - {key: secret, action: delete}\n  - {key: service.name, value: y, action: update}\n",
        )
        .expect("parses");
        let out = ResourceProcessor::new(&cfg)
            .expect("valid")
            .process(data())
            .expect("data");
        assert_eq!(
            out.resources[0].resource,
            vec![
                ("service.name".to_string(), "y".to_string()),
                ("deployment.environment".to_string(), "canary".to_string())
            ]
        );
        let cfg: AttributesConfig =
            serde_saphyr::from_str("actions:\n  - {key: a, action: extract, pattern: x}\n")
                .expect("parses");
        assert!(cfg.validate().unwrap_err().contains("not supported"));
    }
}
