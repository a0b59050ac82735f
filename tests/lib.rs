//! Shared parts of the end-to-end tests (`harness.rs`: brokers, proxies, consumers, configs;
//! `tls.rs`: a test PKI and a TLS proxy).

mod harness;
pub mod tls;

pub use harness::*;
