//! Service discovery: `static_configs` and `file_sd_configs`. Each provider reports its whole
//! current set of target groups whenever it changes.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

use crate::config::units::de_opt_duration;
use crate::model::relabel::LabelMap;

pub mod kubernetes;

/// A group of targets sharing labels, as service discovery produces them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetGroup {
    /// Identifies the group within its discovery source (file path + index, ...).
    pub source: String,
    /// One label map per target; each has `__address__`.
    pub targets: Vec<LabelMap>,
    /// Labels common to all targets of the group.
    pub labels: LabelMap,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// Addresses (`host:port`) to scrape.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Labels added to each of these targets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    /// Files of target groups (JSON or YAML); the last path element may hold a glob (`*.json`).
    pub files: Vec<String>,
    /// How often the files are read again, besides on change.
    #[serde(default, deserialize_with = "de_opt_duration")]
    #[schemars(with = "Option<crate::config::units::DurationText>")]
    pub refresh_interval: Option<Duration>,
}

/// An update from provider `provider`: its complete list of groups.
#[derive(Debug, Clone)]
pub struct Update {
    pub provider: usize,
    pub groups: Vec<TargetGroup>,
}

/// Reports `groups` unless they equal what was last sent; false once the job manager is gone.
pub async fn send_if_changed(
    tx: &mpsc::Sender<Update>,
    provider: usize,
    groups: Vec<TargetGroup>,
    sent: &mut Option<Vec<TargetGroup>>,
) -> bool {
    if sent.as_ref() == Some(&groups) {
        return true;
    }
    let update = Update {
        provider,
        groups: groups.clone(),
    };
    if tx.send(update).await.is_err() {
        return false;
    }
    *sent = Some(groups);
    true
}

/// Groups for `static_configs`.
pub fn static_groups(configs: &[StaticConfig]) -> Vec<TargetGroup> {
    configs
        .iter()
        .enumerate()
        .map(|(i, sc)| TargetGroup {
            source: format!("static/{i}"),
            targets: sc
                .targets
                .iter()
                .map(|t| LabelMap::from([("__address__".to_string(), t.clone())]))
                .collect(),
            labels: sc.labels.clone().into_iter().collect(),
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Parses one file_sd file (JSON or YAML, chosen by extension).
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<TargetGroup>, String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let groups: Vec<FileGroup> = match ext {
        "json" => serde_json::from_str(text)
            .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))?,
        "yml" | "yaml" => serde_saphyr::from_str(text).map_err(|e| {
            let (l, c) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            format!("{}:{l}:{c}: {}", path.display(), e.without_snippet())
        })?,
        _ => {
            return Err(format!(
                "{}: file_sd files must end in .json, .yml or .yaml",
                path.display()
            ))
        }
    };
    let mut out = Vec::new();
    for (i, g) in groups.into_iter().enumerate() {
        let mut labels: LabelMap = g.labels.into_iter().collect();
        labels.insert("__meta_filepath".into(), path.display().to_string());
        out.push(TargetGroup {
            source: format!("{}:{i}", path.display()),
            targets: g
                .targets
                .into_iter()
                .map(|t| LabelMap::from([("__address__".to_string(), t)]))
                .collect(),
            labels,
        });
    }
    Ok(out)
}

/// Matches a file name against a pattern with `*` and `?` (the last path element only,
/// as Prometheus allows).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Expands the configured patterns to existing files.
fn expand_patterns(patterns: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in patterns {
        let path = Path::new(p);
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.contains(['*', '?']) {
            out.push(path.to_path_buf());
            continue;
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut found: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| glob_match(name.as_bytes(), n.as_bytes()))
                })
                .map(|e| e.path())
                .collect();
            found.sort();
            out.extend(found);
        }
    }
    out
}

type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (f.clone(), meta)
        })
        .collect()
}

/// Watches file_sd files: rereads on change (checked every second) and every
/// `refresh_interval`; a file that fails to parse keeps its previous targets.
pub async fn run_file_sd(cfg: FileSdConfig, provider: usize, tx: mpsc::Sender<Update>) {
    let refresh = cfg.refresh_interval.unwrap_or(Duration::from_secs(300));
    let mut last: Option<Fingerprint> = None;
    let mut last_full = tokio::time::Instant::now();
    let mut per_file: BTreeMap<PathBuf, Vec<TargetGroup>> = BTreeMap::new();
    let mut sent: Option<Vec<TargetGroup>> = None;
    loop {
        let files = expand_patterns(&cfg.files);
        let fp = fingerprint(&files);
        let due = last_full.elapsed() >= refresh;
        if last.as_ref() != Some(&fp) || due {
            last_full = tokio::time::Instant::now();
            per_file.retain(|p, _| files.contains(p));
            for f in &files {
                match tokio::fs::read_to_string(f).await {
                    Ok(text) => match parse_file(f, &text) {
                        Ok(groups) => {
                            per_file.insert(f.clone(), groups);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "file_sd: keeping the previous targets of a file that does not parse")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(file = %f.display(), error = %e, "file_sd: cannot read file");
                        per_file.remove(f);
                    }
                }
            }
            last = Some(fp);
            let groups: Vec<TargetGroup> = per_file.values().flatten().cloned().collect();
            if !send_if_changed(&tx, provider, groups, &mut sent).await {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(glob_match(b"*.json", b"targets.json"));
        assert!(!glob_match(b"*.json", b"targets.yml"));
        assert!(glob_match(b"t?.y*ml", b"t1.yaml"));
    }

    #[test]
    fn parses_json_and_yaml_groups() {
        let g = parse_file(
            Path::new("/x/a.json"),
            r#"[{"targets":["127.0.0.1:9100"],"labels":{"env":"prod"}}]"#,
        )
        .expect("parses");
        assert_eq!(g[0].targets[0]["__address__"], "127.0.0.1:9100");
        assert_eq!(g[0].labels["__meta_filepath"], "/x/a.json");
        let e =
            parse_file(Path::new("/x/a.yml"), "- targets: [a]\n  lables: {}\n").expect_err("typo");
        assert!(e.starts_with("/x/a.yml:2:3"), "{e}");
    }
}
