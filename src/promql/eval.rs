//! The evaluator: selectors, subqueries, the instant and range entry points.
//!
//! Each selector's samples are loaded once for the whole query window, then sliced per
//! evaluation step; a range query evaluates its expression at every step.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use promql_parser::label::MatchOp;
use promql_parser::parser::{
    AtModifier, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector,
};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{
    aggregate, binary, functions, memory_cost, Compat, EvalError, EvalOptions, LabelMatcher,
    MatchKind, Queryable, Sample, Series, SeriesSamples, Value,
};
use crate::model::{is_stale_nan, Labels};

pub(super) type Result<T> = std::result::Result<T, EvalError>;

/// What an evaluation loaded: each selector's series, keyed by the selector's place in the
/// expression, with the window `[mint, maxt]` they were loaded over.
#[derive(Default)]
pub struct Loaded {
    by_selector: HashMap<usize, LoadedSelector>,
}

struct LoadedSelector {
    mint: i64,
    maxt: i64,
    series: Vec<SeriesSamples>,
    /// Each series' labels without its name, made on first use: a range query's every step
    /// drops the names of what `rate` and the like read, and this does it once per query.
    nameless: Vec<std::cell::OnceCell<Labels>>,
    /// Whether no two of its series' label sets are equal, full and without names (worked
    /// out once: a function's result at each step is then known free of duplicates).
    distinct: std::cell::OnceCell<bool>,
    distinct_nameless: std::cell::OnceCell<bool>,
    /// The oldest and newest sample time over all its series (`None`: no samples). A range
    /// query's steps before or after the data (a 1h dashboard over a 15m window) are
    /// answered from this alone, without looking into each series.
    span: Option<(i64, i64)>,
}

impl Loaded {
    /// The series `vs` was loaded with, when that load covered `[mint, maxt]` (each series'
    /// samples may reach beyond it).
    pub(super) fn covering(
        &self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
    ) -> Option<&[SeriesSamples]> {
        match self
            .by_selector
            .get(&(vs as *const VectorSelector as usize))
        {
            Some(l) if l.mint <= mint && l.maxt >= maxt => Some(&l.series),
            _ => None,
        }
    }
}

/// Evaluation state for one query.
pub(super) struct Ctx<'a> {
    pub q: &'a dyn Queryable,
    pub opts: &'a EvalOptions,
    pub cancel: &'a dyn Fn() -> bool,
    /// Query start and end (for `@ start()` / `@ end()`), ms.
    pub start: i64,
    pub end: i64,
    data: Loaded,
    loaded_samples: usize,
    loaded_series: usize,
}

/// Milliseconds of a duration, saturating: the parser accepts durations and `@` times far
/// beyond what milliseconds in an `i64` hold, and every time computed from them saturates
/// too (a query about the year 10^15 finds nothing; it never wraps into the present).
pub(super) fn ms(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => ms(d),
        Some(Offset::Neg(d)) => -ms(d),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => ms(&d),
        Err(e) => -ms(&e.duration()),
    }
}

/// Unwraps parentheses.
pub(super) fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        other => other,
    }
}

/// A selector's matchers, its metric name included, compiled the way `compat` says.
pub(super) fn selector_matchers(vs: &VectorSelector, compat: Compat) -> Result<Vec<LabelMatcher>> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(EvalError::BadData(
            "'or' in label matchers is not supported".into(),
        ));
    }
    let mut out = Vec::new();
    let mut has_name = false;
    for m in &vs.matchers.matchers {
        let kind = match m.op {
            MatchOp::Equal => MatchKind::Equal,
            MatchOp::NotEqual => MatchKind::NotEqual,
            MatchOp::Re(_) => MatchKind::Re,
            MatchOp::NotRe(_) => MatchKind::NotRe,
        };
        has_name |= m.name == "__name__";
        out.push(
            LabelMatcher::with_compat(&m.name, kind, &m.value, compat)
                .map_err(EvalError::BadData)?,
        );
    }
    if let (Some(n), false) = (&vs.name, has_name) {
        out.push(
            LabelMatcher::with_compat("__name__", MatchKind::Equal, n, compat)
                .map_err(EvalError::BadData)?,
        );
    }
    Ok(out)
}

impl<'a> Ctx<'a> {
    fn new(
        q: &'a dyn Queryable,
        opts: &'a EvalOptions,
        cancel: &'a dyn Fn() -> bool,
        start: i64,
        end: i64,
    ) -> Self {
        Ctx {
            q,
            opts,
            cancel,
            start,
            end,
            data: Loaded::default(),
            loaded_samples: 0,
            loaded_series: 0,
        }
    }

