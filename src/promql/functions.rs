//! PromQL functions on floats.

use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};

use super::aggregate::{kahan_add, quantile};
use super::eval::{check_duplicates, unparen, Ctx, Result};
use super::{compile_regex, Compat, EvalError, Sample, Series, Value};
use crate::model::{Label, Labels};

/// The range-vector argument of a function: series plus the window they were taken from.
struct RangeArg {
    series: Vec<Series>,
    start: i64,
    end: i64,
    range_ms: i64,
    /// No two series have equal label sets (see `MatrixAt::distinct`).
    distinct: bool,
}

/// A range argument at `ts`; with `drop_name`, its series come as a function that drops the
/// metric name returns them (without it now, or marked to lose it later).
fn range_arg(ctx: &mut Ctx, e: &Expr, ts: i64, drop_name: bool) -> Result<RangeArg> {
    match unparen(e) {
        Expr::MatrixSelector(m) => {
            let at = ctx.matrix_at(m, ts, drop_name)?;
            Ok(RangeArg {
                series: at.series,
                start: at.start,
                end: at.end,
                range_ms: super::eval::ms(&m.range),
                distinct: at.distinct,
            })
        }
        Expr::Subquery(sq) => {
            let (mut series, start, end) = ctx.subquery_at(sq, ts)?;
            if drop_name {
                for s in &mut series {
                    let mut d = s.drop_name;
                    ctx.drop_name(&mut s.labels, &mut d);
                    s.drop_name = d;
                }
            }
            Ok(RangeArg {
                series,
                start,
                end,
                range_ms: super::eval::ms(&sq.range),
                distinct: false,
            })
        }
        _ => Err(EvalError::BadData(
            "expected a range vector argument".into(),
        )),
    }
}

fn arg(c: &Call, i: usize) -> Result<&Expr> {
    c.args
        .args
        .get(i)
        .map(|b| b.as_ref())
        .ok_or_else(|| EvalError::BadData(format!("missing argument {} to {}", i + 1, c.func.name)))
}

fn out_vector(v: Vec<Sample>) -> Result<Value> {
    check_duplicates(&v)?;
    Ok(Value::Vector(v))
}

/// Applies `f` to every element's value, dropping the metric name.
fn math(ctx: &mut Ctx, c: &Call, ts: i64, f: impl Fn(f64) -> f64) -> Result<Value> {
    let mut v = ctx.eval_vector(arg(c, 0)?, ts)?;
    for s in &mut v {
        s.value = f(s.value);
        let mut d = s.drop_name;
        ctx.drop_name(&mut s.labels, &mut d);
        s.drop_name = d;
        s.t = ts;
    }
    out_vector(v)
}

/// Applies `f` to each series of a range argument.
fn over_time(
    ctx: &mut Ctx,
    c: &Call,
    ts: i64,
    arg_idx: usize,
    keep_name: bool,
    f: impl Fn(&RangeArg, &Series) -> Option<f64>,
) -> Result<Value> {
    let ra = range_arg(ctx, arg(c, arg_idx)?, ts, !keep_name)?;
    let mut out = Vec::with_capacity(ra.series.len());
    for s in &ra.series {
        ctx.check_cancel()?;
        if let Some(v) = f(&ra, s) {
            out.push(Sample {
                labels: s.labels.clone(),
                value: v,
                t: ts,
                drop_name: s.drop_name,
            });
        }
    }
    if ra.distinct {
        // One element per series of a selection whose sets are all distinct.
        return Ok(Value::Vector(out));
    }
    out_vector(out)
}

