//! Why an instant query's answer is thin: the usual reasons a canary check reads "no values
//! found" or an odd value, found in the data the agent holds, as text for the `warnings`
//! field of the answer (Flagger ignores it; Grafana shows it). The answer itself is never
//! changed. Pure, like the evaluator: it only reads the `Queryable` it is given.
//!
//! - a range function whose window holds fewer than two samples of a series (a `rate` over
//!   one sample has no value), with the interval the series is scraped at;
//! - a selector that matches nothing while its metric exists with other values of a label it
//!   filters on (a misnamed workload), naming a few values that exist; or whose metric does not
//!   exist at all;
//! - a division whose result is NaN because both sides are 0 (no traffic yet);
//! - series from targets whose last scrape failed (`up` is 0).

use promql_parser::parser::{Expr, MatrixSelector, VectorSelector};
use std::collections::{BTreeMap, BTreeSet};

use super::eval::{ms, offset_ms, selector_matchers, Loaded};
use super::{
    instant_query, EvalOptions, LabelMatcher, MatchKind, Queryable, Selection, SeriesSamples, Value,
};
use crate::model::{is_stale_nan, Label, Labels};

/// Functions that need two samples in their window to give a value.
const NEEDS_TWO: &[&str] = &[
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "predict_linear",
];

/// At most this many warnings per answer, and value examples per warning.
const MAX_WARNINGS: usize = 8;
const MAX_VALUES: usize = 5;
/// Series looked at per selector; a larger selection is not explained.
const MAX_SERIES: usize = 10_000;

/// The warnings for `expr` evaluated at `ts` with `result`.
pub fn explain(
    q: &dyn Queryable,
    expr: &Expr,
    ts: i64,
    result: &Value,
    opts: &EvalOptions,
) -> Vec<String> {
    explain_loaded(q, expr, ts, result, opts, &Loaded::default())
}

/// [`explain`], reading what the evaluation already `loaded` where that covers a selector's
/// window: a healthy answer then costs no second selection from the store.
pub fn explain_loaded(
    q: &dyn Queryable,
    expr: &Expr,
    ts: i64,
    result: &Value,
    opts: &EvalOptions,
    loaded: &Loaded,
) -> Vec<String> {
    let mut x = Explainer {
        q,
        opts,
        loaded,
        ts,
        out: Vec::new(),
        targets: BTreeSet::new(),
    };
    x.walk(expr, None);
    if has_nan(result) {
        x.divisions(expr);
    }
    x.down_targets();
    x.out.truncate(MAX_WARNINGS);
    x.out
}

/// Whether an answer is thin enough to explain when explaining costs a second round of
/// asking peers: empty, or NaN.
pub fn is_thin(v: &Value) -> bool {
    match v {
        Value::Vector(s) => s.is_empty() || has_nan(v),
        other => has_nan(other),
    }
}

