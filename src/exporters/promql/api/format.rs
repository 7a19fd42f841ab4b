//! How the API reads times and durations, and writes timestamps, values, label sets and
//! query results: byte for byte as Prometheus (values in Go's `'f', -1` format, `"NaN"`,
//! `"+Inf"`, timestamps as seconds with exactly three fraction digits when there are any).

use std::time::Duration;

use crate::model::format_value;
use crate::promql::Value;

/// The furthest time from the epoch a request may name, in ms (about 146 million years):
/// room enough that no sum of it with a duration or an offset the evaluator forms overflows
/// unnoticed. Prometheus's own bound (Go's time range) is wider, but nothing is stored there.
pub const MAX_TIME_MS: i64 = 1 << 62;

/// Parses Prometheus API times: float Unix seconds or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let invalid = || format!("cannot parse {s:?} to a valid timestamp");
    let ms = match s.parse::<f64>() {
        Ok(f) if f.is_finite() => (f * 1000.0).round(),
        _ => parse_rfc3339(s).ok_or_else(invalid)? as f64,
    };
    if ms.abs() > MAX_TIME_MS as f64 {
        return Err(invalid());
    }
    Ok(ms as i64)
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        let padded = format!("{digits:0<3}");
        frac_ms = padded[..3].parse().ok()?;
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' => 0,
        b'+' | b'-' => {
            let sign = if b[i] == b'-' { -1 } else { 1 };
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from civil (proleptic Gregorian).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se - offset_s) * 1000) + frac_ms)
}

/// Parses a step or timeout: float seconds or a Prometheus duration.
pub fn parse_duration_param(s: &str) -> Result<Duration, String> {
    if let Ok(f) = s.trim().parse::<f64>() {
        // `try_`: a step of 1e300 seconds is an error, not a panic in the handler.
        if let Ok(d) = Duration::try_from_secs_f64(f) {
            return Ok(d);
        }
        return Err(format!("cannot parse {s:?} to a valid duration"));
    }
    crate::config::units::parse_duration(s)
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

pub fn ts_json(ms: i64) -> String {
    // As Prometheus's MarshalTimestamp: seconds, then exactly three fraction digits if any.
    let sign = if ms < 0 { "-" } else { "" };
    let a = ms.unsigned_abs();
    match a % 1000 {
        0 => format!("{sign}{}", a / 1000),
        f => format!("{sign}{}.{f:03}", a / 1000),
    }
}

pub fn labels_json(labels: &crate::model::Labels, out: &mut String) {
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(&*l.name).unwrap_or_default());
        out.push(':');
        out.push_str(&serde_json::to_string(&*l.value).unwrap_or_default());
    }
    out.push('}');
}

fn point_json(t: i64, v: f64, out: &mut String) {
    out.push('[');
    out.push_str(&ts_json(t));
    out.push_str(",\"");
    out.push_str(&format_value(v));
    out.push_str("\"]");
}

/// `data` of a query result.
pub fn result_json(v: &Value, ts: i64) -> String {
    let mut out = String::with_capacity(256);
    match v {
        Value::Scalar(f) => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            point_json(ts, *f, &mut out);
            out.push('}');
        }
        Value::String(s) => {
            out.push_str("{\"resultType\":\"string\",\"result\":[");
            out.push_str(&ts_json(ts));
            out.push(',');
            out.push_str(&serde_json::to_string(s).unwrap_or_default());
            out.push_str("]}");
        }
        Value::Vector(samples) => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                labels_json(&s.labels, &mut out);
                out.push_str(",\"value\":");
                point_json(ts, s.value, &mut out);
                out.push('}');
            }
            out.push_str("]}");
        }
        Value::Matrix(series) => {
            out.push_str("{\"resultType\":\"matrix\",\"result\":[");
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                labels_json(&s.labels, &mut out);
                out.push_str(",\"values\":[");
                for (j, (t, v)) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    point_json(*t, *v, &mut out);
                }
                out.push_str("]}");
            }
            out.push_str("]}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51+02:00"),
            Ok(1_435_781_451_000)
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration_param("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration_param("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration_param("1e300").is_err());
        assert!(parse_duration_param("-1").is_err());
        assert_eq!(ts_json(1_435_781_451_781), "1435781451.781");
        assert_eq!(ts_json(1_435_781_451_000), "1435781451");
        assert_eq!(ts_json(1_435_781_451_990), "1435781451.990");
        assert_eq!(ts_json(1_435_781_451_005), "1435781451.005");
    }
}
