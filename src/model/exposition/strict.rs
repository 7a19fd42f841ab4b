//! The OpenMetrics 1.0 semantic rules a strict parse adds: family grouping and order,
//! metadata placement, histogram bucket order and counts, counter signs, timestamps.

use std::collections::{HashMap, HashSet};

use super::entry::{Entry, SampleRef};
use super::lexer::*;
use crate::model::MetricKind;

#[derive(Default)]
pub(super) struct StrictState {
    family: Option<FamilyState>,
    closed: HashSet<String>,
    /// Last timestamp per series, to enforce per-series ordering.
    last_ts: HashMap<String, Option<i64>>,
}

#[derive(Default)]
struct FamilyState {
    name: String,
    kind: Option<MetricKind>,
    help: bool,
    unit: bool,
    has_samples: bool,
    group: Option<(String, GroupState)>,
    closed_groups: HashSet<String>,
}

#[derive(Default)]
struct GroupState {
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
    after_buckets: bool,
}

impl StrictState {
    pub(super) fn entry(
        &mut self,
        e: &Entry<'_>,
        labels: &[(String, String)],
    ) -> Result<(), String> {
        match e {
            Entry::Help { name, .. } | Entry::Type { name, .. } | Entry::Unit { name, .. } => {
                self.metadata(e, name)
            }
            Entry::Sample(s) => self.sample(s, labels),
        }
    }

    fn metadata(&mut self, e: &Entry<'_>, name: &str) -> Result<(), String> {
        let same = self.family.as_ref().is_some_and(|f| f.name == name);
        if !same {
            self.close_family()?;
            if self.closed.contains(name) {
                return Err(format!("metadata for {name} after its family ended"));
            }
            self.family = Some(FamilyState {
                name: name.to_string(),
                ..Default::default()
            });
        }
        let fam = self.family.as_mut().expect("set above");
        if fam.has_samples {
            return Err(format!("metadata for {name} after its samples"));
        }
        match e {
            Entry::Help { .. } => {
                if fam.help {
                    return Err(format!("second HELP for {name}"));
                }
                fam.help = true;
            }
            Entry::Unit { .. } => {
                if fam.unit {
                    return Err(format!("second UNIT for {name}"));
                }
                if matches!(fam.kind, Some(MetricKind::Info | MetricKind::StateSet)) {
                    return Err(format!("{name}: info and stateset metrics have no unit"));
                }
                fam.unit = true;
            }
            Entry::Type { kind, .. } => {
                if fam.kind.is_some() {
                    return Err(format!("second TYPE for {name}"));
                }
                if fam.unit && matches!(kind, MetricKind::Info | MetricKind::StateSet) {
                    return Err(format!("{name}: info and stateset metrics have no unit"));
                }
                for suffix in suffixes(*kind) {
                    let n = format!("{name}{suffix}");
                    if !suffix.is_empty() && self.closed.contains(&n) {
                        return Err(format!("{name} clashes with the earlier metric {n}"));
                    }
                }
                fam.kind = Some(*kind);
            }
            Entry::Sample(_) => {}
        }
        Ok(())
    }

