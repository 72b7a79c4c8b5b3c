//! The Prometheus registry of every ftpfront metric, and the HTTP endpoint serving
//! `/metrics`, `/healthz` and `/readyz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

/// Every metric of the contract (ARCHITECTURE.md, "Contracts users depend on"), registered in one registry.
pub struct Metrics {
    registry: Registry,
    ready: AtomicBool,
    /// The backends `/readyz` waits for (the default route's).
    readiness_backends: std::sync::RwLock<Vec<String>>,
    pub sessions_active: IntGauge,
    pub sessions_total: IntCounterVec,
    /// Logins that reached no backend, by why (`RoutingFailure`).
    pub login_routing_failures_total: IntCounterVec,
    /// Logins routed, by the step of `[routing]` that decided (`RouteStep`).
    pub login_routes_total: IntCounterVec,
    /// Per pool: how many of its backends are up (`backend_up`, updated with each flip).
    pub pool_backends_up: IntGaugeVec,
    /// Entries of the sticky table (`pools.sticky`), held or in their window.
    pub sticky_entries: IntGauge,
    /// Lookups of the sticky table, by `StickyDecision`.
    pub sticky_decisions_total: IntCounterVec,
    /// Logins that met a full sticky table, by `StickyOverflow`.
    pub sticky_table_full_total: IntCounterVec,
    pub logins_total: IntCounterVec,
    pub commands_total: IntCounterVec,
    pub transfers_total: IntCounterVec,
    pub transfer_bytes_total: IntCounterVec,
    pub transfer_duration_seconds: HistogramVec,
    pub passive_ports_in_use: IntGauge,
    pub passive_ports_configured: IntGauge,
    pub passive_reservations_active: IntGauge,
    pub passive_port_exhausted_total: IntCounter,
    /// Transfers still running at the end of the shutdown grace, cut with a 421.
    pub shutdown_cut_transfers_total: IntCounter,
    /// Passive listeners open now (bound lazily, closed when idle).
    pub passive_listeners_open: IntGauge,
    /// Client addresses banned now, and bans ever started (`limits.max_failed_logins`).
    pub bans_active: IntGauge,
    pub bans_total: IntCounter,
    pub backend_connect_errors_total: IntCounterVec,
    pub backend_up: IntGaugeVec,
    /// Flips of a backend's health state, by direction (`to` = up | down).
    pub backend_health_transitions_total: IntCounterVec,
    /// SIGHUP reloads of the configuration file, by result (ok, rejected).
    pub config_reloads_total: IntCounterVec,
    /// When the configuration in effect was loaded (Unix time): the start, or the last
    /// reload that took.
    pub config_last_reload_success_timestamp_seconds: Gauge,
    /// Sessions connected to each backend now (what `least_conn` balances).
    pub backend_sessions: IntGaugeVec,
    pub tls_handshakes_total: IntCounterVec,
    pub tls_plaintext_refused_total: IntCounterVec,
    pub data_connections_rejected_total: IntCounterVec,
    pub protocol_errors_total: IntCounterVec,
    pub backend_login_duration_seconds: HistogramVec,
    pub transfers_active: IntGauge,
    pub passive_port_reservations_max: IntGauge,
    pub data_connections_total: IntCounterVec,
    pub proxy_protocol_total: IntCounterVec,
    /// Log lines dropped because stderr did not keep up (synced from the log's writer at
    /// each scrape).
    log_lines_dropped_total: IntCounter,
}

