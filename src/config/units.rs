//! Durations and byte sizes as users write them in collector and Prometheus configs.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Parses `300ms`, `5s`, `1m30s`, `1.5h`, `1d`, `2w`, `1y` (Go and Prometheus spellings).
/// A bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        if start == i {
            return Err(format!("invalid duration {s:?}: expected a number"));
        }
        let num: f64 = s[start..i]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        let ustart = i;
        while i < b.len() && !(b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let unit = &s[ustart..i];
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 7.0 * 86400.0,
            "y" => 365.0 * 86400.0,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (e.g. 5s, 1m)"
                ))
            }
            u => return Err(format!("invalid duration {s:?}: unknown unit {u:?}")),
        };
        total += num * secs;
    }
    // Found by fuzzing: `from_secs_f64` panics past ~584 billion years, which a config
    // reload must never do to a running agent.
    Duration::try_from_secs_f64(total).map_err(|_| format!("invalid duration {s:?}: out of range"))
}

/// Parses `10MB`, `512KiB`, `1GB`, `100` (bytes). KB/MB/GB are powers of 1024, as in
/// Prometheus's `body_size_limit`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let num: f64 = s[..split]
        .parse()
        .map_err(|_| format!("invalid byte size {s:?}"))?;
    let mult: u64 = match s[split..].trim() {
        "" | "B" => 1,
        "KB" | "KiB" | "K" => 1 << 10,
        "MB" | "MiB" | "M" => 1 << 20,
        "GB" | "GiB" | "G" => 1 << 30,
        "TB" | "TiB" | "T" => 1 << 40,
        u => return Err(format!("invalid byte size {s:?}: unknown unit {u:?}")),
    };
    Ok((num * mult as f64) as u64)
}

/// Formats a duration the way Prometheus prints one (`1m30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [("h", 3_600_000u64), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Text(String),
    Nanos(u64),
}

pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match DurationRepr::deserialize(d)? {
        DurationRepr::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        DurationRepr::Nanos(n) => Ok(Duration::from_nanos(n)),
    }
}

pub fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BytesRepr {
    Text(String),
    Num(u64),
}

pub fn de_opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match BytesRepr::deserialize(d)? {
        BytesRepr::Text(s) => parse_bytes(&s).map(Some).map_err(serde::de::Error::custom),
        BytesRepr::Num(n) => Ok(Some(n)),
    }
}

/// How a duration is written in a config, for its JSON Schema: Go's form (`30s`, `1m30s`,
/// `500ms`, `1h`).
pub struct DurationText;

impl schemars::JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "integer"],
            "description": "A duration: numbers with units (ns, us, ms, s, m, h, d, w, y) as in 30s, 1m30s or 500ms; a bare integer counts nanoseconds, as in the collector.",
            "pattern": "^(0|([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h|d|w|y))+)$"
        })
    }
}

/// How a byte size is written in a config, for its JSON Schema: a number of bytes, or one
/// with a unit (`512MiB`, `10MB`).
pub struct ByteSize;

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["integer", "string"],
            "description": "A size: a number of bytes, or a number with a unit (B, KB or KiB, MB or MiB, GB or GiB, TB or TiB; each a power of 1024)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
        assert_eq!(
            parse_duration("99999999999999999999y"),
            Err("invalid duration \"99999999999999999999y\": out of range".into())
        );
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("10MB"), Ok(10 << 20));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert!(parse_bytes("1XB").is_err());
    }
}