/// What an explanation of `expr` at `ts` reads: an agent whose samples are spread over its
/// peers gathers these first. Each selector over its window and a lookback more (where the
/// scrape interval shows), its metric by name alone, and `up`.
pub fn wanted(expr: &Expr, ts: i64, opts: &EvalOptions) -> Vec<Selection> {
    fn walk(e: &Expr, ts: i64, opts: &EvalOptions, out: &mut Vec<Selection>) {
        let mut add = |vs: &VectorSelector, window: i64| {
            let (Ok(matchers), None) = (selector_matchers(vs, opts.compat), &vs.at) else {
                return;
            };
            let t = ts.saturating_sub(offset_ms(&vs.offset));
            let from = t.saturating_sub(window).saturating_sub(opts.lookback_ms);
            // Needed from nobody in full: an explanation is skipped rather than fail a query.
            let sel = |matchers| Selection {
                matchers,
                mint: from,
                maxt: t,
                needs_from: t,
            };
            if let Some(name) = selector_name(vs, &matchers) {
                if let Ok(m) = LabelMatcher::new("__name__", MatchKind::Equal, &name) {
                    out.push(sel(vec![m]));
                }
            }
            out.push(sel(matchers));
        };
        match e {
            Expr::VectorSelector(vs) => add(vs, opts.lookback_ms),
            Expr::MatrixSelector(m) => add(&m.vs, ms(&m.range)),
            Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, ts, opts, out)),
            Expr::Aggregate(a) => {
                walk(&a.expr, ts, opts, out);
                if let Some(p) = &a.param {
                    walk(p, ts, opts, out);
                }
            }
            Expr::Unary(u) => walk(&u.expr, ts, opts, out),
            Expr::Binary(b) => {
                walk(&b.lhs, ts, opts, out);
                walk(&b.rhs, ts, opts, out);
            }
            Expr::Paren(p) => walk(&p.expr, ts, opts, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(expr, ts, opts, &mut out);
    if let Ok(up) = LabelMatcher::new("__name__", MatchKind::Equal, "up") {
        out.push(Selection {
            matchers: vec![up],
            mint: ts.saturating_sub(opts.lookback_ms),
            maxt: ts,
            needs_from: ts,
        });
    }
    out
}

fn has_nan(v: &Value) -> bool {
    match v {
        Value::Scalar(f) => f.is_nan(),
        Value::Vector(s) => s.iter().any(|s| s.value.is_nan()),
        _ => false,
    }
}

struct Explainer<'a> {
    q: &'a dyn Queryable,
    opts: &'a EvalOptions,
    loaded: &'a Loaded,
    ts: i64,
    out: Vec<String>,
    /// (job, instance) of every series the query selected, as their shared labels.
    targets: BTreeSet<(Label, Label)>,
}

/// A duration the way PromQL writes it: `2m`, `30s`, `500ms`.
fn seconds(ms: i64) -> String {
    match ms {
        m if m >= 60_000 && m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m if m < 1000 => format!("{m}ms"),
        m => format!("{:.3}s", m as f64 / 1000.0),
    }
}

