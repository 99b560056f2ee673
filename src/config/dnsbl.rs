//! `[hygiene.dnsbl]`: DNS blocklists and allowlists (src/hygiene/dnsbl.rs).

use serde::{Deserialize, Serialize};

/// DNS blocklists and allowlists at connect and at MAIL FROM.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsblConfig {
    /// Off by default: a site lists its zones first.
    pub enabled: bool,
}