/// Session results, transfer results and rejection reasons are fixed label sets, so client
/// input can never grow the number of series.
pub mod labels {
    pub const OK: &str = "ok";
    pub const REJECTED: &str = "rejected";
    pub const ERROR: &str = "error";
    pub const FAILED: &str = "failed";
    pub const ABORTED: &str = "aborted";
    pub const FOREIGN_IP: &str = "foreign_ip";
    pub const TIMEOUT: &str = "timeout";
    pub const CONNECT_FAILED: &str = "connect_failed";
    pub const REFUSED: &str = "refused";
    pub const BAD_GREETING: &str = "bad_greeting";
    pub const PROXY_PROTOCOL: &str = "proxy_protocol";
    /// The `listener` label values of `ftpfront_proxy_protocol_total`.
    pub const CONTROL_LISTENER: &str = "control";
    pub const IMPLICIT_TLS_LISTENER: &str = "implicit_tls";
    pub const PASSIVE_LISTENER: &str = "passive";
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help).namespace("ftpfront"), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    register(registry, metric.clone());
    metric
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help).namespace("ftpfront"), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    register(registry, metric.clone());
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::with_opts(Opts::new(name, help).namespace("ftpfront"))
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    register(registry, metric.clone());
    metric
}

fn float_gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    let metric = Gauge::with_opts(Opts::new(name, help).namespace("ftpfront"))
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    register(registry, metric.clone());
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::with_opts(Opts::new(name, help).namespace("ftpfront"))
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    register(registry, metric.clone());
    metric
}

