//! Waiting for the signal to stop.

use std::future::Future;

/// Resolves on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C). The handlers are installed
/// when this is called, not when it is first awaited: call it before announcing that the process
/// is up, so a signal sent right after the announcement drains the process instead of killing it.
pub fn terminated() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received, draining"),
                        _ = interrupt.recv() => tracing::info!("interrupt received, draining"),
                    }
                }
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "cannot listen for signals; only Ctrl-C stops the process");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
