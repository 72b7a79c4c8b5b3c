//! FEAT as ftpfront answers it: the features ftpfront implements itself, plus those a
//! backend announced that ftpfront relays faithfully, cached per backend so that a FEAT
//! before login (lftp sends one, and picks MLSD or LIST from it) tells the truth too. The
//! same probe learns how the backend answers SYST, NOOP, HELP, ACCT, OPTS UTF8, REIN and a
//! FEAT with an argument before login, which servers answer differently.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backend;
use crate::backend::Health;
use crate::config::BackendConfig;
use crate::conn::BackendLegError;
use crate::ftp::codes;
use crate::ftp::{Command, Reply};
use crate::tls::BackendTlsConfig;

/// Features ftpfront itself implements, whatever the backend.
const OWN_FEATURES: &[&str] = &["EPRT", "EPSV", "HOST", "PASV"];
/// What ftpfront adds when it terminates TLS for clients (RFC 4217).
const TLS_FEATURES: &[&str] = &["AUTH TLS", "PBSZ", "PROT"];
/// Backend features ftpfront relays unchanged when the backend has them. Nothing else of
/// the backend's FEAT reaches clients (no software names, nothing ftpfront cannot relay).
/// UTF8 among them: announcing it for a latin-1 server would make clients send names in
/// an encoding the server does not use.
const RELAYED_FEATURES: &[&str] = &[
    "SIZE", "MDTM", "REST", "MLST", "TVFS", "MFMT", "LANG", "UTF8",
];
/// How long a backend's features are trusted before a pre-login FEAT asks again.
const CACHE_TTL: Duration = Duration::from_secs(300);

/// How long a failed probe is remembered: pre-login FEATs then answer without asking a
/// backend that is down, instead of opening one backend connection each (an amplifier).
const FAILURE_TTL: Duration = Duration::from_secs(30);

/// How long the probe waits for each answer after FEAT's.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// What a client may learn of a backend before login.
#[derive(Debug, Clone, Default)]
pub struct Learnt {
    /// Its relayable features.
    pub features: Vec<String>,
    /// Its replies to commands before login (boxed: the cache's enums stay small).
    pub before_login: Box<BeforeLogin>,
}

/// A backend's replies before login to the commands servers disagree on; `None` where it
/// did not answer.
#[derive(Debug, Clone, Default)]
pub struct BeforeLogin {
    /// SYST: 215, or 530 until logged in (vsftpd).
    pub syst: Option<Reply>,
    /// NOOP: 200, or 530 until logged in (vsftpd).
    pub noop: Option<Reply>,
    /// FEAT with an argument: 211 as without one, or 501 (proftpd).
    pub feat_with_argument: Option<Reply>,
    /// REIN: 530 until logged in (vsftpd, pure-ftpd), 502 (proftpd).
    pub rein: Option<Reply>,
    /// HELP: 530 (vsftpd), or the server's own list (pure-ftpd: its SITE commands).
    pub help: Option<Reply>,
    /// ACCT before USER: 530 (vsftpd), 202 (pure-ftpd), 502 (proftpd).
    pub acct: Option<Reply>,
    /// OPTS UTF8 ON, OPTS UTF8 OFF and a bare OPTS UTF8: vsftpd takes ON only, proftpd
    /// ON and OFF, pure-ftpd none (504).
    pub utf8: Utf8Replies,
}

/// A backend's replies to the forms of OPTS UTF8.
#[derive(Debug, Clone, Default)]
pub struct Utf8Replies {
    pub on: Option<Reply>,
    pub off: Option<Reply>,
    pub bare: Option<Reply>,
}

/// What was last learnt of a backend.
enum Known {
    Learnt(Learnt),
    ProbeFailed,
}

/// The relayable features of each backend, as last seen, and which backends are being
/// probed right now (at most one probe per backend at a time).
#[derive(Default)]
pub struct FeatureCache {
    entries: Mutex<HashMap<String, (Instant, Known)>>,
    probing: Mutex<HashSet<String>>,
}

/// What a pre-login FEAT may use.
pub enum Lookup<'a> {
    /// What was learnt within the cache lifetime.
    Fresh(Learnt),
    /// Nothing to use now: a recent probe failed, or another session is probing.
    Unknown,
    /// This caller may probe; the permit ends the probe when dropped.
    Probe(ProbePermit<'a>),
}

/// The right to probe one backend; dropping it lets the next caller probe.
pub struct ProbePermit<'a> {
    cache: &'a FeatureCache,
    backend: String,
}

