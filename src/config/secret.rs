//! A string that never prints: API keys, passwords, bearer tokens.

use serde::{Deserialize, Deserializer};

/// A secret value. `Debug` and `Display` print `[redacted]`; `expose()` is the one way out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `candidate` equals the secret, compared in constant time so that response
    /// timing does not reveal how much of a guess was right.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }
}

/// Compares every byte of the longer input whatever the differences found on the way.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// The credential an `Authorization` value presents in `scheme` (`Bearer`, `Basic`; matched
/// without regard to case), trimmed; with an empty scheme, the whole value. The one reading of
/// the header that the query API, the peer API and `bearertokenauth` share.
pub fn credential<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let value = value.trim_ascii();
    if scheme.is_empty() {
        return Some(value);
    }
    (value.len() > scheme.len()
        && value[..scheme.len()].eq_ignore_ascii_case(scheme)
        && value[scheme.len()] == b' ')
        .then(|| value[scheme.len() + 1..].trim_ascii())
}

/// A per-process random salt, so the fingerprints below say nothing outside this process.
fn salt() -> u64 {
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SALT.get_or_init(rand::random)
}

impl std::fmt::Debug for Secret {
    /// `{:?}` prints `[redacted]`. `{:#?}`, used only to fingerprint configs (so a reload that
    /// changes only a key still restarts what uses it), adds a salted hash of the value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.alternate() {
            let h = xxhash_rust::xxh3::xxh3_64_with_seed(self.0.as_bytes(), salt());
            write!(f, "[redacted {h:016x}]")
        } else {
            f.write_str("[redacted]")
        }
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A secret: never logged or shown. Usually `${env:NAME}` or `${file:/path}`."
        })
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// An empty value (`key:` with nothing after it, as an unset `${env:VAR}` leaves) is an
    /// empty secret, so the component's own check can say which value is missing.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<String>::deserialize(d).map(|s| Secret(s.unwrap_or_default()))
    }
}

/// Reads a secret from a file, trimming one trailing newline as Prometheus does.
pub fn read_secret_file(path: &str) -> Result<Secret, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    Ok(Secret(s.trim_end_matches(['\n', '\r']).to_string()))
}
