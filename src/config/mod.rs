//! Configuration (`crate::config`): the public types, re-exported from one file per concern (schema, port range, problems, env, loading, validation, routing keys, rendering for `check`).

mod env;
mod load;
mod port_range;
mod problem;
mod render;
mod routing;
mod schema;
mod validate;
mod validate_backends;

#[cfg(test)]
mod test_support;

pub use port_range::{PortRange, PortRangeError};
pub use problem::{ConfigError, Origin, Problem};
pub use routing::{
    is_user_pattern, normalize_host, user_pattern, wildcard_parent, wildcard_suffix,
};
pub use schema::{
    BackendConfig, BackendProxyProtocol, BackendTls, ClientActiveMode, Config, DataConfig,
    DataMode, HealthConfig, LimitsConfig, ListenConfig, LogConfig, LogFormat, MetricsConfig,
    PassiveConfig, PoolConfig, PumpMode, RoutingConfig, RoutingPolicy, ShutdownConfig,
    SplitHorizonRule, TlsConfig, TlsMode, TlsVersion,
};
pub use schema::{DEFAULT_LOG_QUEUE_LINES, MAX_LOG_QUEUE_LINES, MAX_STICKY};