impl Drop for ProbePermit<'_> {
    fn drop(&mut self) {
        lock(&self.cache.probing).remove(&self.backend);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl FeatureCache {
    fn known(&self, backend: &str) -> Option<Known> {
        let entries = lock(&self.entries);
        let (seen, known) = entries.get(backend)?;
        match known {
            Known::Learnt(learnt) if seen.elapsed() < CACHE_TTL => {
                Some(Known::Learnt(learnt.clone()))
            }
            Known::ProbeFailed if seen.elapsed() < FAILURE_TTL => Some(Known::ProbeFailed),
            _ => None,
        }
    }

    /// Cached features, or the permission to probe (one prober per backend).
    pub fn lookup(&self, backend: &str) -> Lookup<'_> {
        match self.known(backend) {
            Some(Known::Learnt(learnt)) => return Lookup::Fresh(learnt),
            Some(Known::ProbeFailed) => return Lookup::Unknown,
            None => {}
        }
        if !lock(&self.probing).insert(backend.to_string()) {
            return Lookup::Unknown;
        }
        Lookup::Probe(ProbePermit {
            cache: self,
            backend: backend.to_string(),
        })
    }

    pub fn store(&self, backend: &str, learnt: Learnt) {
        let entry = (Instant::now(), Known::Learnt(learnt));
        lock(&self.entries).insert(backend.to_string(), entry);
    }

    /// Features seen after a login: they replace those of a learnt entry, which keeps its
    /// age and its replies before login. Without one nothing is stored: an entry with no
    /// replies before login would answer SYST and NOOP with defaults until it expired,
    /// where a probe asks the backend.
    pub fn store_features(&self, backend: &str, features: Vec<String>) {
        if let Some((_, Known::Learnt(learnt))) = lock(&self.entries).get_mut(backend) {
            learnt.features = features;
        }
    }

    pub fn store_failure(&self, backend: &str) {
        let entry = (Instant::now(), Known::ProbeFailed);
        lock(&self.entries).insert(backend.to_string(), entry);
    }
}

/// The relayable lines of a backend's 211 FEAT reply.
pub fn relayable(reply: &Reply) -> Vec<String> {
    if reply.code != codes::SYSTEM_STATUS {
        return Vec::new();
    }
    let body = reply
        .lines
        .iter()
        .skip(1)
        .take(reply.lines.len().saturating_sub(2));
    body.map(|line| line.trim().to_string())
        .filter(|line| {
            let name = line.split_whitespace().next().unwrap_or("");
            RELAYED_FEATURES.contains(&name.to_ascii_uppercase().as_str())
        })
        .collect()
}

/// The 211 reply: ftpfront's own features (with TLS's when it terminates TLS) and the
/// given backend ones, sorted.
pub fn reply(backend_features: Vec<String>, tls: bool) -> Reply {
    let own = OWN_FEATURES
        .iter()
        .chain(if tls { TLS_FEATURES } else { &[] });
    let mut features: Vec<String> = own.map(|f| f.to_string()).collect();
    features.extend(backend_features);
    features.sort();
    features.dedup();
    let mut lines = vec!["Features:".to_string()];
    lines.extend(features.into_iter().map(|f| format!(" {f}")));
    lines.push("End".to_string());
    Reply::multiline(codes::SYSTEM_STATUS, lines)
}

