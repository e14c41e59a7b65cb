//! API tokens: who may call which route. A token is a secret a client sends
//! as `Authorization: Bearer SECRET`; the host keeps only its SHA-256, with
//! a name (for the logs) and the scopes it grants.
//!
//! ```toml
//! [[tokens]]
//! name = "ci"
//! scopes = ["read", "append"]
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! ```

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

/// What a token allows. Scopes are independent: a token that administers
/// and reads lists both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read projections, documents, change feeds, metrics and events.
    Read,
    /// Append events.
    Append,
    /// Retry, drop, pause, resume, reset and rebuild projections.
    Admin,
}

impl Scope {
    /// The scope as the config file and the API write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Append => "append",
            Self::Admin => "admin",
        }
    }

    /// Parses `read`, `append` or `admin`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Read, Self::Append, Self::Admin].into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may call a route: anyone, or a token with the scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (`/health`, `/openapi.json`).
    Open,
    /// A token with this scope.
    Scoped(Scope),
}

/// The SHA-256 of a token's secret, written as 64 hex digits.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct Digest32([u8; 32]);

impl TryFrom<String> for Digest32 {
    type Error = String;

    fn try_from(hex: String) -> Result<Self, String> {
        let bad =
            || format!("`sha256` must be 64 hex digits (the SHA-256 of the secret), got {} characters", hex.len());
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

impl std::fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sha256:…")
    }
}

/// One token: a name, its scopes and the hash of its secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Who or what uses it, for the logs.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    sha256: Digest32,
}

/// The tokens a host accepts. Empty: the API is open (see `refract run
/// --insecure-no-auth`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Tokens(Vec<Token>);

/// Errors reading a tokens file.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// Tokens file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not a list of `[[tokens]]` tables.
    #[error("{path}: {reason}")]
    Invalid {
        /// Tokens file.
        path: PathBuf,
        /// What is wrong, as the TOML parser says.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Tokens,
}

impl Tokens {
    /// Parses the text of a tokens file: `[[tokens]]` tables only.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str::<TokensFile>(text).map(|f| f.tokens).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Reads and parses the tokens file at `path`.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Io { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|reason| TokensError::Invalid { path: path.to_owned(), reason })
    }

    /// These tokens and `other`'s.
    pub fn merge(mut self, other: Tokens) -> Self {
        self.0.extend(other.0);
        self
    }

    /// Whether there are none (the API is then open).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The token whose secret is `secret`. Every stored hash is compared,
    /// each in constant time, so the answer's timing says nothing about how
    /// much of a guess was right.
    fn find(&self, secret: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for token in &self.0 {
            if constant_time_eq(&token.sha256.0, &digest) {
                found = Some(token);
            }
        }
        found
    }

    /// Checks a request's headers against a route's access rule.
    pub(crate) fn check(&self, headers: &HeaderMap, access: Access) -> Result<(), Denied> {
        let Access::Scoped(scope) = access else { return Ok(()) };
        if self.is_empty() {
            return Ok(());
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else { return Err(Denied::Missing) };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(kind, _)| kind.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret.trim())
            .ok_or(Denied::Malformed)?;
        let token = self.find(secret).ok_or(Denied::Unknown)?;
        if token.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(Denied::Scope { token: token.name.clone(), needed: scope })
        }
    }
}

