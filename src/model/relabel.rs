//! Prometheus relabeling (`relabel_configs`, `metric_relabel_configs`).
//!
//! Same actions, defaults and regex anchoring as Prometheus: regexes are RE2 syntax compiled
//! as `^(?s:...)$`, replacements expand `$1`, `${1}` and `${name}`.

use regex::Regex;

use super::is_label_name;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// One relabel rule as written in the config.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` and matched.
    #[serde(default)]
    pub source_labels: Vec<String>,
    /// What joins the source labels' values.
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Matched against the joined source values (anchored at both ends).
    #[serde(default)]
    pub regex: RelabelRegex,
    /// For `hashmod`: the modulus of the hash of the joined source values.
    #[serde(default)]
    pub modulus: u64,
    /// The label `replace`, `hashmod`, `lowercase` and `uppercase` write.
    #[serde(default)]
    pub target_label: String,
    /// What `replace` writes to `target_label`; `$1`, `${name}` refer to the regex's groups.
    #[serde(default = "default_replacement")]
    pub replacement: String,
    /// What the rule does: `replace`, `keep`, `drop`, `keepequal`, `dropequal`, `hashmod`,
    /// `labelmap`, `labeldrop`, `labelkeep`, `lowercase` or `uppercase`.
    #[serde(default)]
    pub action: Action,
}

fn default_separator() -> String {
    ";".into()
}

fn default_replacement() -> String {
    "$1".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

/// A regex anchored at both ends, remembering how it was written.
#[derive(Debug, Clone)]
pub struct RelabelRegex {
    pub source: String,
    pub regex: Regex,
}

impl RelabelRegex {
    pub fn new(source: &str) -> Result<Self, String> {
        // Prometheus anchors relabel regexes exactly as PromQL 3 does.
        let regex = super::regex::compile_anchored(source, true)?;
        Ok(RelabelRegex {
            source: source.to_string(),
            regex,
        })
    }
}

impl Default for RelabelRegex {
    fn default() -> Self {
        RelabelRegex::new("(.*)").expect("the default regex compiles")
    }
}

impl schemars::JsonSchema for RelabelRegex {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Regex".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An RE2 regular expression, anchored at both ends."
        })
    }
}

impl<'de> Deserialize<'de> for RelabelRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelabelRegex::new(&s).map_err(serde::de::Error::custom)
    }
}

impl RelabelConfig {
    /// Checks the rule the way Prometheus does when it loads a config.
    pub fn validate(&self) -> Result<(), String> {
        let needs_target = matches!(
            self.action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && self.target_label.is_empty() {
            return Err(format!(
                "relabel action {:?} requires target_label",
                action_name(self.action)
            ));
        }
        if self.action == Action::HashMod && self.modulus == 0 {
            return Err("relabel action hashmod requires a modulus above 0".into());
        }
        if matches!(
            self.action,
            Action::Lowercase
                | Action::Uppercase
                | Action::HashMod
                | Action::KeepEqual
                | Action::DropEqual
        ) && !is_label_name(&self.target_label)
        {
            return Err(format!("invalid target_label {:?}", self.target_label));
        }
        if matches!(self.action, Action::KeepEqual | Action::DropEqual)
            && self.regex.source != "(.*)"
        {
            return Err(format!(
                "relabel action {} takes no regex",
                action_name(self.action)
            ));
        }
        if matches!(self.action, Action::LabelDrop | Action::LabelKeep)
            && (!self.source_labels.is_empty() || !self.target_label.is_empty())
        {
            return Err(format!(
                "relabel action {} takes only a regex",
                action_name(self.action)
            ));
        }
        Ok(())
    }
}

pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Replace => "replace",
        Action::Keep => "keep",
        Action::Drop => "drop",
        Action::KeepEqual => "keepequal",
        Action::DropEqual => "dropequal",
        Action::HashMod => "hashmod",
        Action::LabelMap => "labelmap",
        Action::LabelDrop => "labeldrop",
        Action::LabelKeep => "labelkeep",
        Action::Lowercase => "lowercase",
        Action::Uppercase => "uppercase",
    }
}

/// A label set being relabeled. Ordered so results are deterministic.
pub type LabelMap = BTreeMap<String, String>;

/// Applies `rules` in order. Returns `false` when the set was dropped.
pub fn relabel(labels: &mut LabelMap, rules: &[RelabelConfig]) -> bool {
    for rule in rules {
        if !apply(labels, rule) {
            return false;
        }
    }
    true
}

fn joined_source(labels: &LabelMap, rule: &RelabelConfig) -> String {
    let mut out = String::new();
    for (i, name) in rule.source_labels.iter().enumerate() {
        if i > 0 {
            out.push_str(&rule.separator);
        }
        if let Some(v) = labels.get(name) {
            out.push_str(v);
        }
    }
    out
}

fn set_or_delete(labels: &mut LabelMap, name: String, value: String) {
    if value.is_empty() {
        labels.remove(&name);
    } else {
        labels.insert(name, value);
    }
}