impl Explainer<'_> {
    /// A read within the query's memory budget: what would exceed it is not explained.
    fn read(&self, matchers: &[LabelMatcher], from: i64, to: i64) -> Option<Vec<SeriesSamples>> {
        self.q
            .select_within(matchers, from, to, self.opts.max_memory)
            .ok()
            .flatten()
    }

    /// Notes the target of a selected series: two shared labels, no strings copied.
    fn note_target(&mut self, labels: &Labels) {
        if let (Some(job), Some(instance)) = (labels.label("job"), labels.label("instance")) {
            self.targets.insert((job.clone(), instance.clone()));
        }
    }

    fn push(&mut self, w: String) {
        if !self.out.contains(&w) {
            self.out.push(w);
        }
    }

    /// `range_fn`: the function a matrix selector below is an argument of.
    fn walk(&mut self, e: &Expr, range_fn: Option<&str>) {
        match e {
            Expr::VectorSelector(vs) => self.selector(vs, None, None),
            Expr::MatrixSelector(m) => self.selector(&m.vs, Some(m), range_fn),
            Expr::Call(c) => {
                let name = c.func.name;
                for a in &c.args.args {
                    self.walk(a, Some(name));
                }
            }
            Expr::Aggregate(a) => {
                self.walk(&a.expr, None);
                if let Some(p) = &a.param {
                    self.walk(p, None);
                }
            }
            Expr::Unary(u) => self.walk(&u.expr, None),
            Expr::Binary(b) => {
                self.walk(&b.lhs, None);
                self.walk(&b.rhs, None);
            }
            Expr::Paren(p) => self.walk(&p.expr, range_fn),
            // A subquery's inner expression is evaluated at many steps: not explained here.
            Expr::Subquery(_)
            | Expr::NumberLiteral(_)
            | Expr::StringLiteral(_)
            | Expr::Extension(_) => {}
        }
    }

    fn selector(
        &mut self,
        vs: &VectorSelector,
        m: Option<&MatrixSelector>,
        range_fn: Option<&str>,
    ) {
        let Ok(matchers) = selector_matchers(vs, self.opts.compat) else {
            return;
        };
        let t = match &vs.at {
            Some(_) => return, // pinned in time: the answer is what was asked
            None => self.ts.saturating_sub(offset_ms(&vs.offset)),
        };
        let window = m.map_or(self.opts.lookback_ms, |m| ms(&m.range));
        // First what the query itself read: when every series holds enough samples there
        // (two for a range function that needs two), nothing is thin, and the wider read
        // below is spared. A healthy answer costs its selections once more, no more.
        let needed = match (m, range_fn) {
            (Some(_), Some(f)) if NEEDS_TWO.contains(&f) => 2,
            _ => 1,
        };
        let first = t.saturating_sub(window).saturating_add(1);
        let loaded = self.loaded;
        let read_now;
        let read = match loaded.covering(vs, first, t) {
            Some(series) => series,
            None => {
                let Some(series) = self.read(&matchers, first, t) else {
                    return;
                };
                read_now = series;
                &read_now
            }
        };
        if read.len() > MAX_SERIES {
            return;
        }
        let enough = |s: &SeriesSamples| {
            let from = s.samples.partition_point(|(st, _)| *st < first);
            let to = s.samples.partition_point(|(st, _)| *st <= t);
            s.samples[from..to.max(from)]
                .iter()
                .filter(|(_, v)| !is_stale_nan(*v))
                .count()
                >= needed
        };
        if !read.is_empty() && read.iter().all(enough) {
            for s in read {
                self.note_target(&s.labels);
            }
            return;
        }
        // Read a lookback further back than the window: the scrape interval shows there.
        let from = t
            .saturating_sub(window)
            .saturating_sub(self.opts.lookback_ms);
        let Some(series) = self.read(&matchers, from, t) else {
            return;
        };
        if series.len() > MAX_SERIES {
            return;
        }
        let lo = t.saturating_sub(window);
        let mut live = 0;
        let mut thin = Vec::new();
        let mut intervals = Vec::new();
        for s in &series {
            let points: Vec<i64> = s
                .samples
                .iter()
                .filter(|(_, v)| !is_stale_nan(*v))
                .map(|(st, _)| *st)
                .collect();
            let in_window = points.iter().filter(|st| **st > lo && **st <= t).count();
            if in_window > 0 {
                live += 1;
            }
            self.note_target(&s.labels);
            let mut gaps: Vec<i64> = points.windows(2).map(|w| w[1] - w[0]).collect();
            gaps.sort_unstable();
            let own = gaps.get(gaps.len() / 2).copied();
            intervals.extend(gaps);
            // Thin, not gone: it was scraped within one of its intervals of the window.
            let alive = match (points.last(), own) {
                (Some(last), Some(every)) => t - last <= every + window,
                _ => false,
            };
            if in_window < 2 && alive {
                thin.push(s);
            }
        }
        let name = selector_name(vs, &matchers);
        if let (Some(m), Some(f)) = (m, range_fn) {
            if NEEDS_TWO.contains(&f) && !thin.is_empty() {
                intervals.sort_unstable();
                // Scrapes start a few ms late or early: say the interval they keep.
                let every = intervals.get(intervals.len() / 2).map(|&e| {
                    let unit = if e >= 10_000 { 1000 } else { 100 };
                    ((e + unit / 2) / unit * unit).max(1)
                });
                let scraped = every.map_or(String::new(), |e| {
                    format!(
                        " (scraped every {}; use a window of at least {})",
                        seconds(e),
                        seconds(2 * e)
                    )
                });
                self.push(format!(
                    "{f}({}[{}]): {} of {} series hold fewer than two samples in the {} window, so they have no value{scraped}",
                    name.as_deref().unwrap_or("…"),
                    seconds(ms(&m.range)),
                    thin.len(),
                    series.len(),
                    seconds(ms(&m.range)),
                ));
            }
        }
        // Series that exist but hold nothing in the window are explained above (thin) or
        // by their target being down; only a selector that finds no series at all is looked
        // at label by label.
        if live == 0 && series.is_empty() {
            self.matches_nothing(vs, &matchers, name.as_deref(), from, t);
        }
    }

    /// A selector matched nothing in its window: does its metric exist, and which of its
    /// matchers rules every series of it out?
    fn matches_nothing(
        &mut self,
        vs: &VectorSelector,
        matchers: &[LabelMatcher],
        name: Option<&str>,
        from: i64,
        t: i64,
    ) {
        let Some(name) = name else { return };
        let Ok(by_name) = LabelMatcher::new("__name__", MatchKind::Equal, name) else {
            return;
        };
        let Some(series) = self.read(std::slice::from_ref(&by_name), from, t) else {
            return;
        };
        let lookback = seconds(self.opts.lookback_ms);
        if series.is_empty() {
            self.push(format!(
                "{vs}: no series named {name} in the last {lookback}"
            ));
            return;
        }
        if series.len() > MAX_SERIES {
            return;
        }
        for s in &series {
            self.note_target(&s.labels);
        }
        let mut named_any = false;
        for m in matchers.iter().filter(|m| m.name != "__name__") {
            let any = series
                .iter()
                .any(|s| m.matches(s.labels.get(&m.name).unwrap_or("")));
            if any {
                continue;
            }
            named_any = true;
            let values: BTreeSet<&str> = series
                .iter()
                .filter_map(|s| s.labels.get(&m.name))
                .collect();
            let shown: Vec<String> = values
                .iter()
                .take(MAX_VALUES)
                .map(|v| format!("{v:?}"))
                .collect();
            let more = values.len().saturating_sub(MAX_VALUES);
            let listing = match (shown.is_empty(), more) {
                (true, _) => format!("{name} has no label {}", m.name),
                (false, 0) => format!("{name} has {}={}", m.name, shown.join(", ")),
                (false, n) => format!("{name} has {}={} and {n} more", m.name, shown.join(", ")),
            };
            self.push(format!(
                "{vs}: no series match {}; {listing}",
                matcher_text(m)
            ));
        }
        if !named_any {
            self.push(format!(
                "{vs}: each matcher matches some {name} series, but no series matches them all"
            ));
        }
    }

    /// The result holds NaN: name each division whose two sides are both 0 now.
    fn divisions(&mut self, e: &Expr) {
        match e {
            Expr::Binary(b) => {
                if b.op.to_string() == "/" && self.zero(&b.lhs) && self.zero(&b.rhs) {
                    self.push(format!(
                        "{e} is NaN: both sides of the division are 0 (0/0), as when the workload has had no traffic in the window"
                    ));
                }
                self.divisions(&b.lhs);
                self.divisions(&b.rhs);
            }
            Expr::Paren(p) => self.divisions(&p.expr),
            Expr::Aggregate(a) => self.divisions(&a.expr),
            Expr::Unary(u) => self.divisions(&u.expr),
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.divisions(a);
                }
            }
            _ => {}
        }
    }

    fn zero(&self, e: &Expr) -> bool {
        let never = || false;
        match instant_query(self.q, e, self.ts, self.opts, &never) {
            Ok(Value::Scalar(v)) => v == 0.0,
            Ok(Value::Vector(v)) => !v.is_empty() && v.iter().all(|s| s.value == 0.0),
            _ => false,
        }
    }

    /// Targets of the selected series whose latest scrape failed.
    fn down_targets(&mut self) {
        if self.targets.is_empty() {
            return;
        }
        let Ok(up) = LabelMatcher::new("__name__", MatchKind::Equal, "up") else {
            return;
        };
        let from = self.ts.saturating_sub(self.opts.lookback_ms);
        let Some(series) = self.read(std::slice::from_ref(&up), from, self.ts) else {
            return;
        };
        let mut down: BTreeMap<(Label, Label), i64> = BTreeMap::new();
        for s in &series {
            let (Some(job), Some(instance)) = (s.labels.label("job"), s.labels.label("instance"))
            else {
                continue;
            };
            let key = (job.clone(), instance.clone());
            if !self.targets.contains(&key) {
                continue;
            }
            if let Some((at, v)) = s.samples.iter().rev().find(|(_, v)| !is_stale_nan(*v)) {
                if *v == 0.0 {
                    down.insert(key, *at);
                }
            }
        }
        for ((job, instance), at) in down {
            let (job, instance) = (&job.value, &instance.value);
            let ago = seconds((self.ts - at).max(0));
            self.push(format!(
                "target {instance} (job {job}) is down: its scrape {ago} ago failed, so its series are missing or stale"
            ));
        }
    }
}

