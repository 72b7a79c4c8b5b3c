//! The backend connection opened as soon as a client connects (`routing.preconnect`),
//! when no rule can route its login elsewhere: USER then finds the backend's greeting
//! already read instead of waiting for a connect, a 220 (a fork, for vsftpd) and TLS.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The TCP connection is up (see [`EarlyBackend::close`]).
    established: Arc<AtomicBool>,
    shared: Arc<Shared>,
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

/// Who makes an [`attempt`], which decides when its result counts towards the backend's
/// health.
pub(super) enum Attempter<'a> {
    /// A login: at once.
    Login,
    /// The early connect: only when a login takes it ([`EarlyBackend::take_for`]); a
    /// client that left at once says nothing about the backend. `established` is set when
    /// the TCP connection is up.
    Early { established: &'a AtomicBool },
}

/// Tries one candidate: a slot under its `max_sessions`, then the connect and greeting.
/// What USER and the early connect both do per backend.
pub(super) async fn attempt(
    shared: &Shared,
    config: BackendConfig,
    client: SocketAddr,
    attempter: Attempter<'_>,
) -> Attempt {
    let Some(counted) = shared.router.admit(&config) else {
        debug!(
            backend = config.name.as_str(),
            "backend full (max_sessions): skipped"
        );
        return Attempt::NoCandidate;
    };
    let tls = shared.backend_tls.get(&config.name);
    let connected = match attempter {
        Attempter::Login => backend::connect(&config, tls, &shared.health, Some(client)).await,
        Attempter::Early { established } => {
            let metrics = shared.health.metrics();
            backend::connect_unrecorded(&config, tls, metrics, Some(client), established).await
        }
    };
    match connected {
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
        let established = Arc::new(AtomicBool::new(false));
        let connect = connect_first(shared.clone(), target.clone(), client, established.clone());
        Some(EarlyBackend {
            target,
            task: AbortOnDropHandle::new(tokio::spawn(connect)),
            established,
            shared: shared.clone(),
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
        let attempt = self.task.await.ok()?;
        record_health(&self.shared, &attempt);
        match attempt {
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
    /// as it was before goodbyes existed. A connect whose TCP connection is not up
    /// within [`ESTABLISH_GRACE`] is dropped then: the backend has accepted nothing of it
    /// (its SYN waits for an answer, a full listen queue in a storm), and left to run
    /// it would wait out the connect timeout and fill the queue for the logins behind.
    pub fn close(self) {
        let Ok(permit) = CLOSING.try_acquire() else {
            debug!("too many early backend connections closing: dropped without QUIT");
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let mut task = self.task;
            let attempt = match tokio::time::timeout(ESTABLISH_GRACE, &mut task).await {
                Ok(done) => done,
                Err(_) if !self.established.load(Ordering::Acquire) => {
                    debug!("early backend connect not established: dropped");
                    return;
                }
                Err(_) => task.await,
            };
            if let Ok(Attempt::Connected(leg)) = attempt {
                leg.control.quit(super::BACKEND_QUIT_WAIT).await;
            }
        });
    }
}

/// How long an unused early connect may take to be established once its client left: a
/// connect on a working network is up in a round trip; one that is not by then waits for
/// a SYN retransmission (seconds).
const ESTABLISH_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// An early attempt's result, counted towards its backend's health now that a login
/// takes it.
fn record_health(shared: &Shared, attempt: &Attempt) {
    let (backend, ok) = match attempt {
        Attempt::Connected(leg) => (leg.config.name.as_str(), true),
        Attempt::Failed { backend, .. } => (backend.as_str(), false),
        Attempt::NoCandidate => return,
    };
    shared.health.record(backend, ok);
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
async fn connect_first(
    shared: Arc<Shared>,
    target: String,
    client: SocketAddr,
    established: Arc<AtomicBool>,
) -> Attempt {
    for config in shared.router.candidates(&target, "") {
        let attempter = Attempter::Early {
            established: &established,
        };
        match attempt(&shared, config, client, attempter).await {
            Attempt::NoCandidate => continue,
            tried => return tried,
        }
    }
    Attempt::NoCandidate
}