/// Asks a backend for its features and its replies before login (`BeforeLogin`, REIN
/// last: a server that takes it only starts over) on a short-lived connection. The whole
/// probe fits in the backend's `connect_timeout`: the client is waiting for it.
pub async fn probe(
    config: &BackendConfig,
    tls: Option<&BackendTlsConfig>,
    health: &Health,
) -> Option<Learnt> {
    let asking = async {
        let (mut control, _) = backend::connect(config, tls, health, None).await.ok()?;
        let phase = "asking FEAT and SYST for the feature cache";
        let feat: Result<Reply, BackendLegError> =
            control.command(&Command::new("FEAT", None), phase).await;
        let features = relayable(&feat.ok()?);
        // A server that never answers one question costs that answer and the ones after
        // it, not those before: once a wait has run out a late reply would be taken for
        // the next answer, so the probe stops asking.
        let mut in_step = true;
        let mut ask = async |verb: &str, arg: Option<&str>| {
            if !in_step {
                return None;
            }
            let command = Command::new(verb, arg);
            let answer = tokio::time::timeout(ANSWER_WAIT, control.command(&command, phase));
            match answer.await {
                Ok(reply) => reply.ok(),
                Err(_) => {
                    in_step = false;
                    None
                }
            }
        };
        // Most used first: servers end a connection after a few refusals before login
        // (libunftp after three), and the answers after that stay unknown.
        let syst = ask("SYST", None).await;
        let noop = ask("NOOP", None).await;
        let utf8_on = ask("OPTS", Some("UTF8 ON")).await;
        let feat_with_argument = ask("FEAT", Some("X")).await;
        let rein = ask("REIN", None).await;
        let utf8 = Utf8Replies {
            on: utf8_on,
            off: ask("OPTS", Some("UTF8 OFF")).await,
            bare: ask("OPTS", Some("UTF8")).await,
        };
        let acct = ask("ACCT", Some("nobody")).await;
        let help = ask("HELP", None).await;
        let before_login = BeforeLogin {
            syst,
            noop,
            feat_with_argument,
            rein,
            help,
            acct,
            utf8,
        };
        // A server that let a question go unanswered is not waited for again.
        if in_step {
            control.quit(Duration::from_secs(2)).await;
        }
        Some(Learnt {
            features,
            before_login: Box::new(before_login),
        })
    };
    tokio::time::timeout(config.connect_timeout, asking)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend_feat() -> Reply {
        Reply::multiline(
            211,
            vec![
                "Extensions supported:".into(),
                " MLST type*;size*;modify*;".into(),
                " SIZE".into(),
                " PRET".into(),
                " AUTH TLS".into(),
                " SITE EXEC secret-server 1.2".into(),
                " REST STREAM".into(),
                "End.".into(),
            ],
        )
    }

    #[test]
    fn only_relayable_backend_features_are_kept() {
        assert_eq!(
            relayable(&backend_feat()),
            vec!["MLST type*;size*;modify*;", "SIZE", "REST STREAM"]
        );
        assert!(relayable(&Reply::new(500, "FEAT not understood")).is_empty());
    }

    #[test]
    fn the_reply_merges_own_and_backend_features() {
        let text = String::from_utf8_lossy(&reply(relayable(&backend_feat()), true).to_wire())
            .into_owned();
        assert!(text.starts_with("211-Features:\r\n"), "{text}");
        for feature in [
            "AUTH TLS",
            "PBSZ",
            "PROT",
            "EPSV",
            "EPRT",
            "HOST",
            "MLST type*;size*;modify*;",
            "REST STREAM",
        ] {
            assert!(
                text.contains(&format!(" {feature}\r\n")),
                "{feature} missing: {text}"
            );
        }
        assert!(!text.contains("PRET") && !text.contains("secret"), "{text}");
        assert!(text.ends_with("211 End\r\n"));
    }

    /// Moves an entry's time of sight back by `by`.
    fn age(cache: &FeatureCache, backend: &str, by: Duration) {
        let mut entries = cache.entries.lock().expect("lock");
        entries.get_mut(backend).expect("entry").0 -= by;
    }

    #[test]
    fn cache_entries_expire() {
        let cache = FeatureCache::default();
        let learnt = Learnt {
            features: vec!["SIZE".into()],
            before_login: Box::default(),
        };
        cache.store("a", learnt);
        assert!(matches!(cache.lookup("a"), Lookup::Fresh(l) if l.features == ["SIZE"]));
        assert!(matches!(cache.lookup("b"), Lookup::Probe(_)));
        age(&cache, "a", CACHE_TTL);
        assert!(matches!(cache.lookup("a"), Lookup::Probe(_)));
    }

    /// A FEAT after login before any probe must not make an entry without the replies
    /// before login: the next pre-login SYST or NOOP would get defaults, not the backend's.
    #[test]
    fn features_after_login_alone_leave_the_probe_to_come() {
        let cache = FeatureCache::default();
        cache.store_features("a", vec!["SIZE".into()]);
        assert!(matches!(cache.lookup("a"), Lookup::Probe(_)));
    }

    /// Features after login refresh the features only: the entry keeps its age, so what
    /// was learnt before login is asked again when it expires.
    #[test]
    fn features_after_login_do_not_extend_the_entry() {
        let cache = FeatureCache::default();
        cache.store("a", Learnt::default());
        age(&cache, "a", CACHE_TTL - Duration::from_secs(1));
        cache.store_features("a", vec!["SIZE".into()]);
        assert!(matches!(cache.lookup("a"), Lookup::Fresh(l) if l.features == ["SIZE"]));
        age(&cache, "a", Duration::from_secs(1));
        assert!(matches!(cache.lookup("a"), Lookup::Probe(_)));
    }

    #[test]
    fn one_probe_at_a_time_and_failures_are_remembered() {
        let cache = FeatureCache::default();
        let permit = match cache.lookup("a") {
            Lookup::Probe(permit) => permit,
            _ => panic!("the first caller probes"),
        };
        assert!(
            matches!(cache.lookup("a"), Lookup::Unknown),
            "a second prober waits"
        );
        assert!(
            matches!(cache.lookup("b"), Lookup::Probe(_)),
            "other backends are independent"
        );
        cache.store_failure("a");
        drop(permit);
        assert!(
            matches!(cache.lookup("a"), Lookup::Unknown),
            "a failure is cached"
        );
        age(&cache, "a", FAILURE_TTL);
        assert!(matches!(cache.lookup("a"), Lookup::Probe(_)), "and expires");
        let before_login = BeforeLogin {
            syst: Some(Reply::new(215, "UNIX Type: L8")),
            ..Default::default()
        };
        cache.store(
            "a",
            Learnt {
                features: vec![],
                before_login: Box::new(before_login),
            },
        );
        cache.store_features("a", vec!["SIZE".into()]);
        assert!(matches!(cache.lookup("a"),
            Lookup::Fresh(l) if l.features == ["SIZE"] && l.before_login.syst.as_ref().map(|r| r.code) == Some(215)));
    }
}
