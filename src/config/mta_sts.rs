//! `[mta_sts]`: MTA-STS (RFC 8461) policies for outbound delivery and
//! TLS-RPT (RFC 8460) reports (src/deliver/mta_sts.rs).

use serde::{Deserialize, Serialize};

/// MTA-STS and TLS-RPT.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtaStsConfig {
    /// Off by default.
    pub enabled: bool,
}
