//! Shutdown signals.
//!
//! `serve` takes its shutdown future from the caller (tests pass a oneshot);
//! the binary passes [`signal`], which resolves on SIGINT or SIGTERM.

use std::future::Future;

/// Registers SIGINT and SIGTERM handlers now (so a signal that arrives
/// before the future is first polled is not lost or fatal) and returns a
/// future that resolves on the first of them.
pub fn signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    async move {
        #[cfg(unix)]
        {
            let term = async {
                match term.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = int => tracing::info!("SIGINT received, shutting down"),
                _ = term => tracing::info!("SIGTERM received, shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received, shutting down");
        }
    }
}