fn apply(labels: &mut LabelMap, rule: &RelabelConfig) -> bool {
    let re = &rule.regex.regex;
    match rule.action {
        Action::Drop => !re.is_match(&joined_source(labels, rule)),
        Action::Keep => re.is_match(&joined_source(labels, rule)),
        Action::DropEqual => {
            let v = joined_source(labels, rule);
            labels
                .get(&rule.target_label)
                .map(String::as_str)
                .unwrap_or("")
                != v
        }
        Action::KeepEqual => {
            let v = joined_source(labels, rule);
            labels
                .get(&rule.target_label)
                .map(String::as_str)
                .unwrap_or("")
                == v
        }
        Action::Replace => {
            let v = joined_source(labels, rule);
            // Fast path of Prometheus: the default regex with a literal replacement.
            let Some(caps) = re.captures(&v) else {
                return true;
            };
            let mut target = String::new();
            caps.expand(&rule.target_label, &mut target);
            if !is_label_name(&target) {
                return true;
            }
            let mut value = String::new();
            caps.expand(&rule.replacement, &mut value);
            set_or_delete(labels, target, value);
            true
        }
        Action::Lowercase => {
            let v = joined_source(labels, rule).to_lowercase();
            set_or_delete(labels, rule.target_label.clone(), v);
            true
        }
        Action::Uppercase => {
            let v = joined_source(labels, rule).to_uppercase();
            set_or_delete(labels, rule.target_label.clone(), v);
            true
        }
        Action::HashMod => {
            use md5::{Digest, Md5};
            let v = joined_source(labels, rule);
            let sum = Md5::digest(v.as_bytes());
            let mut last8 = [0u8; 8];
            last8.copy_from_slice(&sum[8..16]);
            let h = u64::from_be_bytes(last8) % rule.modulus;
            labels.insert(rule.target_label.clone(), h.to_string());
            true
        }
        Action::LabelMap => {
            let mut add = Vec::new();
            for (name, value) in labels.iter() {
                if let Some(caps) = re.captures(name) {
                    let mut new_name = String::new();
                    caps.expand(&rule.replacement, &mut new_name);
                    add.push((new_name, value.clone()));
                }
            }
            for (n, v) in add {
                labels.insert(n, v);
            }
            true
        }
        Action::LabelDrop => {
            labels.retain(|name, _| !re.is_match(name));
            true
        }
        Action::LabelKeep => {
            labels.retain(|name, _| re.is_match(name));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> RelabelConfig {
        let r: RelabelConfig = serde_saphyr::from_str(yaml).expect("valid rule");
        r.validate().expect("valid rule");
        r
    }

    fn map(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn replace_with_groups_and_anchoring() {
        let mut l = map(&[("__address__", "10.0.0.1:8080"), ("port", "15020")]);
        let r = rule("source_labels: [__address__, port]\nregex: '([^:]+)(?::\\d+)?;(\\d+)'\nreplacement: '$1:$2'\ntarget_label: __address__\n");
        assert!(relabel(&mut l, &[r]));
        assert_eq!(l["__address__"], "10.0.0.1:15020");
        // Anchored: a partial match does not count.
        let mut l = map(&[("a", "xfoox")]);
        assert!(!relabel(
            &mut l,
            &[rule("source_labels: [a]\nregex: foo\naction: keep\n")]
        ));
    }

    #[test]
    fn empty_replacement_deletes() {
        let mut l = map(&[("a", "1"), ("b", "2")]);
        let r = rule("source_labels: [a]\ntarget_label: b\nreplacement: ''\n");
        relabel(&mut l, &[r]);
        assert!(!l.contains_key("b"));
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // Prometheus: md5("foo") last 8 bytes big-endian % 10.
        let mut l = map(&[("a", "foo")]);
        relabel(
            &mut l,
            &[rule(
                "source_labels: [a]\ntarget_label: h\nmodulus: 1000\naction: hashmod\n",
            )],
        );
        use md5::{Digest, Md5};
        let sum = Md5::digest(b"foo");
        let want = u64::from_be_bytes(sum[8..16].try_into().expect("8 bytes")) % 1000;
        assert_eq!(l["h"], want.to_string());
    }

    #[test]
    fn labelmap_keep_drop_equal_case() {
        let mut l = map(&[
            ("__meta_kubernetes_pod_label_app", "web"),
            ("x", "A"),
            ("y", "A"),
        ]);
        let rules = [
            rule("regex: __meta_kubernetes_pod_label_(.+)\naction: labelmap\n"),
            rule("source_labels: [x]\ntarget_label: y\naction: keepequal\n"),
            rule("source_labels: [x]\ntarget_label: z\naction: lowercase\n"),
            rule("regex: x\naction: labeldrop\n"),
        ];
        assert!(relabel(&mut l, &rules));
        assert_eq!(l.get("app").map(String::as_str), Some("web"));
        assert_eq!(l.get("z").map(String::as_str), Some("a"));
        assert!(!l.contains_key("x"));
        let mut l = map(&[("x", "A"), ("y", "B")]);
        assert!(!relabel(
            &mut l,
            &[rule(
                "source_labels: [x]\ntarget_label: y\naction: keepequal\n"
            )]
        ));
    }

    #[test]
    fn validation_errors() {
        let r: RelabelConfig =
            serde_saphyr::from_str("action: hashmod\ntarget_label: a\n").expect("parses");
        assert!(r.validate().unwrap_err().contains("modulus"));
        let r: RelabelConfig = serde_saphyr::from_str("action: replace\n").expect("parses");
        assert!(r.validate().unwrap_err().contains("target_label"));
    }
}
