//! The config loader (environment expansion, YAML, every component's settings and the
//! cross-checks): any text loads or gives located errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &[u8]| {
    if let Ok(text) = std::str::from_utf8(text) {
        let _ = meshmetrics::service::Config::from_text("fuzz.yaml", text);
    }
});
