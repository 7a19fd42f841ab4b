//! The exposition-format parser: Prometheus text 0.0.4 and OpenMetrics 1.0.
//!
//! Byte-level and allocation-free on the hot path: a sample is returned as offsets into the
//! body (metric name, label name/value spans), values are parsed in place, and label values
//! are unescaped only when they contain a `\`. The raw series bytes (`name{labels}`) are
//! handed out too, so the scrape loop can use them as a cache key and skip label work for
//! series it has seen before.
//!
//! `strict` mode adds the OpenMetrics 1.0 semantic rules (family grouping, histogram bucket
//! order, counter signs, metadata placement...). Prometheus does not enforce those while
//! scraping, so the scrape path runs the syntax checks only; `strict` backs `validate_openmetrics`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

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

/// Streaming parser over one scrape body.
pub struct Parser<'a> {
    body: &'a [u8],
    pos: usize,
    line: usize,
    format: Format,
    labels: Vec<LabelSpan>,
    seen_eof: bool,
    strict: Option<Box<StrictState>>,
    /// Label sets are only delimited while scanning; `take_labels` parses them on request.
    lazy_labels: bool,
    /// The last sample's label set not parsed yet: (line start, line end, index after `{`,
    /// index after `}`) as body offsets, and whether the line is OpenMetrics.
    pending: Option<(usize, usize, usize, usize, bool)>,
    /// Lengths of the series and of its name that the next sample is expected to have.
    guess: Option<(usize, usize)>,
    /// Start and end (body offsets) of the last sample's line, for `reparse`.
    last_sample_line: (usize, usize),
    /// The last sample's name: the next sample's name usually has the same bytes (a
    /// histogram's buckets), and then is not checked again.
    last_name: &'a str,
}

impl<'a> Parser<'a> {
    pub fn new(body: &'a [u8], format: Format) -> Self {
        Parser {
            body,
            pos: 0,
            line: 0,
            format,
            labels: Vec::with_capacity(32),
            seen_eof: false,
            strict: None,
            lazy_labels: false,
            pending: None,
            guess: None,
            last_sample_line: (0, 0),
            last_name: "",
        }
    }

    /// A parser that only finds where each label set ends. The scrape loop knows most series
    /// from earlier scrapes by their exact bytes, which were validated when first seen, so it
    /// asks for labels (`take_labels`, which validates them) only for series new to it.
    pub fn with_lazy_labels(mut self) -> Self {
        self.lazy_labels = self.strict.is_none();
        self
    }

    /// Tells the parser that the next sample probably starts with a series of `series_len`
    /// bytes whose name is `name_len` bytes: it then skips scanning them and marks the sample
    /// `guessed`. A target exposes the same series in the same order every scrape, and
    /// scanning a label set for its end was the parser's largest cost. Only with lazy labels.
    pub fn expect_series(&mut self, series_len: usize, name_len: usize) {
        if self.lazy_labels {
            self.guess = Some((series_len, name_len));
        }
    }

    /// Parses the line of the sample returned last again, scanning it: for a guessed
    /// series the caller has not seen before.
    pub fn reparse(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        let (start, end) = self.last_sample_line;
        let line = &self.body[start..end];
        self.guess = None;
        match self.format {
            Format::Text => self.parse_text_line(start, line),
            Format::OpenMetrics => self.parse_om_line(start, line),
        }
    }

    /// Parses the labels of the sample returned last if that was deferred; `labels` and
    /// `label_pairs` then hold them.
    pub fn take_labels(&mut self) -> Result<(), ParseError> {
        if let Some((line_start, line_end, open, close, om)) = self.pending.take() {
            let body = self.body;
            let line = &body[line_start..line_end];
            self.labels.clear();
            let end = self.parse_labels(line_start, line, open - line_start, om)?;
            if line_start + end != close {
                return self.err("malformed label set");
            }
        }
        Ok(())
    }

    /// A parser that also enforces the OpenMetrics 1.0 semantic rules.
    pub fn new_strict(body: &'a [u8]) -> Self {
        let mut p = Parser::new(body, Format::OpenMetrics);
        p.strict = Some(Box::default());
        p
    }

    /// Line number of the entry returned last (1-based).
    pub fn line(&self) -> usize {
        self.line
    }

    /// Labels of the sample returned last, in written order.
    pub fn labels(&self) -> &[LabelSpan] {
        &self.labels
    }

    /// The labels of the sample returned last, as owned (name, value) pairs in written order.
    pub fn label_pairs(&self) -> Vec<(String, String)> {
        self.labels
            .iter()
            .map(|l| {
                (
                    self.label_name(l).to_string(),
                    self.label_value(l).into_owned(),
                )
            })
            .collect()
    }

