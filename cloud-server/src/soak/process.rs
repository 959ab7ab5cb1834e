//! The server under test as a child process (`scrim-cloud serve`), so that its memory is its own:
//! `VmRSS` and `VmHWM` of `/proc/PID/status` count the server alone, not the load generator.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{Error, Result};

/// Lines of the server's log kept for error messages.
const LOG_LINES: usize = 40;

/// A running `scrim-cloud serve`; killed (SIGKILL) if still running when dropped.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

/// Resident memory of the server, in bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Memory {
    /// `VmRSS`: resident now.
    pub(crate) rss: u64,
    /// `VmHWM`: the most ever resident (the process's peak since it started).
    pub(crate) hwm: u64,
}

impl ServerProcess {
    /// Starts `exe serve --listen 127.0.0.1:0 ARGS…` and waits (at most a minute) for its
    /// `listening on` line. `SCRIM_CLOUD_*` variables are not passed on, so the configuration is
    /// exactly `args`; the server logs at `warn`.
    ///
    /// # Errors
    /// [`Error::Bench`] when the server cannot start or does not announce its address.
    pub(crate) fn start(exe: &Path, args: &[OsString]) -> Result<Self> {
        let mut command = Command::new(exe);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SCRIM_CLOUD_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| Error::Bench(format!("cannot start {}: {e}", exe.display())))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr)
                    .lines()
                    .map_while(std::io::Result::ok)
                {
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                if let Some(Ok(first)) = lines.next() {
                    let _ = tx.send(first);
                }
                // Keep reading so the server never blocks on a full pipe.
                for _ in lines {}
            });
        }
        let mut server = Self {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            log,
        };
        let line = rx.recv_timeout(Duration::from_secs(60)).map_err(|_| {
            Error::Bench(format!(
                "the server did not announce its address{}",
                server.log_tail()
            ))
        })?;
        server.addr = line
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| Error::Bench(format!("unexpected first line {line:?}")))?;
        Ok(server)
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now and at its peak.
    ///
    /// # Errors
    /// [`Error::Bench`] where `/proc/PID/status` cannot be read (not Linux, or the server died).
    pub(crate) fn memory(&self) -> Result<Memory> {
        let path = PathBuf::from(format!("/proc/{}/status", self.pid()));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::Bench(format!("cannot read {}: {e}", path.display())))?;
        parse_memory(&text)
            .ok_or_else(|| Error::Bench(format!("no VmRSS/VmHWM in {}", path.display())))
    }

    /// Sends SIGTERM (through `kill`, so no unsafe code is needed).
    ///
    /// # Errors
    /// [`Error::Bench`] when `kill` cannot be run or fails.
    pub(crate) fn terminate(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .map_err(|e| Error::Bench(format!("cannot run kill: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Bench(format!("kill -TERM {} failed", self.pid())))
        }
    }

    /// Waits up to `limit` for the server to exit.
    pub(crate) fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the server is still running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the server's log, as `":\n  line\n  line"`, or nothing.
    pub(crate) fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = log.iter().map(String::as_str).collect();
        format!("; server log:\n  {}", lines.join("\n  "))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

/// A folder under the system's temporary directory, removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// Creates `scrim-soak-PID-NANOS`.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be created.
    pub(crate) fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!("scrim-soak-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_comes_from_vmrss_and_vmhwm() {
        let status = "Name:\tscrim-cloud\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\n\
                      VmRSS:\t   40960 kB\nThreads:\t9\n";
        let m = parse_memory(status).expect("parsed");
        assert_eq!((m.rss, m.hwm), (40 << 20, 50 << 20));
        assert!(parse_memory("Name:\tx\n").is_none());
    }
}
