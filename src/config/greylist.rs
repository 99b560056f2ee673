//! `[hygiene.greylist]`: greylisting with durable triplets
//! (src/hygiene/greylist.rs).

use serde::{Deserialize, Serialize};

/// Greylisting of strangers on port 25.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GreylistConfig {
    /// Off by default.
    pub enabled: bool,
    /// Recipient domains greylisting applies to (case-insensitive); empty:
    /// every recipient.
    pub domains: Vec<String>,
    /// Seconds a new triplet is deferred (default 300).
    pub delay: u64,
    /// Seconds after the delay during which a retry passes (default 4 h);
    /// a later retry starts over.
    pub retry_window: u64,
    /// Seconds a passed triplet is remembered after its last message
    /// (default 36 days).
    pub expire: u64,
    /// Client IPv4 addresses are grouped by this prefix (default 24).
    pub ipv4_prefix: u8,
    /// Client IPv6 addresses are grouped by this prefix (default 64).
    pub ipv6_prefix: u8,
    /// Most triplets kept (default 1 000 000; 0: no cap). When full, an
    /// unknown triplet passes without being remembered (fail-open).
    pub max_entries: u64,
}

impl Default for GreylistConfig {
    fn default() -> Self {
        GreylistConfig {
            enabled: false,
            domains: Vec::new(),
            delay: 300,
            retry_window: 4 * 3600,
            expire: 36 * 86400,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            max_entries: 1_000_000,
        }
    }
}
