//! Binary operators: arithmetic, comparisons (with and without `bool`), set operators, and
//! vector matching (`on`/`ignoring`, `group_left`/`group_right`), as Prometheus's engine.

use foldhash::{HashMap, HashMapExt, HashSet};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::eval::{check_duplicates, Ctx, Result};
use super::{EvalError, Sample, Value};
use crate::model::{Label, Labels};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn parse(s: &str) -> Result<Op> {
        Ok(match s {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "and" => Op::And,
            "or" => Op::Or,
            "unless" => Op::Unless,
            other => {
                return Err(EvalError::BadData(format!(
                    "unsupported binary operator {other:?}"
                )))
            }
        })
    }

    fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }

    fn is_set(self) -> bool {
        matches!(self, Op::And | Op::Or | Op::Unless)
    }

    /// Arithmetic results lose the metric name.
    fn drops_name(self) -> bool {
        matches!(
            self,
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Mod | Op::Pow | Op::Atan2
        )
    }
}

/// Go's `math.Mod` (the sign follows the dividend, like Rust's `%`).
fn apply(op: Op, l: f64, r: f64) -> (f64, bool) {
    match op {
        Op::Add => (l + r, true),
        Op::Sub => (l - r, true),
        Op::Mul => (l * r, true),
        Op::Div => (l / r, true),
        Op::Mod => (l % r, true),
        Op::Pow => (l.powf(r), true),
        Op::Atan2 => (l.atan2(r), true),
        Op::Eq => (l, l == r),
        Op::Ne => (l, l != r),
        Op::Gt => (l, l > r),
        Op::Lt => (l, l < r),
        Op::Ge => (l, l >= r),
        Op::Le => (l, l <= r),
        Op::And | Op::Or | Op::Unless => (l, true),
    }
}

/// Matching settings in Prometheus's terms.
struct Matching<'a> {
    /// `on(...)` (true) or `ignoring(...)` / none (false).
    on: bool,
    labels: Vec<&'a str>,
    card: Card,
    include: Vec<&'a str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
}

fn matching(b: &BinaryExpr) -> Matching<'_> {
    let Some(m) = &b.modifier else {
        return Matching {
            on: false,
            labels: Vec::new(),
            card: Card::OneToOne,
            include: Vec::new(),
        };
    };
    let (on, labels) = match &m.matching {
        Some(LabelModifier::Include(l)) => (true, l.labels.iter().map(String::as_str).collect()),
        Some(LabelModifier::Exclude(l)) => (false, l.labels.iter().map(String::as_str).collect()),
        None => (false, Vec::new()),
    };
    let (card, include) = match &m.card {
        VectorMatchCardinality::ManyToOne(l) => (
            Card::ManyToOne,
            l.labels.iter().map(String::as_str).collect(),
        ),
        VectorMatchCardinality::OneToMany(l) => (
            Card::OneToMany,
            l.labels.iter().map(String::as_str).collect(),
        ),
        _ => (Card::OneToOne, Vec::new()),
    };
    Matching {
        on,
        labels,
        card,
        include,
    }
}

/// The label pairs two elements must share to match.
type Signature = Vec<(std::sync::Arc<str>, std::sync::Arc<str>)>;

