//! The one error type of scrim-cloud, and how a request error becomes an HTTP response.
//!
//! Every error a client can see has a stable machine-readable [`ErrorCode`] and a message written
//! for the developer who sent the request. Internal details (model paths, tract messages, panics)
//! are logged, never sent.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// Everything that can go wrong in scrim-cloud: at start-up (configuration, model, socket) and
/// while serving a request (bad input, overload, timeout).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (a value out of range, an unreadable TOML file, …).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The model or its manifest is missing or invalid; the server refuses to start.
    #[error("cannot load the recognizer: {0}")]
    Model(scrim_core::Error),
    /// Reading a file (config, tokens) failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The load generator failed (connection refused, protocol error).
    #[error("bench: {0}")]
    Bench(String),

    /// The body is not a decodable JPEG or PNG image (or a malformed multipart body).
    #[error("{0}")]
    InvalidImage(String),
    /// The image decodes but is not at the model's input size.
    #[error("{0}")]
    WrongSize(String),
    /// The request's `Content-Type` is not one the route accepts.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body (or the number of images in a batch) exceeds the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The image declares more pixels than the configured limit.
    #[error("{0}")]
    ImageTooLarge(String),
    /// A bearer token is required and was missing or wrong.
    #[error("{0}")]
    Unauthorized(String),
    /// The inference queue is full; the client should retry after `retry_after_secs`.
    #[error("the server is overloaded (inference queue full); retry after {retry_after_secs} s")]
    Overloaded {
        /// Value of the `Retry-After` header.
        retry_after_secs: u64,
    },
    /// The request body did not arrive within the configured body timeout.
    #[error(
        "the request body did not arrive within {timeout_ms} ms; send the body right after the \
         headers"
    )]
    BodyTimeout {
        /// The configured body timeout.
        timeout_ms: u64,
    },
    /// The request did not complete within the configured timeout.
    #[error("the request did not complete within {timeout_ms} ms")]
    Timeout {
        /// The configured request timeout.
        timeout_ms: u64,
    },
    /// No such route (or no such method on a route).
    #[error("{0}")]
    NotFound(String),
    /// A bug or an unexpected failure; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// `Result` with scrim-cloud's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The stable, machine-readable error codes of the API (`{"error": {"code": …}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: not a JPEG/PNG image, or a malformed body.
    InvalidImage,
    /// 400: not at the model's input size.
    WrongSize,
    /// 415: the content type is not accepted.
    UnsupportedMediaType,
    /// 413: the body is too large.
    PayloadTooLarge,
    /// 413: the image has too many pixels.
    ImageTooLarge,
    /// 401: missing or wrong bearer token.
    Unauthorized,
    /// 503: queue full, see `Retry-After`.
    Overloaded,
    /// 504: the request timed out.
    Timeout,
    /// 408: the request body did not arrive in time.
    BodyTimeout,
    /// 400: not a well-formed HTTP request (answered before routing).
    BadRequest,
    /// 414: the URL is too long (answered before routing).
    UriTooLong,
    /// 431: too many header fields, or too large a request head (answered before routing).
    HeadersTooLarge,
    /// 404 (or 405 for a known path with the wrong method).
    NotFound,
    /// 500: a server-side failure.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of the API documentation.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::InvalidImage,
        ErrorCode::WrongSize,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::PayloadTooLarge,
        ErrorCode::ImageTooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::Overloaded,
        ErrorCode::Timeout,
        ErrorCode::NotFound,
        ErrorCode::Internal,
        ErrorCode::BodyTimeout,
        ErrorCode::BadRequest,
        ErrorCode::UriTooLong,
        ErrorCode::HeadersTooLarge,
    ];

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidImage | ErrorCode::WrongSize | ErrorCode::BadRequest => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::PayloadTooLarge | ErrorCode::ImageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as it appears in JSON, e.g. `wrong_size`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidImage => "invalid_image",
            ErrorCode::WrongSize => "wrong_size",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::ImageTooLarge => "image_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Internal => "internal",
            ErrorCode::BodyTimeout => "body_timeout",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::HeadersTooLarge => "headers_too_large",
        }
    }
}

/// The JSON body of every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorBody,
}

/// The inside of [`ErrorResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation; wording may change between versions.
    pub message: String,
}

