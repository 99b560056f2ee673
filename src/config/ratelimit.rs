//! `[hygiene.rate]`: rate limits per client, sender and recipient, and
//! per-user sending limits on submission (src/hygiene/ratelimit.rs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Rate limits (per process: every process of a role counts on its own).
/// Every limit is a count per window; 0 = no limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// Off by default.
    pub enabled: bool,
    /// IPv6 clients are counted per network of this prefix length (an
    /// IPv4 client is counted per address). 1..=128; default 64.
    pub ipv6_prefix: u8,
    /// Connections per minute per client network (at connect: `421 4.7.0`).
    pub connections_per_minute: u32,
    /// MAIL FROM commands per minute per client network (`451 4.7.1`).
    pub messages_per_minute: u32,
    /// RCPT TO commands per minute per client network (`451 4.7.1`).
    pub recipients_per_minute: u32,
    /// MAIL FROM commands per minute per envelope sender (lowercased; `<>`
    /// is one sender).
    pub sender_messages_per_minute: u32,
    /// Messages per minute per recipient address (counted at RCPT TO).
    pub recipient_messages_per_minute: u32,
    /// Submission: messages per hour per login (at MAIL FROM).
    pub user_messages_per_hour: u32,
    /// Submission: recipients per hour per login (at RCPT TO).
    pub user_recipients_per_hour: u32,
    /// Submission: messages per day per login.
    pub user_messages_per_day: u32,
    /// Submission: recipients per day per login.
    pub user_recipients_per_day: u32,
    /// Keys (networks, senders, recipients, logins) each limit remembers
    /// at most; idle keys are dropped first, then the least recently used.
    pub max_keys: usize,
    /// Per-login overrides of the `user_*` limits:
    /// `[hygiene.rate.user."alice@example.org"]`.
    pub user: BTreeMap<String, UserRate>,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            enabled: false,
            ipv6_prefix: 64,
            connections_per_minute: 0,
            messages_per_minute: 0,
            recipients_per_minute: 0,
            sender_messages_per_minute: 0,
            recipient_messages_per_minute: 0,
            user_messages_per_hour: 0,
            user_recipients_per_hour: 0,
            user_messages_per_day: 0,
            user_recipients_per_day: 0,
            max_keys: 100_000,
            user: BTreeMap::new(),
        }
    }
}

/// `[hygiene.rate.user."LOGIN"]`: a key left out keeps the default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserRate {
    pub messages_per_hour: Option<u32>,
    pub recipients_per_hour: Option<u32>,
    pub messages_per_day: Option<u32>,
    pub recipients_per_day: Option<u32>,
}