/// Metric definitions are compile-time constants: a failure here is a programming error
/// caught by every test, never something input can trigger.
fn register<C: prometheus::core::Collector + 'static>(registry: &Registry, metric: C) {
    registry
        .register(Box::new(metric))
        .unwrap_or_else(|e| panic!("metric registered twice: {e}"));
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
        let transfer_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "transfer_duration_seconds",
                "Duration of data transfers, from data connection to final reply.",
            )
            .namespace("ftpfront")
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
            ]),
            &["direction"],
        )
        .unwrap_or_else(|e| panic!("histogram malformed: {e}"));
        register(&r, transfer_duration_seconds.clone());
        let backend_login_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "backend_login_duration_seconds",
                "Time from USER to the backend's final reply to PASS, per backend.",
            )
            .namespace("ftpfront")
            .buckets(vec![0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["backend"],
        )
        .unwrap_or_else(|e| panic!("histogram malformed: {e}"));
        register(&r, backend_login_duration_seconds.clone());
        let backend_up = gauge_vec(
            &r,
            "backend_up",
            "1 while the backend is up: health.rise connects in a row bring it up, health.fall failures take it down.",
            &["backend"],
        );
        let backend_sessions = gauge_vec(
            &r,
            "backend_sessions",
            "Client sessions connected to the backend now.",
            &["backend"],
        );
        let pool_backends_up = gauge_vec(
            &r,
            "pool_backends_up",
            "Backends of the pool that are up (ftpfront_backend_up).",
            &["pool"],
        );
        Arc::new(Metrics {
            sessions_active: gauge(&r, "sessions_active", "Client control sessions open now."),
            sessions_total: counter_vec(
                &r,
                "sessions_total",
                "Client control sessions ended, by result.",
                &["result"],
            ),
            login_routing_failures_total: counter_vec(
                &r,
                "login_routing_failures_total",
                "Logins that reached no backend: no_route, unknown_target (USER name@target), all_full (max_sessions), all_failed (every candidate failed to connect).",
                &["reason"],
            ),
            login_routes_total: counter_vec(
                &r,
                "login_routes_total",
                "Logins routed, by the step that chose the target: host (HOST), sni (TLS server name), user_at (USER name@target), user (exact name), pattern (glob), default.",
                &["step"],
            ),
            pool_backends_up,
            backend_health_transitions_total: counter_vec(
                &r,
                "backend_health_transitions_total",
                "Flips of a backend's health state after health.rise or health.fall results in a row, by direction (to = up, down).",
                &["backend", "to"],
            ),
            config_reloads_total: counter_vec(
                &r,
                "config_reloads_total",
                "Reloads of the configuration file (SIGHUP), by result (ok, rejected: the running configuration stayed).",
                &["result"],
            ),
            config_last_reload_success_timestamp_seconds: float_gauge(
                &r,
                "config_last_reload_success_timestamp_seconds",
                "When the configuration in effect was loaded (Unix time): the start or the last reload that took.",
            ),
            sticky_entries: gauge(
                &r,
                "sticky_entries",
                "Users remembered on a backend (pools.sticky): sessions running, or ended less than the window ago.",
            ),
            sticky_decisions_total: counter_vec(
                &r,
                "sticky_decisions_total",
                "New sessions on a sticky pool: hit (the remembered backend first), miss (none remembered), backend_down, backend_full (remembered, but skipped).",
                &["result"],
            ),
            sticky_table_full_total: counter_vec(
                &r,
                "sticky_table_full_total",
                "Logins that found the sticky table full: evicted (the entry ending soonest made room), not_recorded (every entry was held by a running session).",
                &["result"],
            ),
            logins_total: counter_vec(
                &r,
                "logins_total",
                "Logins relayed to a backend, by result.",
                &["backend", "result"],
            ),
            commands_total: counter_vec(
                &r,
                "commands_total",
                "Client commands received, by verb (unknown verbs are `other`).",
                &["command"],
            ),
            transfers_total: counter_vec(
                &r,
                "transfers_total",
                "Data transfers, by backend, direction and result.",
                &["backend", "direction", "result"],
            ),
            transfer_bytes_total: counter_vec(
                &r,
                "transfer_bytes_total",
                "Data bytes relayed, by backend and direction.",
                &["backend", "direction"],
            ),
            transfer_duration_seconds,
            passive_ports_in_use: gauge(
                &r,
                "passive_ports_in_use",
                "Passive ports with at least one pending reservation.",
            ),
            passive_ports_configured: gauge(
                &r,
                "passive_ports_configured",
                "Ports in passive.ports.",
            ),
            passive_reservations_active: gauge(
                &r,
                "passive_reservations_active",
                "Pending passive reservations (port, client IP) waiting for a data connection.",
            ),
            passive_port_exhausted_total: counter(
                &r,
                "passive_port_exhausted_total",
                "PASV/EPSV requests refused because no port was free for the client IP.",
            ),
            shutdown_cut_transfers_total: counter(
                &r,
                "shutdown_cut_transfers_total",
                "Transfers cut (421) because they were still running at the end of the shutdown grace.",
            ),
            passive_listeners_open: gauge(
                &r,
                "passive_listeners_open",
                "Passive port listeners open now (bound on first use, closed when idle).",
            ),
            bans_active: gauge(
                &r,
                "bans_active",
                "Client addresses (IPv6: /64 prefixes) banned now after repeated failed logins.",
            ),
            bans_total: counter(
                &r,
                "bans_total",
                "Bans started: an address reached limits.max_failed_logins within limits.failed_login_window.",
            ),
            backend_connect_errors_total: counter_vec(
                &r,
                "backend_connect_errors_total",
                "Failed connections to a backend, by reason.",
                &["backend", "reason"],
            ),
            backend_up,
            backend_sessions,
            tls_handshakes_total: counter_vec(
                &r,
                "tls_handshakes_total",
                "TLS handshakes, by side (client, backend) and result.",
                &["side", "result"],
            ),
            tls_plaintext_refused_total: counter_vec(
                &r,
                "tls_plaintext_refused_total",
                "Plaintext logins and data connections refused by tls.mode = required.",
                &["what"],
            ),
            data_connections_rejected_total: counter_vec(
                &r,
                "data_connections_rejected_total",
                "Data connections refused, by reason (foreign_ip, timeout, ...).",
                &["reason"],
            ),
            protocol_errors_total: counter_vec(
                &r,
                "protocol_errors_total",
                "Malformed input, by side (client, backend) and kind.",
                &["side", "kind"],
            ),
            backend_login_duration_seconds,
            passive_port_reservations_max: gauge(
                &r,
                "passive_port_reservations_max",
                "Pending reservations on the busiest passive port (client addresses sharing it).",
            ),
            transfers_active: gauge(
                &r,
                "transfers_active",
                "Transfers whose data is flowing now.",
            ),
            data_connections_total: counter_vec(
                &r,
                "data_connections_total",
                "Data connections opened, by side (client, backend).",
                &["side"],
            ),
            proxy_protocol_total: counter_vec(
                &r,
                "proxy_protocol_total",
                "Connections on a PROXY-protocol listener (control, implicit_tls, passive), by result (ok, untrusted_peer, malformed, timeout, closed).",
                &["listener", "result"],
            ),
            log_lines_dropped_total: counter(
                &r,
                "log_lines_dropped_total",
                "Log lines dropped because stderr did not keep up (log.queue_lines were waiting).",
            ),
            registry: r,
            ready: AtomicBool::new(false),
            readiness_backends: std::sync::RwLock::new(Vec::new()),
        })
    }

    /// Every PROXY protocol result of each running listener at zero, and the passive
    /// listener's refusal reason.
    pub fn init_proxy_protocol_series(&self, implicit_tls: bool) {
        let mut listeners = vec![labels::CONTROL_LISTENER, labels::PASSIVE_LISTENER];
        if implicit_tls {
            listeners.push(labels::IMPLICIT_TLS_LISTENER);
        }
        for listener in listeners {
            self.proxy_protocol_total
                .with_label_values(&[listener, labels::OK]);
            for reason in crate::proxy_protocol::ERROR_REASONS {
                self.proxy_protocol_total
                    .with_label_values(&[listener, reason]);
            }
        }
        self.data_connections_rejected_total
            .with_label_values(&[labels::PROXY_PROTOCOL]);
    }

    /// Counts one connection's PROXY header outcome on `listener`.
    pub fn count_proxy_header<T>(
        &self,
        listener: &str,
        result: &Result<T, crate::proxy_protocol::ProxyHeaderError>,
    ) {
        let label = match result {
            Ok(_) => labels::OK,
            Err(e) => e.reason(),
        };
        self.proxy_protocol_total
            .with_label_values(&[listener, label])
            .inc();
    }

    /// The registry rendered in the Prometheus text format.
    pub fn render(&self) -> String {
        let dropped = crate::logging::dropped_lines();
        let counted = self.log_lines_dropped_total.get();
        self.log_lines_dropped_total
            .inc_by(dropped.saturating_sub(counted));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Marks the proxy ready (its listeners are bound) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The backends `/readyz` follows (the default route's; all when there is none).
    pub fn set_readiness_backends(&self, backends: Vec<String>) {
        *self
            .readiness_backends
            .write()
            .unwrap_or_else(|p| p.into_inner()) = backends;
    }

    /// Ready: the listeners are bound and at least one backend of the default route is up.
    pub fn is_ready(&self) -> bool {
        let backends = self
            .readiness_backends
            .read()
            .unwrap_or_else(|p| p.into_inner());
        self.ready.load(Ordering::Relaxed)
            && backends
                .iter()
                .any(|name| self.backend_up.with_label_values(&[name]).get() == 1)
    }

    /// Creates every series whose labels are known at start (each configured backend, each
    /// result and direction) at zero, so dashboards and alerts never query a series that
    /// does not exist yet.
    pub fn init_known_series(&self, backends: &[String]) {
        let directions = ["download", "upload", "listing"];
        for result in [labels::OK, labels::REJECTED, labels::ERROR] {
            self.sessions_total.with_label_values(&[result]);
        }
        for side in ["client", "backend"] {
            self.data_connections_total.with_label_values(&[side]);
        }
        for result in [labels::OK, labels::REJECTED] {
            self.config_reloads_total.with_label_values(&[result]);
        }
        for reason in RoutingFailure::ALL {
            self.login_routing_failures_total
                .with_label_values(&[reason.label()]);
        }
        for step in RouteStep::ALL {
            self.login_routes_total.with_label_values(&[step.label()]);
        }
        for decision in StickyDecision::ALL {
            self.sticky_decisions_total
                .with_label_values(&[decision.label()]);
        }
        for overflow in StickyOverflow::ALL {
            self.sticky_table_full_total
                .with_label_values(&[overflow.label()]);
        }
        for backend in backends.iter().map(String::as_str) {
            self.backend_up.with_label_values(&[backend]);
            self.backend_sessions.with_label_values(&[backend]);
            for to in ["up", "down"] {
                self.backend_health_transitions_total
                    .with_label_values(&[backend, to]);
            }
            self.backend_login_duration_seconds
                .with_label_values(&[backend]);
            for result in [labels::OK, labels::FAILED] {
                self.logins_total.with_label_values(&[backend, result]);
            }
            for reason in [
                "resolve",
                labels::CONNECT_FAILED,
                labels::TIMEOUT,
                labels::REFUSED,
                labels::BAD_GREETING,
                "tls",
            ] {
                self.backend_connect_errors_total
                    .with_label_values(&[backend, reason]);
            }
            for direction in directions {
                self.transfer_bytes_total
                    .with_label_values(&[backend, direction]);
                for result in [labels::OK, labels::FAILED, labels::ERROR, labels::ABORTED] {
                    self.transfers_total
                        .with_label_values(&[backend, direction, result]);
                }
            }
        }
        for direction in directions {
            self.transfer_duration_seconds
                .with_label_values(&[direction]);
        }
        for side in ["client", "backend"] {
            for result in [labels::OK, labels::ERROR] {
                self.tls_handshakes_total.with_label_values(&[side, result]);
            }
        }
        for what in ["login", "data"] {
            self.tls_plaintext_refused_total.with_label_values(&[what]);
        }
        for reason in [labels::FOREIGN_IP, labels::TIMEOUT] {
            self.data_connections_rejected_total
                .with_label_values(&[reason]);
        }
        let protocol_errors = [
            ("client", "line_too_long"),
            ("client", "malformed_command"),
            ("backend", "unsolicited_reply"),
            ("backend", "malformed_reply"),
            ("backend", "line_too_long"),
            ("backend", "reply_too_large"),
            ("backend", "timeout"),
            ("backend", "closed"),
            ("backend", "io"),
        ];
        for (side, kind) in protocol_errors {
            self.protocol_errors_total.with_label_values(&[side, kind]);
        }
    }

    /// One TLS handshake on `side` ("client" or "backend").
    pub fn count_tls_handshake(&self, side: &str, ok: bool) {
        let result = if ok { labels::OK } else { labels::ERROR };
        self.tls_handshakes_total
            .with_label_values(&[side, result])
            .inc();
    }

    pub fn count_protocol_error(&self, side: &str, kind: &str) {
        self.protocol_errors_total
            .with_label_values(&[side, kind])
            .inc();
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert("content-type", value);
    }
    response
}

/// The expected `Authorization` header value when `/metrics` needs basic auth.
pub fn basic_auth_header(user: &str, password: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// Constant-time comparison: the time taken must not tell how much of a guess was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn authorized(req: &Request<Incoming>, expected: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    req.headers()
        .get("authorization")
        .is_some_and(|given| same_secret(given.as_bytes(), expected.as_bytes()))
}

fn route(metrics: &Metrics, req: &Request<Incoming>, auth: Option<&str>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" if !authorized(req, auth) => {
            let mut response = respond(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "unauthorized\n".into(),
            );
            if let Ok(value) = "Basic realm=\"ftpfront\"".parse() {
                response.headers_mut().insert("www-authenticate", value);
            }
            response
        }
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if metrics.is_ready() => respond(StatusCode::OK, "text/plain", "ready\n".into()),
        "/readyz" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves the metrics endpoint on `listener` until `shutdown` changes; `auth` is the
/// `Authorization` header `/metrics` requires, if any.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    auth: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let auth: Option<Arc<str>> = auth.map(Arc::from);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let metrics = metrics.clone();
        let auth = auth.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = route(&metrics, &req, auth.as_deref());
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "metrics endpoint: connection error");
            }
        });
    }
}