/// Prometheus's extrapolated rate/increase/delta.
fn extrapolated(ra: &RangeArg, s: &Series, counter: bool, rate: bool, legacy: bool) -> Option<f64> {
    let p = &s.points;
    if p.len() < 2 {
        return None;
    }
    let (first_t, first_v) = p[0];
    let (last_t, last_v) = p[p.len() - 1];
    let mut result = last_v - first_v;
    if counter {
        let mut prev = first_v;
        for &(_, v) in &p[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let mut to_start = (first_t - ra.start) as f64 / 1000.0;
    let mut to_end = (ra.end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg_between = sampled / (p.len() - 1) as f64;
    // Extrapolate to the window edges only when a sample is that close to them, else by half
    // an interval; a counter is never extrapolated below zero.
    let threshold = avg_between * 1.1;
    let zero_cutoff = |to_start: f64| {
        if counter && result > 0.0 && first_v >= 0.0 {
            to_start.min(sampled * (first_v / result))
        } else {
            to_start
        }
    };
    if legacy {
        // Before Prometheus 2.51 the zero point was found first, then the threshold applied.
        to_start = zero_cutoff(to_start);
        if to_start >= threshold {
            to_start = avg_between / 2.0;
        }
    } else {
        if to_start >= threshold {
            to_start = avg_between / 2.0;
        }
        to_start = zero_cutoff(to_start);
    }
    if to_end >= threshold {
        to_end = avg_between / 2.0;
    }
    let interval = sampled + to_start + to_end;
    let mut factor = interval / sampled;
    if rate {
        factor /= ra.range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_delta(s: &Series, rate: bool) -> Option<f64> {
    let p = &s.points;
    if p.len() < 2 {
        return None;
    }
    let (t1, v1) = p[p.len() - 2];
    let (t2, v2) = p[p.len() - 1];
    let mut d = v2 - v1;
    if rate && v2 < v1 {
        d = v2; // counter reset
    }
    if rate {
        let secs = (t2 - t1) as f64 / 1000.0;
        if secs == 0.0 {
            return None;
        }
        d /= secs;
    }
    Some(d)
}

/// Least-squares slope and intercept at `intercept_t` (ms), as Prometheus's linearRegression.
fn linear_regression(p: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let n = p.len() as f64;
    let (mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = p[0].1;
    let mut const_y = true;
    for &(t, v) in p {
        if const_y && v != init_y {
            const_y = false;
        }
        let x = (t - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_add(x, sx, cx);
        (sy, cy) = kahan_add(v, sy, cy);
        (sxy, cxy) = kahan_add(x * v, sxy, cxy);
        (sx2, cx2) = kahan_add(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

fn avg_of(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c, mut n) = (0.0, 0.0, 0.0);
    let mut mean = 0.0;
    let mut incremental = false;
    for v in vals {
        n += 1.0;
        if !incremental {
            let (ns, nc) = kahan_add(v, sum, c);
            if ns.is_infinite() && !v.is_infinite() && !sum.is_infinite() && n > 1.0 {
                incremental = true;
                mean = sum / (n - 1.0) + c / (n - 1.0);
            } else {
                sum = ns;
                c = nc;
                continue;
            }
        }
        if mean.is_infinite()
            && (v.is_infinite() && (mean > 0.0) == (v > 0.0) || !v.is_infinite() && !v.is_nan())
        {
            continue;
        }
        mean += v / n - mean / n;
    }
    if incremental {
        mean
    } else {
        sum / n + if c.is_finite() { c / n } else { 0.0 }
    }
}

fn variance(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut n, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for v in vals {
        n += 1.0;
        let delta = v - mean;
        mean += delta / n;
        m2 += delta * (v - mean);
    }
    m2 / n
}

/// Go's `math.Max`: NaN wins.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN wins.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

use crate::clock::civil;

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn date_part(secs: f64, part: &str) -> f64 {
    let s = secs.floor() as i64;
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    match part {
        "year" => y as f64,
        "month" => m as f64,
        "day_of_month" => d as f64,
        "day_of_week" => ((days + 4).rem_euclid(7)) as f64,
        "day_of_year" => {
            let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
            let mut doy = cum[(m - 1) as usize] + d as i64;
            if m > 2 && is_leap(y) {
                doy += 1;
            }
            doy as f64
        }
        "days_in_month" => match m {
            2 if is_leap(y) => 29.0,
            2 => 28.0,
            4 | 6 | 9 | 11 => 30.0,
            _ => 31.0,
        },
        "hour" => (sod / 3600) as f64,
        "minute" => ((sod % 3600) / 60) as f64,
        _ => f64::NAN,
    }
}

/// Labels for absent()/absent_over_time(): the equality matchers of a plain selector.
fn absent_labels(e: &Expr) -> Labels {
    let vs = match unparen(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(m) => &m.vs,
        _ => return Labels::empty(),
    };
    // As Prometheus: only the first equality matcher of a name counts, and any other
    // matcher on that name removes it again.
    let mut out: Vec<Label> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == "__name__" {
            continue;
        }
        if matches!(m.op, MatchOp::Equal) && !seen.contains(&m.name.as_str()) {
            out.push(Label::new(m.name.as_str(), m.value.as_str()));
        } else {
            out.retain(|l| *l.name != *m.name);
        }
        seen.push(&m.name);
    }
    Labels::from_vec(out)
}

/// Natural ordering for sort_by_label: digit runs compare as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut ai, mut bi) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (ai.peek().copied(), bi.peek().copied()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let mut na = String::new();
                while let Some(c) = ai.peek().copied().filter(char::is_ascii_digit) {
                    na.push(c);
                    ai.next();
                }
                let mut nb = String::new();
                while let Some(c) = bi.peek().copied().filter(char::is_ascii_digit) {
                    nb.push(c);
                    bi.next();
                }
                let (ta, tb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let o = ta.len().cmp(&tb.len()).then(ta.cmp(tb));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                ai.next();
                bi.next();
            }
        }
    }
}

fn sort_by_value(v: &mut [Sample], desc: bool) {
    v.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        // NaN sorts last in both directions, as Prometheus 2.x and 3.x return it.
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ if desc => b
            .value
            .partial_cmp(&a.value)
            .unwrap_or(std::cmp::Ordering::Equal),
        _ => a
            .value
            .partial_cmp(&b.value)
            .unwrap_or(std::cmp::Ordering::Equal),
    });
}

fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Merge buckets with the same bound.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(le, c) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += c,
            _ => merged.push((le, c)),
        }
    }
    let mut b = merged;
    // Force monotonic counts.
    let mut max = f64::NEG_INFINITY;
    for x in b.iter_mut() {
        if x.1 > max {
            max = x.1;
        } else if x.1 < max {
            x.1 = max;
        }
    }
    if b.len() < 2 {
        return f64::NAN;
    }
    let observations = b[b.len() - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let idx = b.partition_point(|x| x.1 < rank);
    if idx == b.len() - 1 {
        return b[b.len() - 2].0;
    }
    if idx == 0 && b[0].0 <= 0.0 {
        return b[0].0;
    }
    let mut start = 0.0;
    let end = b[idx].0;
    let mut count = b[idx].1;
    if idx > 0 {
        start = b[idx - 1].0;
        count -= b[idx - 1].1;
        rank -= b[idx - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Holt's linear smoothing (`holt_winters` in 2.x, `double_exponential_smoothing` in 3.x).
fn holt_winters(p: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, p[0].1);
    let mut b = p[1].1 - p[0].1;
    for (i, &(_, v)) in p.iter().enumerate().skip(1) {
        let x = sf * v;
        // The trend starts as the first difference and is smoothed from the second step on.
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

pub(super) fn call(ctx: &mut Ctx, c: &Call, ts: i64) -> Result<Value> {
    let name = c.func.name;
    let secs = |t: i64| t as f64 / 1000.0;
    match name {
        "time" => Ok(Value::Scalar(secs(ts))),
        "pi" => Ok(Value::Scalar(std::f64::consts::PI)),
        "vector" => {
            let v = ctx.eval_scalar(arg(c, 0)?, ts)?;
            Ok(Value::Vector(vec![Sample {
                labels: Labels::empty(),
                value: v,
                t: ts,
                drop_name: false,
            }]))
        }
        "scalar" => {
            let v = ctx.eval_vector(arg(c, 0)?, ts)?;
            Ok(Value::Scalar(if v.len() == 1 { v[0].value } else { f64::NAN }))
        }
        "abs" => math(ctx, c, ts, f64::abs),
        "ceil" => math(ctx, c, ts, f64::ceil),
        "floor" => math(ctx, c, ts, f64::floor),
        "exp" => math(ctx, c, ts, f64::exp),
        "sqrt" => math(ctx, c, ts, f64::sqrt),
        "ln" => math(ctx, c, ts, f64::ln),
        "log2" => math(ctx, c, ts, f64::log2),
        "log10" => math(ctx, c, ts, f64::log10),
        "sin" => math(ctx, c, ts, f64::sin),
        "cos" => math(ctx, c, ts, f64::cos),
        "tan" => math(ctx, c, ts, f64::tan),
        "asin" => math(ctx, c, ts, f64::asin),
        "acos" => math(ctx, c, ts, f64::acos),
        "atan" => math(ctx, c, ts, f64::atan),
        "sinh" => math(ctx, c, ts, f64::sinh),
        "cosh" => math(ctx, c, ts, f64::cosh),
        "tanh" => math(ctx, c, ts, f64::tanh),
        "asinh" => math(ctx, c, ts, f64::asinh),
        "acosh" => math(ctx, c, ts, f64::acosh),
        "atanh" => math(ctx, c, ts, f64::atanh),
        "deg" => math(ctx, c, ts, |v| v * 180.0 / std::f64::consts::PI),
        "rad" => math(ctx, c, ts, |v| v * std::f64::consts::PI / 180.0),
        "sgn" => math(ctx, c, ts, |v| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        }),
        "round" => {
            let to = match c.args.args.get(1) {
                Some(e) => ctx.eval_scalar(e, ts)?,
                None => 1.0,
            };
            let inv = 1.0 / to;
            math(ctx, c, ts, move |v| (v * inv + 0.5).floor() / inv)
        }
        "clamp" => {
            let lo = ctx.eval_scalar(arg(c, 1)?, ts)?;
            let hi = ctx.eval_scalar(arg(c, 2)?, ts)?;
            if hi < lo {
                return Ok(Value::Vector(Vec::new()));
            }
            math(ctx, c, ts, move |v| go_max(lo, go_min(hi, v)))
        }
        "clamp_min" => {
            let lo = ctx.eval_scalar(arg(c, 1)?, ts)?;
            math(ctx, c, ts, move |v| go_max(lo, v))
        }
        "clamp_max" => {
            let hi = ctx.eval_scalar(arg(c, 1)?, ts)?;
            math(ctx, c, ts, move |v| go_min(hi, v))
        }
        "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute" => {
            if c.args.args.is_empty() {
                return Ok(Value::Vector(vec![Sample {
                    labels: Labels::empty(),
                    value: date_part(secs(ts), name),
                    t: ts,
                    drop_name: false,
                }]));
            }
            math(ctx, c, ts, |v| if v.is_finite() { date_part(v, name) } else { v })
        }
        "timestamp" => {
            let direct = matches!(unparen(arg(c, 0)?), Expr::VectorSelector(_));
            let mut v = ctx.eval_vector(arg(c, 0)?, ts)?;
            for s in &mut v {
                s.value = if direct { secs(s.t) } else { secs(ts) };
                let mut d = s.drop_name;
                ctx.drop_name(&mut s.labels, &mut d);
                s.drop_name = d;
            }
            out_vector(v)
        }
        "sort" | "sort_desc" => {
            let mut v = ctx.eval_vector(arg(c, 0)?, ts)?;
            sort_by_value(&mut v, name == "sort_desc");
            Ok(Value::Vector(v))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let compat = ctx.opts.compat;
            let mut v = ctx.eval_vector(arg(c, 0)?, ts)?;
            let mut names = Vec::new();
            for e in c.args.args.iter().skip(1) {
                names.push(ctx.eval_string(e, ts)?);
            }
            v.sort_by(|a, b| {
                let mut o = std::cmp::Ordering::Equal;
                for n in &names {
                    o = natural_cmp(a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
                    if o != std::cmp::Ordering::Equal {
                        break;
                    }
                }
                if o == std::cmp::Ordering::Equal && compat == Compat::V3 {
                    o = a.labels.cmp(&b.labels);
                }
                if name == "sort_by_label_desc" {
                    o.reverse()
                } else {
                    o
                }
            });
            Ok(Value::Vector(v))
        }
        "label_replace" => {
            let mut v = ctx.eval_vector(arg(c, 0)?, ts)?;
            let dst = ctx.eval_string(arg(c, 1)?, ts)?;
            let repl = ctx.eval_string(arg(c, 2)?, ts)?;
            let src = ctx.eval_string(arg(c, 3)?, ts)?;
            let re_src = ctx.eval_string(arg(c, 4)?, ts)?;
            let re = compile_regex(&re_src, ctx.opts.compat)
                .map_err(|e| EvalError::BadData(format!("invalid regular expression in label_replace(): {e}")))?;
            if !crate::model::is_label_name(&dst) {
                return Err(EvalError::BadData(format!("invalid destination label name in label_replace(): {dst}")));
            }
            for s in &mut v {
                let val = s.labels.get(&src).unwrap_or("").to_string();
                if let Some(caps) = re.captures(&val) {
                    let mut res = String::new();
                    caps.expand(&repl, &mut res);
                    s.labels = if res.is_empty() { s.labels.without(&dst) } else { s.labels.with(&dst, &res) };
                    if dst == "__name__" {
                        s.drop_name = false;
                    }
                }
            }
            out_vector(v)
        }
        "label_join" => {
            let mut v = ctx.eval_vector(arg(c, 0)?, ts)?;
            let dst = ctx.eval_string(arg(c, 1)?, ts)?;
            let sep = ctx.eval_string(arg(c, 2)?, ts)?;
            let mut srcs = Vec::new();
            for e in c.args.args.iter().skip(3) {
                let s = ctx.eval_string(e, ts)?;
                if !crate::model::is_label_name(&s) {
                    return Err(EvalError::BadData(format!("invalid source label name in label_join(): {s}")));
                }
                srcs.push(s);
            }
            if !crate::model::is_label_name(&dst) {
                return Err(EvalError::BadData(format!("invalid destination label name in label_join(): {dst}")));
            }
            for s in &mut v {
                let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
                let res = joined.join(&sep);
                s.labels = if res.is_empty() { s.labels.without(&dst) } else { s.labels.with(&dst, &res) };
                if dst == "__name__" {
                    s.drop_name = false;
                }
            }
            out_vector(v)
        }
        "absent" | "absent_over_time" => {
            let present = if name == "absent" {
                !ctx.eval_vector(arg(c, 0)?, ts)?.is_empty()
            } else {
                !range_arg(ctx, arg(c, 0)?, ts, false)?.series.is_empty()
            };
            if present {
                return Ok(Value::Vector(Vec::new()));
            }
            Ok(Value::Vector(vec![Sample {
                labels: absent_labels(arg(c, 0)?),
                value: 1.0,
                t: ts,
                drop_name: false,
            }]))
        }
        "histogram_quantile" => {
            let q = ctx.eval_scalar(arg(c, 0)?, ts)?;
            let v = ctx.eval_vector(arg(c, 1)?, ts)?;
            let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
            let mut index: foldhash::HashMap<Labels, usize> = Default::default();
            for s in v {
                let Some(le) = s.labels.get("le").and_then(|x| match x {
                    "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
                    _ => x.parse::<f64>().ok(),
                }) else {
                    continue;
                };
                let key = super::eval::without_name(&s.labels.without("le"));
                let i = *index.entry(key.clone()).or_insert_with(|| {
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                });
                groups[i].1.push((le, s.value));
            }
            let out = groups
                .into_iter()
                .map(|(labels, mut b)| Sample {
                    labels,
                    value: bucket_quantile(q, &mut b),
                    t: ts,
                    drop_name: false,
                })
                .collect();
            out_vector(out)
        }
        "rate" | "increase" | "delta" => {
            let legacy = ctx.opts.legacy_rate_extrapolation;
            let (counter, rate) = (name != "delta", name == "rate");
            over_time(ctx, c, ts, 0, false, move |ra, s| extrapolated(ra, s, counter, rate, legacy))
        }
        "irate" => over_time(ctx, c, ts, 0, false, |_, s| instant_delta(s, true)),
        "idelta" => over_time(ctx, c, ts, 0, false, |_, s| instant_delta(s, false)),
        "deriv" => over_time(ctx, c, ts, 0, false, |_, s| {
            (s.points.len() >= 2).then(|| linear_regression(&s.points, s.points[0].0).0)
        }),
        "predict_linear" => {
            let dur = ctx.eval_scalar(arg(c, 1)?, ts)?;
            // The intercept is taken at the evaluation time, even under `@` (as Prometheus).
            over_time(ctx, c, ts, 0, false, move |_, s| {
                (s.points.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(&s.points, ts);
                    slope * dur + intercept
                })
            })
        }
        "holt_winters" | "double_exponential_smoothing" => {
            let sf = ctx.eval_scalar(arg(c, 1)?, ts)?;
            let tf = ctx.eval_scalar(arg(c, 2)?, ts)?;
            if !(sf > 0.0 && sf < 1.0) {
                return Err(EvalError::BadData(format!("invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}")));
            }
            if !(tf > 0.0 && tf < 1.0) {
                return Err(EvalError::BadData(format!("invalid trend factor. Expected: 0 < tf < 1, got: {tf}")));
            }
            over_time(ctx, c, ts, 0, false, move |_, s| holt_winters(&s.points, sf, tf))
        }
        "changes" => over_time(ctx, c, ts, 0, false, |_, s| {
            let mut n = 0.0;
            for w in s.points.windows(2) {
                let (a, b) = (w[0].1, w[1].1);
                if a != b && !(a.is_nan() && b.is_nan()) {
                    n += 1.0;
                }
            }
            Some(n)
        }),
        "resets" => over_time(ctx, c, ts, 0, false, |_, s| {
            Some(s.points.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64)
        }),
        "avg_over_time" => over_time(ctx, c, ts, 0, false, |_, s| Some(avg_of(s.points.iter().map(|p| p.1)))),
        "sum_over_time" => over_time(ctx, c, ts, 0, false, |_, s| {
            let (mut sum, mut comp) = (0.0, 0.0);
            for &(_, v) in &s.points {
                (sum, comp) = kahan_add(v, sum, comp);
            }
            Some(if comp.is_finite() { sum + comp } else { sum })
        }),
        "count_over_time" => over_time(ctx, c, ts, 0, false, |_, s| Some(s.points.len() as f64)),
        "max_over_time" => over_time(ctx, c, ts, 0, false, |_, s| {
            let mut m = s.points[0].1;
            for &(_, v) in &s.points[1..] {
                if v > m || m.is_nan() {
                    m = v;
                }
            }
            Some(m)
        }),
        "min_over_time" => over_time(ctx, c, ts, 0, false, |_, s| {
            let mut m = s.points[0].1;
            for &(_, v) in &s.points[1..] {
                if v < m || m.is_nan() {
                    m = v;
                }
            }
            Some(m)
        }),
        "last_over_time" => over_time(ctx, c, ts, 0, true, |_, s| s.points.last().map(|p| p.1)),
        "first_over_time" => over_time(ctx, c, ts, 0, true, |_, s| s.points.first().map(|p| p.1)),
        "present_over_time" => over_time(ctx, c, ts, 0, false, |_, _| Some(1.0)),
        "stddev_over_time" => over_time(ctx, c, ts, 0, false, |_, s| Some(variance(s.points.iter().map(|p| p.1)).sqrt())),
        "stdvar_over_time" => over_time(ctx, c, ts, 0, false, |_, s| Some(variance(s.points.iter().map(|p| p.1)))),
        "quantile_over_time" => {
            let q = ctx.eval_scalar(arg(c, 0)?, ts)?;
            over_time(ctx, c, ts, 1, false, move |_, s| {
                let mut vals: Vec<f64> = s.points.iter().map(|p| p.1).collect();
                Some(quantile(q, &mut vals))
            })
        }
        "mad_over_time" => over_time(ctx, c, ts, 0, false, |_, s| {
            let mut vals: Vec<f64> = s.points.iter().map(|p| p.1).collect();
            if vals.iter().any(|v| v.is_nan()) {
                return Some(f64::NAN);
            }
            let med = quantile(0.5, &mut vals);
            let mut dev: Vec<f64> = vals.iter().map(|v| (v - med).abs()).collect();
            Some(quantile(0.5, &mut dev))
        }),
        "ts_of_max_over_time" | "ts_of_min_over_time" | "ts_of_last_over_time" | "ts_of_first_over_time" => {
            over_time(ctx, c, ts, 0, false, move |_, s| {
                let p = &s.points;
                let t = match name {
                    "ts_of_last_over_time" => p.last()?.0,
                    "ts_of_first_over_time" => p.first()?.0,
                    _ => {
                        let max = name == "ts_of_max_over_time";
                        let mut best = p[0];
                        for &x in &p[1..] {
                            let better = if max { x.1 >= best.1 || best.1.is_nan() } else { x.1 <= best.1 || best.1.is_nan() };
                            if better && !x.1.is_nan() {
                                best = x;
                            }
                        }
                        best.0
                    }
                };
                Some(t as f64 / 1000.0)
            })
        }
        n if n.starts_with("histogram_") => Err(EvalError::BadData(format!(
            "{n}() works on native histograms, which meshmetrics does not store"
        ))),
        other => Err(EvalError::BadData(format!("function {other}() is not supported"))),
    }
    .and_then(|v| {
        if ctx.opts.compat == Compat::V2 && name == "double_exponential_smoothing" {
            return Err(EvalError::BadData("unknown function double_exponential_smoothing (Prometheus 2 calls it holt_winters)".into()));
        }
        Ok(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        assert_eq!(date_part(1_709_164_800.0, "day_of_year"), 60.0);
        assert_eq!(date_part(0.0, "day_of_week"), 4.0);
        assert_eq!(date_part(1_709_164_800.0, "days_in_month"), 29.0);
    }

    #[test]
    fn bucket_quantiles() {
        let mut b = vec![
            (0.1, 10.0),
            (0.5, 60.0),
            (1.0, 90.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((bucket_quantile(0.5, &mut b) - 0.42).abs() < 1e-12);
        let mut b = vec![(1.0, 1.0), (f64::INFINITY, 100.0)];
        assert_eq!(bucket_quantile(0.99, &mut b), 1.0);
        let mut b = vec![(1.0, 1.0)];
        assert!(bucket_quantile(0.5, &mut b).is_nan());
    }

    /// Series held in memory, selected by their full label sets.
    struct Held(Vec<crate::promql::SeriesSamples>);

    impl crate::promql::Queryable for Held {
        fn select(
            &self,
            matchers: &[crate::promql::LabelMatcher],
            _: i64,
            _: i64,
        ) -> std::result::Result<Vec<crate::promql::SeriesSamples>, String> {
            Ok(self
                .0
                .iter()
                .filter(|s| {
                    let get = |n: &str| s.labels.get(n).unwrap_or("");
                    matchers.iter().all(|m| m.matches(get(&m.name)))
                })
                .cloned()
                .collect())
        }
    }

    /// `rate` drops names once per query and skips the duplicate check only for a selection
    /// whose sets stay distinct without them: two series that differ by name alone still
    /// fail where both have samples, at every step of a range, and not where one has none.
    #[test]
    fn dropped_names_that_collide_fail_where_both_are_present() {
        use crate::promql::{instant_query, range_query, EvalError, EvalOptions, SeriesSamples};
        let counter = |name: &str, from: i64, to: i64| SeriesSamples {
            labels: Labels::from_pairs([("__name__", name), ("job", "mesh")]),
            samples: (from..=to).step_by(15_000).map(|t| (t, t as f64)).collect(),
        };
        // `a` for the first five minutes, `b` from the fourth on.
        let held = Held(vec![
            counter("a", 0, 300_000),
            counter("b", 180_000, 600_000),
        ]);
        let opts = EvalOptions::default();
        let never = || false;
        let q = crate::promql::parse("rate({__name__=~\"a|b\"}[1m])").expect("parses");
        let same = |r: std::result::Result<Value, EvalError>| matches!(r, Err(EvalError::Execution(m)) if m.contains("same labelset"));
        assert!(!same(instant_query(&held, &q, 120_000, &opts, &never)));
        assert!(same(instant_query(&held, &q, 240_000, &opts, &never)));
        assert!(!same(instant_query(&held, &q, 500_000, &opts, &never)));
        assert!(same(range_query(
            &held, &q, 0, 600_000, 60_000, &opts, &never
        )));
        assert!(!same(range_query(
            &held, &q, 0, 120_000, 60_000, &opts, &never
        )));
        // One name: distinct without names, every step answered.
        let q = crate::promql::parse("rate({__name__=\"b\"}[1m])").expect("parses");
        let Ok(Value::Matrix(m)) = range_query(&held, &q, 0, 600_000, 60_000, &opts, &never) else {
            panic!("range query failed");
        };
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].labels, Labels::from_pairs([("job", "mesh")]));
    }

    #[test]
    fn natural_sort() {
        assert_eq!(natural_cmp("a2", "a10"), std::cmp::Ordering::Less);
        assert_eq!(natural_cmp("b", "a10"), std::cmp::Ordering::Greater);
    }
}
