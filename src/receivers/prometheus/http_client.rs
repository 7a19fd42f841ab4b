//! Prometheus's HTTP client keys, which a scrape job and each discovery mechanism carry
//! inline: `authorization`, `bearer_token[_file]`, `basic_auth` and `tls_config`, and their
//! resolution with secret files read. The keys are declared once, in
//! [`with_http_client!`]; [`HttpClientConfig`] is the one type code reads them through.

use serde::Deserialize;

use crate::config::secret::Secret;

/// Declares a config struct with Prometheus's HTTP client keys inline after its own, and
/// `http_client()` returning them as an [`HttpClientConfig`]. Prometheus inlines its
/// `HTTPClientConfig` the same way; serde's `flatten` would too, but it loses the
/// `file:line:column` and the suggestion of an unknown key, which `deny_unknown_fields` keeps.
macro_rules! with_http_client {
    ($(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// The `Authorization` header sent to the server (a job's targets, a discovery's API).
            #[serde(default)]
            pub authorization: Option<$crate::receivers::prometheus::http_client::Authorization>,
            /// Basic auth sent to the server.
            #[serde(default)]
            pub basic_auth: Option<$crate::receivers::prometheus::http_client::BasicAuth>,
            /// A bearer token sent to the server (older form of `authorization`).
            #[serde(default)]
            pub bearer_token: Option<$crate::config::secret::Secret>,
            /// A file holding a bearer token sent to the server (a discovery's API client reads it
            /// again as it rotates; a scrape job when the config loads).
            #[serde(default)]
            pub bearer_token_file: Option<String>,
            /// TLS settings for the server.
            #[serde(default)]
            pub tls_config: $crate::config::tls::TlsClientConfig,
        }

        impl $name {
            /// Its HTTP client keys.
            pub fn http_client(&self) -> $crate::receivers::prometheus::http_client::HttpClientConfig {
                $crate::receivers::prometheus::http_client::HttpClientConfig {
                    authorization: self.authorization.clone(),
                    basic_auth: self.basic_auth.clone(),
                    bearer_token: self.bearer_token.clone(),
                    bearer_token_file: self.bearer_token_file.clone(),
                    tls_config: self.tls_config.clone(),
                }
            }
        }
    };
}
pub(crate) use with_http_client;

with_http_client! {
    /// Prometheus's HTTP client keys, as a scrape job and a discovery mechanism hold them.
    #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HttpClientConfig {}
}

impl HttpClientConfig {
    /// Whether any key is set.
    pub fn is_set(&self) -> bool {
        *self != HttpClientConfig::default()
    }

    /// Resolves `authorization` (or the older `bearer_token[_file]`) and `basic_auth` the way
    /// Prometheus checks them; returns what could be resolved and every problem found.
    pub fn credentials(&self) -> (Credentials, Vec<String>) {
        let mut problems = Vec::new();
        let mut read = |what: &str, f: &str| match crate::config::secret::read_secret_file(f) {
            Ok(s) => Some(s),
            Err(m) => {
                problems.push(format!("{what}: {m}"));
                None
            }
        };
        let mut exclusive = Vec::new();
        let authorization = match &self.authorization {
            Some(a) => match (&a.credentials, &a.credentials_file) {
                (Some(c), None) => Some((a.kind.clone(), c.clone())),
                (None, Some(f)) => read("authorization", f).map(|s| (a.kind.clone(), s)),
                (Some(_), Some(_)) => {
                    exclusive.push("authorization: credentials and credentials_file are exclusive");
                    None
                }
                (None, None) => None,
            },
            None => match (&self.bearer_token, &self.bearer_token_file) {
                (Some(t), _) => Some(("Bearer".into(), t.clone())),
                (None, Some(f)) => read("bearer_token_file", f).map(|s| ("Bearer".into(), s)),
                (None, None) => None,
            },
        };
        let basic_auth = self.basic_auth.as_ref().and_then(|b| {
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
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file the password is read from, when the config loads.
    #[serde(default)]
    pub password_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme of the `Authorization` header.
    #[serde(default = "default_auth_type", rename = "type")]
    pub kind: String,
    /// The credentials sent after the type.
    #[serde(default)]
    pub credentials: Option<Secret>,
    /// A file the credentials are read from, when the config loads.
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
