//! Scrape bodies in both exposition formats, entry by entry with every label read, and the
//! strict OpenMetrics validator: any input gives entries or an error, never a panic or a hang.
//! The scrape loop's lazy mode (label sets only delimited until asked for) must find the same
//! labels and fail on the same line as parsing every label set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshmetrics::model::exposition::{validate_openmetrics, Entry, Format, Parser};

type Outcome = Result<Vec<Vec<(String, String)>>, usize>;

/// Every sample's labels, or the line of the first error.
fn parse(body: &[u8], format: Format, lazy: bool) -> Outcome {
    let mut parser = Parser::new(body, format);
    if lazy {
        parser = parser.with_lazy_labels();
    }
    let mut samples = Vec::new();
    // Every entry consumes at least one byte: more entries than bytes means a parser that
    // stopped advancing, which would hang a scrape.
    let mut entries = 0usize;
    loop {
        match parser.next_entry() {
            Ok(Some(Entry::Sample(_))) => {
                parser.take_labels().map_err(|e| e.line)?;
                let labels = parser.label_pairs();
                samples.push(labels);
            }
            Ok(Some(_)) => {}
            Ok(None) => return Ok(samples),
            Err(e) => return Err(e.line),
        }
        entries += 1;
        assert!(entries <= body.len(), "parser stopped advancing");
    }
}

fuzz_target!(|body: &[u8]| {
    for format in [Format::Text, Format::OpenMetrics] {
        let eager = parse(body, format, false);
        let lazy = parse(body, format, true);
        assert_eq!(eager, lazy, "lazy and eager parsing disagree");
    }
    let _ = validate_openmetrics(body);
});
