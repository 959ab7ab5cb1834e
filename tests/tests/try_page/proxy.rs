//! A loopback TCP relay that records every byte the browser sends the server, so the test sees
//! what reached the server, and can parse the HTTP requests in it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The bytes one connection sent, shared with the thread that relays them.
type Log = Arc<Mutex<Vec<u8>>>;

/// The relay: connect the browser to `addr`; it forwards to the server and keeps a copy.
pub struct Recorder {
    pub addr: SocketAddr,
    streams: Arc<Mutex<Vec<Log>>>,
}

/// One HTTP request as received.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Recorder {
    /// Listens on a free loopback port and relays each connection to `server`.
    pub fn start(server: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let streams: Arc<Mutex<Vec<Log>>> = Arc::default();
        let all = Arc::clone(&streams);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(upstream) = TcpStream::connect(server) else {
                    continue;
                };
                let log: Log = Arc::default();
                all.lock().expect("lock").push(Arc::clone(&log));
                relay(client, upstream, log);
            }
        });
        Ok(Self { addr, streams })
    }

    /// Every byte each connection sent so far, one buffer per connection.
    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.streams
            .lock()
            .expect("lock")
            .iter()
            .map(|s| s.lock().expect("lock").clone())
            .collect()
    }

    /// The HTTP requests in [`Recorder::sent`] (Content-Length bodies; the browser sends no
    /// chunked bodies to this page's server).
    pub fn requests(&self) -> Vec<Request> {
        let mut out = Vec::new();
        for stream in self.sent() {
            let mut rest = &stream[..];
            while let Some(end) = find(rest, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&rest[..end]).to_string();
                let mut lines = head.split("\r\n");
                let mut first = lines.next().unwrap_or_default().split(' ');
                let method = first.next().unwrap_or_default().to_string();
                let path = first.next().unwrap_or_default().to_string();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let body_end = (end + 4 + len).min(rest.len());
                let body = rest[end + 4..body_end].to_vec();
                out.push(Request {
                    method,
                    path,
                    headers,
                    body,
                });
                rest = &rest[body_end..];
            }
        }
        out
    }
}

fn relay(client: TcpStream, upstream: TcpStream, log: Log) {
    let (Ok(mut client_in), Ok(mut upstream_out)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = client_in.read(&mut buf) {
            if n == 0 {
                break;
            }
            // Logged before it is forwarded: once the server has answered, the log has it all.
            log.lock().expect("lock").extend_from_slice(&buf[..n]);
            if upstream_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = upstream_out.shutdown(Shutdown::Write);
    });
    let (mut upstream_in, mut client_out) = (upstream, client);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut upstream_in, &mut client_out);
        let _ = client_out.shutdown(Shutdown::Write);
    });
}

/// The first index of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
