//! The backend connection opened as soon as a client connects (`routing.preconnect`),
//! when no rule can route its login elsewhere: USER then finds the backend's greeting
//! already read instead of waiting for a connect, a 220 (a fork, for vsftpd) and TLS.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

use super::Shared;
use crate::backend::{self, BackendLeg, ConnectError};
use crate::config::BackendConfig;

/// A connect under way (or done) to the first backend of the default route.
pub(super) struct EarlyBackend {
    target: String,
    task: AbortOnDropHandle<Attempt>,
}

/// How a connect to a candidate went (one candidate: [`attempt`]; the early connect: the
/// first candidate that was not full).
pub(super) enum Attempt {
    Connected(Box<BackendLeg>),
    /// The early connect's failure: USER tries the other candidates, and reports this
    /// failure if none is left.
    Failed {
        backend: String,
        error: ConnectError,
    },
    /// The candidate (or every one) was full (`max_sessions`), or there was none.
    NoCandidate,
}

/// Tries one candidate: a slot under its `max_sessions`, then the connect and greeting
/// (which count towards its health). What USER and the early connect both do per backend.
pub(super) async fn attempt(shared: &Shared, config: BackendConfig, client: SocketAddr) -> Attempt {
    let Some(counted) = shared.router.admit(&config) else {
        debug!(
            backend = config.name.as_str(),
            "backend full (max_sessions): skipped"
        );
        return Attempt::NoCandidate;
    };
    let tls = shared.backend_tls.get(&config.name);
    match backend::connect(&config, tls, &shared.health, Some(client)).await {
        Ok((control, tls)) => {
            Attempt::Connected(Box::new(BackendLeg::new(control, config, tls, counted)))
        }
        Err(error) => Attempt::Failed {
            backend: config.name,
            error,
        },
    }
}

impl EarlyBackend {
    /// Starts connecting when the route cannot depend on the login: no `routing.hosts`,
    /// no `routing.users`, a default route that is not a sticky pool.
    pub fn start(shared: &Arc<Shared>, client: SocketAddr) -> Option<EarlyBackend> {
        if !shared.config.routing.preconnect {
            return None;
        }
        let target = shared.router.early_target()?.to_string();
        let task = tokio::spawn(connect_first(shared.clone(), target.clone(), client));
        Some(EarlyBackend {
            target,
            task: AbortOnDropHandle::new(task),
        })
    }

    /// The attempt for a login routed to `target`: awaited if still under way. `None`
    /// when the login goes elsewhere (`name@target`), the early connection is then
    /// closed; or when the backend has spoken or hung up since its greeting (its
    /// pre-login timeout, say): the login then connects afresh, as it would without.
    pub async fn take_for(self, target: &str) -> Option<Attempt> {
        if self.target != target {
            self.close();
            return None;
        }
        match self.task.await.ok()? {
            Attempt::Connected(mut leg) => {
                if has_spoken(&mut leg).await {
                    debug!(
                        backend = leg.config.name.as_str(),
                        "early backend connection went stale; connecting again"
                    );
                    return None;
                }
                Some(Attempt::Connected(leg))
            }
            other => Some(other),
        }
    }

    /// Ends an early connection no login took (the client left, or logged in elsewhere)
    /// as a session ends its backend, with QUIT, after its attempt is done (bounded by the
    /// backend's `connect_timeout`). Dropped mid-greeting, its socket would close with the
    /// 220 unread and the kernel would reset it: every connection that never logs in
    /// would be an error in the backend's log.
    ///
    /// That goodbye runs on its own, so the session (its slot, its memory) ends now: a
    /// storm of connect/close must not keep sessions alive for the backend's round trips.
    /// At most [`MAX_CLOSING`] run at once; beyond that an early connection is dropped,
    /// as it was before goodbyes existed.
    pub fn close(self) {
        let Ok(permit) = CLOSING.try_acquire() else {
            debug!("too many early backend connections closing: dropped without QUIT");
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(Attempt::Connected(leg)) = self.task.await {
                leg.control.quit(super::BACKEND_QUIT_WAIT).await;
            }
        });
    }
}

/// Unused early connections ending with QUIT at once, process-wide: each holds a backend
/// connection and its reply buffer (a few KiB) for at most the connect timeout and
/// [`super::BACKEND_QUIT_WAIT`].
const MAX_CLOSING: usize = 256;
static CLOSING: Semaphore = Semaphore::const_new(MAX_CLOSING);

/// Whether the backend sent anything (or hung up) since its greeting: one poll of the
/// (cancel-safe) reply reader. Not a zero timeout: that waits for the timer's next tick.
async fn has_spoken(leg: &mut BackendLeg) -> bool {
    let next = leg.control.next_reply("checking the early connection");
    super::poll_once(next).await.is_some()
}

/// The first candidate the route admits, connected; the others are left to USER.
async fn connect_first(shared: Arc<Shared>, target: String, client: SocketAddr) -> Attempt {
    for config in shared.router.candidates(&target, "") {
        match attempt(&shared, config, client).await {
            Attempt::NoCandidate => continue,
            tried => return tried,
        }
    }
    Attempt::NoCandidate
}
