//! A minimal HTTP/1.1 keep-alive client over hyper, for the load generator. One connection per
//! simulated client, loopback only.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{Error, Result};

/// Largest response body the client reads.
const MAX_RESPONSE: usize = 1 << 20;

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
        if !addr.ip().is_loopback() {
            return Err(Error::Bench(format!("{addr} is not a loopback address")));
        }
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::Bench(format!("cannot connect to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Bench(format!("handshake with {addr}: {e}")))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes the connection.
            let _ = connection.await;
        });
        Ok(Self { addr, sender })
    }

    /// Sends `POST path` with `body` and returns the status and the response body.
    ///
    /// # Errors
    /// [`Error::Bench`] on a connection or protocol failure.
    pub(crate) async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let request = Request::post(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .map_err(|e| Error::Bench(format!("request: {e}")))?;
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
        let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_RESPONSE)
            .await
            .map_err(|e| Error::Bench(format!("response body: {e}")))?;
        Ok((status, body))
    }
}
