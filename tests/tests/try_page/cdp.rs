//! Just enough of the Chrome DevTools protocol to drive headless Chromium: start it on a free
//! port, open the page target's WebSocket (a minimal RFC 6455 client: masked text frames out,
//! whole messages in), send commands and wait for their answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// A headless Chromium and a DevTools session on its first page. The browser is killed on drop.
pub struct Browser {
    ws: TcpStream,
    next_id: u64,
    /// Console messages and uncaught exceptions of the page, for failure messages.
    pub log: Vec<String>,
    _process: Process,
    _profile: tempfile::TempDir,
}

/// The browser's process group (Chromium starts a dozen helper processes): killed on drop, so a
/// failing test leaves no browser behind.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        // The group was created for this child (`process_group(0)`): its id is the child's.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile and connects to its first page.
    pub fn start(chromium: &Path) -> Result<Self> {
        let profile = tempfile::tempdir()?;
        let child = Command::new(chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-breakpad",
                "--disable-crash-reporter",
                "--window-size=1100,900",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", chromium.display()))?;
        let process = Process(child);
        // Chromium writes the port it bound to this file once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let port = wait_for(Duration::from_secs(60), || {
            let text = std::fs::read_to_string(&port_file).ok()?;
            text.lines().next()?.trim().parse::<u16>().ok()
        })
        .ok_or_else(|| anyhow!("chromium wrote no DevToolsActivePort within 60 s"))?;
        let list = wait_for(Duration::from_secs(30), || {
            let body = http_get(port, "/json/list").ok()?;
            let targets: Value = serde_json::from_str(&body).ok()?;
            targets
                .as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                .map(str::to_string)
        })
        .ok_or_else(|| anyhow!("chromium listed no page target"))?;
        let path = list
            .split_once(&format!("127.0.0.1:{port}"))
            .map(|(_, p)| p.to_string())
            .ok_or_else(|| anyhow!("unexpected target URL {list}"))?;
        let ws = websocket(port, &path)?;
        let mut browser = Self {
            ws,
            next_id: 0,
            log: Vec::new(),
            _process: process,
            _profile: profile,
        };
        browser.call("Runtime.enable", json!({}))?;
        browser.call("Page.enable", json!({}))?;
        Ok(browser)
    }

    /// Sends a command and returns its `result`, keeping the page's console output meanwhile.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        send_text(&mut self.ws, msg.as_bytes())?;
        loop {
            let reply: Value = serde_json::from_slice(&read_message(&mut self.ws)?)?;
            if reply["id"] == id {
                if let Some(e) = reply.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(reply["result"].clone());
            }
            match reply["method"].as_str() {
                Some("Runtime.consoleAPICalled") => {
                    let args: Vec<String> = reply["params"]["args"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| a["value"].to_string())
                        .collect();
                    self.log.push(format!("console: {}", args.join(" ")));
                }
                Some("Runtime.exceptionThrown") => self.log.push(format!(
                    "exception: {}",
                    reply["params"]["exceptionDetails"]
                )),
                _ => {}
            }
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub fn eval(&mut self, expression: &str) -> Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `document.body.dataset.state` until it is one of `states`; returns it.
    pub fn wait_state(&mut self, states: &[&str], limit: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            let state = self.eval("document.body ? document.body.dataset.state : ''")?;
            if let Some(s) = state.as_str().filter(|s| states.contains(s)) {
                return Ok(s.to_string());
            }
            if start.elapsed() > limit {
                bail!("the page stayed in state {state} (waiting for {states:?})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sets the files of the `<input type=file>` matching `selector` (as a user picking them).
    pub fn set_files(&mut self, selector: &str, files: &[PathBuf]) -> Result<()> {
        let root = self.call("DOM.getDocument", json!({}))?;
        let node = self.call(
            "DOM.querySelector",
            json!({ "nodeId": root["root"]["nodeId"], "selector": selector }),
        )?;
        let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        self.call(
            "DOM.setFileInputFiles",
            json!({ "nodeId": node["nodeId"], "files": files }),
        )?;
        Ok(())
    }

    /// A PNG screenshot of the page.
    pub fn screenshot(&mut self) -> Result<Vec<u8>> {
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        )?;
        base64_decode(r["data"].as_str().unwrap_or_default())
    }
}

fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    // DevTools' HTTP server answers HTTP/1.1 only.
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse()?;
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8(body)?)
}

fn websocket(port: u16, path: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: c2NyaW0tdHJ5LXBhZ2UtdGVzdA==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )?;
    // Read the handshake byte by byte so that no frame byte is buffered away.
    let mut reader = BufReader::with_capacity(1, s.try_clone()?);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.contains(" 101 ") {
        bail!("WebSocket handshake refused: {status}");
    }
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    Ok(s)
}

fn send_text(s: &mut TcpStream, payload: &[u8]) -> Result<()> {
    let mut frame = vec![0x81u8];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len < 65536 {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x5c, 0x72, 0x69, 0x6d];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame)?;
    Ok(())
}

fn read_message(s: &mut TcpStream) -> Result<Vec<u8>> {
    let mut message = Vec::new();
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head)?;
        let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b)?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                s.read_exact(&mut b)?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len)?];
        s.read_exact(&mut payload)?;
        match opcode {
            0x8 => bail!("the browser closed the DevTools connection"),
            0x9 | 0xA => continue, // ping / pong: nothing to do for a short session
            _ => message.extend_from_slice(&payload),
        }
        if fin {
            return Ok(message);
        }
    }
}

fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let value = |c: u8| -> Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("not base64: {c}"),
        })
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | value(c)?;
        }
        let bits = 6 * chunk.len();
        acc <<= 24 - bits;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + bits / 8]);
    }
    Ok(out)
}
