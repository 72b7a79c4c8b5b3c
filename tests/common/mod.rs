//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod external;
pub mod fake_backend;
pub mod ftp_client;
pub mod harness;
pub mod members;
pub mod metrics;
pub mod observability;
pub mod pools;
pub mod process;
pub mod servers;
pub mod tcp_queues;
pub mod tls;
pub mod vsftpd;
