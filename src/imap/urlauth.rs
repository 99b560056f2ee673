//! URLAUTH (RFC 4467): GENURLAUTH, RESETKEY, URLFETCH, and the fetching of
//! the message data an IMAP URL names, shared with CATENATE.
//!
//! Keys: the store's own per-user, per-mailbox random keys
//! (`store::urlauth`), made on first need. The only mechanism is INTERNAL:
//! the token is the lowercase hex HMAC-SHA1 (RFC 2104, via `ring`) of the
//! URL rump under the key of the URL's user for the URL's mailbox. A URL
//! stays usable until its EXPIRE, a RESETKEY, or until its user loses the
//! read right on the mailbox (checked at every use).
//!
//! Who may use an authorized URL (RFC 4467 3): `anonymous` and `authuser`
//! any logged-in session (msgd has no anonymous login), `user+x` the
//! session of x, `submit+x` the session of x too (msgd's submission server
//! fetches as the user, with proxy authorization).
//!
//! Bounds: at most `url::MAX_URLS` URLs per command; each URLFETCH result
//! is written (and flushed when large) before the next message is read,
//! and takes its size from the byte budget while it is held, so a command
//! holds one message at a time.

use std::io;

use ring::hmac;

use super::acl::{self, Rights};
use super::session::{Reply, Session};
use super::url::{self, Access, ImapUrl};
use super::{mime, wire};
use crate::budget::Lease;
use crate::store::MailboxInfo;

/// The one URLAUTH mechanism (RFC 4467 4).
pub const INTERNAL: &str = "INTERNAL";

/// The `Fail` of a URL whose message the byte budget cannot hold now.
pub(crate) const BUDGET_SPENT: &str = "byte budget spent";

/// Why a URL gave no data (logged; the client only sees BADURL or NIL).
pub(crate) type Fail = &'static str;

