//! `${env:VAR}`, `${VAR}`, `${env:VAR:-default}` and `$$` expansion, applied to the file text
//! before YAML parsing so error positions still point at the right line.
//!
//! Prometheus relabel replacements (`$1`, `${1}`, `${name}` where `name` is a capture group)
//! pass through untouched when they are not environment references: a bare `$` not followed by
//! `{` or `$` is literal, and `${1}` (a name starting with a digit) is literal too.

/// A failed expansion, with its 1-based position in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Expands references using `lookup` for variable values.
pub fn expand_with(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    let mut line = 1;
    let mut line_start = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            line_start = i + 1;
        }
        if c != b'$' {
            // Copy a run of plain text at once (keeps UTF-8 intact).
            let next = text[i..]
                .find(['$', '\n'])
                .map(|k| i + k)
                .unwrap_or(b.len());
            let end = if next == i { i + 1 } else { next };
            out.push_str(&text[i..end]);
            i = end;
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => {
                let Some(close) = text[i + 2..].find('}') else {
                    out.push('$');
                    i += 1;
                    continue;
                };
                let inner = &text[i + 2..i + 2 + close];
                let (is_env, rest) = match inner.strip_prefix("env:") {
                    Some(r) => (true, r),
                    None => (false, inner),
                };
                let (name, default) = match rest.find(":-") {
                    Some(k) => (&rest[..k], Some(&rest[k + 2..])),
                    None => (rest, None),
                };
                let valid_name = !name.is_empty()
                    && (name.as_bytes()[0].is_ascii_alphabetic() || name.as_bytes()[0] == b'_')
                    && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
                if !valid_name {
                    if is_env {
                        return Err(ExpandError {
                            line,
                            column: i - line_start + 1,
                            message: format!("invalid environment variable name in ${{{inner}}}"),
                        });
                    }
                    // `${1}` and other non-variable forms are relabel syntax: keep them.
                    out.push_str(&text[i..i + 3 + close]);
                    i += 3 + close;
                    continue;
                }
                if !is_env && default.is_none() && inner.contains(':') {
                    return Err(ExpandError {
                        line,
                        column: i - line_start + 1,
                        message: format!(
                            "unsupported config provider in ${{{inner}}} (only env is supported)"
                        ),
                    });
                }
                match lookup(name) {
                    Some(v) if !v.is_empty() || default.is_none() => out.push_str(&v),
                    _ => out.push_str(default.unwrap_or("")),
                }
                i += 3 + close;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Expands against the process environment.
pub fn expand_env(text: &str) -> Result<String, ExpandError> {
    expand_with(text, &|name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("abc".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn forms() {
        let x = |s: &str| expand_with(s, &env).expect("expands");
        assert_eq!(x("k: ${env:KEY}"), "k: abc");
        assert_eq!(x("k: ${KEY}"), "k: abc");
        assert_eq!(x("k: ${env:NOPE:-dflt}"), "k: dflt");
        assert_eq!(x("k: ${env:EMPTY:-dflt}"), "k: dflt");
        assert_eq!(x("k: ${env:NOPE}"), "k: ");
        assert_eq!(x("price: $$5"), "price: $5");
        assert_eq!(x("replacement: $1:${2}"), "replacement: $1:${2}");
        assert_eq!(x("ü: ${KEY}é"), "ü: abcé");
    }

    #[test]
    fn bad_name_has_position() {
        let e = expand_with("a: 1\nb: ${env:1X}\n", &env).expect_err("must fail");
        assert_eq!((e.line, e.column), (2, 4));
    }
}
