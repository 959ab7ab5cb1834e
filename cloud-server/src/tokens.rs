//! API bearer tokens: where they come from (a token file, the `SCRIM_CLOUD_TOKENS` variable)
//! and how they are kept out of logs.

use std::path::Path;

use crate::{Error, Result};

/// Environment variable holding comma-separated API tokens.
pub const TOKENS_ENV: &str = "SCRIM_CLOUD_TOKENS";

/// Reads a token file, refusing one without tokens (an empty file must not silently turn auth
/// off, or leave a tier unusable).
pub(crate) fn read_token_file(path: &Path) -> Result<Vec<ApiToken>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let from_file = parse_token_lines(&text).map_err(|line| {
        Error::Config(format!(
            "{}: line {line}: a token must not contain spaces",
            path.display()
        ))
    })?;
    if from_file.is_empty() {
        return Err(Error::Config(format!(
            "{}: the token file holds no token; remove --tokens-file to run without auth",
            path.display()
        )));
    }
    Ok(from_file)
}

/// Parses a token file: one token per line, `#` comments and blank lines ignored. On a malformed
/// line, returns its 1-based number (never its content, which may be a secret).
fn parse_token_lines(text: &str) -> std::result::Result<Vec<ApiToken>, usize> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.split_whitespace().count() != 1 {
            return Err(i + 1);
        }
        out.push(ApiToken::new(line));
    }
    Ok(out)
}

/// Parses the comma-separated `SCRIM_CLOUD_TOKENS` value (blank entries between tokens are
/// ignored).
///
/// # Errors
/// [`Error::Config`] when the value holds no token at all (`""`, `","`, `" , "`): a variable that
/// is set must not silently turn authentication off; auth is off only when no token is configured
/// anywhere. Also for an entry with inner whitespace (never echoed: it may be a secret).
pub fn parse_token_list(value: &str) -> Result<Vec<ApiToken>> {
    let mut tokens = Vec::new();
    for (i, entry) in value.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            continue;
        }
        if entry.split_whitespace().count() != 1 {
            return Err(Error::Config(format!(
                "{TOKENS_ENV}: entry {} contains whitespace; separate tokens with commas",
                i + 1
            )));
        }
        tokens.push(ApiToken::new(entry));
    }
    if tokens.is_empty() {
        return Err(Error::Config(format!(
            "{TOKENS_ENV} is set but holds no token; unset it to run without authentication"
        )));
    }
    Ok(tokens)
}

/// An API bearer token. Its `Debug` prints nothing secret, and it is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// True for an empty token, which configuration refuses.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret bytes, for the constant-time comparison in `auth`.
    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}
