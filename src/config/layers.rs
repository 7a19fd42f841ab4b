//! Several `--config` files and `--set` values made into one config, with the collector's
//! merge rules: maps merge key by key, anything else (lists included) is replaced, and later
//! layers win. Each file is expanded (environment, files) on its own first; the merged
//! document is then loaded as one, under a name listing its layers.

use serde_json::Value;

use super::{expand, yaml_error, ConfigError, ConfigErrors};

/// The one document `files` and `sets` make when there are several layers, with a name
/// listing them, as text already expanded (`service::Config::from_layers` loads it).
pub fn merged_text(files: &[String], sets: &[String]) -> Result<(String, String), ConfigErrors> {
    let (names, merged) = merged(files, sets)?;
    let name = format!("<merged: {}>", names.join(" + "));
    // JSON is YAML: the merged document loads like a file, without a second expansion.
    Ok((
        name,
        serde_json::to_string_pretty(&merged).unwrap_or_default(),
    ))
}

/// The effective config of `files` and `sets` as a document, secrets redacted: what
/// `validate --print` shows.
pub fn effective(files: &[String], sets: &[String]) -> Result<Value, ConfigErrors> {
    merged(files, sets).map(|(_, doc)| redacted(doc))
}

/// Each layer read, expanded and merged in order; with the names of the layers.
fn merged(files: &[String], sets: &[String]) -> Result<(Vec<String>, Value), ConfigErrors> {
    let mut merged = Value::Object(Default::default());
    let mut names = Vec::new();
    let texts: Vec<(String, String)> = if files.is_empty() {
        vec![("<default>".into(), super::DEFAULT_CONFIG.to_string())]
    } else {
        files
            .iter()
            .map(|f| {
                std::fs::read_to_string(f)
                    .map(|t| (f.clone(), t))
                    .map_err(|e| one_error(f, format!("cannot read config: {e}")))
            })
            .collect::<Result<_, _>>()?
    };
    for (name, text) in texts {
        let expanded = expand::expand_env(&text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: name.clone(),
                line: e.line,
                column: e.column,
                message: e.message,
            }])
        })?;
        let layer: Value = serde_saphyr::from_str(&expanded)
            .map_err(|e| ConfigErrors(vec![yaml_error(&name, &e)]))?;
        merge(&mut merged, layer);
        names.push(name);
    }
    for set in sets {
        apply_set(&mut merged, set).map_err(|m| one_error("--set", m))?;
    }
    if !sets.is_empty() {
        names.push("--set".into());
    }
    Ok((names, merged))
}

fn one_error(file: &str, message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: file.to_string(),
        line: 0,
        column: 0,
        message,
    }])
}

/// The collector's rule: maps merge, everything else is replaced by the later value.
pub fn merge(into: &mut Value, layer: Value) {
    match (into, layer) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (into, layer) => *into = layer,
    }
}

/// `a::b::c=value`: the value read as YAML (a number, a duration, a list, a string).
fn apply_set(doc: &mut Value, set: &str) -> Result<(), String> {
    let (path, raw) = set
        .split_once('=')
        .ok_or_else(|| format!("{set:?} is not key::path=value"))?;
    let keys: Vec<&str> = path.split("::").collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(format!(
            "{path:?}: empty key in the path (keys are separated by ::)"
        ));
    }
    let value: Value = if raw.is_empty() {
        Value::Null
    } else {
        serde_saphyr::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
    };
    let mut at = doc;
    for k in &keys[..keys.len() - 1] {
        if !at.is_object() {
            *at = Value::Object(Default::default());
        }
        let Value::Object(map) = at else {
            return Err(format!("{path:?} crosses a value that is not a map"));
        };
        at = map
            .entry((*k).to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    if !at.is_object() {
        *at = Value::Object(Default::default());
    }
    if let (Value::Object(map), Some(last)) = (at, keys.last()) {
        map.insert((*last).to_string(), value);
    }
    Ok(())
}

/// `doc` with the values under secret-looking keys replaced, for printing.
pub fn redacted(mut doc: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    let k = k.to_ascii_lowercase();
                    let secret = [
                        "key",
                        "token",
                        "password",
                        "secret",
                        "credentials",
                        "authorization",
                        "team",
                    ]
                    .iter()
                    .any(|s| k.contains(s))
                        && !k.ends_with("_file")
                        && v.is_string();
                    if secret {
                        *v = Value::String("<redacted>".into());
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_merge_rules_and_set() {
        let mut a: Value = serde_json::json!({"processors": {"batch": {"timeout": "1s", "send_batch_size": 10}}, "list": [1, 2]});
        merge(
            &mut a,
            serde_json::json!({"processors": {"batch": {"timeout": "5s"}}, "list": [3]}),
        );
        assert_eq!(a["processors"]["batch"]["timeout"], "5s");
        assert_eq!(a["processors"]["batch"]["send_batch_size"], 10);
        assert_eq!(a["list"], serde_json::json!([3]));
        apply_set(&mut a, "processors::batch::timeout=2s").expect("set");
        apply_set(&mut a, "processors::batch::send_batch_size=512").expect("set");
        apply_set(&mut a, "service::pipelines::metrics::exporters=[debug]").expect("set");
        assert_eq!(a["processors"]["batch"]["timeout"], "2s");
        assert_eq!(a["processors"]["batch"]["send_batch_size"], 512);
        assert_eq!(
            a["service"]["pipelines"]["metrics"]["exporters"],
            serde_json::json!(["debug"])
        );
        assert!(apply_set(&mut a, "no-equals-sign").is_err());
        assert!(apply_set(&mut a, "a::::b=1").is_err());
        let r =
            redacted(serde_json::json!({"headers": {"x-honeycomb-team": "k"}, "token_file": "/p"}));
        assert_eq!(r["headers"]["x-honeycomb-team"], "<redacted>");
        assert_eq!(r["token_file"], "/p");
    }
}
