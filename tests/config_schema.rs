//! The config's JSON Schema and reference page: generated from the config types, committed,
//! and kept in step with them; every key documented; every shipped config accepted by it.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn generated(format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meshmetrics"))
        .args(["schema", "--format", format])
        .output()
        .expect("run meshmetrics schema");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn schema() -> Value {
    serde_json::from_str(&generated("json")).expect("the schema is JSON")
}

#[test]
fn the_committed_schema_and_reference_are_current() {
    for (format, file) in [
        ("json", "docs/config.schema.json"),
        ("markdown", "docs/configuration.md"),
    ] {
        let committed = std::fs::read_to_string(root().join(file)).unwrap_or_default();
        assert!(
            committed == generated(format),
            "{file} is stale: regenerate it with \
             `cargo run -q -- schema --format {format} > {file}`"
        );
    }
}

#[test]
fn every_key_is_documented() {
    let schema = schema();
    let mut objects: Vec<(String, &Value)> = vec![("<file>".into(), &schema)];
    if let Some(defs) = schema["$defs"].as_object() {
        objects.extend(defs.iter().map(|(k, v)| (k.clone(), v)));
    }
    let mut undocumented = Vec::new();
    let mut keys = 0;
    for (name, object) in objects {
        for (key, property) in object["properties"].as_object().into_iter().flatten() {
            keys += 1;
            let described = property["description"]
                .as_str()
                .is_some_and(|d| d.trim().len() > 3);
            if !described {
                undocumented.push(format!("{name}.{key}"));
            }
        }
    }
    assert!(keys > 150, "the schema lists every key: {keys}");
    assert!(
        undocumented.is_empty(),
        "give these fields a doc comment: {undocumented:?}"
    );
}

/// The keys of `doc` the schema would flag as unknown, by path.
fn unknown_keys(doc: &Value, schema: &Value, root: &Value, path: &str, out: &mut Vec<String>) {
    let schema = match schema["$ref"].as_str() {
        Some(r) => &root["$defs"][r.trim_start_matches("#/$defs/")],
        None => schema,
    };
    if let Some(any) = schema["anyOf"].as_array() {
        // A nullable type: check against the alternative that is not null.
        if let Some(s) = any.iter().find(|s| s["type"] != "null") {
            unknown_keys(doc, s, root, path, out);
        }
        return;
    }
    match doc {
        Value::Object(map) => {
            for (key, value) in map {
                let at = format!("{path}.{key}");
                if let Some(s) = schema["properties"].get(key) {
                    unknown_keys(value, s, root, &at, out);
                    continue;
                }
                let pattern = schema["patternProperties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .find(|(p, _)| {
                        let kind = p.trim_start_matches('^').split('(').next().unwrap_or("");
                        key == kind || key.starts_with(&format!("{kind}/"))
                    });
                match (pattern, &schema["additionalProperties"]) {
                    (Some((_, s)), _) => unknown_keys(value, s, root, &at, out),
                    (None, Value::Bool(false)) => out.push(at),
                    (None, s) if s.is_object() => unknown_keys(value, s, root, &at, out),
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                unknown_keys(item, &schema["items"], root, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_shipped_config_is_accepted_by_the_schema_and_a_misspelt_key_is_not() {
    let schema = schema();
    let mut configs = vec![
        root().join("config/default.yaml"),
        root().join("config/honeycomb.yaml"),
    ];
    for overlay in ["daemonset", "deployment", "gateway"] {
        for entry in std::fs::read_dir(root().join("deploy/overlays").join(overlay)).expect("dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if path.extension().is_some_and(|e| e == "yaml") && text.contains("pipelines:") {
                configs.push(path);
            }
        }
    }
    assert!(configs.len() >= 5, "{configs:?}");
    for path in &configs {
        let text = std::fs::read_to_string(path).expect("read");
        let doc: Value = serde_saphyr::from_str(&text).expect("YAML");
        let mut unknown = Vec::new();
        unknown_keys(&doc, &schema, &schema, "", &mut unknown);
        assert!(unknown.is_empty(), "{}: {unknown:?}", path.display());
    }
    let text = std::fs::read_to_string(root().join("config/default.yaml")).expect("read");
    let misspelt = text.replacen("scrape_interval", "scrape_intervall", 1);
    assert_ne!(misspelt, text, "the default config scrapes on an interval");
    let doc: Value = serde_saphyr::from_str(&misspelt).expect("YAML");
    let mut unknown = Vec::new();
    unknown_keys(&doc, &schema, &schema, "", &mut unknown);
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(unknown[0].ends_with(".scrape_intervall"), "{unknown:?}");
}
