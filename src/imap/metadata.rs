//! METADATA (RFC 5464): GETMETADATA and SETMETADATA on server and mailbox
//! annotations, `/shared` and `/private`, stored in the store's redb
//! (`store/metadata.rs`).
//!
//! Syntax lives in `command.rs` (msgd's own parser owns every command it
//! extends; imap-codec's `ext_metadata` would have put these two commands
//! on the other dispatcher, away from the ACL checks here), entry names are
//! checked by [`entry`]: ASCII, no `*` `%` or control octets, no `//`, no
//! trailing `/`, under `/shared` or `/private`, at most `MAX_ENTRY_NAME`
//! bytes, lowercased (names are case-insensitive, RFC 5464 3.2); a bad name
//! is `BAD`.
//!
//! Rights (RFC 5464 3.3 with RFC 4314) on a mailbox of another user: `l`
//! and `r` to read any entry and to set `/private` ones, and `w` as well to
//! set `/shared` ones; the owner has every right. Server entries: every
//! user reads them and sets its own `/private` ones; `/shared` server
//! entries belong to the administrator (`NO [NOPERM]`).
//!
//! Limits (docs/security.md): a value of at most `MAX_VALUE` bytes
//! (`NO [METADATA MAXSIZE n]`), per user at most `MAX_ENTRIES` entries and
//! `MAX_BYTES` bytes of names and values (`NO [METADATA TOOMANY]`); the
//! user pays for its private entries and for the shared entries of its own
//! mailboxes. A refused SETMETADATA changes nothing. `/private` is
//! supported, so `[METADATA NOPRIVATE]` is never sent. No unsolicited
//! METADATA responses are sent, so ENABLE METADATA is not needed.

use std::io;

use crate::store::{MailboxId, MetaLimits, MetaRefusal};

use super::session::{Reply, Session};

/// Largest value of one entry, in bytes (RFC 5464 4.3 asks for at least
/// 1024).
pub const MAX_VALUE: usize = 64 * 1024;
/// Most entries charged to one user (RFC 5464 asks for at least 10).
pub const MAX_ENTRIES: u64 = 256;
/// Most bytes (entry names and values) charged to one user.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// Longest entry name, in bytes.
pub const MAX_ENTRY_NAME: usize = 1024;
/// Most entries named in one GETMETADATA or SETMETADATA.
pub const MAX_ENTRIES_PER_COMMAND: usize = 256;

const LIMITS: MetaLimits = MetaLimits {
    max_value: MAX_VALUE,
    max_entries: MAX_ENTRIES,
    max_bytes: MAX_BYTES,
};

/// Checks an entry name (RFC 5464 3.2) and lowercases it.
pub fn entry(raw: &[u8]) -> Result<String, &'static str> {
    if raw.len() > MAX_ENTRY_NAME {
        return Err("entry name too long");
    }
    if raw
        .iter()
        .any(|&b| b <= 0x19 || b >= 0x7f || b == b'*' || b == b'%')
    {
        return Err("entry name with a forbidden character");
    }
    let name = String::from_utf8_lossy(raw).to_ascii_lowercase();
    if name.contains("//") || name.ends_with('/') {
        return Err("entry name with an empty component");
    }
    let top_ok = ["/shared", "/private"]
        .iter()
        .any(|t| name == *t || name.starts_with(&format!("{t}/")));
    if !top_ok {
        return Err("entry names start with /shared or /private");
    }
    Ok(name)
}

/// Can a value be set on this (checked) entry name? Not on the roots.
pub fn settable(entry: &str) -> bool {
    entry != "/shared" && entry != "/private"
}

/// An entry value as it goes on the wire: quoted when printable ASCII,
/// else a literal (`~{n}` when it holds NUL, RFC 5464 5: literal8).
fn value_wire(v: &[u8], out: &mut Vec<u8>) {
    if v.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        out.push(b'"');
        for &b in v {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        if v.contains(&0) {
            out.push(b'~');
        }
        out.extend_from_slice(format!("{{{}}}\r\n", v.len()).as_bytes());
        out.extend_from_slice(v);
    }
}

impl Session {
    /// Resolves the mailbox argument: `""` is the server (id 0). Returns
    /// (id, owner, wire name, rights letters or None for the server).
    async fn meta_target(
        &mut self,
        raw: &[u8],
    ) -> Result<(MailboxId, String, String, Option<super::acl::Rights>), Reply> {
        if raw.is_empty() {
            return Ok((0, String::new(), "\"\"".into(), None));
        }
        let t = self.target(raw).await?;
        let info = self
            .store()
            .status(&t.owner, &t.name)
            .await
            .map_err(|e| self.store_error(e, "NONEXISTENT"))?;
        let wire = self.mbox_wire(&t.display);
        Ok((info.id, t.owner, wire, Some(t.rights)))
    }

