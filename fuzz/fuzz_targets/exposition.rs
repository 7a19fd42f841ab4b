//! Scrape bodies in both exposition formats, entry by entry with every label read, and the
//! strict OpenMetrics validator: any input gives entries or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshmetrics::receivers::prometheus::exposition::{validate_openmetrics, Format, Parser};

fuzz_target!(|body: &[u8]| {
    for format in [Format::Text, Format::OpenMetrics] {
        let mut parser = Parser::new(body, format);
        // Every entry consumes at least one byte: more entries than bytes means a parser that
        // stopped advancing, which would hang a scrape.
        let mut entries = 0usize;
        loop {
            match parser.next_entry() {
                Ok(Some(_)) => {
                    for l in parser.labels() {
                        let _ = (parser.label_name(l), parser.label_value(l));
                    }
                }
                Ok(None) | Err(_) => break,
            }
            entries += 1;
            assert!(entries <= body.len(), "parser stopped advancing");
        }
    }
    let _ = validate_openmetrics(body);
});
