//! Flagger's query templates: Go `text/template` text whose actions are the model's
//! functions (`{{ namespace }}`, `{{ target }}`, `{{ interval }}`, `{{ variables.key }}` …),
//! executed with `missingkey=error`. Only what Flagger's model offers is supported; any other
//! action is an error naming it, as a template Flagger could not run either.

use std::collections::BTreeMap;

/// What Flagger's `MetricTemplateModel` holds for one metric of one canary.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub name: String,
    pub namespace: String,
    pub target: String,
    pub service: String,
    pub ingress: String,
    pub route: String,
    pub interval: String,
    pub variables: BTreeMap<String, String>,
}

impl Model {
    fn lookup(&self, action: &str) -> Result<&str, String> {
        Ok(match action {
            "name" => &self.name,
            "namespace" => &self.namespace,
            "target" => &self.target,
            "service" => &self.service,
            "ingress" => &self.ingress,
            "route" => &self.route,
            "interval" => &self.interval,
            other => {
                let Some(key) = other.strip_prefix("variables.") else {
                    return Err(format!("function {other:?} not defined"));
                };
                return self
                    .variables
                    .get(key)
                    .map(String::as_str)
                    .ok_or_else(|| format!("map has no entry for key {key:?}"));
            }
        })
    }
}

/// Renders `template` the way Flagger's `RenderQuery` does.
pub fn render(template: &str, model: &Model) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| "template: unclosed action".to_string())?;
        let mut action = &after[..close];
        // `{{- ` and ` -}}` trim the white space next to the action.
        if let Some(a) = action.strip_prefix("- ") {
            text = text.trim_end();
            action = a;
        }
        let trim_after = action.ends_with(" -");
        if trim_after {
            action = &action[..action.len() - 2];
        }
        out.push_str(text);
        let action = action.trim();
        if action.starts_with("/*") {
            // A comment.
        } else {
            out.push_str(
                model
                    .lookup(action)
                    .map_err(|e| format!("template: executing \"{{{{ {action} }}}}\": {e}"))?,
            );
        }
        rest = &after[close + 2..];
        if trim_after {
            rest = rest.trim_start();
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// What Flagger sends: every run of white space collapsed to one space.
pub fn collapse_whitespace(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut space = false;
    for c in query.chars() {
        if c.is_whitespace() {
            if !space {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo".into(),
            ingress: "podinfo".into(),
            route: "podinfo".into(),
            interval: "1m".into(),
            variables: [
                ("cluster".to_string(), "prod".to_string()),
                ("consumer_group".to_string(), "orders".to_string()),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn renders_flaggers_own_examples() {
        // From Flagger's render tests and metrics documentation.
        let kafka = r#"delta(max by (consumer_group) (kafka_consumer_current_offset{cluster="{{ variables.cluster }}", consumer_group="{{ variables.consumer_group }}"}[{{ interval }}]))"#;
        assert_eq!(
            render(kafka, &model()).expect("renders"),
            r#"delta(max by (consumer_group) (kafka_consumer_current_offset{cluster="prod", consumer_group="orders"}[1m]))"#
        );
        let envoy =
            r#"sum(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}_{{ target }}"})"#;
        assert_eq!(
            render(envoy, &model()).expect("renders"),
            r#"sum(envoy_cluster_upstream_rq{envoy_cluster_name=~"test_podinfo"})"#
        );
        assert_eq!(
            render("a {{- name -}} b", &model()).expect("trims"),
            "apodinfob"
        );
    }

    #[test]
    fn a_missing_variable_or_function_is_an_error() {
        let e = render("{{ variables.nope }}", &model()).expect_err("missing key");
        assert!(e.contains("map has no entry for key \"nope\""), "{e}");
        let e = render("{{ if true }}", &model()).expect_err("unsupported");
        assert!(e.contains("not defined"), "{e}");
        assert!(render("{{ target", &model()).is_err());
    }

    #[test]
    fn white_space_collapses_like_flaggers_trim() {
        assert_eq!(
            collapse_whitespace("\n  sum(\n\trate(x[1m])\n  )\n"),
            " sum( rate(x[1m]) ) "
        );
    }
}