/// Why a login reached no backend (`ftpfront_login_routing_failures_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingFailure {
    NoRoute,
    UnknownTarget,
    AllFull,
    AllFailed,
}

impl RoutingFailure {
    pub const ALL: [RoutingFailure; 4] = [
        RoutingFailure::NoRoute,
        RoutingFailure::UnknownTarget,
        RoutingFailure::AllFull,
        RoutingFailure::AllFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RoutingFailure::NoRoute => "no_route",
            RoutingFailure::UnknownTarget => "unknown_target",
            RoutingFailure::AllFull => "all_full",
            RoutingFailure::AllFailed => "all_failed",
        }
    }
}

/// Which step of `[routing]` chose a login's target (`ftpfront_login_routes_total{step}`),
/// in the order they are asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteStep {
    /// The client's HOST command named a `routing.hosts` key.
    Host,
    /// The TLS server name (SNI) of the control connection did.
    Sni,
    /// `USER name@target` (`routing.allow_user_at_backend`).
    UserAt,
    /// An exact `routing.users` name.
    User,
    /// A `routing.users` glob pattern.
    Pattern,
    /// `routing.default` (or the only backend).
    Default,
}

impl RouteStep {
    pub const ALL: [RouteStep; 6] = [
        RouteStep::Host,
        RouteStep::Sni,
        RouteStep::UserAt,
        RouteStep::User,
        RouteStep::Pattern,
        RouteStep::Default,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RouteStep::Host => "host",
            RouteStep::Sni => "sni",
            RouteStep::UserAt => "user_at",
            RouteStep::User => "user",
            RouteStep::Pattern => "pattern",
            RouteStep::Default => "default",
        }
    }
}

