//! Aggregation operators: sum, avg, count, min, max, group, stddev, stdvar, topk, bottomk,
//! quantile, count_values, limitk, with `by`/`without`.

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::eval::{check_duplicates, Ctx, Result};
use super::{Compat, EvalError, Sample, Value};
use crate::model::format_value;
use crate::model::{Label, Labels};

/// Kahan–Babuška summation step, as Prometheus 3 uses for sums.
pub(super) fn kahan_add(v: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + v;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= v.abs() {
        c + ((sum - t) + v)
    } else {
        c + ((v - t) + sum)
    };
    (t, c)
}

/// φ-quantile of values with linear interpolation (Prometheus's `quantile`).
pub(super) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, as in Prometheus's vectorByValueHeap.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// The labels of the group a sample falls in, borrowed from it, in name order;
/// `extra_by` is a label always kept (count_values' label).
fn group_key<'s>(
    labels: &'s Labels,
    modifier: &Option<LabelModifier>,
    extra_by: Option<&str>,
    key: &mut Vec<&'s Label>,
) {
    key.clear();
    match modifier {
        None => key.extend(extra_by.and_then(|n| labels.label(n))),
        Some(LabelModifier::Include(l)) => {
            // A lookup per listed name, not a pass over every label of the sample.
            let names = l.labels.iter().map(String::as_str).chain(extra_by);
            key.extend(names.filter_map(|n| labels.label(n)));
            key.sort_by(|a, b| a.name.cmp(&b.name));
            key.dedup_by(|a, b| a.name == b.name);
        }
        Some(LabelModifier::Exclude(l)) => key.extend(
            labels
                .iter()
                .filter(|x| &*x.name != "__name__" && !l.labels.iter().any(|n| *n == *x.name)),
        ),
    }
}

/// Groups by their labels. A sample's key is looked up as labels borrowed from it, hashed
/// from their pairs' own hashes: a label set is built per group, not per sample. Keys come
/// from scraped targets; the pair hashes are seeded per process and their sum per index, so
/// a target cannot work out colliding keys ahead.
struct GroupIndex {
    table: hashbrown::HashTable<usize>,
    seed: foldhash::fast::RandomState,
}

impl GroupIndex {
    fn new() -> Self {
        GroupIndex {
            table: hashbrown::HashTable::new(),
            seed: foldhash::fast::RandomState::default(),
        }
    }

    fn hash<'l>(seed: &foldhash::fast::RandomState, key: impl Iterator<Item = &'l Label>) -> u64 {
        use std::hash::BuildHasher;
        let (len, sum) = key.fold((0usize, 0u64), |(n, h), l| {
            (n + 1, h.wrapping_add(l.pair_hash()))
        });
        seed.hash_one((len, sum))
    }

    /// The index of the group `key` names, made with `new_group` if there is none yet.
    fn find_or_add(
        &mut self,
        groups: &mut Vec<Group>,
        key: &[&Label],
        new_group: impl FnOnce(Labels) -> Group,
    ) -> usize {
        let hash = Self::hash(&self.seed, key.iter().copied());
        let same =
            |g: &Group| g.labels.len() == key.len() && g.labels.iter().eq(key.iter().copied());
        if let Some(&i) = self.table.find(hash, |&i| same(&groups[i])) {
            return i;
        }
        groups.push(new_group(Labels::from_sorted(
            key.iter().map(|l| (*l).clone()),
        )));
        let i = groups.len() - 1;
        let seed = &self.seed;
        self.table
            .insert_unique(hash, i, |&j| Self::hash(seed, groups[j].labels.iter()));
        i
    }
}

#[derive(Default)]
struct Group {
    labels: Labels,
    /// The group keeps `__name__` (`by (__name__)`) from samples whose name is to be dropped.
    drop_name: bool,
    count: f64,
    value: f64,
    comp: f64,
    mean: f64,
    values: Vec<f64>,
    members: Vec<Sample>,
    incremental_mean: bool,
}

