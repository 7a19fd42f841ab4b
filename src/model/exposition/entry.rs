//! What the parser hands out: the format, a sample borrowed from the body, the entry of
//! one line, and a parse error with its line.

use std::borrow::Cow;

use crate::model::MetricKind;

/// Which exposition format a body is in, chosen from the scrape's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` and anything unrecognised.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// Picks the format the way Prometheus does: OpenMetrics only when the server says so.
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        match content_type {
            Some(ct) if ct.trim_start().starts_with("application/openmetrics-text") => {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }
}

/// A parse failure, with the 1-based line it happened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Byte range of one label inside the body.
#[derive(Debug, Clone, Copy)]
pub struct LabelSpan {
    pub name: (usize, usize),
    pub value: (usize, usize),
    /// The raw value holds a backslash and must be unescaped.
    pub escaped: bool,
}

/// One sample line, borrowed from the body.
#[derive(Debug, Clone, Copy)]
pub struct SampleRef<'a> {
    /// `name{labels}` exactly as written: the scrape-cache key.
    pub series: &'a [u8],
    pub name: &'a str,
    pub value: f64,
    /// Milliseconds since the epoch, when the line carried a timestamp.
    pub timestamp_ms: Option<i64>,
    /// The line carried an exemplar (parsed and validated, not kept).
    pub has_exemplar: bool,
    /// `series` and `name` were taken from the caller's guess (`Parser::expect_series`),
    /// not scanned: they are right only if `series` is one the caller has seen before,
    /// else it must `reparse` the line.
    pub guessed: bool,
}

/// What one line of the body said.
#[derive(Debug, Clone)]
pub enum Entry<'a> {
    Help { name: &'a str, text: Cow<'a, str> },
    Type { name: &'a str, kind: MetricKind },
    Unit { name: &'a str, unit: &'a str },
    Sample(SampleRef<'a>),
}
