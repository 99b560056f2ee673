//! `[hygiene.rate]`: rate limits per client, sender and recipient, and
//! per-user sending limits on submission (src/hygiene/ratelimit.rs).

use serde::{Deserialize, Serialize};

/// Rate limits (per process).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// Off by default.
    pub enabled: bool,
}
