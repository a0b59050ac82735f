//! Shared parts of the end-to-end tests (`harness.rs`: brokers, proxies, consumers, configs;
//! `tls.rs`: a test PKI and a TLS proxy; `smallfs.rs`: a small tmpfs for full-disk tests).

mod harness;
mod smallfs;
pub mod tls;

pub use harness::*;
pub use smallfs::*;
