//! Prometheus's regexes: RE2 syntax, anchored at both ends, compiled within a memory bound.
//! Relabel rules and PromQL matchers both compile theirs here.

use regex::{Regex, RegexBuilder};

/// Most memory one compiled regex (and, separately, its lazy DFA cache) may take. The regex
/// crate's own default is 10 MiB, which 64 matchers of one query would turn into 640 MiB.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A regex builder with the size limits above.
pub fn regex_builder(pattern: &str) -> RegexBuilder {
    let mut b = RegexBuilder::new(pattern);
    b.size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT);
    b
}

/// Compiles `re` anchored as `^(?s:re)$`, or `^(?:re)$` without `dot_all` (Prometheus 2's
/// PromQL matchers, where `.` does not match a newline).
pub fn compile_anchored(re: &str, dot_all: bool) -> Result<Regex, String> {
    let anchored = if dot_all {
        format!("^(?s:{re})$")
    } else {
        format!("^(?:{re})$")
    };
    regex_builder(&anchored).build().map_err(|e| {
        let text = e.to_string();
        let reason = text
            .lines()
            .last()
            .unwrap_or("")
            .trim_start_matches("error: ")
            .to_string();
        format!("invalid regular expression {re:?}: {reason}")
    })
}