fn selector_name(vs: &VectorSelector, matchers: &[LabelMatcher]) -> Option<String> {
    vs.name.clone().or_else(|| {
        matchers
            .iter()
            .find(|m| m.name == "__name__")
            .and_then(|m| m.equal_value())
            .map(str::to_string)
    })
}

fn matcher_text(m: &LabelMatcher) -> String {
    let op = match m.kind {
        MatchKind::Equal => "=",
        MatchKind::NotEqual => "!=",
        MatchKind::Re => "=~",
        MatchKind::NotRe => "!~",
    };
    format!("{}{op}{:?}", m.name, m.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::{instant_query_loaded, parse, Compat};

    /// Series held in memory, selected by their full label sets.
    struct Held(Vec<SeriesSamples>);

    impl Queryable for Held {
        fn select(
            &self,
            matchers: &[LabelMatcher],
            mint: i64,
            maxt: i64,
        ) -> Result<Vec<SeriesSamples>, String> {
            Ok(self
                .0
                .iter()
                .filter(|s| {
                    matchers
                        .iter()
                        .all(|m| m.matches(s.labels.get(&m.name).unwrap_or("")))
                })
                .map(|s| SeriesSamples {
                    labels: s.labels.clone(),
                    samples: s
                        .samples
                        .iter()
                        .copied()
                        .filter(|(t, _)| *t >= mint && *t <= maxt)
                        .collect(),
                })
                .collect())
        }
    }

    fn series(name: &str, instance: &str, every_ms: i64, until: i64) -> SeriesSamples {
        SeriesSamples {
            labels: Labels::from_pairs([
                ("__name__", name),
                ("job", "mesh"),
                ("instance", instance),
            ]),
            samples: (0..)
                .map(|i| i * every_ms)
                .take_while(|t| *t <= until)
                .map(|t| (t, t as f64))
                .collect(),
        }
    }

    /// What the evaluation loaded answers the explanation as the store would: the same
    /// warnings for a healthy, a thin and a down target's answer.
    #[test]
    fn explaining_from_what_was_loaded_says_what_reading_again_says() {
        let now = 600_000;
        let held = Held(vec![
            series("req_total", "a:1", 5_000, now),
            series("req_total", "b:1", 5_000, now),
            // Scraped every 45 s: the 1m window up to now holds one sample.
            series("slow_total", "a:1", 45_000, now),
            series("up", "a:1", 5_000, now),
            SeriesSamples {
                samples: (0..=120).map(|i| (i * 5_000, 0.0)).collect(),
                ..series("up", "b:1", 5_000, now)
            },
        ]);
        let opts = EvalOptions {
            compat: Compat::V2,
            ..Default::default()
        };
        let never = || false;
        for query in [
            "sum(rate(req_total[1m]))",
            "sum(rate(slow_total[1m]))",
            "rate(req_total{instance=\"c:1\"}[1m])",
            "req_total / req_total",
        ] {
            let expr = parse(query).expect("parses");
            let (v, loaded) = instant_query_loaded(&held, &expr, now, &opts, &never).expect("ok");
            let again = explain(&held, &expr, now, &v, &opts);
            let reused = explain_loaded(&held, &expr, now, &v, &opts, &loaded);
            assert_eq!(reused, again, "{query}");
            assert!(
                again
                    .iter()
                    .any(|w| w.contains("b:1") && w.contains("down"))
                    || query.contains("slow")
                    || query.contains("c:1"),
                "{query}: {again:?}"
            );
        }
        let thin = parse("sum(rate(slow_total[1m]))").expect("parses");
        let (v, loaded) = instant_query_loaded(&held, &thin, now, &opts, &never).expect("ok");
        let why = explain_loaded(&held, &thin, now, &v, &opts, &loaded);
        assert!(
            why.iter().any(|w| w.contains("fewer than two samples")),
            "{why:?}"
        );
    }
}
