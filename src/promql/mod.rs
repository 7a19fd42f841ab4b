//! The PromQL evaluator. Pure: it takes an expression parsed by `promql-parser`, something
//! [`Queryable`], the evaluation time(s) and options, and returns Prometheus-typed values.
//! No HTTP, no clock (cancellation is a callback the caller provides), no globals.
//!
//! Semantics follow Prometheus's engine for float samples: 5 m lookback, staleness markers,
//! `offset` and `@`, subqueries aligned to absolute step multiples, extrapolated rates, set
//! and vector matching. [`Compat`] picks the 2.x or 3.x rules where they differ (range
//! boundaries, regex dot-all, name removal). Native histograms are out of scope.

mod aggregate;
mod binary;
pub mod bounds;
mod eval;
mod explain;
mod functions;

use regex::Regex;
use std::fmt;

pub use eval::{instant_query, instant_query_loaded, range_query, selections, Loaded, Selection};
pub use explain::{explain, explain_loaded, is_thin, wanted as explanation_selections};

use crate::model::Labels;

/// Which Prometheus generation's semantics to follow where they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compat {
    /// Prometheus 2.x: range selectors and lookback include their left edge; `.` in regexes
    /// does not match a newline.
    V2,
    /// Prometheus 3.x: left-open ranges, dot-all regexes.
    #[default]
    V3,
}

/// Evaluation settings.
#[derive(Clone)]
pub struct EvalOptions {
    pub lookback_ms: i64,
    pub compat: Compat,
    /// Keep `__name__` until the end of evaluation (Prometheus's
    /// `promql-delayed-name-removal` feature).
    pub delayed_name_removal: bool,
    /// Step for subqueries without one (Prometheus's evaluation interval).
    pub default_subquery_step_ms: i64,
    /// Most samples a query may hold at once; 0 means no limit.
    pub max_samples: usize,
    /// Most bytes a query's evaluation may hold at once (samples loaded, result points and
    /// series, as counted by [`memory_cost`]); 0 means no limit. Checked before the memory is
    /// taken, so a query over it fails without having grown the process.
    pub max_memory: usize,
    /// Rate extrapolation as Prometheus before 2.51: the counter zero point is checked
    /// before the half-interval rule (prometheus/prometheus#13725 changed the order).
    pub legacy_rate_extrapolation: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            lookback_ms: 5 * 60 * 1000,
            compat: Compat::V3,
            delayed_name_removal: false,
            default_subquery_step_ms: 60_000,
            max_samples: 50_000_000,
            max_memory: 0,
            legacy_rate_extrapolation: false,
        }
    }
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
    /// Timestamp of the underlying sample (what `timestamp()` reports for a selector).
    pub t: i64,
    /// Set when the metric name is to be dropped (delayed name removal).
    pub drop_name: bool,
}

/// One series of a range vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
    pub drop_name: bool,
}

/// A PromQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// Why a query failed. The kind maps to the HTTP API's `errorType`.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// The query is wrong (`bad_data`).
    BadData(String),
    /// Evaluation failed (`execution`).
    Execution(String),
    /// The caller's cancellation fired (`timeout`).
    Canceled,
    /// Too many samples (`execution`, Prometheus's wording).
    TooManySamples,
    /// The query would hold more memory than its budget (`execution`); the budget in bytes.
    OverMemoryBudget(usize),
}

/// What `points` samples in `series` series cost while a query holds them: 16 bytes a
/// sample, and a series' label set and vector headers.
pub fn memory_cost(points: usize, series: usize) -> usize {
    points
        .saturating_mul(16)
        .saturating_add(series.saturating_mul(128))
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::BadData(m) | EvalError::Execution(m) => f.write_str(m),
            EvalError::Canceled => f.write_str("query timed out in expression evaluation"),
            EvalError::TooManySamples => f.write_str(
                "query processing would load too many samples into memory in query execution",
            ),
            EvalError::OverMemoryBudget(limit) => write!(
                f,
                "query processing would use more than {} MiB of memory, its budget (max_query_memory)",
                limit >> 20
            ),
        }
    }
}

impl std::error::Error for EvalError {}

/// Matcher operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Equal,
    NotEqual,
    Re,
    NotRe,
}

/// A label matcher with its regex compiled the way Prometheus does.
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    pub name: String,
    pub kind: MatchKind,
    pub value: String,
    pattern: Pattern,
}

/// How a regex matcher is evaluated. Common shapes skip the regex engine, as Prometheus's
/// FastRegexMatcher does: Flagger's `destination_workload=~"podinfo"` is a plain literal.
#[derive(Debug, Clone)]
enum Pattern {
    None,
    /// The regex is a literal string.
    Literal(String),
    /// `a|b|c` of literals.
    Set(Vec<String>),
    /// `prefix.*`; `dot_all` says whether `.` also matches a newline.
    Prefix {
        prefix: String,
        dot_all: bool,
    },
    Regex(Regex),
}

fn is_literal(s: &str) -> bool {
    !s.is_empty()
        && !s.contains([
            '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$',
        ])
}

fn analyse(re: &str, compat: Compat) -> Option<Pattern> {
    if is_literal(re) {
        return Some(Pattern::Literal(re.to_string()));
    }
    if re.contains('|') && re.split('|').all(is_literal) {
        return Some(Pattern::Set(re.split('|').map(str::to_string).collect()));
    }
    if let Some(prefix) = re.strip_suffix(".*") {
        if prefix.is_empty() || is_literal(prefix) {
            return Some(Pattern::Prefix {
                prefix: prefix.to_string(),
                dot_all: compat == Compat::V3,
            });
        }
    }
    None
}

