//! Minimal HTTP/1.1 clients for the load generators (`bench`, `soak`), loopback only:
//! [`Connection`], a keep-alive connection over hyper, and [`read_response`], which reads one
//! response off a raw socket for the senders that must control every byte they write.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::net::TcpStream;

use crate::{Error, Result};

/// Largest response body the client reads.
const MAX_RESPONSE: usize = 1 << 20;

/// Largest response head [`read_response`] accepts.
const MAX_HEAD: usize = 64 << 10;

/// One response, read whole.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    /// Whether the response carried `Retry-After`.
    pub(crate) retry_after: bool,
    /// Whether the response carried `Connection: close`.
    pub(crate) close: bool,
    pub(crate) body: Bytes,
}

/// One open connection.
pub(crate) struct Connection {
    addr: SocketAddr,
    sender: SendRequest<Body>,
}

impl Connection {
    /// Connects to a loopback address.
    ///
    /// # Errors
    /// [`Error::Bench`] for a non-loopback address or a failed connection.
    pub(crate) async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = connect(addr).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Bench(format!("handshake with {addr}: {e}")))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes the connection.
            let _ = connection.await;
        });
        Ok(Self { addr, sender })
    }

    /// Sends `POST path` with `body` and reads the whole response.
    ///
    /// # Errors
    /// [`Error::Bench`] on a connection or protocol failure.
    pub(crate) async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Reply> {
        let request = Request::post(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .map_err(|e| Error::Bench(format!("request: {e}")))?;
        self.send(request).await
    }

    /// Sends `GET path` and reads the whole response.
    ///
    /// # Errors
    /// As [`Connection::post`].
    pub(crate) async fn get(&mut self, path: &str) -> Result<Reply> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .body(Body::empty())
            .map_err(|e| Error::Bench(format!("request: {e}")))?;
        self.send(request).await
    }

    async fn send(&mut self, request: Request<Body>) -> Result<Reply> {
        self.sender
            .ready()
            .await
            .map_err(|e| Error::Bench(format!("connection: {e}")))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| Error::Bench(format!("request failed: {e}")))?;
        let status = response.status();
        let headers = response.headers();
        let retry_after = headers.contains_key(header::RETRY_AFTER);
        let close = headers
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_RESPONSE)
            .await
            .map_err(|e| Error::Bench(format!("response body: {e}")))?;
        Ok(Reply {
            status,
            retry_after,
            close,
            body,
        })
    }
}

/// A TCP connection to a loopback address, with `TCP_NODELAY`.
///
/// # Errors
/// [`Error::Bench`] for a non-loopback address or a failed connection.
pub(crate) async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    if !addr.ip().is_loopback() {
        return Err(Error::Bench(format!("{addr} is not a loopback address")));
    }
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| Error::Bench(format!("cannot connect to {addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// How reading one response off a raw socket ended.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// A whole response (body read by `Content-Length`).
    Reply(Reply),
    /// The server closed the connection (EOF or reset) before sending a byte.
    ClosedBeforeResponse,
    /// The server closed the connection, or the bytes made no sense, part-way through a response.
    Broken(String),
}

/// Reads one response off `stream`: the head, then `Content-Length` bytes of body (the server
/// never sends chunked bodies). Bytes after it are not expected (one request at a time).
pub(crate) async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> ReadOutcome {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let Some(parsed) = parse_head(&head) else {
                return ReadOutcome::Broken(format!("unparsable response head: {head:?}"));
            };
            let total = end + 4 + parsed.length;
            if parsed.length > MAX_RESPONSE {
                return ReadOutcome::Broken(format!("response body of {} bytes", parsed.length));
            }
            if buf.len() >= total {
                return ReadOutcome::Reply(Reply {
                    status: parsed.status,
                    retry_after: parsed.retry_after,
                    close: parsed.close,
                    body: Bytes::copy_from_slice(&buf[end + 4..total]),
                });
            }
        } else if buf.len() > MAX_HEAD {
            return ReadOutcome::Broken("response head too large".into());
        }
        match stream.read(&mut chunk).await {
            Ok(0) if buf.is_empty() => return ReadOutcome::ClosedBeforeResponse,
            Ok(0) => return ReadOutcome::Broken(format!("EOF after {} bytes", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if buf.is_empty() => return ReadOutcome::ClosedBeforeResponse,
            Err(e) => return ReadOutcome::Broken(format!("{e} after {} bytes", buf.len())),
        }
    }
}

struct Head {
    status: StatusCode,
    length: usize,
    retry_after: bool,
    close: bool,
}

fn parse_head(head: &str) -> Option<Head> {
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse::<u16>().ok()?;
    let mut parsed = Head {
        status: StatusCode::from_u16(status).ok()?,
        length: 0,
        retry_after: false,
        close: false,
    };
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => parsed.length = value.parse().ok()?,
            "retry-after" => parsed.retry_after = true,
            "connection" => parsed.close = value.eq_ignore_ascii_case("close"),
            "transfer-encoding" => return None,
            _ => {}
        }
    }
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn raw_responses_are_read_by_content_length() {
        let text: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
                            Connection: close\r\ncontent-length: 2\r\n\r\n{}";
        let ReadOutcome::Reply(reply) = read_response(&mut &text[..]).await else {
            panic!("a reply")
        };
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.retry_after && reply.close);
        assert_eq!(&reply.body[..], b"{}");
        assert!(matches!(
            read_response(&mut &b""[..]).await,
            ReadOutcome::ClosedBeforeResponse
        ));
        assert!(matches!(
            read_response(&mut &text[..text.len() - 1]).await,
            ReadOutcome::Broken(_)
        ));
    }
}