    pub fn label_name(&self, l: &LabelSpan) -> &'a str {
        // Label names are validated ASCII.
        std::str::from_utf8(&self.body[l.name.0..l.name.1]).unwrap_or("")
    }

    pub fn label_value(&self, l: &LabelSpan) -> Cow<'a, str> {
        let raw = std::str::from_utf8(&self.body[l.value.0..l.value.1]).unwrap_or("");
        if l.escaped {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        }
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }

    /// Returns the next entry, `Ok(None)` at the end of the body.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        loop {
            if self.pos >= self.body.len() {
                if self.format == Format::OpenMetrics && !self.seen_eof {
                    self.line += 1;
                    return self.err("OpenMetrics body does not end with '# EOF'");
                }
                if let Some(strict) = self.strict.as_mut() {
                    if let Err(m) = strict.finish() {
                        return self.err(m);
                    }
                }
                return Ok(None);
            }
            let start = self.pos;
            let end = match memchr::memchr(b'\n', &self.body[start..]) {
                Some(i) => start + i,
                None => self.body.len(),
            };
            self.pos = end + 1;
            self.line += 1;
            if self.seen_eof {
                return self.err("content after '# EOF'");
            }
            let line = &self.body[start..end];
            let entry = match self.format {
                Format::Text => self.parse_text_line(start, line)?,
                Format::OpenMetrics => self.parse_om_line(start, line)?,
            };
            if let Some(e) = entry {
                if self.strict.is_some() {
                    self.check_strict(&e)?;
                }
                return Ok(Some(e));
            }
        }
    }

    fn check_strict(&mut self, e: &Entry<'a>) -> Result<(), ParseError> {
        let labels = match e {
            Entry::Sample(_) => self.label_pairs(),
            _ => Vec::new(),
        };
        let strict = self.strict.as_mut().expect("checked by caller");
        let r = strict.entry(e, &labels);
        match r {
            Ok(()) => Ok(()),
            Err(m) => self.err(m),
        }
    }

    // ---- Prometheus text format 0.0.4 -------------------------------------------------

    fn parse_text_line(
        &mut self,
        base: usize,
        line: &'a [u8],
    ) -> Result<Option<Entry<'a>>, ParseError> {
        let mut i = skip_blank(line, 0);
        if i == line.len() {
            return Ok(None);
        }
        if line[i] == b'#' {
            i = skip_blank(line, i + 1);
            let (word, after) = take_word(line, i);
            if word != b"HELP" && word != b"TYPE" {
                return Ok(None); // a plain comment
            }
            if after == i + 4 && after < line.len() && line[after] != b' ' && line[after] != b'\t' {
                return Ok(None); // e.g. "#HELPER": a comment
            }
            let ns = skip_blank(line, after);
            let ne = scan_metric_name(line, ns);
            if ne == ns {
                return self.err(format!(
                    "invalid metric name in {} line",
                    String::from_utf8_lossy(word)
                ));
            }
            let name = ascii(&line[ns..ne]);
            if ne < line.len() && line[ne] != b' ' && line[ne] != b'\t' {
                return self.err("invalid metric name in metadata line");
            }
            let rest_start = skip_blank(line, ne);
            let rest = &line[rest_start..];
            if word == b"HELP" {
                let text = match std::str::from_utf8(rest) {
                    Ok(t) => t,
                    Err(_) => return self.err("HELP text is not valid UTF-8"),
                };
                let text = if text.contains('\\') {
                    Cow::Owned(unescape_help(text))
                } else {
                    Cow::Borrowed(text)
                };
                return Ok(Some(Entry::Help { name, text }));
            }
            let kind_str = trim_end_blank(rest);
            let kind = match kind_str {
                b"counter" => MetricKind::Counter,
                b"gauge" => MetricKind::Gauge,
                b"histogram" => MetricKind::Histogram,
                b"summary" => MetricKind::Summary,
                b"untyped" => MetricKind::Unknown,
                _ => {
                    return self.err(format!(
                        "invalid metric type {:?}",
                        String::from_utf8_lossy(kind_str)
                    ))
                }
            };
            return Ok(Some(Entry::Type { name, kind }));
        }
        self.parse_sample(base, line, i, false).map(Some)
    }

    // ---- OpenMetrics 1.0 -------------------------------------------------------------

    fn parse_om_line(
        &mut self,
        base: usize,
        line: &'a [u8],
    ) -> Result<Option<Entry<'a>>, ParseError> {
        if line.is_empty() {
            return self.err("blank line is not allowed in OpenMetrics");
        }
        if line[0] == b'#' {
            if line == b"# EOF" {
                self.seen_eof = true;
                if self.pos < self.body.len() {
                    self.line += 1;
                    return self.err("content after '# EOF'");
                }
                return Ok(None);
            }
            if line.len() < 2 || line[1] != b' ' {
                return self.err("comment lines are not allowed in OpenMetrics");
            }
            let (word, after) = take_word(line, 2);
            let kind = match word {
                b"HELP" | b"TYPE" | b"UNIT" => word,
                _ => {
                    return self.err(format!(
                        "unknown metadata line '# {}'",
                        String::from_utf8_lossy(word)
                    ))
                }
            };
            if after >= line.len() || line[after] != b' ' {
                return self.err(format!(
                    "{} line needs a metric name",
                    String::from_utf8_lossy(kind)
                ));
            }
            let ns = after + 1;
            let ne = scan_metric_name(line, ns);
            if ne == ns {
                return self.err("invalid metric name in metadata line");
            }
            let name = ascii(&line[ns..ne]);
            if ne >= line.len() || line[ne] != b' ' {
                return self.err(format!(
                    "{} line for {name} needs a space and a value",
                    String::from_utf8_lossy(kind)
                ));
            }
            let rest = &line[ne + 1..];
            match kind {
                b"HELP" => {
                    let text = match std::str::from_utf8(rest) {
                        Ok(t) => t,
                        Err(_) => return self.err("HELP text is not valid UTF-8"),
                    };
                    let text = if text.contains('\\') {
                        Cow::Owned(unescape(text))
                    } else {
                        Cow::Borrowed(text)
                    };
                    Ok(Some(Entry::Help { name, text }))
                }
                b"TYPE" => {
                    let kind = match rest {
                        b"counter" => MetricKind::Counter,
                        b"gauge" => MetricKind::Gauge,
                        b"histogram" => MetricKind::Histogram,
                        b"gaugehistogram" => MetricKind::GaugeHistogram,
                        b"summary" => MetricKind::Summary,
                        b"info" => MetricKind::Info,
                        b"stateset" => MetricKind::StateSet,
                        b"unknown" => MetricKind::Unknown,
                        _ => {
                            return self.err(format!(
                                "invalid metric type {:?}",
                                String::from_utf8_lossy(rest)
                            ))
                        }
                    };
                    Ok(Some(Entry::Type { name, kind }))
                }
                _ => {
                    let unit = match std::str::from_utf8(rest) {
                        Ok(u) if !u.bytes().any(|b| b == b' ' || b == b'\t') => u,
                        _ => return self.err("invalid UNIT value"),
                    };
                    if !unit.is_empty() && !name.ends_with(&format!("_{unit}")) {
                        return self.err(format!(
                            "metric name {name} does not end with its unit _{unit}"
                        ));
                    }
                    Ok(Some(Entry::Unit { name, unit }))
                }
            }
        } else {
            self.parse_sample(base, line, 0, true).map(Some)
        }
    }

    // ---- samples (both formats) ------------------------------------------------------

    /// A sample's name from its bytes (ASCII name characters, or bytes the caller checks
    /// against a known series), as the last one when the bytes are the same.
    fn name(&mut self, bytes: &'a [u8]) -> &'a str {
        if bytes != self.last_name.as_bytes() {
            self.last_name = ascii(bytes);
        }
        self.last_name
    }

    fn parse_sample(
        &mut self,
        base: usize,
        line: &'a [u8],
        start: usize,
        om: bool,
    ) -> Result<Entry<'a>, ParseError> {
        self.labels.clear();
        self.pending = None;
        self.last_sample_line = (base, base + line.len());
        let guess = self.guess.take();
        if let Some((name_end, end)) = guess.and_then(|g| guessed_series(line, start, g, om)) {
            let (name, series) = (self.name(&line[start..name_end]), &line[start..end]);
            // A wrong guess can leave a tail that is no value: then the line is scanned.
            if let Ok(e) = self.sample_tail(line, name, series, end, om, true) {
                return Ok(e);
            }
        }
        let ne = scan_metric_name(line, start);
        if ne == start {
            return self.err(format!(
                "invalid metric name at {:?}",
                String::from_utf8_lossy(&line[start..line.len().min(start + 32)])
            ));
        }
        let name = self.name(&line[start..ne]);
        let mut i = ne;
        // Text format allows blanks between the name and `{`.
        let k = if om { ne } else { skip_blank(line, ne) };
        if k < line.len() && line[k] == b'{' {
            if self.lazy_labels {
                i = match skip_label_set(line, k + 1) {
                    Some(end) => end,
                    None => return self.err("unterminated label set"),
                };
                self.pending = Some((base, base + line.len(), base + k + 1, base + i, om));
            } else {
                i = self.parse_labels(base, line, k + 1, om)?;
            }
        }
        let series = trim_end_blank(&line[start..i.min(line.len())]);
        self.sample_tail(line, name, series, i, om, false)
    }

    /// The value, timestamp and exemplar after a sample's series, which ends at `i`.
    fn sample_tail(
        &mut self,
        line: &'a [u8],
        name: &'a str,
        series: &'a [u8],
        mut i: usize,
        om: bool,
        guessed: bool,
    ) -> Result<Entry<'a>, ParseError> {
        // value
        if om {
            if i >= line.len() || line[i] != b' ' {
                return self.err(format!("expected a space and a value after {name}"));
            }
            i += 1;
        } else {
            let j = skip_blank(line, i);
            if j == i && i < line.len() {
                return self.err(format!("expected a value after {name}"));
            }
            i = j;
        }
        let vs = i;
        while i < line.len() && line[i] != b' ' && line[i] != b'\t' {
            i += 1;
        }
        if vs == i {
            return self.err(format!("missing value for {name}"));
        }
        let value = match parse_value(&line[vs..i], om) {
            Some(v) => v,
            None => {
                return self.err(format!(
                    "invalid value {:?} for {name}",
                    String::from_utf8_lossy(&line[vs..i])
                ))
            }
        };
        let mut timestamp_ms = None;
        let mut has_exemplar = false;
        if om {
            if i < line.len() {
                if line[i] != b' ' {
                    return self.err("invalid character after value");
                }
                i += 1;
                if i < line.len() && line[i] != b'#' {
                    let ts_start = i;
                    while i < line.len() && line[i] != b' ' {
                        i += 1;
                    }
                    timestamp_ms = match parse_om_timestamp(&line[ts_start..i]) {
                        Some(t) => Some(t),
                        None => {
                            return self.err(format!(
                                "invalid timestamp {:?}",
                                String::from_utf8_lossy(&line[ts_start..i])
                            ))
                        }
                    };
                    if i < line.len() {
                        i += 1; // the space before the exemplar
                        if i >= line.len() {
                            return self.err("trailing space after timestamp");
                        }
                    }
                }
                if i < line.len() {
                    self.parse_exemplar(&line[i..])?;
                    has_exemplar = true;
                } else if line.last() == Some(&b' ') {
                    return self.err("trailing space after value");
                }
            }
        } else {
            i = skip_blank(line, i);
            if i < line.len() {
                let ts_start = i;
                while i < line.len() && line[i] != b' ' && line[i] != b'\t' {
                    i += 1;
                }
                let ts = &line[ts_start..i];
                timestamp_ms = match std::str::from_utf8(ts).ok().and_then(|s| s.parse().ok()) {
                    Some(t) => Some(t),
                    None => {
                        return self.err(format!(
                            "invalid timestamp {:?}",
                            String::from_utf8_lossy(ts)
                        ))
                    }
                };
                if skip_blank(line, i) != line.len() {
                    return self.err("unexpected text after timestamp");
                }
            }
        }
        Ok(Entry::Sample(SampleRef {
            series,
            name,
            value,
            timestamp_ms,
            has_exemplar,
            guessed,
        }))
    }

    /// Parses `name="value",...}` starting just after `{`; returns the index after `}`.
    fn parse_labels(
        &mut self,
        base: usize,
        line: &'a [u8],
        mut i: usize,
        om: bool,
    ) -> Result<usize, ParseError> {
        loop {
            if !om {
                i = skip_blank(line, i);
            }
            if i < line.len() && line[i] == b'}' {
                if om && !self.labels.is_empty() {
                    // OpenMetrics forbids a trailing comma; we only get here after one.
                    return self.err("trailing comma in label set");
                }
                return Ok(i + 1);
            }
            let ns = i;
            let ne = scan_label_name(line, ns);
            if ne == ns {
                return self.err("invalid label name");
            }
            i = ne;
            if !om {
                i = skip_blank(line, i);
            }
            if i >= line.len() || line[i] != b'=' {
                return self.err(format!(
                    "expected '=' after label name {}",
                    ascii(&line[ns..ne])
                ));
            }
            i += 1;
            if !om {
                i = skip_blank(line, i);
            }
            if i >= line.len() || line[i] != b'"' {
                return self.err(format!(
                    "label value for {} must be double-quoted",
                    ascii(&line[ns..ne])
                ));
            }
            i += 1;
            let vs = i;
            let mut escaped = false;
            loop {
                match memchr::memchr2(b'"', b'\\', &line[i..]) {
                    None => return self.err("unterminated label value"),
                    Some(k) => {
                        i += k;
                        if line[i] == b'\\' {
                            escaped = true;
                            i += 2;
                            if i > line.len() {
                                return self.err("unterminated label value");
                            }
                        } else {
                            break;
                        }
                    }
                }
            }
            let ve = i;
            if std::str::from_utf8(&line[vs..ve]).is_err() {
                return self.err("label value is not valid UTF-8");
            }
            let name = &line[ns..ne];
            if self
                .labels
                .iter()
                .any(|l| &self.body[l.name.0..l.name.1] == name)
            {
                return self.err(format!("duplicate label {}", ascii(name)));
            }
            self.labels.push(LabelSpan {
                name: (base + ns, base + ne),
                value: (base + vs, base + ve),
                escaped,
            });
            i += 1; // closing quote
            if !om {
                i = skip_blank(line, i);
            }
            match line.get(i) {
                Some(b',') => {
                    i += 1;
                    if om && line.get(i) == Some(&b'}') {
                        return self.err("trailing comma in label set");
                    }
                }
                Some(b'}') => return Ok(i + 1),
                _ => return self.err("expected ',' or '}' after label value"),
            }
        }
    }

    /// Validates `# {labels} value [timestamp]`.
    fn parse_exemplar(&mut self, ex: &'a [u8]) -> Result<(), ParseError> {
        if !ex.starts_with(b"# {") {
            return self.err("invalid exemplar: expected '# {'");
        }
        let saved = std::mem::take(&mut self.labels);
        let base = ex.as_ptr() as usize - self.body.as_ptr() as usize;
        let r = self.parse_labels(base, ex, 3, true);
        let ex_labels = std::mem::replace(&mut self.labels, saved);
        let mut i = r?;
        let runes: usize = ex_labels
            .iter()
            .map(|l| {
                let n = l.name.1 - l.name.0;
                let v = std::str::from_utf8(&self.body[l.value.0..l.value.1])
                    .map(|s| s.chars().count())
                    .unwrap_or(0);
                n + v
            })
            .sum();
        if runes > 128 {
            return self.err("exemplar labels exceed 128 characters");
        }
        if i >= ex.len() || ex[i] != b' ' {
            return self.err("invalid exemplar: expected a space and a value");
        }
        i += 1;
        let vs = i;
        while i < ex.len() && ex[i] != b' ' {
            i += 1;
        }
        if parse_value(&ex[vs..i], true).is_none() {
            return self.err("invalid exemplar value");
        }
        if i < ex.len() {
            i += 1;
            if parse_om_timestamp(&ex[i..]).is_none() {
                return self.err("invalid exemplar timestamp");
            }
        }
        Ok(())
    }
}

