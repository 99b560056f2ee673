//! `[hygiene.greylist]`: greylisting with durable triplets
//! (src/hygiene/greylist.rs).

use serde::{Deserialize, Serialize};

/// Greylisting.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GreylistConfig {
    /// Off by default.
    pub enabled: bool,
}
