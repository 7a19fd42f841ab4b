//! What a query may ask before anything parses, recurses or compiles it.
//!
//! The parser, the evaluator, the fan-out's selector walk and even dropping the syntax tree
//! recurse once per level of nesting, on the native stack: a query of 200,000 parentheses
//! would overflow it and abort the process, and every query in flight with it. The parser
//! also compiles each regex matcher as it goes. So the query text is scanned first, without
//! recursion: an upper bound on the tree's depth, the number of regex matchers and the size
//! each compiles to are checked here, and a query over any of them is refused as bad data.

use regex::RegexBuilder;

/// Most levels of nesting a query may have (counted as below). Prometheus's own test files
/// and Flagger's or Grafana's queries stay in the tens; the evaluator uses well under 2 KiB of
/// stack per level, so this fits the 2 MiB of any runtime thread several times over.
pub const MAX_NESTING: usize = 256;
/// Most regex matchers (`=~`, `!~`) in one query.
pub const MAX_REGEX_MATCHERS: usize = 64;
/// Most bytes of one regex matcher's pattern, and of all of a query's patterns.
pub const MAX_REGEX_BYTES: usize = 32 << 10;
pub const MAX_QUERY_REGEX_BYTES: usize = 128 << 10;
pub use crate::model::regex::{regex_builder, REGEX_SIZE_LIMIT};

/// Below this compiled size a regex is light: cheap to keep in a cache of parsed queries.
pub const LIGHT_REGEX_SIZE: usize = 64 << 10;

/// What the scan found out about a query within the limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryShape {
    pub regexes: usize,
    /// Some regex compiles to more than [`LIGHT_REGEX_SIZE`] (but within the limit).
    pub heavy_regex: bool,
}

impl QueryShape {
    /// An upper bound on what the parsed query holds: its nodes and strings, and the regexes
    /// the parser compiled (each light one at most [`LIGHT_REGEX_SIZE`]).
    pub fn parsed_bytes(&self, query_len: usize) -> usize {
        let regexes = if self.heavy_regex {
            self.regexes * REGEX_SIZE_LIMIT
        } else {
            self.regexes * LIGHT_REGEX_SIZE
        };
        query_len * 64 + regexes
    }
}

