//! The streaming parser: one line at a time, byte-level and allocation-free on the hot path,
//! syntax checks only unless strict.

use std::borrow::Cow;

use super::entry::{Entry, Format, LabelSpan, ParseError, SampleRef};
use super::lexer::*;
use super::strict::StrictState;
use crate::model::MetricKind;

/// Streaming parser over one scrape body, whole or in pieces of whole lines.
pub struct Parser<'a> {
    /// The piece being read (the whole body when it came as one). Offsets kept below are
    /// into it: they refer to the last line read, which never spans two pieces.
    body: &'a [u8],
    /// The pieces after it.
    rest: &'a [&'a [u8]],
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
        Self::over_pieces(body, &[], format)
    }

    /// A parser over a body received in pieces, each a run of whole lines (see
    /// [`line_pieces`](super::line_pieces)): the body is read where it arrived, not copied
    /// into one buffer first.
    pub fn over_pieces(first: &'a [u8], rest: &'a [&'a [u8]], format: Format) -> Self {
        Parser {
            body: first,
            rest,
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
                if let Some((next, rest)) = self.rest.split_first() {
                    (self.body, self.rest, self.pos) = (next, rest, 0);
                    continue;
                }
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
                if self.pos < self.body.len() || self.rest.iter().any(|p| !p.is_empty()) {
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