    /// GETMETADATA (RFC 5464 4.2).
    pub(crate) async fn getmetadata(
        &mut self,
        raw: &[u8],
        entries: Vec<String>,
        maxsize: Option<u32>,
        depth: crate::store::MetaDepth,
    ) -> io::Result<Reply> {
        let (id, _owner, wire, rights) = match self.meta_target(raw).await {
            Ok(t) => t,
            Err(r) => return Ok(r),
        };
        if let Some(r) = rights {
            if !(r.has('l') && r.has('r')) {
                return Ok(Reply::no_perm());
            }
        }
        let user = self.user_name();
        let found = match self.store().get_metadata(id, &user, entries, depth).await {
            Ok(f) => f,
            Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
        };
        let mut longest_omitted: Option<usize> = None;
        let mut line = format!("* METADATA {wire} (").into_bytes();
        let mut first = true;
        for (name, value) in found {
            // The roots hold no value of their own.
            if value.is_none() && !settable(&name) {
                continue;
            }
            if let (Some(max), Some(v)) = (maxsize, value.as_ref()) {
                if v.len() > max as usize {
                    longest_omitted = Some(longest_omitted.unwrap_or(0).max(v.len()));
                    continue;
                }
            }
            if !first {
                line.push(b' ');
            }
            first = false;
            line.extend_from_slice(name.as_bytes());
            line.push(b' ');
            match value {
                Some(v) => value_wire(&v, &mut line),
                None => line.extend_from_slice(b"NIL"),
            }
        }
        line.extend_from_slice(b")\r\n");
        if !first {
            self.out.extend_from_slice(&line);
        }
        Ok(match longest_omitted {
            // RFC 5464 4.2.1.
            Some(n) => Reply::ok_code(format!("METADATA LONGENTRIES {n}"), "GETMETADATA completed"),
            None => Reply::ok("GETMETADATA completed"),
        })
    }

    /// SETMETADATA (RFC 5464 4.3).
    pub(crate) async fn setmetadata(
        &mut self,
        raw: &[u8],
        items: Vec<(String, Option<Vec<u8>>)>,
    ) -> io::Result<Reply> {
        let (id, owner, _wire, rights) = match self.meta_target(raw).await {
            Ok(t) => t,
            Err(r) => return Ok(r),
        };
        let shared = items.iter().any(|(e, _)| e.starts_with("/shared"));
        let allowed = match rights {
            // Server entries: private ones only.
            None => !shared,
            Some(r) => r.has('l') && r.has('r') && (!shared || r.has('w')),
        };
        if !allowed {
            return Ok(Reply::no_perm());
        }
        let user = self.user_name();
        match self
            .store()
            .set_metadata(id, &user, &owner, items, LIMITS)
            .await
        {
            Ok(Ok(())) => Ok(Reply::ok("SETMETADATA completed")),
            Ok(Err(MetaRefusal::MaxSize(n))) => Ok(Reply::no(
                Some(&format!("METADATA MAXSIZE {n}")),
                "Annotation value too large",
            )),
            Ok(Err(MetaRefusal::TooMany)) => {
                Ok(Reply::no(Some("METADATA TOOMANY"), "Too many annotations"))
            }
            Err(e) => Ok(self.store_error(e, "NONEXISTENT")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5464_3_2_entry_names() {
        assert_eq!(entry(b"/Shared/Comment"), Ok("/shared/comment".into()));
        assert_eq!(
            entry(b"/private/vendor/x/y"),
            Ok("/private/vendor/x/y".into())
        );
        assert_eq!(entry(b"/shared"), Ok("/shared".into()));
        for bad in [
            &b"/shared/"[..],
            b"/shared//x",
            b"/other/x",
            b"shared/x",
            b"/shared/a*",
            b"/shared/a%",
            b"/shared/\x01",
            b"/shared/\xc3\xbc",
            b"/sharedx",
        ] {
            assert!(entry(bad).is_err(), "{bad:?}");
        }
        assert!(entry(format!("/shared/{}", "a".repeat(MAX_ENTRY_NAME)).as_bytes()).is_err());
        assert!(!settable("/private") && settable("/private/comment"));
    }

    #[test]
    fn rfc5464_5_value_forms() {
        let mut out = Vec::new();
        value_wire(b"a \"b\"", &mut out);
        assert_eq!(out, b"\"a \\\"b\\\"\"");
        out.clear();
        value_wire(b"two\r\nlines", &mut out);
        assert_eq!(out, b"{10}\r\ntwo\r\nlines");
        out.clear();
        value_wire(b"\0", &mut out);
        assert_eq!(out, b"~{1}\r\n\0");
    }
}