/// Checks `query` against the limits above. The depth bound is the deepest parenthesis
/// nesting plus every operator and every `[` in the query: an expression node nests only in
/// its parentheses, or under a unary or binary operator, or under a range or subquery
/// bracket, so no tree built from the text is deeper. Strings, comments and matcher braces
/// count nothing; a regex matcher's pattern is compiled once, with the size limits, so that a
/// pattern too large is refused before the parser compiles it with the regex crate's larger
/// defaults.
pub fn check(query: &str) -> Result<QueryShape, String> {
    let b = query.as_bytes();
    let mut i = 0;
    let mut parens = 0usize;
    let mut deepest = 0usize;
    let mut nodes = 0usize;
    let mut in_braces = false;
    let mut regex_next = false;
    let mut regexes = 0usize;
    let mut regex_bytes = 0usize;
    let mut heavy_regex = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                let (end, text) = string_literal(query, i);
                if regex_next {
                    regex_next = false;
                    regexes += 1;
                    regex_bytes += text.len();
                    heavy_regex |= check_regex(&text, regexes, regex_bytes)?;
                }
                i = end;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'{' => in_braces = true,
            b'}' => in_braces = false,
            b'=' | b'!' if in_braces && b.get(i + 1) == Some(&b'~') => {
                regex_next = true;
                i += 1;
            }
            // Matchers and label names: nothing in braces nests.
            _ if in_braces => {}
            b'(' => {
                parens += 1;
                deepest = deepest.max(parens);
            }
            b')' => parens = parens.saturating_sub(1),
            b'[' => nodes += 1,
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' => nodes += 1,
            b'=' | b'!' if b.get(i + 1) == Some(&b'=') => {
                nodes += 1;
                i += 1;
            }
            b'0'..=b'9' | b'.' => {
                // A number or a duration: `1e-3` holds a sign that is no operator.
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_')
                {
                    if matches!(b[i], b'e' | b'E') && matches!(b.get(i + 1), Some(b'+' | b'-')) {
                        i += 1;
                    }
                    i += 1;
                }
                continue;
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &query[start..i];
                if ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    nodes += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let depth = deepest + nodes;
    if depth > MAX_NESTING {
        return Err(format!(
            "query is nested too deeply: up to {depth} levels of parentheses, operators and range brackets, the limit is {MAX_NESTING}"
        ));
    }
    Ok(QueryShape {
        regexes,
        heavy_regex,
    })
}

/// Whether the pattern is heavy (compiles above [`LIGHT_REGEX_SIZE`]); an error when it is
/// over a limit.
fn check_regex(pattern: &str, count: usize, total: usize) -> Result<bool, String> {
    if count > MAX_REGEX_MATCHERS {
        return Err(format!(
            "query has more than {MAX_REGEX_MATCHERS} regex matchers"
        ));
    }
    if pattern.len() > MAX_REGEX_BYTES {
        return Err(format!(
            "regex matcher of {} bytes is over the limit of {MAX_REGEX_BYTES}",
            pattern.len()
        ));
    }
    if total > MAX_QUERY_REGEX_BYTES {
        return Err(format!(
            "query's regex matchers hold more than {MAX_QUERY_REGEX_BYTES} bytes"
        ));
    }
    // Only size counts here: a pattern that does not compile is the parser's to report,
    // with its own wording.
    let anchored = format!("^(?s:{pattern})$");
    let light = RegexBuilder::new(&anchored)
        .size_limit(LIGHT_REGEX_SIZE)
        .build();
    if !matches!(light, Err(regex::Error::CompiledTooBig(_))) {
        return Ok(false);
    }
    match regex_builder(&anchored).build() {
        Err(regex::Error::CompiledTooBig(limit)) => Err(format!(
            "regex matcher compiles to more than {limit} bytes: {}",
            shorten(pattern)
        )),
        _ => Ok(true),
    }
}

fn shorten(s: &str) -> String {
    if s.len() <= 64 {
        return format!("{s:?}");
    }
    let mut end = 64;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…", &s[..end])
}

/// The end of the string literal opening at `start`, and its text with the escapes a regex
/// cares about undone (close enough to size it; the parser decides what is valid).
fn string_literal(query: &str, start: usize) -> (usize, String) {
    let b = query.as_bytes();
    let quote = b[start];
    let mut i = start + 1;
    let mut text = String::new();
    let mut from = i;
    while i < b.len() && b[i] != quote {
        if b[i] == b'\\' && quote != b'`' {
            text.push_str(&query[from..i]);
            match b.get(i + 1) {
                Some(b'n') => text.push('\n'),
                Some(b't') => text.push('\t'),
                Some(&c) if c.is_ascii() => text.push(c as char),
                _ => {}
            }
            i = (i + 2).min(b.len());
            while i < b.len() && !query.is_char_boundary(i) {
                i += 1;
            }
            from = i;
            continue;
        }
        i += 1;
    }
    text.push_str(&query[from..i.min(b.len())]);
    ((i + 1).min(b.len()), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_queries_are_refused_before_parsing() {
        let deep = format!("{}1{}", "(".repeat(200_000), ")".repeat(200_000));
        assert!(check(&deep)
            .expect_err("deep")
            .contains("nested too deeply"));
        let chain = format!("1{}", "+1".repeat(300));
        assert!(check(&chain).is_err());
        let unary = format!("{}1", "-".repeat(300));
        assert!(check(&unary).is_err());
        let subqueries = format!("x{}", "[1m:]".repeat(300));
        assert!(check(&subqueries).is_err());
        // Wide is fine: siblings do not add up their parentheses.
        let wide = vec!["sum(rate(x[1m]))"; 60].join(" + ");
        assert!(check(&wide).is_ok(), "{wide}");
    }

    #[test]
    fn flagger_queries_pass() {
        for q in [
            r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload="podinfo",response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload="podinfo"}[1m])) * 100"#,
            r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload=~"podinfo"}[1m])) by (le))"#,
            "1e-3 * x # a comment with ((((",
            r#"x{a="((((((", b!="]]]"}"#,
        ] {
            assert!(check(q).is_ok(), "{q}");
        }
        // Strings and comments hold no nesting.
        let hidden = format!("x{{a=\"{}\"}}", "(".repeat(10_000));
        assert!(check(&hidden).is_ok());
    }

    #[test]
    fn regex_limits() {
        let many = (0..65)
            .map(|i| format!("x{{a=~\"v{i}.*\"}}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let e = check(&many).expect_err("too many");
        assert!(e.contains("regex matchers"), "{e}");
        let long = format!("x{{a=~\"{}\"}}", "a".repeat(MAX_REGEX_BYTES + 1));
        assert!(check(&long).expect_err("long").contains("over the limit"));
        let big = r#"x{a=~".{1000}.{1000}"}"#;
        assert!(check(big)
            .expect_err("big")
            .contains("compiles to more than"));
        assert_eq!(
            check(r#"x{a!~"(a|b|c)\\d+"}"#),
            Ok(QueryShape {
                regexes: 1,
                heavy_regex: false
            })
        );
    }
}