    pub fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.start),
            Some(AtModifier::End) => Some(self.end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    pub fn check_cancel(&self) -> Result<()> {
        if (self.cancel)() {
            Err(EvalError::Canceled)
        } else {
            Ok(())
        }
    }

    /// Fails when the query, holding what it loaded plus `points` samples in `series` more
    /// series, would be over its sample limit or its memory budget. Called before those are
    /// allocated (or, for a step's result, before the next is).
    pub fn check_budget(&self, points: usize, series: usize) -> Result<()> {
        let samples = self.loaded_samples.saturating_add(points);
        if self.opts.max_samples > 0 && samples > self.opts.max_samples {
            return Err(EvalError::TooManySamples);
        }
        self.check_memory(points, series)
    }

    /// The memory half of [`Ctx::check_budget`].
    pub fn check_memory(&self, points: usize, series: usize) -> Result<()> {
        let bytes = memory_cost(
            self.loaded_samples.saturating_add(points),
            self.loaded_series.saturating_add(series),
        );
        if self.opts.max_memory > 0 && bytes > self.opts.max_memory {
            return Err(EvalError::OverMemoryBudget(self.opts.max_memory));
        }
        Ok(())
    }

    /// The memory budget left to a selection, for the store to stop gathering at.
    fn memory_left(&self) -> usize {
        match self.opts.max_memory {
            0 => 0,
            max => max
                .saturating_sub(memory_cost(self.loaded_samples, self.loaded_series))
                .max(1),
        }
    }

    /// Collects every selector's time window and loads its samples once.
    fn preload(&mut self, e: &Expr, start: i64, end: i64) -> Result<()> {
        let mut windows: HashMap<usize, Window> = HashMap::new();
        self.windows(e, start, end, &mut windows);
        for (key, Window { vs, mint, maxt, .. }) in windows {
            self.check_cancel()?;
            let matchers = self.matchers(vs)?;
            let series = self
                .q
                .select_within(&matchers, mint, maxt, self.memory_left())
                .map_err(EvalError::Execution)?
                .ok_or(EvalError::OverMemoryBudget(self.opts.max_memory))?;
            self.loaded_samples += series.iter().map(|s| s.samples.len()).sum::<usize>();
            self.loaded_series += series.len();
            self.check_budget(0, 0)?;
            let span = series
                .iter()
                .filter_map(|s| Some((s.samples.first()?.0, s.samples.last()?.0)))
                .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)));
            let loaded = LoadedSelector {
                mint,
                maxt,
                nameless: (0..series.len()).map(|_| Default::default()).collect(),
                distinct: Default::default(),
                distinct_nameless: Default::default(),
                series,
                span,
            };
            self.data.by_selector.insert(key, loaded);
        }
        Ok(())
    }

    fn windows<'e>(&self, e: &'e Expr, start: i64, end: i64, out: &mut HashMap<usize, Window<'e>>) {
        let mut add = |vs: &'e VectorSelector, mint: i64, maxt: i64, needs_from: i64| {
            let key = vs as *const VectorSelector as usize;
            let w = out.entry(key).or_insert(Window {
                vs,
                mint,
                maxt,
                needs_from,
            });
            w.mint = w.mint.min(mint);
            w.maxt = w.maxt.max(maxt);
            w.needs_from = w.needs_from.min(needs_from);
        };
        match e {
            Expr::VectorSelector(vs) => {
                let (s, en) = self.at_ms(&vs.at).map(|a| (a, a)).unwrap_or((start, end));
                let off = offset_ms(&vs.offset);
                // The lookback only finds the newest sample: a window that starts at the
                // first evaluation time answers it fully.
                add(
                    vs,
                    s.saturating_sub(off).saturating_sub(self.opts.lookback_ms),
                    en.saturating_sub(off),
                    s.saturating_sub(off),
                );
            }
            Expr::MatrixSelector(m) => {
                let (s, en) = self.at_ms(&m.vs.at).map(|a| (a, a)).unwrap_or((start, end));
                let off = offset_ms(&m.vs.offset);
                let lo = s.saturating_sub(off).saturating_sub(ms(&m.range));
                add(&m.vs, lo, en.saturating_sub(off), lo);
            }
            Expr::Subquery(sq) => {
                let (s, en) = self.at_ms(&sq.at).map(|a| (a, a)).unwrap_or((start, end));
                let off = offset_ms(&sq.offset);
                let step = self.subquery_step(sq);
                let lo = s
                    .saturating_sub(off)
                    .saturating_sub(ms(&sq.range))
                    .saturating_sub(step);
                self.windows(&sq.expr, lo, en.saturating_sub(off), out);
            }
            Expr::Aggregate(a) => {
                self.windows(&a.expr, start, end, out);
                if let Some(p) = &a.param {
                    self.windows(p, start, end, out);
                }
            }
            Expr::Unary(u) => self.windows(&u.expr, start, end, out),
            Expr::Binary(b) => {
                self.windows(&b.lhs, start, end, out);
                self.windows(&b.rhs, start, end, out);
            }
            Expr::Paren(p) => self.windows(&p.expr, start, end, out),
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.windows(a, start, end, out);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    pub fn subquery_step(&self, sq: &SubqueryExpr) -> i64 {
        match &sq.step {
            Some(d) if !d.is_zero() => ms(d),
            _ => self.opts.default_subquery_step_ms,
        }
    }

    pub fn matchers(&self, vs: &VectorSelector) -> Result<Vec<LabelMatcher>> {
        selector_matchers(vs, self.opts.compat)
    }

    /// The series of `vs` that may hold samples in `[from, to]`: none when all its samples
    /// lie outside (cheaper than a search in every series), else all.
    fn series_overlapping(&self, vs: &VectorSelector, from: i64, to: i64) -> &[SeriesSamples] {
        match self.loaded_overlapping(vs, from, to) {
            Some(l) => &l.series,
            None => &[],
        }
    }

    fn loaded_overlapping(
        &self,
        vs: &VectorSelector,
        from: i64,
        to: i64,
    ) -> Option<&LoadedSelector> {
        self.data
            .by_selector
            .get(&(vs as *const VectorSelector as usize))
            .filter(|l| l.span.is_some_and(|(lo, hi)| lo <= to && hi >= from))
    }

    /// An instant vector selector at `ts`: the newest sample within the lookback window.
    pub fn vector_at(&self, vs: &VectorSelector, ts: i64) -> Vec<Sample> {
        let t = self
            .at_ms(&vs.at)
            .unwrap_or(ts)
            .saturating_sub(offset_ms(&vs.offset));
        let lo = t.saturating_sub(self.opts.lookback_ms);
        let mut out = Vec::new();
        for s in self.series_overlapping(vs, lo, t) {
            let idx = s.samples.partition_point(|(st, _)| *st <= t);
            if idx == 0 {
                continue;
            }
            let (st, v) = s.samples[idx - 1];
            let in_window = match self.opts.compat {
                Compat::V2 => st >= lo,
                Compat::V3 => st > lo,
            };
            if !in_window || is_stale_nan(v) {
                continue;
            }
            out.push(Sample {
                labels: s.labels.clone(),
                value: v,
                t: st,
                drop_name: false,
            });
        }
        out
    }

    /// A range selector at `ts`: the series' samples in the window, staleness markers removed.
    /// With `nameless`, each series comes without its name (the caller drops it now, and
    /// names are not kept for later: see [`Ctx::drop_name`]).
    pub fn matrix_at(&self, m: &MatrixSelector, ts: i64, nameless: bool) -> Result<MatrixAt> {
        let t = self
            .at_ms(&m.vs.at)
            .unwrap_or(ts)
            .saturating_sub(offset_ms(&m.vs.offset));
        let lo = t.saturating_sub(ms(&m.range));
        let mut out = Vec::new();
        let mut held = 0usize;
        let Some(loaded) = self.loaded_overlapping(&m.vs, lo, t) else {
            return Ok(MatrixAt {
                series: out,
                start: lo,
                end: t,
                distinct: true,
            });
        };
        let drop_now = nameless && !self.opts.delayed_name_removal;
        for (s, without) in loaded.series.iter().zip(&loaded.nameless) {
            let first = match self.opts.compat {
                Compat::V2 => s.samples.partition_point(|(st, _)| *st < lo),
                Compat::V3 => s.samples.partition_point(|(st, _)| *st <= lo),
            };
            let last = s.samples.partition_point(|(st, _)| *st <= t);
            if first >= last {
                continue;
            }
            self.check_memory(held + (last - first), out.len() + 1)?;
            let points: Vec<(i64, f64)> = s.samples[first..last]
                .iter()
                .copied()
                .filter(|(_, v)| !is_stale_nan(*v))
                .collect();
            if points.is_empty() {
                continue;
            }
            // Prometheus counts a range selector's samples alone against the sample limit.
            held += points.len();
            if self.opts.max_samples > 0 && held > self.opts.max_samples {
                return Err(EvalError::TooManySamples);
            }
            let labels = if drop_now {
                without.get_or_init(|| without_name(&s.labels)).clone()
            } else {
                s.labels.clone()
            };
            out.push(Series {
                labels,
                points,
                drop_name: nameless && self.opts.delayed_name_removal,
            });
        }
        let distinct = if drop_now {
            *loaded.distinct_nameless.get_or_init(|| {
                distinct_sets(
                    loaded
                        .series
                        .iter()
                        .zip(&loaded.nameless)
                        .map(|(s, n)| n.get_or_init(|| without_name(&s.labels))),
                )
            })
        } else {
            *loaded
                .distinct
                .get_or_init(|| distinct_sets(loaded.series.iter().map(|s| &s.labels)))
        };
        Ok(MatrixAt {
            series: out,
            start: lo,
            end: t,
            distinct,
        })
    }

    /// A subquery at `ts`: the inner expression at every aligned step in the window.
    pub fn subquery_at(&mut self, sq: &SubqueryExpr, ts: i64) -> Result<(Vec<Series>, i64, i64)> {
        let base = self
            .at_ms(&sq.at)
            .unwrap_or(ts)
            .saturating_sub(offset_ms(&sq.offset));
        let lo = base.saturating_sub(ms(&sq.range));
        let step = self.subquery_step(sq);
        let mut first = step.saturating_mul(lo.div_euclid(step));
        let before_window = match self.opts.compat {
            Compat::V2 => first < lo,
            Compat::V3 => first <= lo,
        };
        if before_window {
            first = first.saturating_add(step);
        }
        // Every step yields at least one point for any series the inner expression has: a
        // subquery of more steps than the budget holds points is refused before its first.
        let step_count = if first > base {
            0
        } else {
            usize::try_from((i128::from(base) - i128::from(first)) / i128::from(step) + 1)
                .unwrap_or(usize::MAX)
        };
        self.check_budget(step_count, 1)?;
        let mut steps = StepSeries::default();
        let mut t = first;
        while t <= base {
            self.check_cancel()?;
            let v = self.eval(&sq.expr, t)?;
            let samples = step_samples(v, t, "subquery is only allowed on instant vector, got {}")?;
            self.check_budget(
                steps.points + samples.len(),
                steps.series.len() + samples.len(),
            )?;
            for s in samples {
                steps.push(t, s)?;
            }
            let Some(next) = t.checked_add(step) else {
                break;
            };
            t = next;
        }
        let out = steps.series;
        Ok((out, lo, base))
    }

    /// Removes `__name__` now, or marks it for removal at the end.
    pub fn drop_name(&self, labels: &mut Labels, flag: &mut bool) {
        if self.opts.delayed_name_removal {
            *flag = true;
        } else {
            *labels = without_name(labels);
        }
    }

    pub fn eval(&mut self, e: &Expr, ts: i64) -> Result<Value> {
        self.check_cancel()?;
        match e {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, ts),
            Expr::Unary(u) => match self.eval(&u.expr, ts)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(mut v) => {
                    for s in &mut v {
                        s.value = -s.value;
                        let mut f = s.drop_name;
                        self.drop_name(&mut s.labels, &mut f);
                        s.drop_name = f;
                    }
                    check_duplicates(&v)?;
                    Ok(Value::Vector(v))
                }
                other => Err(EvalError::BadData(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.vector_at(vs, ts))),
            Expr::MatrixSelector(m) => Ok(Value::Matrix(self.matrix_at(m, ts, false)?.series)),
            Expr::Subquery(sq) => Ok(Value::Matrix(self.subquery_at(sq, ts)?.0)),
            Expr::Call(c) => functions::call(self, c, ts),
            Expr::Aggregate(a) => aggregate::eval(self, a, ts),
            Expr::Binary(b) => binary::eval(self, b, ts),
            Expr::Extension(_) => Err(EvalError::BadData("extension expressions are not supported".into())),
        }
    }

    /// Evaluates to an instant vector or fails with the expected-type error.
    pub fn eval_vector(&mut self, e: &Expr, ts: i64) -> Result<Vec<Sample>> {
        match self.eval(e, ts)? {
            Value::Vector(v) => Ok(v),
            other => Err(type_mismatch("instant vector", &other)),
        }
    }

    pub fn eval_scalar(&mut self, e: &Expr, ts: i64) -> Result<f64> {
        match self.eval(e, ts)? {
            Value::Scalar(v) => Ok(v),
            other => Err(type_mismatch("scalar", &other)),
        }
    }

    pub fn eval_string(&mut self, e: &Expr, ts: i64) -> Result<String> {
        match self.eval(e, ts)? {
            Value::String(s) => Ok(s),
            other => Err(type_mismatch("string", &other)),
        }
    }
}

