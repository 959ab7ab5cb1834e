//! The one public error of the SDK, and the guard that keeps panics on the Rust side.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Everything that can go wrong in the SDK, in terms an app can act on.
///
/// Kotlin sees a sealed `ScrimException` hierarchy, Swift an `enum ScrimError: Error`, Python
/// `ScrimError.<Variant>` exception classes. Every variant carries a `detail` text meant for logs,
/// not for end users. (The field is not called `message`: that name clashes with Kotlin's
/// `Throwable.message`.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum ScrimError {
    /// The bytes are not a JPEG, PNG or WebP image, or are corrupt. Ask the user for another one.
    #[error("invalid image: {detail}")]
    InvalidImage {
        /// What is wrong with the image.
        detail: String,
    },
    /// The image declares more pixels than the decoder accepts (a decompression-bomb guard).
    /// Downscale it before handing it to the SDK.
    #[error("image too large: {width}x{height} exceeds {limit} pixels")]
    ImageTooLarge {
        /// Declared width in pixels.
        width: u32,
        /// Declared height in pixels.
        height: u32,
        /// The largest `width × height` accepted.
        limit: u64,
    },
    /// The perturber's ONNX file or manifest is invalid, or it is not a perturber. Ship the
    /// model files that belong together.
    #[error("invalid model: {detail}")]
    InvalidModel {
        /// What is wrong with the model or its manifest.
        detail: String,
    },
    /// A [`crate::ClientConfig`] value is unusable (URL, token, certificates, timeouts).
    #[error("invalid configuration: {detail}")]
    InvalidConfig {
        /// Which setting is wrong and why.
        detail: String,
    },
    /// The server could not be reached, or the connection failed or timed out, after all
    /// retries. Usually worth retrying later (offline, flaky network).
    #[error("network error: {detail}")]
    Network {
        /// The transport error.
        detail: String,
    },
    /// The server refused the API token (HTTP 401/403). Retrying will not help; refresh the token.
    #[error("unauthorized: {detail}")]
    Unauthorized {
        /// The server's explanation.
        detail: String,
    },
    /// The server answered with an error. `code` is the server's machine-readable code
    /// (`wrong_size`, `invalid_image`, `payload_too_large`, `image_too_large`,
    /// `unsupported_media_type`, `overloaded`, `timeout`, `internal`, …).
    #[error("server error {status} ({code}): {detail}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's error code, or `http_<status>` if the body had none.
        code: String,
        /// The server's message.
        detail: String,
    },
    /// The server answered 2xx with a body that is not a classification (wrong URL, proxy page,
    /// incompatible server version).
    #[error("invalid response: {detail}")]
    InvalidResponse {
        /// What was wrong with the body.
        detail: String,
    },
    /// A bug in the SDK (a caught panic or an unexpected internal failure). Please report it.
    #[error("internal error: {detail}")]
    Internal {
        /// What happened.
        detail: String,
    },
}

/// `Result` with [`ScrimError`].
pub type Result<T, E = ScrimError> = std::result::Result<T, E>;

impl From<scrim_core::Error> for ScrimError {
    fn from(e: scrim_core::Error) -> Self {
        use scrim_core::Error as E;
        match e {
            E::InvalidImage(detail) => Self::InvalidImage { detail },
            E::ImageTooLarge {
                width,
                height,
                limit,
                ..
            } => Self::ImageTooLarge {
                width,
                height,
                limit,
            },
            // `Perturber::perturb` resizes to the model's input, so a size mismatch can only come
            // from a model whose outputs do not match its manifest.
            e @ (E::WrongSize { .. }
            | E::InvalidManifest(_)
            | E::MissingManifest { .. }
            | E::MismatchedRuns { .. }
            | E::InvalidModel(_)
            | E::InvalidKey(_)) => Self::InvalidModel {
                detail: e.to_string(),
            },
            E::InvalidArgument(detail) => Self::InvalidConfig { detail },
            other => Self::Internal {
                detail: other.to_string(),
            },
        }
    }
}

/// Runs `f`, turning a panic into [`ScrimError::Internal`] so that no panic unwinds into the
/// foreign caller. (uniffi also catches panics, but as an untyped internal exception; this keeps
/// the one error type the app handles.)
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(ScrimError::Internal {
            detail: format!("panic: {detail}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_panics_into_internal_errors() {
        let r: Result<()> = guard(|| panic!("boom"));
        assert_eq!(
            r,
            Err(ScrimError::Internal {
                detail: "panic: boom".into()
            })
        );
        let r: Result<()> = guard(|| panic!("{}", String::from("formatted")));
        assert_eq!(
            r,
            Err(ScrimError::Internal {
                detail: "panic: formatted".into()
            })
        );
        assert_eq!(guard(|| Ok(3)), Ok(3));
    }

    #[test]
    fn core_errors_map_to_actionable_variants() {
        let cases = [
            (scrim_core::Error::InvalidImage("x".into()), "InvalidImage"),
            (
                scrim_core::Error::ImageTooLarge {
                    width: 9,
                    height: 9,
                    pixels: 81,
                    limit: 80,
                },
                "ImageTooLarge",
            ),
            (
                scrim_core::Error::InvalidManifest("m".into()),
                "InvalidModel",
            ),
            (scrim_core::Error::InvalidModel("m".into()), "InvalidModel"),
            (
                scrim_core::Error::InvalidArgument("a".into()),
                "InvalidConfig",
            ),
        ];
        for (core, variant) in cases {
            let mapped = format!("{:?}", ScrimError::from(core));
            assert!(mapped.starts_with(variant), "{mapped} should be {variant}");
        }
    }
}
