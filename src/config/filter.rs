//! `[hygiene.filter]`: the content filter hook, rspamd or spamd
//! (src/hygiene/filter.rs).

use serde::{Deserialize, Serialize};

/// The content filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Off by default.
    pub enabled: bool,
}