/// Checks a whole body against the strict OpenMetrics 1.0 rules.
pub fn validate_openmetrics(body: &[u8]) -> Result<usize, ParseError> {
    let mut p = Parser::new_strict(body);
    let mut samples = 0;
    while let Some(e) = p.next_entry()? {
        if matches!(e, Entry::Sample(_)) {
            samples += 1;
        }
    }
    Ok(samples)
}

// ---- strict OpenMetrics semantics ----------------------------------------------------

#[derive(Default)]
struct StrictState {
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
    fn entry(&mut self, e: &Entry<'_>, labels: &[(String, String)]) -> Result<(), String> {
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

    fn finish(&mut self) -> Result<(), String> {
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

fn ascii(b: &[u8]) -> &str {
    // Callers pass only bytes already checked to be ASCII name characters.
    std::str::from_utf8(b).unwrap_or("")
}

/// Where a guessed series of `(series_len, name_len)` bytes would end its name and itself in
/// a sample line starting at `start`, if the line allows it: a value must follow after a
/// blank (text) or one space (OpenMetrics), and in text a label set after blanks would
/// belong to the series. Whether the bytes are a known series is the caller's check: if
/// they are, scanning would have ended in the same places (a name ends at its first
/// non-name byte, a label set at its first `}` outside quotes, both within the bytes).
fn guessed_series(
    line: &[u8],
    start: usize,
    (series_len, name_len): (usize, usize),
    om: bool,
) -> Option<(usize, usize)> {
    let end = start.checked_add(series_len)?;
    if name_len == 0 || name_len > series_len {
        return None;
    }
    let next = *line.get(end)?;
    let fits = if om {
        next == b' '
    } else {
        (next == b' ' || next == b'\t') && line.get(skip_blank(line, end)) != Some(&b'{')
    };
    fits.then_some((start + name_len, end))
}

/// Index just after the `}` closing a label set that starts at `i` (after `{`), skipping
/// quoted values with their escapes; `None` when the line ends first. Agrees with
/// `parse_labels` on every label set that one accepts.
fn skip_label_set(line: &[u8], mut i: usize) -> Option<usize> {
    // The usual case, in two vectorised passes: up to the first `}` there is no escape and
    // an even number of quotes, so that `}` is outside any value and closes the set.
    if let Some(k) = memchr::memchr(b'}', line.get(i..)?) {
        let span = &line[i..i + k];
        if !odd_quotes(span) && memchr::memchr(b'\\', span).is_none() {
            return Some(i + k + 1);
        }
    }
    loop {
        i += memchr::memchr2(b'"', b'}', line.get(i..)?)?;
        if line[i] == b'}' {
            return Some(i + 1);
        }
        i += 1;
        loop {
            i += memchr::memchr2(b'"', b'\\', line.get(i..)?)?;
            if line[i] == b'"' {
                i += 1;
                break;
            }
            i += 2;
        }
    }
}

/// Whether `span` holds an odd number of `"`, eight bytes at a time: each word's quote
/// bytes become a mask (bit 7 set in each byte that is a `"`), and the parity of the count is
/// the parity of the bits of all masks XOR-ed together. A byte-lane loop did not vectorise
/// and was a tenth of the agent's CPU.
fn odd_quotes(span: &[u8]) -> bool {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const QUOTES: u64 = 0x2222_2222_2222_2222;
    // Bit 7 of each byte set where the byte is zero, exactly (no carries between bytes).
    let zero_bytes = |x: u64| !(((x & LOW7) + LOW7) | x | LOW7);
    let mut acc = 0u64;
    let mut words = span.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        acc ^= zero_bytes(u64::from_le_bytes(b) ^ QUOTES);
    }
    let mut b = [0u8; 8];
    let rest = words.remainder();
    b[..rest.len()].copy_from_slice(rest);
    // The padding zeros become 0x22 after the XOR: not quotes.
    acc ^= zero_bytes(u64::from_le_bytes(b) ^ QUOTES);
    acc.count_ones() % 2 == 1
}

fn skip_blank(line: &[u8], mut i: usize) -> usize {
    while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
        i += 1;
    }
    i
}

fn trim_end_blank(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t' | b'\r'] = b {
        b = rest;
    }
    b
}

