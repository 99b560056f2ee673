//! MULTIAPPEND (RFC 3502), REPLACE (RFC 8508) and UNAUTHENTICATE (RFC
//! 8437).
//!
//! - MULTIAPPEND: `APPEND mailbox msg1 msg2 ...` stores all messages or
//!   none: the store writes them in one transaction
//!   (`Store::append_batch`), quota checked for the whole batch, and
//!   answers `APPENDUID uidvalidity first:last`. Limits: at most
//!   [`MAX_MESSAGES`] messages (more: `NO [LIMIT]`); each message at most
//!   APPENDLIMIT (`imap.max_literal`, `NO [TOOBIG]`); the whole command is
//!   framed like any other, so all its literals together are at most
//!   `imap.max_literal` plus four lines (`NO [TOOBIG]`) and each literal
//!   over 4 KiB takes from the process-wide byte budget
//!   (`limits.max_bytes_in_flight`, `NO [LIMIT]`) until the command is done.
//!   A single message goes the ordinary APPEND way (`mailboxes`).
//! - REPLACE / UID REPLACE: appends the new message to the named mailbox
//!   (the selected one or another) and expunges the old one from the
//!   selected mailbox in the same store transaction, so a failure leaves
//!   the old message in place (RFC 8508 3.3, 3.4). Answers
//!   `* OK [APPENDUID ...]`, then the mailbox's EXPUNGE/EXISTS, then the
//!   tagged OK. Needs `i` on the target and `t`+`e` on the selected
//!   mailbox (not read-only). Quota counts the old message as freed when
//!   both belong to the same user.
//! - UNAUTHENTICATE: back to the not-authenticated state: the selected
//!   mailbox is closed (no expunge), the user, ENABLEd extensions and
//!   `$` are dropped, literals are capped as before login; TLS stays.
//!   Advertised and allowed only where a new LOGIN is (TLS, loopback or
//!   `imap.allow_plaintext_auth`) and not once COMPRESS is active: like a
//!   SASL security layer (RFC 8437 3), it was negotiated by the
//!   authenticated user and cannot be taken off the stream, so the next
//!   user would inherit it (msgd offers no SASL security layer). Nor
//!   behind a front end: a session a proxy account (the mmp) opened on a
//!   user's behalf, one whose ID named the real client (x-originating-ip,
//!   kept for proxies and loopback front ends), or any session of a store
//!   that takes logins only from `imap.login_networks` (its mmps): the
//!   client behind it would log in again from the front end's address,
//!   past the per-client login limiter and the mmp's routing. The
//!   exception is a front end that says, in its ID before login,
//!   `"x-unauthenticate" "proxy"` (it answers its clients' UNAUTHENTICATE
//!   itself, as the mmp does, and sends its own only to reuse the
//!   connection for its next login), from loopback or
//!   `imap.login_networks`: it may UNAUTHENTICATE, which also forgets the
//!   ID's client address (the next login's ID names the next client). The next
//!   LOGIN/AUTHENTICATE goes through the same login limiter as the first.

use std::io;
use std::sync::Arc;

use crate::store::{Flags, NewMessage};

use super::command::{AppendMsg, SeqNum};
use super::session::{Reply, Session};

/// Most messages in one MULTIAPPEND. Each becomes a temporary file and
/// an index entry of one store transaction.
pub const MAX_MESSAGES: usize = 1000;

impl Session {
    /// APPEND with one message or several (RFC 3502).
    pub(crate) async fn append_messages(
        &mut self,
        raw: &[u8],
        mut messages: Vec<AppendMsg>,
    ) -> io::Result<Reply> {
        if messages.len() == 1 {
            let m = messages.remove(0);
            return self.append(raw, &m.flags, m.date, m.data).await;
        }
        if messages.len() > MAX_MESSAGES {
            return Ok(Reply::no(
                Some("LIMIT"),
                &format!("At most {MAX_MESSAGES} messages in one APPEND"),
            ));
        }
        let target = match self.target(raw).await {
            Ok(t) => t,
            Err(r) => return Ok(trycreate(r)),
        };
        if !target.rights.has('i') {
            return Ok(Reply::no_perm());
        }
        let mut msgs = Vec::with_capacity(messages.len());
        for m in messages {
            if let Some(r) = self.check_message(&m) {
                return Ok(r);
            }
            msgs.push(NewMessage {
                data: Arc::new(m.data),
                flags: Self::permitted_flags(Flags::from_names(&m.flags), target.rights),
                internal_date: m.date,
            });
        }
        let quota = match self.quota_for(&target.owner).await {
            Ok(q) => q,
            Err(r) => return Ok(r),
        };
        match self
            .store()
            .append_batch(&target.owner, &target.name, msgs, quota, None)
            .await
        {
            Ok(done) => {
                if self.state.open().is_some_and(|o| o.view.id == done.mailbox) {
                    self.sync(true).await;
                }
                Ok(Reply::ok_code(
                    format!("APPENDUID {} {}", done.uidvalidity, uid_range(&done.uids)),
                    "APPEND completed",
                ))
            }
            Err(e) => Ok(self.store_error(e, "TRYCREATE")),
        }
    }