    fn close_family(&mut self) -> Result<(), String> {
        if let Some(mut f) = self.family.take() {
            if let Some((_, g)) = f.group.take() {
                check_group(&f, &g)?;
            }
            self.closed.insert(f.name.clone());
            if let Some(k) = f.kind {
                for suffix in suffixes(k) {
                    self.closed.insert(format!("{}{suffix}", f.name));
                }
            }
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) -> Result<(), String> {
        self.close_family()
    }

    fn sample(&mut self, s: &SampleRef<'_>, labels: &[(String, String)]) -> Result<(), String> {
        // Which family does this sample belong to?
        let belongs = self.family.as_ref().is_some_and(|f| {
            let kind = f.kind.unwrap_or(MetricKind::Unknown);
            s.name
                .strip_prefix(f.name.as_str())
                .is_some_and(|suffix| suffixes(kind).contains(&suffix))
        });
        if !belongs {
            self.close_family()?;
            if self.closed.contains(s.name) {
                return Err(format!("sample {} after its family ended", s.name));
            }
            self.family = Some(FamilyState {
                name: s.name.to_string(),
                ..Default::default()
            });
        }
        let fam = self.family.as_mut().expect("set above");
        fam.has_samples = true;
        let kind = fam.kind.unwrap_or(MetricKind::Unknown);
        let suffix = &s.name[fam.name.len()..];
        let v = s.value;

        // Per-series timestamp order.
        let key = String::from_utf8_lossy(s.series).into_owned();
        if let Some(prev) = self.last_ts.get(&key) {
            match (prev, s.timestamp_ms) {
                (Some(a), Some(b)) if b < *a => {
                    return Err(format!("timestamps of {key} go backwards"))
                }
                (Some(_), None) | (None, Some(_)) => {
                    return Err(format!("{key} mixes samples with and without timestamps"))
                }
                _ => {}
            }
        }
        self.last_ts.insert(key, s.timestamp_ms);

        // Exemplars are allowed on counter totals and histogram buckets only.
        if s.has_exemplar {
            let ok = matches!(
                (kind, suffix),
                (MetricKind::Counter, "_total")
                    | (MetricKind::Histogram, "_bucket")
                    | (MetricKind::GaugeHistogram, "_bucket")
            );
            if !ok {
                return Err(format!("exemplar not allowed on {}", s.name));
            }
        }

        let nonneg = |what: &str| -> Result<(), String> {
            if v.is_nan() || v < 0.0 {
                Err(format!("{what} {} must be a non-negative number", s.name))
            } else {
                Ok(())
            }
        };
        let label = |n: &str| labels.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        match (kind, suffix) {
            (MetricKind::Counter, "_total") => nonneg("counter")?,
            (MetricKind::Histogram | MetricKind::GaugeHistogram, "_bucket") => {
                nonneg("bucket")?;
                match label("le") {
                    None => return Err(format!("{} has no le label", s.name)),
                    Some(le) if parse_le(le).is_none() => {
                        return Err(format!("{} has an invalid le {le:?}", s.name))
                    }
                    _ => {}
                }
            }
            (MetricKind::Histogram, "_count" | "_sum")
            | (MetricKind::GaugeHistogram, "_gcount") => nonneg("value")?,
            (MetricKind::GaugeHistogram, "_gsum") if v.is_nan() => {
                return Err(format!("{} must not be NaN", s.name));
            }
            (MetricKind::Summary, "_count" | "_sum") => nonneg("value")?,
            (MetricKind::Summary, "") => {
                match label("quantile").and_then(|q| q.parse::<f64>().ok()) {
                    Some(q) if (0.0..=1.0).contains(&q) => {}
                    _ => return Err(format!("{} needs a quantile label in [0, 1]", s.name)),
                }
                if v < 0.0 {
                    return Err(format!("quantile value of {} is negative", s.name));
                }
            }
            (MetricKind::Info, "_info") if v != 1.0 => {
                return Err(format!("info metric {} must have the value 1", s.name));
            }
            (MetricKind::StateSet, "") => {
                if label(&fam.name).is_none() {
                    return Err(format!("stateset {} lacks its {} label", s.name, fam.name));
                }
                if v != 0.0 && v != 1.0 {
                    return Err(format!("stateset {} value must be 0 or 1", s.name));
                }
            }
            _ => {}
        }

        // Grouping: all samples of one label set (le/quantile aside) are contiguous.
        let group_key: String = labels
            .iter()
            .filter(|(k, _)| k != "le" && k != "quantile")
            .map(|(k, v)| format!("{k}={v},"))
            .collect();
        let same_group = fam.group.as_ref().is_some_and(|(k, _)| *k == group_key);
        if !same_group {
            if let Some((k, g)) = fam.group.take() {
                check_group(fam, &g)?;
                fam.closed_groups.insert(k);
            }
            if fam.closed_groups.contains(&group_key) {
                return Err(format!("samples of {} are not grouped together", s.name));
            }
            fam.group = Some((group_key, GroupState::default()));
        }
        let g = &mut fam.group.as_mut().expect("set above").1;
        if matches!(kind, MetricKind::Histogram | MetricKind::GaugeHistogram) {
            match suffix {
                "_bucket" => {
                    if g.after_buckets {
                        return Err(format!("bucket of {} after its count or sum", s.name));
                    }
                    let le = label("le").and_then(parse_le).unwrap_or(f64::NAN);
                    if let Some(&(ple, pv)) = g.buckets.last() {
                        if le <= ple {
                            return Err(format!(
                                "buckets of {} are not in increasing le order",
                                s.name
                            ));
                        }
                        if v < pv {
                            return Err(format!("bucket counts of {} decrease", s.name));
                        }
                    }
                    g.buckets.push((le, v));
                }
                "_count" | "_gcount" => {
                    g.after_buckets = true;
                    g.count = Some(v);
                }
                "_sum" | "_gsum" => {
                    g.after_buckets = true;
                    g.sum = Some(v);
                }
                _ => g.after_buckets = true,
            }
        }
        Ok(())
    }
}

fn check_group(f: &FamilyState, g: &GroupState) -> Result<(), String> {
    let Some(kind) = f.kind else { return Ok(()) };
    if !matches!(kind, MetricKind::Histogram | MetricKind::GaugeHistogram) {
        return Ok(());
    }
    let name = &f.name;
    let inf = match g.buckets.last() {
        Some(&(le, v)) if le == f64::INFINITY => v,
        _ => return Err(format!("histogram {name} has no +Inf bucket")),
    };
    if g.count.is_some() != g.sum.is_some() {
        return Err(format!(
            "histogram {name} must have both count and sum, or neither"
        ));
    }
    if let Some(c) = g.count {
        if c != inf {
            return Err(format!("count of {name} differs from its +Inf bucket"));
        }
    }
    let negative = g.buckets.first().is_some_and(|&(le, _)| le < 0.0);
    if let Some(s) = g.sum {
        match kind {
            MetricKind::Histogram if negative => {
                return Err(format!(
                    "histogram {name} with negative buckets must not have a sum"
                ))
            }
            MetricKind::GaugeHistogram if s < 0.0 && !negative => {
                return Err(format!(
                    "gsum of {name} is negative without negative buckets"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The sample-name suffixes a family of this kind owns.
fn suffixes(kind: MetricKind) -> &'static [&'static str] {
    match kind {
        MetricKind::Counter => &["_total", "_created"],
        MetricKind::Histogram => &["_bucket", "_count", "_sum", "_created"],
        MetricKind::GaugeHistogram => &["_bucket", "_gcount", "_gsum"],
        MetricKind::Summary => &["", "_count", "_sum", "_created"],
        MetricKind::Info => &["_info"],
        MetricKind::Gauge | MetricKind::StateSet | MetricKind::Unknown => &[""],
    }
}

fn parse_le(le: &str) -> Option<f64> {
    if le == "+Inf" {
        return Some(f64::INFINITY);
    }
    parse_value(le.as_bytes(), true).filter(|v| v.is_finite())
}

// ---- lexical helpers -------------------------------------------------------------------
