//! The phases of a graceful stop, as every session and listener sees them.

use tokio::sync::watch;

/// Where the proxy is on its way out (SIGTERM/SIGINT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running,
    /// Listeners are closed and `/readyz` says 503; idle sessions get 421, running
    /// transfers may finish within `[shutdown] grace`.
    Draining,
    /// The grace is over: what still runs is cut, with a 421 to the client.
    Cut,
}

pub type Sender = watch::Sender<Phase>;
pub type Receiver = watch::Receiver<Phase>;

pub fn channel() -> (Sender, Receiver) {
    watch::channel(Phase::Running)
}

/// The next phase change. A dropped sender (the proxy is gone) counts as `Cut`.
pub async fn next_phase(receiver: &mut Receiver) -> Phase {
    match receiver.changed().await {
        Ok(()) => *receiver.borrow_and_update(),
        Err(_) => Phase::Cut,
    }
}

/// Waits until the phase is at least `Draining` (for loops that only stop).
pub async fn stopping(receiver: &mut Receiver) {
    if *receiver.borrow() != Phase::Running {
        return;
    }
    loop {
        if next_phase(receiver).await != Phase::Running {
            return;
        }
    }
}

/// Waits until the phase is `Cut` (what running transfers watch).
pub async fn cut(receiver: &mut Receiver) {
    if *receiver.borrow() == Phase::Cut {
        return;
    }
    loop {
        if next_phase(receiver).await == Phase::Cut {
            return;
        }
    }
}

/// Whether the proxy is on its way out.
pub fn is_stopping(receiver: &Receiver) -> bool {
    *receiver.borrow() != Phase::Running
}
