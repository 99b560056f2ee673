//! `[hygiene.filter]`: the content filter hook, rspamd or spamd
//! (src/hygiene/filter.rs).

use serde::{Deserialize, Serialize};

/// Which spam filter msgd asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterKind {
    /// rspamd's HTTP protocol (`POST /checkv2`), its `action` decides.
    #[default]
    Rspamd,
    /// SpamAssassin's spamd (SPAMC/1.5 `SYMBOLS` over TCP), its spam flag
    /// and score decide.
    Spamd,
}

/// What happens to a message when the filter does not answer in time
/// (or answers garbage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Deliver it unscanned (no X-Spam-* fields).
    #[default]
    Open,
    /// `451 4.7.1`: the client retries later.
    Closed,
}

/// The content filter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Off by default.
    pub enabled: bool,
    /// "rspamd" (default) or "spamd".
    pub kind: FilterKind,
    /// rspamd's normal worker, `http://host:port` (plain HTTP on a trusted
    /// network; `/checkv2` is appended).
    pub url: String,
    /// spamd's `host:port`.
    pub address: String,
    /// Milliseconds one scan may take, connection included (0: 10000).
    pub timeout_ms: u64,
    /// "open" (default): deliver unscanned when the filter fails;
    /// "closed": answer 451 4.7.1.
    pub fail: FailMode,
    /// Messages bigger than this many bytes are not scanned (delivered
    /// without X-Spam-* fields), as rspamd's and spamc's own limits do.
    pub max_size: u64,
    /// Also scan mail from authenticated or submission clients (outbound).
    pub scan_submission: bool,
    /// spamd: a message flagged spam with at least this score is refused
    /// 550 5.7.1; below it, flagged mail goes to Junk.
    pub reject_score: f64,
    /// spamd: the `User:` whose preferences spamd applies ("" sends none).
    pub spamd_user: String,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            enabled: false,
            kind: FilterKind::Rspamd,
            url: "http://127.0.0.1:11333".into(),
            address: "127.0.0.1:783".into(),
            timeout_ms: 10_000,
            fail: FailMode::Open,
            max_size: 10 * 1024 * 1024,
            scan_submission: false,
            reject_score: 15.0,
            spamd_user: String::new(),
        }
    }
}

impl FilterConfig {
    /// Rules `check-config` reports (the role checks them again at start).
    pub(crate) fn validate(&self, errors: &mut Vec<String>) {
        if !self.enabled {
            return;
        }
        match self.kind {
            FilterKind::Rspamd => {
                if !self.url.starts_with("http://") && !self.url.starts_with("https://") {
                    errors.push("hygiene.filter.url: not an http:// or https:// address".into());
                }
            }
            FilterKind::Spamd => {
                let port = self.address.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
                if !matches!(port, Some(Ok(p)) if p != 0) {
                    errors.push("hygiene.filter.address: expected host:port".into());
                }
            }
        }
        if !self.reject_score.is_finite() {
            errors.push("hygiene.filter.reject_score: not a number".into());
        }
    }
}
