//! Seeded mutation runs over the three parsers of outside input: scrape bodies, config files
//! and PromQL queries. Inputs from the shared corpora are mutated thousands of times (byte
//! flips, inserted delimiters and NULs, cuts, duplications, splices); each mutant must give a
//! result or an error — never a panic — within a time bound. Bounded and repeatable (fixed
//! seeds), so it runs with every test; it complements, not replaces, coverage-guided fuzzing.

use meshmetrics::model::exposition::{validate_openmetrics, Format, Parser};
use meshmetrics::model::Labels;
use meshmetrics::promql::{instant_query, range_query, EvalOptions};
use meshmetrics::store::Store;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CORPORA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpora");

/// xorshift64*: small, fixed, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SPECIAL: &[&[u8]] = &[
    b"{",
    b"}",
    b"\"",
    b"=",
    b",",
    b"\\",
    b"#",
    b"\n",
    b" ",
    b"\0",
    b"\xff",
    b"\xc3",
    b"NaN",
    b"+Inf",
    b"-",
    b"1e309",
    b"# EOF\n",
    b"# TYPE x counter\n",
    b"[",
    b"]",
    b"(",
    b")",
    b"@",
    b"offset",
    b"by",
    b":",
    b"${env:",
    b"$$",
    b"'",
    b"- ",
    b"  ",
];

fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let s = SPECIAL[rng.below(SPECIAL.len())];
                v.splice(at..at, s.iter().copied());
            }
            2 if !v.is_empty() => {
                let end = (at + rng.below(64)).min(v.len());
                v.drain(at.min(end)..end);
            }
            3 if !v.is_empty() => {
                let end = (at + rng.below(256)).min(v.len());
                let piece: Vec<u8> = v[at.min(end)..end].to_vec();
                v.splice(at..at, piece);
            }
            4 => v.truncate(at),
            _ if !others.is_empty() => {
                let o = &others[rng.below(others.len())];
                let from = rng.below(o.len());
                let end = (from + rng.below(512)).min(o.len());
                v.splice(at..at, o[from..end].iter().copied());
            }
            _ => {}
        }
    }
    v
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn corpus(sub: &str, max_bytes: u64) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    files_under(&Path::new(CORPORA).join(sub), &mut files);
    files
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() <= max_bytes))
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// Runs `f` on `n` mutants of the inputs; a panic or a slow input fails with the input shown.
fn run(name: &str, seed: u64, n: usize, inputs: &[Vec<u8>], limit: Duration, f: impl Fn(&[u8])) {
    assert!(!inputs.is_empty(), "{name}: no corpus inputs");
    let mut rng = Rng(seed);
    for i in 0..n {
        let base = &inputs[rng.below(inputs.len())];
        let m = mutate(&mut rng, base, inputs);
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| f(&m)));
        let show = || String::from_utf8_lossy(&m[..m.len().min(2000)]).into_owned();
        assert!(outcome.is_ok(), "{name}: mutant {i} panicked:\n{}", show());
        assert!(
            started.elapsed() < limit,
            "{name}: mutant {i} took {:?}:\n{}",
            started.elapsed(),
            show()
        );
    }
    eprintln!("{name}: {n} mutants, no panic, each under {limit:?}");
}

#[test]
fn exposition_parser_survives_mutations() {
    let mut inputs = corpus("openmetrics-parsers", 64 << 10);
    inputs.extend(corpus("prometheus-textparse", 256 << 10));
    inputs.extend(corpus("envoy-istio-samples", 256 << 10));
    run(
        "exposition",
        0x5eed_0001,
        20_000,
        &inputs,
        Duration::from_secs(2),
        |body| {
            for format in [Format::Text, Format::OpenMetrics] {
                let mut p = Parser::new(body, format);
                for _ in 0..1_000_000 {
                    match p.next_entry() {
                        Ok(Some(_)) => {
                            for l in p.labels() {
                                let _ = (p.label_name(l), p.label_value(l));
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            let _ = validate_openmetrics(body);
        },
    );
}

#[test]
fn config_loader_survives_mutations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let inputs: Vec<Vec<u8>> = [
        "config/default.yaml",
        "config/honeycomb.yaml",
        "deploy/overlays/daemonset/meshmetrics.yaml",
        "deploy/overlays/deployment/meshmetrics.yaml",
    ]
    .iter()
    .filter_map(|p| std::fs::read(root.join(p)).ok())
    .collect();
    run(
        "config",
        0x5eed_0002,
        5000,
        &inputs,
        Duration::from_secs(2),
        |text| {
            let _ = meshmetrics::service::Config::from_text(
                "mutant.yaml",
                &String::from_utf8_lossy(text),
            );
        },
    );
}

/// The query part of promqltest `eval` lines.
fn queries() -> Vec<Vec<u8>> {
    let re = regex::Regex::new(
        r"^eval(?:_fail|_ordered|_warn|_info)?\s+(?:instant\s+at\s+\S+|range\s+from\s+\S+\s+to\s+\S+\s+step\s+\S+)\s+(.+)$",
    )
    .expect("regex");
    let mut out = Vec::new();
    for file in corpus("prometheus-promqltest-v2.53-lts", 1 << 20) {
        for line in String::from_utf8_lossy(&file).lines() {
            if let Some(c) = re.captures(line.trim()) {
                out.push(c[1].as_bytes().to_vec());
            }
        }
    }
    out
}

#[test]
fn promql_survives_mutations() {
    let store = Store::new(0);
    for i in 0..20i64 {
        for (job, v) in [("api", 1.0), ("db", 2.5)] {
            let labels = Labels::from_pairs([
                ("__name__", "http_requests_total"),
                ("job", job),
                ("le", if i % 2 == 0 { "0.5" } else { "+Inf" }),
                ("instance", &format!("10.0.0.{}:9090", i % 3)),
            ]);
            for t in 0..30i64 {
                let _ = store.append(&labels, t * 15_000, v * t as f64 + i as f64);
            }
        }
    }
    let opts = EvalOptions::default();
    let evaluated = std::sync::atomic::AtomicUsize::new(0);
    let inputs = queries();
    assert!(
        inputs.len() > 300,
        "queries from the corpus: {}",
        inputs.len()
    );
    run(
        "promql",
        0x5eed_0003,
        10_000,
        &inputs,
        Duration::from_secs(5),
        |q| {
            let Ok(expr) = meshmetrics::promql::parse(&String::from_utf8_lossy(q)) else {
                return;
            };
            evaluated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(2);
            let cancel = || Instant::now() > deadline;
            let _ = instant_query(&store, &expr, 300_000, &opts, &cancel);
            let _ = range_query(&store, &expr, 0, 450_000, 15_000, &opts, &cancel);
        },
    );
    // Mutants that still parse reach the evaluator: about one in six.
    let evaluated = evaluated.into_inner();
    eprintln!("promql: {evaluated} mutants parsed and evaluated");
    assert!(evaluated > 1000, "{evaluated}");
}