fn type_mismatch(expected: &str, got: &Value) -> EvalError {
    EvalError::BadData(format!("expected {expected}, got {}", got.type_name()))
}

/// Collects instant results step by step into series (subqueries and range queries).
#[derive(Default)]
struct StepSeries {
    by_labels: HashMap<Labels, usize>,
    series: Vec<Series>,
    points: usize,
}

impl StepSeries {
    fn push(&mut self, t: i64, s: Sample) -> Result<()> {
        self.points += 1;
        let series = &mut self.series;
        let i = *self.by_labels.entry(s.labels.clone()).or_insert_with(|| {
            series.push(Series {
                labels: s.labels.clone(),
                points: Vec::new(),
                drop_name: s.drop_name,
            });
            series.len() - 1
        });
        if series[i].points.last().is_some_and(|(pt, _)| *pt == t) {
            return Err(EvalError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
        series[i].points.push((t, s.value));
        Ok(())
    }
}

/// One step's result as samples: a vector as is, a scalar as one unlabeled sample;
/// anything else is the error `what` (with `{}` for the type).
fn step_samples(v: Value, t: i64, what: &str) -> Result<Vec<Sample>> {
    match v {
        Value::Vector(v) => Ok(v),
        Value::Scalar(f) => Ok(vec![Sample {
            labels: Labels::empty(),
            value: f,
            t,
            drop_name: false,
        }]),
        other => Err(EvalError::BadData(what.replace("{}", other.type_name()))),
    }
}

/// Drops the metric name, and with it the `__type__`/`__unit__` labels Prometheus's
/// type-and-unit feature attaches (they describe the name).
pub(super) fn without_name(labels: &Labels) -> Labels {
    labels.without_any(&["__name__", "__type__", "__unit__"])
}

/// A range selector's series at one time (see [`Ctx::matrix_at`]).
pub(super) struct MatrixAt {
    pub series: Vec<Series>,
    pub start: i64,
    pub end: i64,
    /// No two of the selector's series (all of them, not only these) have equal label sets,
    /// as given: a result with one element per series needs no duplicate check.
    pub distinct: bool,
}

/// Whether no two of `sets` are equal.
fn distinct_sets<'s>(sets: impl Iterator<Item = &'s Labels>) -> bool {
    let mut seen = HashSet::new();
    sets.into_iter().all(|l| seen.insert(l))
}

/// Prometheus's "vector cannot contain metrics with the same labelset". With delayed name
/// removal the names are still present here and part of the identity; the check after
/// their removal happens in `finish_vector`.
pub(super) fn check_duplicates(v: &[Sample]) -> Result<()> {
    if v.len() < 2 {
        return Ok(());
    }
    let mut seen = HashSet::with_capacity(v.len());
    for s in v {
        if !seen.insert(&s.labels) {
            return Err(EvalError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

fn finish_vector(mut v: Vec<Sample>, delayed: bool) -> Result<Vec<Sample>> {
    if delayed {
        for s in &mut v {
            if s.drop_name {
                s.labels = without_name(&s.labels);
                s.drop_name = false;
            }
        }
        check_duplicates(&v)?;
    }
    Ok(v)
}

fn finish_matrix(mut m: Vec<Series>, delayed: bool) -> Result<Vec<Series>> {
    if delayed {
        for s in &mut m {
            if s.drop_name {
                s.labels = without_name(&s.labels);
                s.drop_name = false;
            }
        }
    }
    let mut seen = HashSet::with_capacity(m.len());
    for s in &m {
        if !seen.insert(s.labels.clone()) {
            return Err(EvalError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(m)
}

/// One selector's window while a query is gathered.
struct Window<'e> {
    vs: &'e VectorSelector,
    mint: i64,
    maxt: i64,
    needs_from: i64,
}

/// One selector of a query and the window it reads.
#[derive(Debug, Clone)]
pub struct Selection {
    pub matchers: Vec<LabelMatcher>,
    /// Samples in `[mint, maxt]` (ms) are read.
    pub mint: i64,
    pub maxt: i64,
    /// The answer is whole only if the source held samples from this time on: a range's
    /// start, or for an instant selector the first evaluation time (its lookback only looks
    /// for the newest sample).
    pub needs_from: i64,
}

/// Every selector of `expr` with the window an evaluation over `[start, end]` reads from it:
/// what a query needs from other agents before it can be evaluated here.
pub fn selections(
    expr: &Expr,
    start: i64,
    end: i64,
    opts: &EvalOptions,
) -> std::result::Result<Vec<Selection>, EvalError> {
    struct Nothing;
    impl Queryable for Nothing {
        fn select(
            &self,
            _: &[LabelMatcher],
            _: i64,
            _: i64,
        ) -> std::result::Result<Vec<SeriesSamples>, String> {
            Ok(Vec::new())
        }
    }
    let never = || false;
    let ctx = Ctx::new(&Nothing, opts, &never, start, end);
    let mut windows = HashMap::new();
    ctx.windows(expr, start, end, &mut windows);
    windows
        .into_values()
        .map(|w| {
            Ok(Selection {
                matchers: ctx.matchers(w.vs)?,
                mint: w.mint,
                maxt: w.maxt,
                needs_from: w.needs_from,
            })
        })
        .collect()
}

/// Evaluates `expr` at one instant (ms).
pub fn instant_query(
    q: &dyn Queryable,
    expr: &Expr,
    ts: i64,
    opts: &EvalOptions,
    cancel: &dyn Fn() -> bool,
) -> std::result::Result<Value, EvalError> {
    instant_query_loaded(q, expr, ts, opts, cancel).map(|(v, _)| v)
}

/// [`instant_query`], with what it loaded: explaining the answer reads that again instead of
/// selecting from the store a second time.
pub fn instant_query_loaded(
    q: &dyn Queryable,
    expr: &Expr,
    ts: i64,
    opts: &EvalOptions,
    cancel: &dyn Fn() -> bool,
) -> std::result::Result<(Value, Loaded), EvalError> {
    let mut ctx = Ctx::new(q, opts, cancel, ts, ts);
    ctx.preload(expr, ts, ts)?;
    let delayed = opts.delayed_name_removal;
    let v = match ctx.eval(expr, ts)? {
        Value::Vector(v) => Value::Vector(finish_vector(v, delayed)?),
        Value::Matrix(m) => Value::Matrix(finish_matrix(m, delayed)?),
        other => other,
    };
    Ok((v, ctx.data))
}

/// Evaluates `expr` at every step from `start` to `end` (ms); returns a matrix.
pub fn range_query(
    q: &dyn Queryable,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    opts: &EvalOptions,
    cancel: &dyn Fn() -> bool,
) -> std::result::Result<Value, EvalError> {
    if step <= 0 {
        return Err(EvalError::BadData(
            "zero or negative query resolution step widths are not accepted".into(),
        ));
    }
    if end < start {
        return Err(EvalError::BadData(
            "end timestamp must not be before start time".into(),
        ));
    }
    match expr.value_type() {
        promql_parser::parser::value::ValueType::Vector
        | promql_parser::parser::value::ValueType::Scalar => {}
        other => {
            let name = match other {
                promql_parser::parser::value::ValueType::Matrix => "range vector",
                _ => "string",
            };
            return Err(EvalError::BadData(format!(
                "invalid expression type \"{name}\" for range query, must be Scalar or instant Vector"
            )));
        }
    }
    let mut ctx = Ctx::new(q, opts, cancel, start, end);
    ctx.preload(expr, start, end)?;
    let step_count = usize::try_from((i128::from(end) - i128::from(start)) / i128::from(step) + 1)
        .unwrap_or(usize::MAX);
    ctx.check_budget(step_count, 1)?;
    let mut steps = StepSeries::default();
    let mut t = start;
    while t <= end {
        ctx.check_cancel()?;
        let samples = step_samples(
            ctx.eval(expr, t)?,
            t,
            "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
        )?;
        ctx.check_budget(
            steps.points + samples.len(),
            steps.series.len() + samples.len(),
        )?;
        for mut s in samples {
            if opts.delayed_name_removal && s.drop_name {
                s.labels = without_name(&s.labels);
                s.drop_name = false;
            }
            steps.push(t, s)?;
        }
        let Some(next) = t.checked_add(step) else {
            break;
        };
        t = next;
    }
    let mut out = steps.series;
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Value::Matrix(out))
}