impl Error {
    /// The API code of this error. Start-up errors never reach a client; if one did, it would be
    /// reported as `internal`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidImage(_) => ErrorCode::InvalidImage,
            Error::WrongSize(_) => ErrorCode::WrongSize,
            Error::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Error::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Error::ImageTooLarge(_) => ErrorCode::ImageTooLarge,
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::Overloaded { .. } => ErrorCode::Overloaded,
            Error::Timeout { .. } => ErrorCode::Timeout,
            Error::BodyTimeout { .. } => ErrorCode::BodyTimeout,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Internal(_)
            | Error::Config(_)
            | Error::Model(_)
            | Error::Io { .. }
            | Error::Bind { .. }
            | Error::Bench(_) => ErrorCode::Internal,
        }
    }

    /// Maps an error from decoding an upload onto the API's codes. Anything that is not about the
    /// client's bytes is internal.
    pub(crate) fn from_decode(e: scrim_core::Error) -> Self {
        match e {
            scrim_core::Error::InvalidImage(msg) => {
                Error::InvalidImage(format!("the body is not a valid PNG or JPEG image: {msg}"))
            }
            scrim_core::Error::WrongSize { expected, found } => Error::WrongSize(format!(
                "wrong image size: the server expects {expected}, got {found}; upload the \
                 perturbed image at the model's input size, do not resize it"
            )),
            e @ scrim_core::Error::ImageTooLarge { .. } => Error::ImageTooLarge(e.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }

    /// Adds which part of a batch the error is about.
    pub(crate) fn in_part(self, index: usize, name: Option<&str>) -> Self {
        let at = match name {
            Some(n) => format!("image {index} ({n:?})"),
            None => format!("image {index}"),
        };
        match self {
            Error::InvalidImage(m) => Error::InvalidImage(format!("{at}: {m}")),
            Error::WrongSize(m) => Error::WrongSize(format!("{at}: {m}")),
            Error::UnsupportedMediaType(m) => Error::UnsupportedMediaType(format!("{at}: {m}")),
            Error::PayloadTooLarge(m) => Error::PayloadTooLarge(format!("{at}: {m}")),
            Error::ImageTooLarge(m) => Error::ImageTooLarge(format!("{at}: {m}")),
            other => other,
        }
    }

    /// The message a client may see: everything but internal details.
    fn public_message(&self) -> String {
        match self.code() {
            ErrorCode::Internal => "internal server error".to_owned(),
            _ => self.to_string(),
        }
    }
}

/// The JSON body of an error response, for answers written outside axum (see `connection`).
pub(crate) fn error_json(code: ErrorCode, message: &str) -> Vec<u8> {
    let body = ErrorResponse {
        error: ErrorBody {
            code,
            message: message.to_owned(),
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        if code == ErrorCode::Internal {
            tracing::error!(error = %self, "internal error");
        }
        let body = ErrorResponse {
            error: ErrorBody {
                code,
                message: self.public_message(),
            },
        };
        let mut response = (code.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Error::Overloaded { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Error::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_documented_and_match_statuses() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        let statuses: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.status().as_u16()).collect();
        assert_eq!(
            statuses,
            [
                400, 400, 415, 413, 413, 401, 503, 504, 404, 500, 408, 400, 414, 431
            ]
        );
    }

    #[test]
    fn internal_details_are_not_sent() {
        let e = Error::Internal("tract exploded at /secret/path".into());
        assert_eq!(e.public_message(), "internal server error");
        let e = Error::Model(scrim_core::Error::InvalidModel("x".into()));
        assert_eq!(e.code(), ErrorCode::Internal);
    }

    #[test]
    fn decode_errors_map_to_client_codes() {
        let wrong = scrim_core::Error::WrongSize {
            expected: "32x32".into(),
            found: "8x8".into(),
        };
        let e = Error::from_decode(wrong);
        assert_eq!(e.code(), ErrorCode::WrongSize);
        assert!(e.to_string().contains("input size"), "{e}");
        let e = Error::from_decode(scrim_core::Error::InvalidImage("junk".into()));
        assert_eq!(e.code(), ErrorCode::InvalidImage);
        let big = scrim_core::Error::ImageTooLarge {
            width: 9,
            height: 9,
            pixels: 81,
            limit: 80,
        };
        assert_eq!(Error::from_decode(big).code(), ErrorCode::ImageTooLarge);
        let e = Error::from_decode(scrim_core::Error::InvalidModel("x".into()));
        assert_eq!(e.code(), ErrorCode::Internal);
    }
}
