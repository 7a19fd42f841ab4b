//! `bearertokenauth`: the collector's bearer-token authenticator, for receivers that name it
//! in `auth: {authenticator: bearertokenauth}`. The token comes from the config (usually
//! `${env:VAR}`) or from a file that is read again on every check, so a rotated token takes
//! effect without a reload.

use serde::Deserialize;

use crate::auth::Credentials;
use crate::config::secret::{read_secret_file, Secret};

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BearerTokenAuthConfig {
    /// The word before the token in `Authorization` (the collector's default: `Bearer`).
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// The token callers must present (or `filename`).
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token, read again on every check (a rotated Secret takes effect
    /// without a restart).
    #[serde(default)]
    pub filename: Option<String>,
}

fn default_scheme() -> String {
    "Bearer".into()
}

impl BearerTokenAuthConfig {
    pub fn validate(&self) -> Result<(), String> {
        match (&self.token, &self.filename) {
            (Some(t), None) if t.is_empty() => {
                Err("token is empty (is its environment variable set?)".into())
            }
            (Some(_), None) => Ok(()),
            (None, Some(f)) => read_secret_file(f).map(|_| ()),
            (Some(_), Some(_)) => Err("set token or filename, not both".into()),
            (None, None) => Err("set token or filename".into()),
        }
    }
}

/// Checks `Authorization` header values against the configured token.
#[derive(Debug, Clone)]
pub struct BearerTokenAuth {
    cfg: BearerTokenAuthConfig,
}

impl BearerTokenAuth {
    pub fn new(cfg: BearerTokenAuthConfig) -> Self {
        BearerTokenAuth { cfg }
    }

    fn token(&self) -> Option<Secret> {
        match (&self.cfg.token, &self.cfg.filename) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => match read_secret_file(f) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "bearertokenauth: cannot read the token file; refusing requests");
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// Whether any of the header values carries the token (constant-time comparison).
    pub fn admits<'a>(&self, values: impl Iterator<Item = &'a [u8]>) -> bool {
        let Some(token) = self.token().filter(|t| !t.is_empty()) else {
            return false;
        };
        let values: Vec<&str> = values.filter_map(|v| std::str::from_utf8(v).ok()).collect();
        Credentials::token(&self.cfg.scheme, token)
            .admit(values)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_only_the_token() {
        let a = BearerTokenAuth::new(BearerTokenAuthConfig {
            scheme: "Bearer".into(),
            token: Some(Secret::new("s3cret")),
            filename: None,
        });
        assert!(a.admits([&b"Bearer s3cret"[..]].into_iter()));
        assert!(a.admits([&b"bearer s3cret "[..]].into_iter()));
        assert!(a.admits([&b"Bearer nope"[..], &b"Bearer s3cret"[..]].into_iter()));
        assert!(!a.admits([&b"Bearer s3cre"[..]].into_iter()));
        assert!(!a.admits([&b"s3cret"[..]].into_iter()));
        assert!(!a.admits(std::iter::empty()));
    }

    #[test]
    fn token_file_is_read_on_each_check() {
        let dir = std::env::temp_dir().join(format!("mm-bta-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let f = dir.join("token");
        std::fs::write(&f, "one\n").expect("write");
        let a = BearerTokenAuth::new(BearerTokenAuthConfig {
            scheme: "Bearer".into(),
            token: None,
            filename: Some(f.display().to_string()),
        });
        assert!(a.admits([&b"Bearer one"[..]].into_iter()));
        std::fs::write(&f, "two").expect("write");
        assert!(!a.admits([&b"Bearer one"[..]].into_iter()));
        assert!(a.admits([&b"Bearer two"[..]].into_iter()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