/// The SHA-256 of `secret` as 64 hex digits: what a tokens file stores.
pub fn token_hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two digests without an early exit on the first difference.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Bearer SECRET`.
    Malformed,
    /// A secret no token has.
    Unknown,
    /// A known token without the route's scope.
    Scope { token: String, needed: Scope },
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let (status, message, extra) = match &self {
            Self::Missing => (
                StatusCode::UNAUTHORIZED,
                "this endpoint needs a token: send `Authorization: Bearer SECRET`".to_owned(),
                None,
            ),
            Self::Malformed => (
                StatusCode::UNAUTHORIZED,
                "the Authorization header must be `Bearer SECRET`".to_owned(),
                Some("invalid_request"),
            ),
            Self::Unknown => (StatusCode::UNAUTHORIZED, "unknown token".to_owned(), Some("invalid_token")),
            Self::Scope { token, needed } => (
                StatusCode::FORBIDDEN,
                format!("token `{token}` does not have the `{needed}` scope this endpoint needs"),
                Some("insufficient_scope"),
            ),
        };
        let mut body = json!({ "error": message });
        if let Self::Scope { needed, .. } = &self {
            body["scope"] = json!(needed.as_str());
        }
        let mut response = (status, axum::Json(body)).into_response();
        // RFC 6750: what a client needs to know to try again.
        let challenge = match (extra, &self) {
            (None, _) => "Bearer realm=\"refract\"".to_owned(),
            (Some(code), Self::Scope { needed, .. }) => {
                format!("Bearer realm=\"refract\", error=\"{code}\", scope=\"{needed}\"")
            }
            (Some(code), _) => format!("Bearer realm=\"refract\", error=\"{code}\""),
        };
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// What the auth layer of one route needs: the host's tokens and the route's rule.
#[derive(Clone)]
pub(crate) struct Guard {
    pub tokens: std::sync::Arc<Tokens>,
    pub access: Access,
}

/// Refuses a request without a token that grants the route's scope.
pub(crate) async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    match guard.tokens.check(request.headers(), guard.access) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            if let Denied::Scope { token, needed } = &denied {
                tracing::info!(token = %token, scope = %needed, path = %request.uri().path(), "request refused: scope");
            }
            denied.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::parse(&format!(
            "[[tokens]]\nname = \"reader\"\nscopes = [\"read\"]\nsha256 = \"{}\"\n\
             [[tokens]]\nname = \"ops\"\nscopes = [\"admin\", \"read\"]\nsha256 = \"{}\"\n",
            token_hash("r-secret"),
            token_hash("o-secret")
        ))
        .unwrap()
    }

    fn bearer(secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {secret}")).unwrap());
        h
    }

    #[test]
    fn each_token_gets_its_scopes_and_no_other() {
        let t = tokens();
        let read = Access::Scoped(Scope::Read);
        let admin = Access::Scoped(Scope::Admin);
        assert_eq!(t.check(&bearer("r-secret"), read), Ok(()));
        assert_eq!(
            t.check(&bearer("r-secret"), admin),
            Err(Denied::Scope { token: "reader".into(), needed: Scope::Admin })
        );
        assert_eq!(t.check(&bearer("o-secret"), admin), Ok(()));
        assert_eq!(
            t.check(&bearer("o-secret"), Access::Scoped(Scope::Append)),
            Err(Denied::Scope { token: "ops".into(), needed: Scope::Append })
        );
        assert_eq!(t.check(&bearer("guess"), read), Err(Denied::Unknown));
        assert_eq!(t.check(&HeaderMap::new(), read), Err(Denied::Missing));
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwdw=="));
        assert_eq!(t.check(&basic, read), Err(Denied::Malformed));
        assert_eq!(t.check(&HeaderMap::new(), Access::Open), Ok(()));
        assert_eq!(Tokens::default().check(&HeaderMap::new(), admin), Ok(()), "no tokens: open");
    }

    #[test]
    fn bad_entries_are_named() {
        let e = Tokens::parse("[[tokens]]\nname = \"x\"\nscopes = [\"read\"]\nsha256 = \"abc\"\n").unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
        let e = Tokens::parse(&format!(
            "[[tokens]]\nname = \"x\"\nscopes = [\"write\"]\nsha256 = \"{}\"\n",
            token_hash("s")
        ))
        .unwrap_err();
        assert!(e.contains("unknown variant `write`"), "{e}");
        let e = Tokens::parse(&format!("[[tokens]]\nname = \"x\"\nscopes = []\nsecret = \"{}\"\n", "s")).unwrap_err();
        assert!(e.contains("unknown field `secret`"), "{e}");
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        // `printf test | sha256sum`
        assert_eq!(token_hash("test"), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    }
}