/// The INTERNAL token of a rump under a key.
pub fn token(key: &[u8], rump: &str) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let tag = hmac::sign(&k, rump.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison of two tokens.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A mailbox resolved for a given user.
pub(crate) struct Resolved {
    pub owner: String,
    pub info: MailboxInfo,
    pub rights: Rights,
}

impl Session {
    /// Resolves a mailbox name (UTF-8, as in URLs) as `user` would: one of
    /// the user's own, or a shared one under "Other Users/<owner>/" with
    /// the rights the ACL gives `user`.
    pub(crate) async fn resolve_as(&mut self, user: &str, name: &str) -> Result<Resolved, Fail> {
        let (owner, mname) = if acl::in_shared_namespace(name) {
            let (o, m) = acl::split_shared(name).ok_or("no such mailbox")?;
            (o.to_lowercase(), m.to_string())
        } else {
            (user.to_string(), name.to_string())
        };
        let mname = crate::store::normalize_name(&mname).map_err(|_| "bad mailbox name")?;
        let info = self
            .store()
            .status(&owner, &mname)
            .await
            .map_err(|_| "no such mailbox")?;
        let rights = if owner == user {
            Rights::all()
        } else {
            let mut r = Rights::default();
            for id in [user, "anyone"] {
                if let Ok(Some(s)) = self.store().rights(info.id, id).await {
                    r = r.union(Rights::parse(&s).unwrap_or_default());
                }
            }
            r
        };
        Ok(Resolved {
            owner,
            info,
            rights,
        })
    }

    /// The store user a URL's userid names, if it is this session's user
    /// (compared case-insensitively, the store's spelling returned).
    fn url_user_is_me(&self, u: &ImapUrl) -> bool {
        u.user
            .as_deref()
            .is_some_and(|x| x.eq_ignore_ascii_case(&self.user_name()))
    }

    /// Checks a URLAUTH-authorized URL (RFC 4467 7.3): access, expiry,
    /// verifier. Returns the user whose rights the fetch uses.
    async fn authorize(&mut self, raw: &str, u: &ImapUrl) -> Result<(String, Resolved), Fail> {
        let me = self.user_name();
        let owner = u.user.as_deref().ok_or("URLAUTH URL without a user")?;
        if !u.absolute {
            return Err("URLAUTH URL is not absolute");
        }
        let owner = if owner.eq_ignore_ascii_case(&me) {
            me.clone()
        } else {
            owner.to_lowercase()
        };
        let allowed = match u.access.as_ref().ok_or("no access identifier")? {
            Access::Anonymous | Access::AuthUser => true,
            Access::User(x) | Access::Submit(x) => x.eq_ignore_ascii_case(&me),
        };
        if !allowed {
            return Err("access identifier does not allow this user");
        }
        if u.expire
            .is_some_and(|t| t <= chrono::Utc::now().timestamp())
        {
            return Err("URL expired");
        }
        if u.mech.as_deref() != Some(INTERNAL) {
            return Err("unknown URLAUTH mechanism");
        }
        let rump = u.rump(raw).ok_or("no URL rump")?;
        let res = self.resolve_as(&owner, &u.mailbox).await?;
        let key = self
            .store()
            .urlauth_key(&owner, res.info.id)
            .await
            .map_err(|_| "no key")?;
        if !same(&token(&key, rump), u.token.as_deref().unwrap_or_default()) {
            return Err("verifier does not match");
        }
        Ok((owner, res))
    }

    /// The data a URL names, as this session may see it: an
    /// URLAUTH-authorized URL by its verifier (`need_auth`: only those), a
    /// plain one as the session's own user. The bytes taken from the
    /// budget while held come with them.
    pub(crate) async fn url_data(
        &mut self,
        raw: &str,
        need_auth: bool,
    ) -> Result<(Vec<u8>, Lease), Fail> {
        let u = url::parse(raw)?;
        let res = if u.token.is_some() {
            self.authorize(raw, &u).await?.1
        } else if need_auth || u.access.is_some() {
            return Err("not a URLAUTH-authorized URL");
        } else {
            if u.user.is_some() && !self.url_user_is_me(&u) {
                return Err("URL of another user");
            }
            let me = self.user_name();
            self.resolve_as(&me, &u.mailbox).await?
        };
        if !res.rights.has('r') {
            return Err("no read right");
        }
        if u.uidvalidity.is_some_and(|v| v != res.info.uidvalidity) {
            return Err("UIDVALIDITY changed");
        }
        let snap = self
            .store()
            .snapshot(&res.owner, &res.info.name)
            .await
            .map_err(|_| "no such mailbox")?;
        let meta = snap
            .messages
            .iter()
            .find(|m| m.uid == u.uid)
            .ok_or("no such message")?
            .clone();
        drop(snap);
        let lease = self
            .services
            .budget
            .try_take(meta.size)
            .ok_or(BUDGET_SPENT)?;
        let msg = self
            .store()
            .read(res.info.id, &meta)
            .await
            .map_err(|_| "message unreadable")?;
        let mut data = match &u.section {
            None => msg,
            Some(s) => {
                let sec = super::command::parse_section(s).ok_or("bad section")?;
                mime::section(&msg, Some(&sec))
            }
        };
        if let Some((origin, len)) = u.partial {
            data = mime::partial(&data, origin, len.unwrap_or(u32::MAX)).to_vec();
        }
        Ok((data, lease))
    }

    /// GENURLAUTH (RFC 4467 7.1): all URLs signed, or a NO and none.
    pub(crate) async fn genurlauth(&mut self, items: &[(String, String)]) -> io::Result<Reply> {
        let me = self.user_name();
        let mut out = Vec::new();
        for (raw, mech) in items {
            let u = match url::parse(raw) {
                Ok(u) => u,
                Err(_) => return Ok(Reply::bad("Invalid URL")),
            };
            if u.access.is_none() || u.token.is_some() || !u.absolute {
                return Ok(Reply::bad("Not a URLAUTH URL rump"));
            }
            if mech != INTERNAL {
                return Ok(Reply::no(None, "Unknown URLAUTH mechanism"));
            }
            if !self.url_user_is_me(&u) {
                return Ok(Reply::no(None, "URL names another user"));
            }
            let res = match self.resolve_as(&me, &u.mailbox).await {
                Ok(r) if r.rights.has('r') => r,
                _ => return Ok(Reply::no(None, "No such mailbox")),
            };
            let key = match self.store().urlauth_key(&me, res.info.id).await {
                Ok(k) => k,
                Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
            };
            let t = token(&key, raw);
            out.push(wire::quoted(&format!("{raw}:{INTERNAL}:{t}")));
        }
        self.write(&format!("* GENURLAUTH {}\r\n", out.join(" ")));
        Ok(Reply::ok("GENURLAUTH completed"))
    }

    /// RESETKEY (RFC 4467 7.2).
    pub(crate) async fn resetkey(
        &mut self,
        mailbox: Option<&[u8]>,
        mechs: &[String],
    ) -> io::Result<Reply> {
        if mechs.iter().any(|m| m != INTERNAL) {
            return Ok(Reply::no(None, "Unknown URLAUTH mechanism"));
        }
        let me = self.user_name();
        let id = match mailbox {
            None => None,
            Some(raw) => {
                let t = match self.target(raw).await {
                    Ok(t) => t,
                    Err(r) => return Ok(r),
                };
                match self.store().status(&t.owner, &t.name).await {
                    Ok(i) => Some(i.id),
                    Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
                }
            }
        };
        match self.store().reset_urlauth_keys(&me, id).await {
            Ok(()) => Ok(Reply::ok("RESETKEY completed")),
            Err(e) => Ok(self.store_error(e, "NONEXISTENT")),
        }
    }

    /// URLFETCH (RFC 4467 7.3): one untagged URLFETCH per URL, NIL for
    /// those that give nothing.
    pub(crate) async fn urlfetch(&mut self, urls: &[String]) -> io::Result<Reply> {
        for raw in urls {
            match self.url_data(raw, true).await {
                Ok((data, _lease)) => {
                    // A literal8 when the data has NUL (RFC 3516 4.2).
                    let eight = if data.contains(&0) { "~" } else { "" };
                    let head = format!(
                        "* URLFETCH {} {eight}{{{}}}\r\n",
                        wire::string(raw),
                        data.len()
                    );
                    self.out.extend_from_slice(head.as_bytes());
                    self.out.extend_from_slice(&data);
                    self.out.extend_from_slice(b"\r\n");
                    // Written before the lease goes: the next URL's
                    // message is only read once this one left.
                    self.flush().await?;
                }
                Err(why) => {
                    tracing::debug!(why, "URLFETCH gives NIL");
                    self.write(&format!("* URLFETCH {} NIL\r\n", wire::string(raw)));
                }
            }
        }
        Ok(Reply::ok("URLFETCH completed"))
    }
}
