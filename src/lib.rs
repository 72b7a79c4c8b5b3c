//! ftpfront: an FTP reverse proxy that makes FTP servers usable across two NATs.
//!
//! The modules follow ARCHITECTURE.md's map: a pure protocol codec (`ftp`), configuration,
//! control connections (`conn`), sessions, backends, data channels, the passive port pool,
//! admission limits, the PROXY protocol, metrics, the server wiring and the embedded demo.

pub mod backend;
pub mod bans;
pub mod config;
pub mod conn;
pub mod data;
#[cfg(feature = "demo")]
pub mod demo;
pub mod features;
pub mod ftp;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod pem;
pub mod ports;
pub mod proxy_protocol;
pub mod reload;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod tls;
pub mod tls_pinning;