/// The matching signature of a label set.
fn signature(labels: &Labels, m: &Matching) -> Signature {
    labels
        .iter()
        .filter(|l| {
            if m.on {
                m.labels.contains(&&*l.name)
            } else {
                &*l.name != "__name__" && !m.labels.contains(&&*l.name)
            }
        })
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

fn sig_string(labels: &Labels, m: &Matching) -> String {
    let parts: Vec<String> = signature(labels, m)
        .iter()
        .map(|(n, v)| format!("{n}={:?}", &**v))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

pub(super) fn eval(ctx: &mut Ctx, b: &BinaryExpr, ts: i64) -> Result<Value> {
    let op = Op::parse(&b.op.to_string())?;
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ctx.eval(&b.lhs, ts)?;
    let rhs = ctx.eval(&b.rhs, ts)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let (v, keep) = apply(op, l, r);
            if op.is_comparison() {
                if !return_bool {
                    return Err(EvalError::BadData(
                        "comparisons between scalars must use BOOL modifier".into(),
                    ));
                }
                return Ok(Value::Scalar(if keep { 1.0 } else { 0.0 }));
            }
            Ok(Value::Scalar(v))
        }
        (Value::Vector(v), Value::Scalar(s)) => vector_scalar(ctx, op, v, s, false, return_bool),
        (Value::Scalar(s), Value::Vector(v)) => vector_scalar(ctx, op, v, s, true, return_bool),
        (Value::Vector(l), Value::Vector(r)) => {
            let m = matching(b);
            let out = if op.is_set() {
                set_op(op, l, r, &m)
            } else {
                vector_vector(ctx, op, l, r, &m, return_bool)?
            };
            if !op.is_set() {
                check_duplicates(&out)?;
            }
            Ok(Value::Vector(out))
        }
        (l, r) => Err(EvalError::BadData(format!(
            "binary expression must contain only scalar and instant vector types, got {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    ctx: &Ctx,
    op: Op,
    v: Vec<Sample>,
    s: f64,
    swap: bool,
    return_bool: bool,
) -> Result<Value> {
    if op.is_set() {
        return Err(EvalError::BadData(
            "set operator not allowed in binary scalar expression".into(),
        ));
    }
    let mut out = Vec::with_capacity(v.len());
    for mut x in v {
        let (l, r) = if swap { (s, x.value) } else { (x.value, s) };
        let (mut value, keep) = apply(op, l, r);
        if op.is_comparison() && swap {
            // The vector's value is kept even when it is on the right.
            value = r;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        if op.drops_name() || return_bool {
            let mut f = x.drop_name;
            ctx.drop_name(&mut x.labels, &mut f);
            x.drop_name = f;
        }
        x.value = value;
        out.push(x);
    }
    check_duplicates(&out)?;
    Ok(Value::Vector(out))
}

fn set_op(op: Op, lhs: Vec<Sample>, rhs: Vec<Sample>, m: &Matching) -> Vec<Sample> {
    match op {
        Op::And => {
            if lhs.is_empty() || rhs.is_empty() {
                return Vec::new();
            }
            let right: HashSet<_> = rhs.iter().map(|s| signature(&s.labels, m)).collect();
            lhs.into_iter()
                .filter(|s| right.contains(&signature(&s.labels, m)))
                .collect()
        }
        Op::Or => {
            let left: HashSet<_> = lhs.iter().map(|s| signature(&s.labels, m)).collect();
            let mut out = lhs;
            out.extend(
                rhs.into_iter()
                    .filter(|s| !left.contains(&signature(&s.labels, m))),
            );
            out
        }
        _ => {
            if rhs.is_empty() {
                return lhs;
            }
            let right: HashSet<_> = rhs.iter().map(|s| signature(&s.labels, m)).collect();
            lhs.into_iter()
                .filter(|s| !right.contains(&signature(&s.labels, m)))
                .collect()
        }
    }
}

/// Labels of a result element (Prometheus's `resultMetric`).
fn result_labels(
    ctx: &Ctx,
    many: &Sample,
    one: &Sample,
    op: Op,
    m: &Matching,
    return_bool: bool,
) -> (Labels, bool) {
    let mut labels = many.labels.clone();
    let mut drop = many.drop_name;
    if op.drops_name() {
        ctx.drop_name(&mut labels, &mut drop);
    }
    if m.card == Card::OneToOne {
        let kept: Vec<Label> = labels
            .iter()
            .filter(|l| {
                if m.on {
                    m.labels.contains(&&*l.name)
                } else {
                    !m.labels.contains(&&*l.name)
                }
            })
            .cloned()
            .collect();
        labels = Labels::from_vec(kept);
    }
    for name in &m.include {
        labels = match one.labels.get(name) {
            Some(v) => labels.with(name, v),
            None => labels.without(name),
        };
    }
    if return_bool {
        ctx.drop_name(&mut labels, &mut drop);
    }
    (labels, drop)
}

fn vector_vector(
    ctx: &Ctx,
    op: Op,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    m: &Matching,
    return_bool: bool,
) -> Result<Vec<Sample>> {
    if lhs.is_empty() || rhs.is_empty() {
        return Ok(Vec::new());
    }
    let (many, one) = if m.card == Card::OneToMany {
        (rhs, lhs)
    } else {
        (lhs, rhs)
    };
    let mut one_by_sig: HashMap<Signature, usize> = HashMap::new();
    for (i, s) in one.iter().enumerate() {
        let sig = signature(&s.labels, m);
        if let Some(&j) = one_by_sig.get(&sig) {
            let side = if m.card == Card::OneToMany {
                "left"
            } else {
                "right"
            };
            return Err(EvalError::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                sig_string(&s.labels, m),
                s.labels,
                one[j].labels
            )));
        }
        one_by_sig.insert(sig, i);
    }
    let mut matched: HashMap<Signature, HashSet<Labels>> = HashMap::new();
    let mut out = Vec::new();
    for ms in &many {
        let sig = signature(&ms.labels, m);
        let Some(&oi) = one_by_sig.get(&sig) else {
            continue;
        };
        let os = &one[oi];
        let (l, r) = if m.card == Card::OneToMany {
            (os.value, ms.value)
        } else {
            (ms.value, os.value)
        };
        let (mut value, keep) = apply(op, l, r);
        // Prometheus 3 reports a one-to-one violation even when the comparison filters the
        // duplicates away; 2.x only sees the samples that survive.
        if m.card == Card::OneToOne && (keep || return_bool || ctx.opts.compat == super::Compat::V3)
        {
            let seen = matched.entry(sig.clone()).or_default();
            if !seen.is_empty() {
                return Err(EvalError::Execution(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                ));
            }
            seen.insert(Labels::empty());
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        let (labels, drop_name) = result_labels(ctx, ms, os, op, m, return_bool);
        if m.card != Card::OneToOne && !matched.entry(sig).or_default().insert(labels.clone()) {
            return Err(EvalError::Execution(
                "multiple matches for matching labels; many-to-one matching must be explicit (group_left/group_right)".into(),
            ));
        }
        out.push(Sample {
            labels,
            value,
            t: ms.t,
            drop_name,
        });
    }
    Ok(out)
}
