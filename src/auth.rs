//! Who may call: the one check of `Authorization` values, shared by the query API, the peer
//! API and the `bearertokenauth` extension the OTLP receiver uses.

use crate::config::secret::{constant_time_eq, credential, Secret};

/// Resolved credentials: tokens presented with one scheme, and basic-auth users.
#[derive(Clone)]
pub struct Credentials {
    /// The scheme tokens come with: `Bearer`, or a `bearertokenauth` extension's own.
    pub scheme: String,
    pub tokens: Vec<Secret>,
    pub users: Vec<(String, Secret)>,
    /// Whether a token is also taken as the password of basic auth, with any user name, so
    /// that a browser's prompt opens the query page of a façade that has tokens only.
    pub token_as_basic_password: bool,
}

impl Credentials {
    /// The query façade's (and its peers'), before its tokens and users are added.
    pub fn facade() -> Self {
        Credentials {
            scheme: "Bearer".into(),
            tokens: Vec::new(),
            users: Vec::new(),
            token_as_basic_password: true,
        }
    }

    /// One token with its scheme, nothing else (`bearertokenauth`).
    pub fn token(scheme: &str, token: Secret) -> Self {
        Credentials {
            scheme: scheme.to_string(),
            tokens: vec![token],
            users: Vec::new(),
            token_as_basic_password: false,
        }
    }

    /// No credentials: every caller is admitted.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty() && self.users.is_empty()
    }

    /// Who presents valid credentials among these `Authorization` values (a token with the
    /// scheme, or `Basic`; several values, or several comma-separated in one, as Flagger may
    /// send them), compared in constant time; `None` if none admits. Never the secret itself.
    pub fn admit<'a>(&self, authorization: impl IntoIterator<Item = &'a str>) -> Option<String> {
        use base64::Engine;
        if self.is_open() {
            return Some("anonymous".into());
        }
        for v in authorization {
            // The whole value first: a token may hold a comma.
            let parts = v.split(',').filter(|_| v.contains(','));
            for part in std::iter::once(v).chain(parts) {
                if let Some(token) = credential(part.as_bytes(), self.scheme.as_bytes()) {
                    if self.tokens.iter().any(|t| t.matches(token)) {
                        return Some("bearer token".into());
                    }
                } else if let Some(pair) = credential(part.as_bytes(), b"basic") {
                    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(pair) else {
                        continue;
                    };
                    let decoded = String::from_utf8_lossy(&decoded);
                    let Some((u, p)) = decoded.split_once(':') else {
                        continue;
                    };
                    if self.users.iter().any(|(cu, cp)| {
                        constant_time_eq(cu.as_bytes(), u.as_bytes()) & cp.matches(p.as_bytes())
                    }) {
                        return Some(format!("basic user {u}"));
                    }
                    // A bearer token typed as the password of a browser's basic-auth prompt
                    // (the query page behind a token-only façade): the same secret.
                    if self.token_as_basic_password
                        && self.tokens.iter().any(|t| t.matches(p.as_bytes()))
                    {
                        return Some("bearer token (as a basic-auth password)".into());
                    }
                }
            }
        }
        None
    }

    /// The `Authorization` value this agent presents to its peers: its first bearer token,
    /// else its first basic user. Agents of one DaemonSet share one config, so what admits
    /// a caller here admits this agent there.
    pub fn authorization(&self) -> Option<Secret> {
        use base64::Engine;
        if let Some(t) = self.tokens.first() {
            return Some(Secret::new(format!("{} {}", self.scheme, t.expose())));
        }
        let (u, p) = self.users.first()?;
        let pair = format!("{u}:{}", p.expose());
        Some(Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_admit_bearer_and_basic() {
        let creds = Credentials {
            tokens: vec![Secret::new("t0k")],
            users: vec![("user".into(), Secret::new("pass"))],
            ..Credentials::facade()
        };
        assert_eq!(
            creds.admit(["Basic dXNlcjpwYXNz"]),
            Some("basic user user".into())
        );
        assert_eq!(creds.admit(["bearer t0k"]), Some("bearer token".into()));
        assert_eq!(
            creds.admit(["Bearer nope, Bearer t0k"]),
            Some("bearer token".into())
        );
        assert_eq!(creds.admit(["Basic dXNlcjpwYXN6"]), None);
        // The token as a basic-auth password ("anyone:t0k"), as a browser's prompt sends it.
        assert_eq!(
            creds.admit(["Basic YW55b25lOnQwaw=="]),
            Some("bearer token (as a basic-auth password)".into())
        );
        assert_eq!(creds.admit(["Basic YW55b25lOnQwag=="]), None);
        assert_eq!(creds.admit(["Basic !!!"]), None);
        assert_eq!(creds.admit(Vec::<&str>::new()), None);
        let back = creds.authorization().expect("has one");
        assert_eq!(back.expose(), "Bearer t0k");
        let basic_only = Credentials {
            tokens: vec![],
            users: creds.users.clone(),
            ..Credentials::facade()
        };
        let header = basic_only.authorization().expect("basic");
        assert_eq!(
            basic_only.admit([header.expose()]),
            Some("basic user user".into())
        );
    }

    #[test]
    fn a_token_with_its_own_scheme_admits_nothing_else() {
        let creds = Credentials::token("Api-Key", Secret::new("k,1"));
        assert!(
            creds.admit(["Api-Key k,1"]).is_some(),
            "a comma in the token"
        );
        assert!(
            creds.admit(["api-key k,1"]).is_some(),
            "schemes ignore case"
        );
        assert!(creds.admit(["Bearer k,1"]).is_none());
        // No basic-auth fallback outside the façade ("anyone:k,1").
        assert!(creds.admit(["Basic YW55b25lOmssMQ=="]).is_none());
        assert!(creds.admit(Vec::<&str>::new()).is_none());
    }
}
