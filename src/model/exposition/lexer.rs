//! Bytes to tokens: names, label sets, values and timestamps as both formats write them,
//! escapes, blanks.

pub(super) fn ascii(b: &[u8]) -> &str {
    // Callers pass only bytes already checked to be ASCII name characters.
    std::str::from_utf8(b).unwrap_or("")
}

/// Where a guessed series of `(series_len, name_len)` bytes would end its name and itself in
/// a sample line starting at `start`, if the line allows it: a value must follow after a
/// blank (text) or one space (OpenMetrics), and in text a label set after blanks would
/// belong to the series. Whether the bytes are a known series is the caller's check: if
/// they are, scanning would have ended in the same places (a name ends at its first
/// non-name byte, a label set at its first `}` outside quotes, both within the bytes).
pub(super) fn guessed_series(
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
pub(super) fn skip_label_set(line: &[u8], mut i: usize) -> Option<usize> {
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
pub(super) fn odd_quotes(span: &[u8]) -> bool {
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

pub(super) fn skip_blank(line: &[u8], mut i: usize) -> usize {
    while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
        i += 1;
    }
    i
}

pub(super) fn trim_end_blank(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t' | b'\r'] = b {
        b = rest;
    }
    b
}

pub(super) fn take_word(line: &[u8], i: usize) -> (&[u8], usize) {
    let mut j = i;
    while j < line.len() && line[j] != b' ' && line[j] != b'\t' {
        j += 1;
    }
    (&line[i..j], j)
}

pub(super) fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

/// Metric-name bytes by table: the name loop runs once per line of every scrape.
pub(super) const NAME_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b':';
        b += 1;
    }
    t
};

pub(super) fn is_name_char(b: u8) -> bool {
    NAME_CHARS[b as usize]
}

pub(super) fn scan_metric_name(line: &[u8], i: usize) -> usize {
    if i >= line.len() || !is_name_start(line[i]) {
        return i;
    }
    let mut j = i + 1;
    while j < line.len() && is_name_char(line[j]) {
        j += 1;
    }
    j
}

pub(super) fn scan_label_name(line: &[u8], i: usize) -> usize {
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
pub(super) fn parse_value(b: &[u8], om: bool) -> Option<f64> {
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

pub(super) fn is_inf_word(s: &str) -> bool {
    let t = s.trim_start_matches(['+', '-']);
    t.eq_ignore_ascii_case("inf") || t.eq_ignore_ascii_case("infinity")
}

/// `[+-]? digits [. digits] [e [+-] digits]` (digits may be empty on one side of the dot).
pub(super) fn is_decimal_number(b: &[u8]) -> bool {
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
pub(super) fn parse_go_special_float(s: &str) -> Option<f64> {
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
pub(super) fn parse_om_timestamp(b: &[u8]) -> Option<i64> {
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
pub(super) fn unescape(s: &str) -> String {
    unescape_with(s, true)
}

/// Text-format HELP escapes only `\\` and `\n`.
pub(super) fn unescape_help(s: &str) -> String {
    unescape_with(s, false)
}

fn unescape_with(s: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('"') if quotes => out.push('"'),
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
