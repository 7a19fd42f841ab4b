//! The config's JSON Schema, generated from the config types and their doc comments
//! (`meshmetrics schema`), and `docs/configuration.md` generated from the schema. Editors with
//! yaml-language-server complete and check configs with the schema; `tests/config_schema.rs`
//! fails when either file is stale.

use serde_json::{Map, Value};

use super::config::RawConfig;

/// The JSON Schema (draft 2020-12) of a whole config file.
pub fn json_schema() -> Value {
    let mut schema = schemars::schema_for!(RawConfig).to_value();
    if let Some(o) = schema.as_object_mut() {
        o.insert("title".into(), "meshmetrics configuration".into());
        o.insert(
            "description".into(),
            "The collector-style config of a meshmetrics agent: components by kind, and the \
             service's pipelines that connect them."
                .into(),
        );
    }
    schema
}

/// The reference page of every config key, from the schema.
pub fn markdown(schema: &Value) -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the config types by `meshmetrics schema --format markdown`; do not edit \
         by hand. The JSON Schema itself (`meshmetrics schema`) is `docs/config.schema.json`: \
         point yaml-language-server at it (`# yaml-language-server: $schema=...`) to have \
         configs completed and checked in an editor.\n\n\
         A duration is written like `30s`, `1m30s` or `500ms`; a size like `512MiB` (units \
         are powers of 1024) or a number of bytes; a secret is never logged or shown, and is \
         usually `${env:NAME}` or `${file:/path}`; a regex is RE2, anchored at both ends. Any \
         value may be `${env:NAME}`, `${NAME}` or `${file:/path}`.\n\n",
    );
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    out.push_str("## The file\n\n");
    out.push_str(&table(schema, &defs));
    for section in ["receivers", "processors", "exporters", "extensions"] {
        let Some(map) = resolve(&schema["properties"][section], &defs) else {
            continue;
        };
        out.push_str(&format!("\n## {section}\n\n"));
        if let Some(d) = map.get("description").and_then(Value::as_str) {
            out.push_str(&format!("{}\n\n", one_line(d)));
        }
        let patterns = map
            .get("patternProperties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (pattern, s) in &patterns {
            let kind = pattern
                .trim_start_matches('^')
                .split('(')
                .next()
                .unwrap_or(pattern);
            let target = s["anyOf"][0].clone();
            out.push_str(&format!("- `{kind}`: {}\n", type_of(&target, &defs)));
        }
    }
    out.push_str("\n## Settings, by type\n");
    for (name, def) in &defs {
        if def.get("properties").is_none() && def.get("oneOf").is_none() {
            continue;
        }
        out.push_str(&format!("\n### {name}\n\n"));
        if let Some(d) = def.get("description").and_then(Value::as_str) {
            out.push_str(&format!("{}\n\n", one_line(d)));
        }
        if def.get("properties").is_some() {
            out.push_str(&table(def, &defs));
        } else {
            out.push_str(&format!("One of: {}\n", choices(def)));
        }
    }
    out
}

/// A definition's object, following one `$ref`.
fn resolve<'a>(s: &'a Value, defs: &'a Map<String, Value>) -> Option<&'a Value> {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return defs.get(r.trim_start_matches("#/$defs/"));
    }
    Some(s)
}

/// The properties of an object schema as a table: key, type, default, description.
fn table(s: &Value, defs: &Map<String, Value>) -> String {
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        return String::new();
    };
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::from("| key | type | default | description |\n|---|---|---|---|\n");
    for (key, p) in props {
        let default = match p.get("default") {
            Some(Value::Null) | None if required.contains(&key.as_str()) => "required".into(),
            Some(Value::Null) | None => String::new(),
            Some(v) => format!("`{}`", v.to_string().replace('|', "\\|")),
        };
        let description = p
            .get("description")
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{key}` | {} | {default} | {} |\n",
            type_of(p, defs),
            description.replace('|', "\\|")
        ));
    }
    out
}

/// A field's type in words, linking to the settings it refers to.
fn type_of(s: &Value, defs: &Map<String, Value>) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        let def = defs.get(name);
        if def.is_some_and(|d| d.get("properties").is_some() || d.get("oneOf").is_some()) {
            return format!("[{name}](#{})", name.to_ascii_lowercase());
        }
        // A section of components by id, listed under its own heading.
        if def.is_some_and(|d| d.get("patternProperties").is_some()) {
            return format!("[{name}](#{name}) by id");
        }
        // The written forms explained at the top of the page.
        match name {
            "Duration" => return "duration".into(),
            "ByteSize" => return "size".into(),
            "Secret" => return "secret".into(),
            "Regex" => return "regex".into(),
            _ => {}
        }
        return def.map(|d| type_of(d, defs)).unwrap_or_else(|| name.into());
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let parts: Vec<String> = any
            .iter()
            .filter(|a| a.get("type") != Some(&Value::from("null")))
            .map(|a| type_of(a, defs))
            .collect();
        return parts.join(" or ");
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = e.iter().map(|v| format!("`{}`", v)).collect();
        return values.join(", ");
    }
    if s.get("oneOf").is_some() {
        return choices(s);
    }
    let types: Vec<String> = match s.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => vec![],
    };
    let types: Vec<String> = types.into_iter().filter(|t| t != "null").collect();
    match types.first().map(String::as_str) {
        Some("array") => format!("list of {}", type_of(&s["items"], defs)),
        Some("object") => match s.get("additionalProperties") {
            Some(v) if v.is_object() => format!("map of {}", type_of(v, defs)),
            _ => "map".into(),
        },
        Some(_) => types.join(" or "),
        None => "any".into(),
    }
}

/// The choices of a `oneOf`: each constant, or each variant's description.
fn choices(s: &Value) -> String {
    let Some(one) = s.get("oneOf").and_then(Value::as_array) else {
        return String::new();
    };
    let values: Vec<String> = one
        .iter()
        .flat_map(|v| {
            let consts: Vec<String> = match (v.get("const"), v.get("enum")) {
                (Some(c), _) => vec![format!("`{c}`")],
                (_, Some(Value::Array(e))) => e.iter().map(|x| format!("`{x}`")).collect(),
                _ => vec![],
            };
            consts
        })
        .collect();
    values.join(", ")
}

/// A doc comment as one table cell.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