/// What a new session on a sticky pool found (`ftpfront_sticky_decisions_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyDecision {
    /// The remembered backend goes first.
    Hit,
    /// Nothing remembered for the user (or the window has passed).
    Miss,
    /// Remembered, but down: the policy's order instead.
    BackendDown,
    /// Remembered, but at its `max_sessions`: the policy's order instead.
    BackendFull,
}

impl StickyDecision {
    pub const ALL: [StickyDecision; 4] = [
        StickyDecision::Hit,
        StickyDecision::Miss,
        StickyDecision::BackendDown,
        StickyDecision::BackendFull,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StickyDecision::Hit => "hit",
            StickyDecision::Miss => "miss",
            StickyDecision::BackendDown => "backend_down",
            StickyDecision::BackendFull => "backend_full",
        }
    }
}

/// What a login did to a full sticky table (`ftpfront_sticky_table_full_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyOverflow {
    /// The entry whose window ends soonest was dropped for it.
    Evicted,
    /// Every entry is held by a running session: this login is not remembered.
    NotRecorded,
}

impl StickyOverflow {
    pub const ALL: [StickyOverflow; 2] = [StickyOverflow::Evicted, StickyOverflow::NotRecorded];

    pub fn label(self) -> &'static str {
        match self {
            StickyOverflow::Evicted => "evicted",
            StickyOverflow::NotRecorded => "not_recorded",
        }
    }
}