impl Pattern {
    fn is_match(&self, v: &str) -> bool {
        match self {
            Pattern::None => false,
            Pattern::Literal(l) => v == l,
            Pattern::Set(set) => set.iter().any(|x| x == v),
            Pattern::Prefix { prefix, dot_all } => {
                v.starts_with(prefix.as_str()) && (*dot_all || !v[prefix.len()..].contains('\n'))
            }
            Pattern::Regex(r) => r.is_match(v),
        }
    }
}

/// Compiles a PromQL regex, anchored; dot-all in 3.x.
pub fn compile_regex(re: &str, compat: Compat) -> Result<Regex, String> {
    crate::model::regex::compile_anchored(re, compat == Compat::V3)
}

impl LabelMatcher {
    pub fn new(name: &str, kind: MatchKind, value: &str) -> Result<Self, String> {
        Self::with_compat(name, kind, value, Compat::V3)
    }

    pub fn with_compat(
        name: &str,
        kind: MatchKind,
        value: &str,
        compat: Compat,
    ) -> Result<Self, String> {
        let pattern = match kind {
            MatchKind::Re | MatchKind::NotRe => match analyse(value, compat) {
                Some(p) => p,
                None => Pattern::Regex(compile_regex(value, compat)?),
            },
            _ => Pattern::None,
        };
        Ok(LabelMatcher {
            name: name.to_string(),
            kind,
            value: value.to_string(),
            pattern,
        })
    }

    /// Does a label value (empty when absent) satisfy the matcher?
    pub fn matches(&self, v: &str) -> bool {
        match self.kind {
            MatchKind::Equal => v == self.value,
            MatchKind::NotEqual => v != self.value,
            MatchKind::Re => self.pattern.is_match(v),
            MatchKind::NotRe => !self.pattern.is_match(v),
        }
    }

    /// The value of an equality matcher (or of a literal regex), usable for postings lookups.
    pub fn equal_value(&self) -> Option<&str> {
        match (self.kind, &self.pattern) {
            (MatchKind::Equal, _) => Some(self.value.as_str()),
            (MatchKind::Re, Pattern::Literal(l)) => Some(l.as_str()),
            _ => None,
        }
    }
}

/// Series with samples, as a store returns them (time-ordered, staleness markers included).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// Where samples come from.
pub trait Queryable {
    /// Series matching all matchers with their samples in `[mint, maxt]` (milliseconds).
    fn select(
        &self,
        matchers: &[LabelMatcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, String>;

    /// As `select`, but `None` as soon as what it gathered would cost more than `max_bytes`
    /// ([`memory_cost`]; 0 means no limit). Sources that hold many series override it to
    /// stop gathering there rather than after.
    fn select_within(
        &self,
        matchers: &[LabelMatcher],
        mint: i64,
        maxt: i64,
        max_bytes: usize,
    ) -> Result<Option<Vec<SeriesSamples>>, String> {
        let out = self.select(matchers, mint, maxt)?;
        let points = out.iter().map(|s| s.samples.len()).sum();
        Ok((max_bytes == 0 || memory_cost(points, out.len()) <= max_bytes).then_some(out))
    }
}

/// Parses a query, once [`bounds::check`] has found it within the limits that keep parsing
/// and evaluation from recursing or compiling without bound. promql-parser panics on some inputs (a duration literal too large for a
/// `Duration`, found by fuzzing): such a panic becomes a parse error, so a hostile query
/// costs its caller an error message, not the connection.
pub fn parse(query: &str) -> Result<promql_parser::parser::Expr, String> {
    parse_checked(query).map(|(e, _)| e)
}

/// [`parse`], with what the bounds check found out about the query.
pub fn parse_checked(
    query: &str,
) -> Result<(promql_parser::parser::Expr, bounds::QueryShape), String> {
    let shape = bounds::check(query)?;
    parse_unchecked(query).map(|e| (e, shape))
}

fn parse_unchecked(query: &str) -> Result<promql_parser::parser::Expr, String> {
    match std::panic::catch_unwind(|| promql_parser::parser::parse(query)) {
        Ok(parsed) => parsed,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the parser failed".into());
            Err(format!("unparseable query: {why}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_panics_become_errors() {
        for q in [
            "x offset -50666666666666666666666666666666666",
            "x @ 0 offset -50666666666666666666666666666666666",
            "x[50666666666666666666666666666666666]",
        ] {
            let e = parse(q).expect_err("refused");
            assert!(e.contains("unparseable query: cannot convert"), "{q}: {e}");
        }
        assert!(parse("sum(rate(x[1m]))").is_ok());
    }

    #[test]
    fn fast_paths_agree_with_the_regex() {
        for (re, vals) in [
            ("podinfo-canary", vec!["podinfo-canary", "podinfo", "x"]),
            ("a|bc|", vec!["a", "bc", "", "abc"]),
            ("5.*", vec!["503", "5", "200", "5\n1"]),
            (".*", vec!["", "x", "a\nb"]),
            ("a.b", vec!["axb", "a\nb"]),
        ] {
            for compat in [Compat::V2, Compat::V3] {
                let fast = LabelMatcher::with_compat("l", MatchKind::Re, re, compat).expect("ok");
                let slow = compile_regex(re, compat).expect("ok");
                for v in &vals {
                    assert_eq!(
                        fast.matches(v),
                        slow.is_match(v),
                        "{re:?} on {v:?} ({compat:?})"
                    );
                }
            }
        }
    }

    #[test]
    fn regex_dot_all_by_compat() {
        let v3 = LabelMatcher::with_compat("a", MatchKind::Re, "x.y", Compat::V3).expect("ok");
        let v2 = LabelMatcher::with_compat("a", MatchKind::Re, "x.y", Compat::V2).expect("ok");
        assert!(v3.matches("x\ny"));
        assert!(!v2.matches("x\ny"));
        assert!(!v3.matches("xxy1"), "anchored");
    }
}