fn take_word(line: &[u8], i: usize) -> (&[u8], usize) {
    let mut j = i;
    while j < line.len() && line[j] != b' ' && line[j] != b'\t' {
        j += 1;
    }
    (&line[i..j], j)
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

/// Metric-name bytes by table: the name loop runs once per line of every scrape.
const NAME_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b':';
        b += 1;
    }
    t
};

fn is_name_char(b: u8) -> bool {
    NAME_CHARS[b as usize]
}

fn scan_metric_name(line: &[u8], i: usize) -> usize {
    if i >= line.len() || !is_name_start(line[i]) {
        return i;
    }
    let mut j = i + 1;
    while j < line.len() && is_name_char(line[j]) {
        j += 1;
    }
    j
}

fn scan_label_name(line: &[u8], i: usize) -> usize {
    if i >= line.len() || !(line[i].is_ascii_alphabetic() || line[i] == b'_') {
        return i;
    }
    let mut j = i + 1;
    while j < line.len() && (line[j].is_ascii_alphanumeric() || line[j] == b'_') {
        j += 1;
    }
    j
}

/// Parses a sample value. Text format follows Go's `ParseFloat` (which Prometheus uses);
/// OpenMetrics allows only decimal numbers, `NaN` and `±Inf`.
pub fn parse_value(b: &[u8], om: bool) -> Option<f64> {
    // Most values are counters: up to 15 plain digits convert exactly, in either format.
    if !b.is_empty() && b.len() <= 15 && b.iter().all(u8::is_ascii_digit) {
        let n = b.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        return Some(n as f64);
    }
    let s = std::str::from_utf8(b).ok()?;
    if om {
        match s {
            "NaN" => return Some(f64::NAN),
            "+Inf" | "Inf" => return Some(f64::INFINITY),
            "-Inf" => return Some(f64::NEG_INFINITY),
            _ => {}
        }
        if !is_decimal_number(b) {
            return None;
        }
        return s.parse().ok();
    }
    // Fast path for plain decimals, then Go's spellings of the special values.
    if let Ok(v) = s.parse::<f64>() {
        if is_decimal_number(b) || s.eq_ignore_ascii_case("nan") || is_inf_word(s) {
            return Some(v);
        }
    }
    let lower = s.to_ascii_lowercase();
    match lower.trim_start_matches(['+', '-']) {
        "inf" | "infinity" => {
            if s.starts_with('-') {
                Some(f64::NEG_INFINITY)
            } else {
                Some(f64::INFINITY)
            }
        }
        "nan" => Some(f64::NAN),
        _ => parse_go_special_float(s),
    }
}