pub(super) fn eval(ctx: &mut Ctx, a: &AggregateExpr, ts: i64) -> Result<Value> {
    let op = a.op.to_string().to_lowercase();
    let param = match &a.param {
        Some(p) => Some(ctx.eval(p, ts)?),
        None => None,
    };
    let mut input = ctx.eval_vector(&a.expr, ts)?;
    // count_values labels each sample with its value first, then groups (as Prometheus).
    let value_label = match (&*op, &param) {
        ("count_values", Some(Value::String(l))) => {
            if !crate::model::is_label_name(l) {
                return Err(EvalError::BadData(format!("invalid label name {l:?}")));
            }
            for s in &mut input {
                s.labels = s.labels.with(l, &format_value(s.value));
            }
            Some(l.clone())
        }
        ("count_values", _) => {
            return Err(EvalError::BadData(
                "expected string parameter for count_values".into(),
            ))
        }
        _ => None,
    };
    let scalar_param = |name: &str| -> Result<f64> {
        match &param {
            Some(Value::Scalar(v)) => Ok(*v),
            _ => Err(EvalError::BadData(format!(
                "expected scalar parameter for {name}"
            ))),
        }
    };

    let mut groups: Vec<Group> = Vec::new();
    let mut index = GroupIndex::new();
    let mut key = Vec::new();
    for s in &input {
        group_key(&s.labels, &a.modifier, value_label.as_deref(), &mut key);
        let gi = index.find_or_add(&mut groups, &key, |labels| Group {
            labels,
            ..Default::default()
        });
        key.clear();
        let g = &mut groups[gi];
        if s.drop_name && g.labels.get("__name__").is_some() {
            g.drop_name = true;
        }
        let v = s.value;
        match op.as_str() {
            "sum" => {
                if g.count == 0.0 {
                    g.value = v;
                } else if ctx.opts.compat == Compat::V3 {
                    (g.value, g.comp) = kahan_add(v, g.value, g.comp);
                } else {
                    g.value += v;
                }
            }
            "avg" => {
                if g.count == 0.0 {
                    g.value = v;
                    g.mean = v;
                } else if ctx.opts.compat == Compat::V3 && !g.incremental_mean {
                    let (nv, nc) = kahan_add(v, g.value, g.comp);
                    if nv.is_infinite() && !v.is_infinite() && !g.value.is_infinite() {
                        // The sum overflowed: continue with an incremental mean.
                        g.incremental_mean = true;
                        g.mean = g.value / g.count + g.comp / g.count;
                        g.comp = 0.0;
                    } else {
                        g.value = nv;
                        g.comp = nc;
                    }
                }
                if g.count > 0.0 && (ctx.opts.compat == Compat::V2 || g.incremental_mean) {
                    let n = g.count + 1.0;
                    let skip = g.mean.is_infinite()
                        && ((v.is_infinite() && (g.mean > 0.0) == (v > 0.0))
                            || (!v.is_infinite() && !v.is_nan()));
                    if !skip {
                        g.mean += v / n - g.mean / n;
                    }
                }
            }
            "max" => {
                if g.count == 0.0 || g.value < v || g.value.is_nan() {
                    g.value = v;
                }
            }
            "min" => {
                if g.count == 0.0 || g.value > v || g.value.is_nan() {
                    g.value = v;
                }
            }
            "stddev" | "stdvar" => {
                let n = g.count + 1.0;
                let delta = v - g.mean;
                g.mean += delta / n;
                g.value += delta * (v - g.mean);
            }
            "quantile" => g.values.push(v),
            "topk" | "bottomk" | "limitk" => g.members.push(s.clone()),
            "count" | "group" | "count_values" => {}
            other => {
                return Err(EvalError::BadData(format!(
                    "unsupported aggregation {other:?}"
                )))
            }
        }
        g.count += 1.0;
    }

    let mut out: Vec<Sample> = Vec::new();
    let mk = |labels: Labels, value: f64| Sample {
        labels,
        value,
        t: ts,
        drop_name: false,
    };
    match op.as_str() {
        "topk" | "bottomk" | "limitk" => {
            let k = scalar_param(&op)?;
            if k.is_nan() {
                return Err(EvalError::BadData(format!(
                    "Parameter value is NaN for {op}"
                )));
            }
            let k = if k >= 9.2e18 {
                usize::MAX
            } else if k < 1.0 {
                0
            } else {
                k as usize
            };
            for g in groups {
                let mut members = g.members;
                if op != "limitk" {
                    // NaN counts as the smallest value in either direction.
                    let top = op == "topk";
                    members.sort_by(|a, b| {
                        let (x, y) = (a.value, b.value);
                        match (x.is_nan(), y.is_nan()) {
                            (true, true) => std::cmp::Ordering::Equal,
                            (true, false) => std::cmp::Ordering::Greater,
                            (false, true) => std::cmp::Ordering::Less,
                            _ if top => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                            _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                        }
                    });
                }
                out.extend(members.into_iter().take(k));
            }
            return Ok(Value::Vector(out));
        }
        _ => {
            let q = if op == "quantile" {
                Some(scalar_param("quantile")?)
            } else {
                None
            };
            for mut g in groups {
                let value = match op.as_str() {
                    "sum" => {
                        if g.comp.is_finite() {
                            g.value + g.comp
                        } else {
                            g.value
                        }
                    }
                    "avg" => {
                        if ctx.opts.compat == Compat::V2 || g.incremental_mean {
                            g.mean
                        } else {
                            let c = if g.comp.is_finite() { g.comp } else { 0.0 };
                            g.value / g.count + c / g.count
                        }
                    }
                    "count" | "count_values" => g.count,
                    "group" => 1.0,
                    "max" | "min" => g.value,
                    "stdvar" => g.value / g.count,
                    "stddev" => (g.value / g.count).sqrt(),
                    "quantile" => quantile(q.unwrap_or(f64::NAN), &mut g.values),
                    _ => f64::NAN,
                };
                let mut sample = mk(g.labels, value);
                sample.drop_name = g.drop_name;
                out.push(sample);
            }
        }
    }
    check_duplicates(&out)?;
    Ok(Value::Vector(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0, 4.0]), 2.5);
        assert_eq!(quantile(1.5, &mut [1.0]), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
    }
}
