//! Running the app: the blocking [`serve`] used by the binary, and [`spawn`] for tests of other
//! crates. Both shut down gracefully: no new connections, in-flight requests finish (up to
//! `shutdown_grace_ms`), `/readyz` turns 503 meanwhile.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::{AppState, Config, Error, Result, app, connection};

/// Serves `config` until SIGTERM or Ctrl-C. Loads the model first and refuses to start on a
/// missing or invalid one. Once bound, prints exactly one line to stdout,
/// `listening on http://IP:PORT` (with the real port when `listen` has port 0).
///
/// # Errors
/// Start-up errors: [`Error::Config`], [`Error::Model`], [`Error::Io`], [`Error::Bind`].
pub fn serve(config: Config) -> Result<()> {
    let state = AppState::new(&config)?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let signal = shutdown_signal()?;
        announce(addr);
        tracing::info!(%addr, model = %config.model.display(), "serving");
        run(listener, state, signal, grace(&config)).await
    })
}

/// A server running on its own thread and tokio runtime, for tests. Shuts down gracefully on
/// [`RunningServer::shutdown`] or when dropped.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl RunningServer {
    /// `http://IP:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, lets in-flight requests finish, and waits for the server
    /// thread to end.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "server thread failed"),
                Err(_) => tracing::error!("server thread panicked"),
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Loads the model, binds `config.listen` (port 0 allowed) and serves on a background thread.
///
/// # Errors
/// As [`serve`]; all reported before this returns.
pub fn spawn(config: Config) -> Result<RunningServer> {
    let state = AppState::new(&config)?;
    spawn_state(state, config.listen, grace(&config))
}

/// Serves an existing state on a background thread.
pub(crate) fn spawn_state(
    state: AppState,
    listen: SocketAddr,
    grace: Duration,
) -> Result<RunningServer> {
    let listener = std::net::TcpListener::bind(listen).map_err(|source| Error::Bind {
        addr: listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: listen,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Bind { addr, source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let runtime = runtime()?;
    let thread = std::thread::Builder::new()
        .name("scrim-cloud-server".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener)
                    .map_err(|source| Error::Bind { addr, source })?;
                let signal = async move {
                    // A dropped sender also means stop.
                    let _ = stopped.await;
                };
                run(listener, state, signal, grace).await
            })
        })
        .map_err(|e| Error::Internal(format!("cannot start the server thread: {e}")))?;
    Ok(RunningServer {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Serves `state` on `listener` until `signal` completes, then drains for at most `grace`: the
/// listener closes, `/readyz` turns 503, every connection finishes the requests it has (those
/// already on the wire included, answered with `Connection: close`), then the inference queue
/// empties. Connection limits and timeouts are those of the state's config (see `connection`).
///
/// # Errors
/// None at present; the signature leaves room for accept-loop failures.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<()> {
    let on_signal = {
        let state = state.clone();
        async move {
            signal.await;
            state.set_ready(false);
            tracing::info!("shutting down: finishing in-flight requests");
        }
    };
    let limits = state.limits().connections;
    let stopped = connection::serve(listener, app(state.clone()), limits, on_signal, grace).await;
    // Every connection is closed (or the grace period is over); images still queued belong to
    // requests whose clients are gone, and are skipped quickly.
    if !state.drain(grace.saturating_sub(stopped.elapsed())).await {
        tracing::warn!("grace period over with images still queued");
    }
    Ok(())
}

fn grace(config: &Config) -> Duration {
    Duration::from_millis(config.shutdown_grace_ms)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("scrim-http")
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
}

/// The one line on stdout that scripts and tests wait for.
fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{addr}");
    let _ = out.flush();
}

/// A future that completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this
/// is called, not when the future is first polled, so a signal sent right after the `listening
/// on` line is not lost. Must be called inside the runtime.
///
/// # Errors
/// [`Error::Internal`] if the handlers cannot be installed.
#[cfg(unix)]
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| Error::Internal(format!("cannot listen for {name}: {e}")))
    };
    let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = install(SignalKind::interrupt(), "Ctrl-C")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("Ctrl-C (SIGINT) received"),
        }
    })
}

/// A future that completes on Ctrl-C.
///
/// # Errors
/// Never on this platform; the signature matches the Unix one.
#[cfg(not(unix))]
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("Ctrl-C received"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    })
}
