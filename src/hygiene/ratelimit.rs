//! Rate limits per client address/network, per sender and per recipient
//! (port 25), and per-user sending limits on submission. Per process.

use super::{Client, Decision};
use crate::config::Config;

/// Counters of `[hygiene.rate]`.
#[derive(Default)]
pub struct RateLimits {}

impl RateLimits {
    pub fn from_config(_config: &Config) -> anyhow::Result<RateLimits> {
        Ok(RateLimits {})
    }

    pub fn connect(&self, _client: &Client) -> Decision {
        Decision::Pass
    }

    pub fn mail_from(&self, _client: &Client, _sender: &str) -> Decision {
        Decision::Pass
    }

    pub fn rcpt(&self, _client: &Client, _sender: &str, _rcpt: &str) -> Decision {
        Decision::Pass
    }
}
