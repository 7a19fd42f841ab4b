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
//!
//! `entry.rs` what it hands out, `parser.rs` the parser, `strict.rs` the OpenMetrics rules of
//! a strict parse, `lexer.rs` the byte-level scanning both use, `pieces.rs` a body received
//! in frames cut into pieces of whole lines, for the parser to read in place.

mod entry;
mod lexer;
mod parser;
mod pieces;
mod strict;

pub use entry::{Entry, Format, LabelSpan, ParseError, SampleRef};
pub use parser::{validate_openmetrics, Parser};
pub use pieces::line_pieces;

#[cfg(test)]
mod tests {
    use super::lexer::*;
    use super::*;

    #[test]
    fn label_values_unescape_quotes_and_text_help_does_not() {
        assert_eq!(unescape(r#"a\"b\\c\nd\x"#), "a\"b\\c\nd\\x");
        assert_eq!(unescape_help(r#"a\"b\\c\nd"#), "a\\\"b\\c\nd");
    }

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
