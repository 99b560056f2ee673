//! msgd: one binary for every tier of a two-tier mail deployment.
//!
//! Layers: bytes -> codec (smtp-proto, imap-codec) -> synchronous session
//! core (no sockets; tested by feeding bytes) -> async driver doing I/O and
//! effects (directory lookups, store deliveries).

pub mod admin;
pub mod authcache;
pub mod budget;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod directory;
pub mod dns;
pub mod fsutil;
#[cfg(test)]
mod fuzz;
pub mod header;
pub mod http;
pub mod hygiene;
pub mod imap;
pub mod jmap;
pub mod logging;
pub mod login;
pub mod loginlimit;
pub mod mem;
pub mod memory;
pub mod metrics;
pub mod mmp;
pub mod net;
pub mod net_unix;
pub mod netaddr;
pub mod ops;
pub mod pop3;
pub mod provision;
pub mod proxyproto;
pub mod queue;
pub mod redact;
pub mod roles;
pub mod services;
pub mod sieve;
pub mod smtp;
pub mod store;
pub mod stress;
pub mod tls;
