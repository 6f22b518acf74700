//! Graceful shutdown: the first SIGINT or SIGTERM cancels a token every task watches; a
//! second one exits at once (exit code 130) for an operator who does not want to wait.

use tokio_util::sync::CancellationToken;

/// A cancellation token cancelled on SIGINT or SIGTERM.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A token not yet tied to signals (tests, embedded use).
    pub fn new() -> Self {
        Self::default()
    }

    /// A token cancelled by the first SIGINT/SIGTERM. Must be called inside a Tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        let this = Self::new();
        let token = this.token.clone();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::spawn(async move {
                for n in 0.. {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    };
                    if n == 0 {
                        tracing::info!(signal = name, "shutting down gracefully");
                        token.cancel();
                    } else {
                        tracing::warn!(signal = name, "second signal, exiting now");
                        std::process::exit(130);
                    }
                }
            });
        }
        #[cfg(not(unix))]
        {
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                token.cancel();
            });
        }
        Ok(this)
    }

    /// Requests shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// True once shutdown was requested.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when shutdown is requested.
    pub async fn wait(&self) {
        self.token.cancelled().await
    }

    /// The underlying token, for `select!` and child tokens.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}
