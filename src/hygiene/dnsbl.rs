//! DNS blocklists and allowlists (RFC 5782) at connect (client address)
//! and at MAIL FROM (sender domain), and the local allowlist.

use std::sync::Arc;

use super::{Client, Decision};
use crate::config::Config;
use crate::dns::Resolver;

/// The configured lists (`[hygiene.dnsbl]`).
#[derive(Default)]
pub struct Dnsbl {
    _resolver: Option<Arc<Resolver>>,
}

impl Dnsbl {
    pub fn from_config(_config: &Config, resolver: Arc<Resolver>) -> anyhow::Result<Dnsbl> {
        Ok(Dnsbl {
            _resolver: Some(resolver),
        })
    }

    /// Client address lists.
    pub async fn connect(&self, _client: &Client) -> Decision {
        Decision::Pass
    }

    /// Sender domain lists and the local sender allowlist.
    pub async fn mail_from(&self, _client: &Client, _sender: &str) -> Decision {
        Decision::Pass
    }

    /// The client is on the local allowlist: greylisting and the lists
    /// do not apply.
    pub fn allowlisted(&self, _client: &Client) -> bool {
        false
    }
}