fn is_inf_word(s: &str) -> bool {
    let t = s.trim_start_matches(['+', '-']);
    t.eq_ignore_ascii_case("inf") || t.eq_ignore_ascii_case("infinity")
}

/// `[+-]? digits [. digits] [e [+-] digits]` (digits may be empty on one side of the dot).
fn is_decimal_number(b: &[u8]) -> bool {
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let mut digits = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == b.len()
}

/// Go's ParseFloat also takes hex floats (`0x1p-3`) and `_` between digits of prefixed
/// numbers; Prometheus text bodies may carry them.
fn parse_go_special_float(s: &str) -> Option<f64> {
    let (neg, t) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"))?;
    let t: String = t.chars().filter(|&c| c != '_').collect();
    let (mant, exp) = match t.find(['p', 'P']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().ok()?),
        None => (&t[..], 0),
    };
    let (int_part, frac_part) = match mant.find('.') {
        Some(i) => (&mant[..i], &mant[i + 1..]),
        None => (mant, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int_part.chars() {
        v = v * 16.0 + c.to_digit(16)? as f64;
    }
    let mut scale = 1.0 / 16.0;
    for c in frac_part.chars() {
        v += c.to_digit(16)? as f64 * scale;
        scale /= 16.0;
    }
    let v = v * 2f64.powi(exp);
    Some(if neg { -v } else { v })
}

/// OpenMetrics timestamps are decimal seconds; we keep milliseconds like Prometheus.
fn parse_om_timestamp(b: &[u8]) -> Option<i64> {
    if !is_decimal_number(b) {
        return None;
    }
    let s = std::str::from_utf8(b).ok()?;
    let secs: f64 = s.parse().ok()?;
    if !secs.is_finite() {
        return None;
    }
    Some((secs * 1000.0).round() as i64)
}

/// Unescapes a label value or an OpenMetrics HELP text (`\\`, `\"`, `\n`).
/// Unknown escapes are kept as written, as Prometheus does.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Text-format HELP escapes only `\\` and `\n`.
fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = (String, Vec<(String, String)>, f64, Option<i64>);

    fn samples(body: &str, f: Format) -> Vec<Parsed> {
        let mut p = Parser::new(body.as_bytes(), f);
        let mut out = Vec::new();
        while let Some(e) = p.next_entry().expect("parses") {
            if let Entry::Sample(s) = e {
                let labels = p
                    .labels()
                    .iter()
                    .map(|l| (p.label_name(l).to_string(), p.label_value(l).into_owned()))
                    .collect();
                out.push((s.name.to_string(), labels, s.value, s.timestamp_ms));
            }
        }
        out
    }

    /// What the parser makes of `line` when told to expect a series of `guess` lengths:
    /// (series, name, guessed), or the error message.
    fn with_guess(
        line: &str,
        f: Format,
        guess: (usize, usize),
    ) -> Result<(String, String, bool), String> {
        let mut p = Parser::new(line.as_bytes(), f).with_lazy_labels();
        p.expect_series(guess.0, guess.1);
        match p.next_entry() {
            Ok(Some(Entry::Sample(s))) => Ok((
                String::from_utf8_lossy(s.series).into_owned(),
                s.name.to_string(),
                s.guessed,
            )),
            Ok(other) => Err(format!("not a sample: {other:?}")),
            Err(e) => Err(e.message),
        }
    }

    #[test]
    fn guessed_series_only_where_scanning_would_end_there() {
        use Format::{OpenMetrics as Om, Text};
        // (line, format, guess, series and name found, whether by the guess)
        let cases = [
            // The right guess: taken as is.
            ("a{b=\"c\"} 1\n", Text, (8, 1), "a{b=\"c\"}", "a", true),
            ("a{b=\"c\"} 1\n# EOF\n", Om, (8, 1), "a{b=\"c\"}", "a", true),
            ("up\t1\n", Text, (2, 2), "up", "up", true),
            // A name that goes on, a label set after blanks, a guess ending inside a value:
            // scanned instead.
            ("up_x 1\n", Text, (2, 2), "up_x", "up_x", false),
            (
                "up {a=\"b\"} 1\n",
                Text,
                (2, 2),
                "up {a=\"b\"}",
                "up",
                false,
            ),
            ("a{b=\"c d\"} 1\n", Text, (5, 1), "a{b=\"c d\"}", "a", false),
            (
                "ab{c=\"d\"} 1 2\n",
                Text,
                (1, 1),
                "ab{c=\"d\"}",
                "ab",
                false,
            ),
            // A guess that fits but leaves a tail that is no value (`e"} 1`).
            ("a{c=\"d e\"} 1\n", Text, (6, 1), "a{c=\"d e\"}", "a", false),
            // Lengths that do not fit the line are ignored.
            ("up 1\n", Text, (40, 2), "up", "up", false),
            ("up 1\n", Text, (1, 2), "up", "up", false),
        ];
        for (line, format, guess, series, name, guessed) in cases {
            let want = Ok((series.to_string(), name.to_string(), guessed));
            assert_eq!(with_guess(line, format, guess), want, "{line:?}");
        }
        // No value, or a tab in OpenMetrics: the scan's error.
        assert_eq!(
            with_guess("up\n", Text, (2, 2)),
            Err("missing value for up".to_string())
        );
        assert!(with_guess("up\t1\n# EOF\n", Om, (2, 2)).is_err());
        // A wrong guess whose tail reads as a value is taken: the caller checks it against
        // the series it knows, and `reparse` scans the line.
        let mut p = Parser::new(b"a{c=\"d\"} 1 2\n", Text).with_lazy_labels();
        p.expect_series(10, 1);
        assert!(matches!(
            p.next_entry(),
            Ok(Some(Entry::Sample(s))) if s.guessed && s.series == b"a{c=\"d\"} 1" && s.value == 2.0
        ));
        match p.reparse() {
            Ok(Some(Entry::Sample(s))) => {
                assert_eq!(
                    (s.series, s.name, s.value, s.timestamp_ms, s.guessed),
                    (&b"a{c=\"d\"}"[..], "a", 1.0, Some(2), false)
                );
                p.take_labels().expect("labels");
                assert_eq!(p.label_pairs(), vec![("c".to_string(), "d".to_string())]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn quote_parity_agrees_with_counting() {
        // Every length around the word size, quotes in every position, and bytes that
        // differ from `"` in one bit (0xa2, 0x23) or are zero.
        let alphabet = [b'"', b'a', 0xa2, 0x23, 0x00, b'}', b'\\', 0xff];
        let mut seed = 7u64;
        for len in 0..70 {
            for _ in 0..40 {
                let span: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        alphabet[(seed >> 60) as usize % alphabet.len()]
                    })
                    .collect();
                let count = span.iter().filter(|b| **b == b'"').count();
                assert_eq!(odd_quotes(&span), count % 2 == 1, "{span:?}");
            }
        }
    }

    #[test]
    fn text_with_tricky_label_values() {
        let body =
            "# HELP x a\\nb\n# TYPE x counter\nx{a=\"1,2=}\",b=\"q\\\"\\\\\\n\",} 3 1700\n  y 4\n";
        let s = samples(body, Format::Text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].1[0], ("a".into(), "1,2=}".into()));
        assert_eq!(s[0].1[1], ("b".into(), "q\"\\\n".into()));
        assert_eq!(s[0].3, Some(1700));
        assert_eq!(s[1].0, "y");
    }

    #[test]
    fn text_values_follow_go() {
        assert_eq!(parse_value(b"+Inf", false), Some(f64::INFINITY));
        assert_eq!(parse_value(b"-inf", false), Some(f64::NEG_INFINITY));
        assert!(parse_value(b"NaN", false).is_some_and(f64::is_nan));
        assert_eq!(parse_value(b"0x1p-3", false), Some(0.125));
        assert_eq!(parse_value(b"1e3", false), Some(1000.0));
        assert_eq!(parse_value(b"abc", false), None);
        // Plain digits take a shortcut; it must agree with the general path.
        for digits in [
            "0",
            "007",
            "123456789012345",
            "1234567890123456",
            "9007199254740993",
        ] {
            let general: f64 = digits.parse().expect("digits");
            assert_eq!(parse_value(digits.as_bytes(), false), Some(general));
            assert_eq!(parse_value(digits.as_bytes(), true), Some(general));
        }
        assert_eq!(parse_value(b"0x1p-3", true), None);
        assert_eq!(
            parse_value(b"16440392441958861461", false),
            Some(16440392441958861461.0)
        );
    }

    #[test]
    fn om_timestamps_are_seconds() {
        let s = samples("a 1 1.5\n# EOF\n", Format::OpenMetrics);
        assert_eq!(s[0].3, Some(1500));
    }

    #[test]
    fn error_names_the_line() {
        let mut p = Parser::new(b"a 1\nb{x=1} 2\n", Format::Text);
        let _ = p.next_entry();
        let e = p.next_entry().expect_err("must fail");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("double-quoted"), "{}", e.message);
    }
}
