//! Optional bearer-token authentication.
//!
//! The auth layer resolves a request to a [`Principal`], which names the model [`Level`] the
//! caller may use. The server-wide tokens (and every caller when auth is off) get
//! [`Level::DEFAULT`], the model as configured; the tokens of a service tier get the protection
//! level of the tier's key. The middleware that applies it to the `/v1` routes is
//! `layers::require_token`.

use subtle::ConstantTimeEq;

use crate::Error;
use crate::tokens::ApiToken;

/// A model level: which model a caller is served by. For a selectively encrypted model this is
/// the protection level ℓ restored by a level key; 0 is the model file as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Level(pub(crate) u32);

impl Level {
    /// The model file as configured (for an encrypted model: nothing restored).
    pub(crate) const DEFAULT: Level = Level(0);
}

/// Who is calling, as far as the handlers care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) level: Level,
}

/// The configured tokens, each with its level.
pub(crate) struct Auth {
    tokens: Vec<(ApiToken, Level)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl Auth {
    #[cfg(test)]
    pub(crate) fn new(tokens: Vec<ApiToken>) -> Self {
        Self::with_levels(tokens.into_iter().map(|t| (t, Level::DEFAULT)).collect())
    }

    /// Tokens with the level each is served.
    pub(crate) fn with_levels(tokens: Vec<(ApiToken, Level)>) -> Self {
        Self { tokens }
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether some caller can be served `level` (every caller is served the default level when
    /// auth is off).
    pub(crate) fn serves(&self, level: Level) -> bool {
        if self.enabled() {
            self.tokens.iter().any(|(_, l)| *l == level)
        } else {
            level == Level::DEFAULT
        }
    }

    /// Resolves an `Authorization` header value. Every configured token is compared, in constant
    /// time per token, so the time taken does not depend on where a guess first differs (it does
    /// depend on the token lengths, which are not secret).
    pub(crate) fn resolve(&self, authorization: Option<&[u8]>) -> Result<Principal, Error> {
        if !self.enabled() {
            return Ok(Principal {
                level: Level::DEFAULT,
            });
        }
        let Some(value) = authorization else {
            return Err(Error::Unauthorized(
                "missing bearer token: send `Authorization: Bearer <token>`".into(),
            ));
        };
        let presented = bearer(value).ok_or_else(|| {
            Error::Unauthorized("the Authorization header must be `Bearer <token>`".into())
        })?;
        let mut found = None;
        for (token, level) in &self.tokens {
            if bool::from(token.expose().ct_eq(presented)) {
                found = Some(*level);
            }
        }
        found
            .map(|level| Principal { level })
            .ok_or_else(|| Error::Unauthorized("invalid bearer token".into()))
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive), if that is the header's form.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn off_without_tokens() {
        let auth = Auth::new(Vec::new());
        assert_eq!(auth.resolve(None).expect("open").level, Level::DEFAULT);
    }

    #[test]
    fn accepts_each_configured_token_and_rejects_the_rest() {
        let auth = Auth::new(vec![ApiToken::new("tok-a"), ApiToken::new("tok-b")]);
        for ok in [&b"Bearer tok-a"[..], b"bearer tok-b", b"BEARER  tok-a "] {
            assert!(
                auth.resolve(Some(ok)).is_ok(),
                "{:?}",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            None,
            Some(&b"Bearer tok-c"[..]),
            Some(b"Bearer tok-"),
            Some(b"Bearer tok-aa"),
            Some(b"Bearer "),
            Some(b"Basic dG9rLWE="),
            Some(b"tok-a"),
            Some(b""),
        ] {
            let err = auth.resolve(bad).expect_err("rejected");
            assert_eq!(err.code(), ErrorCode::Unauthorized);
            assert!(!err.to_string().contains("tok-"), "{err}");
        }
    }
}