    /// REPLACE / UID REPLACE (RFC 8508 3).
    pub(crate) async fn replace(
        &mut self,
        uid: bool,
        num: SeqNum,
        raw: &[u8],
        message: AppendMsg,
    ) -> io::Result<Reply> {
        let Some(open) = self.state.open() else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        if open.view.read_only {
            return Ok(Reply::no(Some("READ-ONLY"), "Mailbox is read-only"));
        }
        if !(open.rights.has('t') && open.rights.has('e')) {
            return Ok(Reply::no_perm());
        }
        let view = &open.view;
        let old_uid = match (uid, num) {
            (false, SeqNum::Star) | (true, SeqNum::Star) if view.msgs.is_empty() => {
                return Ok(Reply::no(None, "No message to replace"));
            }
            (_, SeqNum::Star) => view.max_uid(),
            (false, SeqNum::Num(n)) => match view.msgs.get(n as usize - 1) {
                Some(m) => m.meta.uid,
                None => return Ok(Reply::bad("Invalid message sequence number")),
            },
            (true, SeqNum::Num(u)) => match view.index_of(u) {
                Some(_) => u,
                None => return Ok(Reply::no(None, "No such message to replace")),
            },
        };
        let old_box = view.id;
        let target = match self.target(raw).await {
            Ok(t) => t,
            Err(r) => return Ok(trycreate(r)),
        };
        if !target.rights.has('i') {
            return Ok(Reply::no_perm());
        }
        if let Some(r) = self.check_message(&message) {
            return Ok(r);
        }
        let quota = match self.quota_for(&target.owner).await {
            Ok(q) => q,
            Err(r) => return Ok(r),
        };
        let msg = NewMessage {
            data: Arc::new(message.data),
            flags: Self::permitted_flags(Flags::from_names(&message.flags), target.rights),
            internal_date: message.date,
        };
        match self
            .store()
            .append_batch(
                &target.owner,
                &target.name,
                vec![msg],
                quota,
                Some((old_box, old_uid)),
            )
            .await
        {
            Ok(done) => {
                self.write(&format!(
                    "* OK [APPENDUID {} {}] Replacement message ready\r\n",
                    done.uidvalidity,
                    uid_range(&done.uids)
                ));
                self.sync(true).await;
                Ok(Reply::ok("REPLACE completed"))
            }
            Err(e) => Ok(self.store_error(e, "TRYCREATE")),
        }
    }

    /// Checks one message of an APPEND/REPLACE before anything is stored.
    fn check_message(&self, m: &AppendMsg) -> Option<Reply> {
        if m.data.is_empty() {
            return Some(Reply::no(None, "Cannot append an empty message"));
        }
        if m.data.len() as u64 > self.append_limit() {
            return Some(Reply::no(Some("TOOBIG"), "Message too big"));
        }
        None
    }

    /// May this session go back to the not-authenticated state? Only where
    /// a new LOGIN would be allowed (RFC 8437 3), not under COMPRESS, and
    /// not behind a front end (see the module doc).
    pub(crate) fn unauthenticate_allowed(&self) -> bool {
        let logged_in = self.state.user();
        let direct = logged_in.is_some_and(|u| !u.proxied)
            && self.originating_ip.is_none()
            && !self.via_front_end
            && self.config.imap.login_networks.is_empty();
        // A front end that reuses its connections (the mmp) and answers
        // its clients' UNAUTHENTICATE itself, on a trusted path.
        let networks = &self.config.imap.login_networks;
        let front_end = logged_in.is_some()
            && self.front_end_reuse
            && (self.info.is_loopback()
                || (!networks.is_empty() && self.info.login_allowed(networks)));
        (direct || front_end) && self.plaintext_ok() && !self.compressed
    }

    /// UNAUTHENTICATE (RFC 8437 3).
    pub(crate) fn unauthenticate(&mut self) -> Reply {
        if !self.unauthenticate_allowed() {
            return Reply::bad("UNAUTHENTICATE not available");
        }
        // Closing the view: no expunge, nothing announced (RFC 8437 3).
        let user = self
            .state
            .unauthenticate()
            .map(|u| u.name)
            .unwrap_or_default();
        self.enabled = Default::default();
        self.saved.clear();
        // The user's NOTIFY registration must not outlive the login: the
        // next user of this connection would see its events.
        self.notify = None;
        self.notify_seen = None;
        self.reset_preauth_limits();
        if self.front_end_reuse {
            // A front end names its next client in a new ID.
            let commands = self.next_front_end_client();
            tracing::info!(
                %user,
                client = self.originating_ip.as_deref().unwrap_or("-"),
                commands,
                "imap unauthenticate by the front end"
            );
            self.originating_ip = None;
            self.via_front_end = false;
            self.front_end_reuse = false;
        } else {
            tracing::info!(%user, "imap unauthenticate");
        }
        Reply::ok_code(
            format!("CAPABILITY {}", self.capabilities()),
            "Not authenticated",
        )
    }
}

/// A failed target lookup for APPEND says TRYCREATE (RFC 9051 6.3.12).
fn trycreate(mut r: Reply) -> Reply {
    if r.code.as_deref() == Some("NONEXISTENT") {
        r.code = Some("TRYCREATE".into());
    }
    r
}

/// The UIDs of one append batch (consecutive) as a uid-set: `n` or
/// `first:last` (RFC 4315 3, RFC 3502 6.3.11).
fn uid_range(uids: &[u32]) -> String {
    match (uids.first(), uids.last()) {
        (Some(a), Some(b)) if a != b => format!("{a}:{b}"),
        (Some(a), _) => a.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::uid_range;

    #[test]
    fn rfc4315_3_appenduid_set_of_a_batch() {
        assert_eq!(uid_range(&[7]), "7");
        assert_eq!(uid_range(&[7, 8, 9]), "7:9");
    }
}
