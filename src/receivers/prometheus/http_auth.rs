//! How a scrape job or a discovery mechanism authenticates to an HTTP server: Prometheus's
//! `authorization`, `bearer_token[_file]` and `basic_auth` keys, and their resolution with
//! secret files read.

use serde::Deserialize;

use crate::config::secret::Secret;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file the password is read from, on each request.
    #[serde(default)]
    pub password_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme of the `Authorization` header.
    #[serde(default = "default_auth_type", rename = "type")]
    pub kind: String,
    /// The credentials sent after the type.
    #[serde(default)]
    pub credentials: Option<Secret>,
    /// A file the credentials are read from, on each request.
    #[serde(default)]
    pub credentials_file: Option<String>,
}

fn default_auth_type() -> String {
    "Bearer".into()
}

/// Credentials from Prometheus's HTTP client keys, secret files read.
#[derive(Debug, Default)]
pub struct Credentials {
    /// (type, credentials) from `authorization`, or `Bearer` from `bearer_token[_file]`.
    pub authorization: Option<(String, Secret)>,
    /// (username, password) from `basic_auth`.
    pub basic_auth: Option<(String, Secret)>,
}

/// Resolves `authorization` (or the older `bearer_token[_file]`) and `basic_auth` the way
/// Prometheus checks them; returns what could be resolved and every problem found.
pub fn resolve_credentials(
    authorization: Option<&Authorization>,
    bearer_token: Option<&Secret>,
    bearer_token_file: Option<&str>,
    basic_auth: Option<&BasicAuth>,
) -> (Credentials, Vec<String>) {
    let mut problems = Vec::new();
    let mut read = |what: &str, f: &str| match crate::config::secret::read_secret_file(f) {
        Ok(s) => Some(s),
        Err(m) => {
            problems.push(format!("{what}: {m}"));
            None
        }
    };
    let mut exclusive = Vec::new();
    let authorization = match authorization {
        Some(a) => match (&a.credentials, &a.credentials_file) {
            (Some(c), None) => Some((a.kind.clone(), c.clone())),
            (None, Some(f)) => read("authorization", f).map(|s| (a.kind.clone(), s)),
            (Some(_), Some(_)) => {
                exclusive.push("authorization: credentials and credentials_file are exclusive");
                None
            }
            (None, None) => None,
        },
        None => match (bearer_token, bearer_token_file) {
            (Some(t), _) => Some(("Bearer".into(), t.clone())),
            (None, Some(f)) => read("bearer_token_file", f).map(|s| ("Bearer".into(), s)),
            (None, None) => None,
        },
    };
    let basic_auth = basic_auth.and_then(|b| {
        let pw = match (&b.password, &b.password_file) {
            (Some(p), None) => Some(p.clone()),
            (None, Some(f)) => read("basic_auth", f),
            (None, None) => Some(Secret::default()),
            (Some(_), Some(_)) => {
                exclusive.push("basic_auth: password and password_file are exclusive");
                None
            }
        };
        pw.map(|p| (b.username.clone(), p))
    });
    problems.extend(exclusive.into_iter().map(String::from));
    if authorization.is_some() && basic_auth.is_some() {
        problems.push("at most one of basic_auth and authorization may be set".into());
    }
    (
        Credentials {
            authorization,
            basic_auth,
        },
        problems,
    )
}
