//! CATENATE (RFC 4469): APPEND of a message put together from TEXT
//! literals and URL parts.
//!
//! A URL part is an IMAP URL (`url`) to a message or part of it in one of
//! the user's own mailboxes, in a mailbox the ACL lets the user read
//! (`r`), or a URLAUTH-authorized URL (`urlauth`) of another user. Any
//! URL that gives no data fails the whole command with `NO [BADURL url]`
//! (RFC 4469 6); nothing is appended.
//!
//! Bounds: at most `url::MAX_URLS` parts (parser). The result grows only
//! up to the APPEND limit: past it the command stops with `NO [TOOBIG]`
//! before reading another message. Each URL's message takes its size from
//! the process-wide byte budget while it is read, then the part kept takes
//! its own size until the APPEND is done (`NO [LIMIT]` when the budget is
//! spent); TEXT literals are already in the budget through the framer.

use std::io;

use super::command::CatPart;
use super::session::{Reply, Session};
use super::urlauth::BUDGET_SPENT;

/// A URL as it may go into a response code (`url-resp-text` has no `]`
/// and no line breaks).
fn resp_text(url: &str) -> String {
    url.chars()
        .map(|c| if c == ']' || c.is_control() { '?' } else { c })
        .collect()
}

impl Session {
    /// APPEND with CATENATE (RFC 4469 5).
    pub(crate) async fn catenate(
        &mut self,
        mailbox: &[u8],
        flags: &[String],
        date: Option<(i64, i16)>,
        parts: Vec<CatPart>,
    ) -> io::Result<Reply> {
        let limit = self.append_limit();
        let mut data: Vec<u8> = Vec::new();
        let mut leases = Vec::new();
        for part in parts {
            let piece = match part {
                CatPart::Text(t) => t,
                CatPart::Url(u) => match self.url_data(&u, false).await {
                    Ok((d, lease)) => {
                        // Hold only what is kept.
                        let Some(kept) = self.services.budget.try_take(d.len() as u64) else {
                            return Ok(Reply::no(
                                Some("LIMIT"),
                                "Too much data in flight, try later",
                            ));
                        };
                        drop(lease);
                        leases.push(kept);
                        d
                    }
                    Err(why) if why == BUDGET_SPENT => {
                        return Ok(Reply::no(
                            Some("LIMIT"),
                            "Too much data in flight, try later",
                        ))
                    }
                    Err(why) => {
                        tracing::debug!(why, "CATENATE URL refused");
                        return Ok(Reply::no(
                            Some(&format!("BADURL {}", resp_text(&u))),
                            "CATENATE URL gives no data",
                        ));
                    }
                },
            };
            if (data.len() + piece.len()) as u64 > limit {
                return Ok(Reply::no(Some("TOOBIG"), "Message too big"));
            }
            data.extend_from_slice(&piece);
        }
        let reply = self.append(mailbox, flags, date, data).await;
        drop(leases);
        reply
    }
}