/// Binds the metrics endpoint; returns the bound address (useful with port 0).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names, types and labels of the metric contract (ARCHITECTURE.md): dashboards and alerts
    /// depend on them, so a rename must fail here.
    #[test]
    fn every_contract_metric_is_exported_with_its_type_and_labels() {
        let m = Metrics::new();
        m.sessions_total.with_label_values(&["ok"]).inc();
        m.logins_total.with_label_values(&["b", "ok"]).inc();
        m.commands_total.with_label_values(&["retr"]).inc();
        m.transfers_total
            .with_label_values(&["b", "download", "ok"])
            .inc();
        m.transfer_bytes_total
            .with_label_values(&["b", "download"])
            .inc();
        m.transfer_duration_seconds
            .with_label_values(&["download"])
            .observe(1.0);
        m.backend_connect_errors_total
            .with_label_values(&["b", "timeout"])
            .inc();
        m.backend_up.with_label_values(&["b"]).set(1);
        m.backend_sessions.with_label_values(&["b"]).set(1);
        m.backend_health_transitions_total
            .with_label_values(&["b", "down"])
            .inc();
        m.config_reloads_total.with_label_values(&["ok"]).inc();
        m.config_last_reload_success_timestamp_seconds.set(1.0);
        m.pool_backends_up.with_label_values(&["web"]).set(1);
        m.login_routing_failures_total
            .with_label_values(&["no_route"])
            .inc();
        m.login_routes_total.with_label_values(&["sni"]).inc();
        m.sticky_entries.set(1);
        m.sticky_decisions_total.with_label_values(&["hit"]).inc();
        m.sticky_table_full_total
            .with_label_values(&["evicted"])
            .inc();
        m.tls_handshakes_total
            .with_label_values(&["client", "ok"])
            .inc();
        m.data_connections_rejected_total
            .with_label_values(&["foreign_ip"])
            .inc();
        let text = m.render();
        let contract = [
            ("ftpfront_sessions_active", "gauge", ""),
            ("ftpfront_sessions_total", "counter", "{result=\"ok\"}"),
            (
                "ftpfront_logins_total",
                "counter",
                "{backend=\"b\",result=\"ok\"}",
            ),
            ("ftpfront_commands_total", "counter", "{command=\"retr\"}"),
            (
                "ftpfront_transfers_total",
                "counter",
                "{backend=\"b\",direction=\"download\",result=\"ok\"}",
            ),
            (
                "ftpfront_transfer_bytes_total",
                "counter",
                "{backend=\"b\",direction=\"download\"}",
            ),
            ("ftpfront_transfer_duration_seconds", "histogram", ""),
            ("ftpfront_passive_ports_in_use", "gauge", ""),
            ("ftpfront_passive_ports_configured", "gauge", ""),
            ("ftpfront_passive_reservations_active", "gauge", ""),
            ("ftpfront_passive_port_exhausted_total", "counter", ""),
            (
                "ftpfront_backend_connect_errors_total",
                "counter",
                "{backend=\"b\",reason=\"timeout\"}",
            ),
            ("ftpfront_backend_up", "gauge", "{backend=\"b\"}"),
            ("ftpfront_backend_sessions", "gauge", "{backend=\"b\"}"),
            (
                "ftpfront_config_reloads_total",
                "counter",
                "{result=\"ok\"}",
            ),
            (
                "ftpfront_config_last_reload_success_timestamp_seconds",
                "gauge",
                "",
            ),
            (
                "ftpfront_backend_health_transitions_total",
                "counter",
                "{backend=\"b\",to=\"down\"}",
            ),
            ("ftpfront_pool_backends_up", "gauge", "{pool=\"web\"}"),
            (
                "ftpfront_login_routing_failures_total",
                "counter",
                "{reason=\"no_route\"}",
            ),
            ("ftpfront_login_routes_total", "counter", "{step=\"sni\"}"),
            ("ftpfront_sticky_entries", "gauge", ""),
            (
                "ftpfront_sticky_decisions_total",
                "counter",
                "{result=\"hit\"}",
            ),
            (
                "ftpfront_sticky_table_full_total",
                "counter",
                "{result=\"evicted\"}",
            ),
            (
                "ftpfront_tls_handshakes_total",
                "counter",
                "{result=\"ok\",side=\"client\"}",
            ),
            (
                "ftpfront_data_connections_rejected_total",
                "counter",
                "{reason=\"foreign_ip\"}",
            ),
            ("ftpfront_log_lines_dropped_total", "counter", ""),
        ];
        for (name, kind, labels) in contract {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} is not a {kind}:\n{text}"
            );
            assert!(
                text.contains(&format!("{name}{labels} ")) || kind == "histogram",
                "{name}{labels} missing:\n{text}"
            );
        }
        assert!(text.contains("ftpfront_transfer_duration_seconds_bucket{direction=\"download\","));
    }
}
