//! Mail hygiene on the SMTP listener (mta-in, all-in-one) and on
//! submission (mta-out): DNS blocklists and allowlists (`dnsbl`), rate
//! limits and per-user sending limits (`ratelimit`), greylisting
//! (`greylist`), the content filter (`filter`: rspamd or spamd). SPF, DKIM,
//! ARC and DMARC are `smtp::auth_results`; outbound MTA-STS is
//! `deliver::mta_sts`.
//!
//! The SMTP driver (`smtp::run`) asks at four points of a session:
//! `connect` (before the greeting), `mail_from`, `rcpt` (before the
//! directory lookup) and `content` (at the end of DATA, after the
//! authentication checks). Each answers `Decision::Pass` or a refusal the
//! driver sends as it is; a check that cannot answer in time passes
//! (fail-open) unless its config says otherwise. LMTP sessions are never
//! asked: the store trusts its own MTAs.
//!
//! State is per process (`Services::hygiene`, built once at start; a
//! SIGHUP does not rebuild it): rate counters in memory, greylist
//! triplets in `<data_dir>/greylist.redb`.

pub mod dnsbl;
pub mod filter;
pub mod greylist;
pub mod ratelimit;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::dns::Resolver;

/// A refusal as the SMTP driver sends it: `code esc text`. `text` is
/// ours (never client data; a list's zone name is configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    /// Enhanced status code (RFC 3463), e.g. "5.7.1".
    pub esc: &'static str,
    pub text: String,
}

impl Refusal {
    pub fn new(code: u16, esc: &'static str, text: impl Into<String>) -> Refusal {
        Refusal {
            code,
            esc,
            text: text.into(),
        }
    }
}

/// The answer of a check at connect, MAIL FROM or RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Pass,
    Refuse(Refusal),
}

/// What the content filter says about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentVerdict {
    /// Deliver; `headers` (complete header fields, CRLF-terminated, may
    /// be empty) go on top of the message.
    Accept { headers: String },
    /// Deliver to the recipients' Junk mailbox, with these fields added.
    Junk { headers: String },
    /// Refuse the whole message (5xx) or ask the client to retry (4xx).
    Refuse(Refusal),
}

/// Who is talking: the facts every check may use.
#[derive(Debug, Clone)]
pub struct Client {
    pub ip: IpAddr,
    /// The EHLO/HELO name as given ("" before it).
    pub helo: String,
    /// The authenticated login (submission), if any.
    pub login: Option<String>,
    /// A submission listener (587/465) rather than port 25.
    pub submission: bool,
    /// In `[hygiene] trusted_networks` (or submission's trusted networks):
    /// inbound checks do not apply.
    pub trusted: bool,
}

impl Client {
    /// A stranger on port 25: the inbound checks (lists, greylisting,
    /// content filter) apply.
    pub fn is_stranger(&self) -> bool {
        !self.submission && !self.trusted && self.login.is_none()
    }
}

/// The message facts the content filter passes on (rspamd's headers,
/// spamd's User).
#[derive(Debug, Clone, Default)]
pub struct MessageInfo {
    pub id: String,
    pub sender: String,
    pub recipients: Vec<String>,
}

/// Every hygiene check of the process.
#[derive(Default)]
pub struct Hygiene {
    pub dnsbl: dnsbl::Dnsbl,
    pub rate: ratelimit::RateLimits,
    pub greylist: greylist::Greylist,
    pub filter: filter::ContentFilter,
}

impl Hygiene {
    /// Built from `[hygiene]` at start; opens the greylist database when
    /// greylisting is on.
    pub fn open(config: &Config, resolver: Arc<Resolver>) -> anyhow::Result<Hygiene> {
        Ok(Hygiene {
            dnsbl: dnsbl::Dnsbl::from_config(config, resolver.clone())?,
            rate: ratelimit::RateLimits::from_config(config)?,
            greylist: greylist::Greylist::open(config)?,
            filter: filter::ContentFilter::from_config(config)?,
        })
    }

    /// Before the greeting: client address lists, connection rate.
    pub async fn connect(&self, client: &Client) -> Decision {
        if let Decision::Refuse(r) = self.rate.connect(&self.exempt(client)) {
            return Decision::Refuse(r);
        }
        self.dnsbl.connect(client).await
    }

    /// At MAIL FROM (`sender` "" for `<>`): sender-domain lists, sender
    /// rates, per-user sending limits on submission.
    pub async fn mail_from(&self, client: &Client, sender: &str) -> Decision {
        if let Decision::Refuse(r) = self.dnsbl.mail_from(client, sender).await {
            return Decision::Refuse(r);
        }
        self.rate.mail_from(&self.exempt(client), sender)
    }

    /// At RCPT TO, before the directory lookup: recipient rates,
    /// greylisting.
    pub async fn rcpt(&self, client: &Client, sender: &str, rcpt: &str) -> Decision {
        if let Decision::Refuse(r) = self.rate.rcpt(&self.exempt(client), sender, rcpt) {
            return Decision::Refuse(r);
        }
        if self.dnsbl.allowlisted(client) {
            return Decision::Pass;
        }
        self.greylist.rcpt(client, sender, rcpt).await
    }

    /// The client as the rate limits see it: one on the local allowlist
    /// is trusted (not counted).
    fn exempt(&self, client: &Client) -> Client {
        let mut c = client.clone();
        c.trusted |= self.dnsbl.allowlisted(client);
        c
    }

    /// At the end of DATA: the content filter.
    pub async fn content(&self, client: &Client, msg: &MessageInfo, data: &[u8]) -> ContentVerdict {
        self.filter.check(client, msg, data).await
    }
}
