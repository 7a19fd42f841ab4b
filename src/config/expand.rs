//! `${env:VAR}`, `${VAR}`, `${env:VAR:-default}`, `${file:path}` and `$$` expansion, applied
//! as the collector does: per scalar value, after the YAML is parsed, so a value may hold any
//! characters (`: `, ` #`, quotes, newlines) without changing the document's structure. The
//! expanded value is written back in place of its scalar (plain when it reads as the same
//! plain scalar, else double-quoted), so the YAML deserializer, with its line:column errors
//! and typed fields, still reads the one document, whose lines stay where they were.
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
                if let Some(path) = inner.strip_prefix("file:") {
                    match read_file(path) {
                        Ok(v) => out.push_str(&v),
                        Err(message) => {
                            return Err(ExpandError {
                                line,
                                column: i - line_start + 1,
                                message,
                            })
                        }
                    }
                    i += 3 + close;
                    continue;
                }
                if let Some((scheme, rest)) = inner.split_once(':') {
                    let provider = !scheme.is_empty()
                        && scheme.bytes().all(|c| c.is_ascii_lowercase())
                        && !rest.starts_with('-');
                    if provider && scheme != "env" {
                        return Err(ExpandError {
                            line,
                            column: i - line_start + 1,
                            message: format!(
                                "unsupported config provider in ${{{inner}}} (env and file are supported)"
                            ),
                        });
                    }
                }
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

/// `${file:path}`: the file's content, less one trailing line break (what a secret mounted
/// from a Kubernetes Secret or written by `echo` ends with).
fn read_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path.trim())
        .map_err(|e| format!("${{file:{path}}}: cannot read {path:?}: {e}"))?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(text.to_string())
}

/// Expands against the process environment, value by value (see the module's doc).
pub fn expand_env(text: &str) -> Result<String, ExpandError> {
    expand_scalars(text, &|name| std::env::var(name).ok())
}

/// Expands the references in each scalar of the YAML `text` and writes the expanded values
/// back in place. Text that is not YAML is left for the deserializer to report.
pub fn expand_scalars(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    use granit_parser::{Event, Parser, ScalarStyle};
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else {
            // Broken YAML: the deserializer says where, with its own message.
            break;
        };
        let Event::Scalar(value, style, _, _) = event else {
            continue;
        };
        if !value.contains('$') {
            continue;
        }
        let (Some(start), Some(end)) = (span.start.byte_offset(), span.end.byte_offset()) else {
            continue;
        };
        let line = span.start.line();
        // A quoted scalar's value starts after its quote.
        let column = span.start.col() + 1 + usize::from(style != ScalarStyle::Plain);
        let single_line = !text[start..end].contains('\n');
        let expanded = expand_with(&value, lookup).map_err(|e| ExpandError {
            line: line + e.line - 1,
            column: if e.line == 1 {
                column + e.column - 1
            } else {
                e.column
            },
            message: e.message,
        })?;
        let replacement = match style {
            ScalarStyle::Plain | ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted
                if single_line =>
            {
                if expanded == value.as_ref() && style != ScalarStyle::Plain {
                    continue;
                }
                if style == ScalarStyle::Plain && reads_as_plain(&expanded) {
                    expanded
                } else {
                    serde_json::to_string(&expanded).unwrap_or_default()
                }
            }
            // A block scalar (or a flow scalar over several lines): its source keeps its
            // shape, and the references in it are expanded where they stand; a value's line
            // breaks continue at the indentation of the line it is on.
            _ => expand_in_block(&text[start..end], lookup).map_err(|e| ExpandError {
                line: line + e.line - 1,
                column: e.column,
                message: e.message,
            })?,
        };
        edits.push((start, end, replacement));
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, replacement) in edits {
        if start < at {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(&replacement);
        at = end;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

/// Whether `v`, written as a plain scalar, reads back as the same string or as the number,
/// boolean or duration it spells: only characters that cannot start a YAML indicator, end a
/// plain scalar or begin a comment.
fn reads_as_plain(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 1024
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+/@=".contains(&b) || b == b':')
        && !v.contains(": ")
        && !v.ends_with(':')
        && !v.starts_with(['-', ':', '@', '='])
}

/// Expansion inside a block scalar's source: a value's line breaks take the indentation of
/// the line the reference is on.
fn expand_in_block(
    source: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(source.len());
    for (i, line) in source.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let indent: String = line.chars().take_while(|c| *c == ' ').collect();
        let expanded = expand_with(line, lookup).map_err(|e| ExpandError { line: i + 1, ..e })?;
        out.push_str(&expanded.replace('\n', &format!("\n{indent}")));
    }
    Ok(out)
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
    fn values_hold_any_characters() {
        let lookup = |name: &str| match name {
            "KEY" => Some("a: b #c \"q\" 'r'\nsecond line".to_string()),
            "PORT" => Some("9090".to_string()),
            _ => None,
        };
        let yaml = "headers:\n  x-key: ${env:KEY}\n  quoted: \"pre ${KEY} post\"\nport: ${PORT}\nrelabel: '$1:${2}'\nblock: |\n  line ${PORT}\n# ${env:KEY} in a comment\nlast: 1\n";
        let out = expand_scalars(yaml, &lookup).expect("expands");
        #[derive(serde::Deserialize)]
        struct Doc {
            headers: std::collections::BTreeMap<String, String>,
            port: u16,
            relabel: String,
            block: String,
            last: u8,
        }
        let doc: Doc = serde_saphyr::from_str(&out).expect(&out);
        assert_eq!(doc.headers["x-key"], "a: b #c \"q\" 'r'\nsecond line");
        assert_eq!(
            doc.headers["quoted"],
            "pre a: b #c \"q\" 'r'\nsecond line post"
        );
        assert_eq!(doc.port, 9090);
        assert_eq!(doc.relabel, "$1:${2}");
        assert_eq!(doc.block, "line 9090\n");
        assert_eq!(doc.last, 1);
        // Lines stay where they were, for error positions.
        assert_eq!(out.lines().count(), yaml.lines().count());
    }

    #[test]
    fn file_provider_and_positions() {
        let dir = tempfile::tempdir().expect("tmp");
        let secret = dir.path().join("token");
        std::fs::write(&secret, "s3cr3t: #x\n").expect("write");
        let yaml = format!("a: 1\ntoken: ${{file:{}}}\n", secret.display());
        let out = expand_scalars(&yaml, &env).expect("expands");
        assert!(out.contains("token: \"s3cr3t: #x\""), "{out}");
        let e = expand_scalars("a: 1\nb: x${file:/nonexistent/y}\n", &env).expect_err("fails");
        assert_eq!((e.line, e.column), (2, 5), "{e:?}");
        assert!(e.message.contains("cannot read"), "{}", e.message);
        let e = expand_scalars("a: 1\nb: ${env:1X}\n", &env).expect_err("fails");
        assert_eq!((e.line, e.column), (2, 4));
        let e = expand_scalars("b: ${http:x}\n", &env).expect_err("fails");
        assert!(e.message.contains("env and file are supported"));
    }

    #[test]
    fn bad_name_has_position() {
        let e = expand_with("a: 1\nb: ${env:1X}\n", &env).expect_err("must fail");
        assert_eq!((e.line, e.column), (2, 4));
    }
}
