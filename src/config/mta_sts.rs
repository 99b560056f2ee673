//! `[mta_sts]`: MTA-STS (RFC 8461) policies for outbound delivery and
//! TLS-RPT (RFC 8460) reports (src/deliver/mta_sts.rs).

use serde::{Deserialize, Serialize};

/// MTA-STS and TLS-RPT.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtaStsConfig {
    /// Off by default: turning it on changes where and how mail leaves
    /// (docs/hygiene.md); sites delivering to the Internet should set it.
    pub enabled: bool,
    /// Seconds for the whole policy fetch (DNS, connect, TLS, body).
    pub timeout: u64,
    /// Folder of the cached policies; empty means `<data_dir>/mta-sts`
    /// (relative paths are relative to data_dir).
    pub cache_dir: String,
    /// HTTPS port of `mta-sts.DOMAIN`. A test knob only: RFC 8461 fixes
    /// 443, and real sites keep the default.
    pub policy_port: u16,
    /// Policies kept in the cache; beyond it the oldest fetched is dropped.
    pub max_policies: usize,
}

impl Default for MtaStsConfig {
    fn default() -> Self {
        MtaStsConfig {
            enabled: false,
            timeout: 10,
            cache_dir: String::new(),
            policy_port: 443,
            max_policies: 10_000,
        }
    }
}
