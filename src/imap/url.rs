//! IMAP URLs (RFC 5092), the forms CATENATE (RFC 4469) and URLAUTH (RFC
//! 4467) use: one message or a part of it,
//!
//! ```text
//! imap://user[;AUTH=x]@host[:port]/mailbox[;UIDVALIDITY=n]/;UID=n
//!     [/;SECTION=s][/;PARTIAL=o[.l]][;EXPIRE=t][;URLAUTH=access[:mech:token]]
//! /mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]
//! ```
//!
//! Mailbox-only URLs, searches (`?`) and URLs relative to a selected
//! mailbox are refused: no command here needs them.
//!
//! Bounds: the input is at most [`MAX_URL`] bytes; the parser is one pass
//! over it without recursion or backtracking, and its output is never
//! larger than its input. Percent-decoded mailbox names, users and
//! sections must be UTF-8 (RFC 5092 3.1: mailbox names in URLs are UTF-8,
//! not modified UTF-7).
//!
//! `rump_len`: for a URL with `;URLAUTH=`, the length of the URL up to and
//! including the access identifier, the part the verifier signs (RFC 4467
//! 2.1 "URL rump").

/// Longest URL accepted (also the longest astring worth signing).
pub const MAX_URL: usize = 8192;

/// Who may use a URLAUTH-authorized URL (RFC 4467 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// `submit+user`: the user's message submission agent.
    Submit(String),
    /// `user+user`: that user.
    User(String),
    /// `authuser`: any authenticated user of this server.
    AuthUser,
    /// `anonymous`: anybody.
    Anonymous,
}

/// A parsed IMAP URL naming one message (or part of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapUrl {
    /// `imap://` form (else path-absolute, relative to this server).
    pub absolute: bool,
    pub user: Option<String>,
    pub auth: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// UTF-8 mailbox name.
    pub mailbox: String,
    pub uidvalidity: Option<u32>,
    pub uid: u32,
    /// Decoded section text, e.g. `1.2` or `HEADER.FIELDS (TO)`.
    pub section: Option<String>,
    /// Origin and optional length.
    pub partial: Option<(u32, Option<u32>)>,
    /// Unix seconds.
    pub expire: Option<i64>,
    pub access: Option<Access>,
    /// Mechanism and token of the verifier (mechanism uppercased).
    pub mech: Option<String>,
    pub token: Option<String>,
    /// Bytes of the input that form the URL rump (see the module doc).
    pub rump_len: usize,
}

type R<T> = Result<T, &'static str>;

/// Case-insensitive prefix test on bytes.
fn starts_ci(s: &[u8], p: &str) -> bool {
    s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p.as_bytes())
}

/// Characters allowed raw in the components (RFC 3986 unreserved,
/// sub-delims but `;`, and `:@/&=~` where the grammar allows them; `%`
/// starts an escape). Everything else must be percent-encoded.
fn raw_ok(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'&'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'%'
        )
}

/// Percent-decodes `s` into UTF-8.
pub fn decode(s: &[u8]) -> R<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'%' {
            let h = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            let h = std::str::from_utf8(h).map_err(|_| "bad %-escape")?;
            out.push(u8::from_str_radix(h, 16).map_err(|_| "bad %-escape")?);
            i += 3;
        } else if raw_ok(c) {
            out.push(c);
            i += 1;
        } else {
            return Err("character must be %-encoded");
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8")
}

fn number(s: &[u8]) -> R<u32> {
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return Err("expected a number");
    }
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("number out of range")
}

fn nz_number(s: &[u8]) -> R<u32> {
    match number(s)? {
        0 => Err("zero where a non-zero number is needed"),
        n => Ok(n),
    }
}

/// Splits at the first `;` (the component delimiter): (before, rest
/// starting at the `;`).
fn until_semicolon(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().position(|&c| c == b';').unwrap_or(s.len());
    s.split_at(n)
}

/// Parses an IMAP URL naming a message (see the module doc).
pub fn parse(input: &str) -> R<ImapUrl> {
    let b = input.as_bytes();
    if b.len() > MAX_URL {
        return Err("URL too long");
    }
    let mut url = ImapUrl {
        absolute: false,
        user: None,
        auth: None,
        host: None,
        port: None,
        mailbox: String::new(),
        uidvalidity: None,
        uid: 0,
        section: None,
        partial: None,
        expire: None,
        access: None,
        mech: None,
        token: None,
        rump_len: 0,
    };
    let mut s: &[u8] = b;
    if starts_ci(s, "imap://") {
        url.absolute = true;
        s = &s[7..];
        let n = s.iter().position(|&c| c == b'/').ok_or("no path")?;
        let (authority, rest) = s.split_at(n);
        s = rest;
        let hostport = match authority.iter().rposition(|&c| c == b'@') {
            Some(at) => {
                let (ui, hp) = authority.split_at(at);
                let (user, auth) = until_semicolon(ui);
                if !auth.is_empty() {
                    if !starts_ci(auth, ";AUTH=") || auth.len() == 6 {
                        return Err("bad userinfo");
                    }
                    url.auth = Some(decode(&auth[6..])?);
                }
                if !user.is_empty() {
                    url.user = Some(decode(user)?);
                }
                &hp[1..]
            }
            None => authority,
        };
        let (host, port) = match hostport.iter().rposition(|&c| c == b':') {
            Some(c) if !hostport.ends_with(b"]") => {
                let p = number(&hostport[c + 1..])?;
                (
                    &hostport[..c],
                    Some(u16::try_from(p).map_err(|_| "bad port")?),
                )
            }
            _ => (hostport, None),
        };
        if host.is_empty() {
            return Err("no host");
        }
        url.host = Some(decode(host)?);
        url.port = port;
    }
    // path-absolute: "/" mailbox.
    s = s.strip_prefix(b"/").ok_or("path must start with '/'")?;
    let (mbox, rest) = until_semicolon(s);
    s = rest;
    let mbox = if starts_ci(s, ";UIDVALIDITY=") {
        let (v, rest) = until_semicolon(&s[13..]);
        // The number ends where "/;UID=" starts.
        let v = v.strip_suffix(b"/").ok_or("expected /;UID=")?;
        url.uidvalidity = Some(nz_number(v)?);
        s = rest;
        mbox
    } else {
        mbox.strip_suffix(b"/").ok_or("expected /;UID=")?
    };
    if mbox.is_empty() {
        return Err("no mailbox");
    }
    url.mailbox = decode(mbox)?;
    if !starts_ci(s, ";UID=") {
        return Err("expected ;UID=");
    }
    let (v, rest) = until_semicolon(&s[5..]);
    s = rest;
    // What follows the UID: "/;SECTION=" or "/;PARTIAL=" (after a
    // slash), ";EXPIRE=" or ";URLAUTH=" (without).
    let (num, slash) = match v.strip_suffix(b"/") {
        Some(n) => (n, true),
        None => (v, false),
    };
    url.uid = nz_number(num)?;
    let mut slash = slash;
    if slash && starts_ci(s, ";SECTION=") {
        let (v, rest) = until_semicolon(&s[9..]);
        s = rest;
        let (sec, sl) = match v.strip_suffix(b"/") {
            Some(x) if s.is_empty() || starts_ci(s, ";PARTIAL=") => (x, true),
            _ => (v, false),
        };
        slash = sl;
        if sec.is_empty() {
            return Err("empty section");
        }
        url.section = Some(decode(sec)?);
    }
    if slash && starts_ci(s, ";PARTIAL=") {
        let (v, rest) = until_semicolon(&s[9..]);
        s = rest;
        slash = false;
        url.partial = Some(match v.iter().position(|&c| c == b'.') {
            Some(d) => (number(&v[..d])?, Some(nz_number(&v[d + 1..])?)),
            None => (number(v)?, None),
        });
    }
    if slash {
        return Err("unexpected '/'");
    }
    if starts_ci(s, ";EXPIRE=") {
        let (v, rest) = until_semicolon(&s[8..]);
        s = rest;
        let t = std::str::from_utf8(v).map_err(|_| "bad EXPIRE")?;
        let t = chrono::DateTime::parse_from_rfc3339(t).map_err(|_| "bad EXPIRE")?;
        url.expire = Some(t.timestamp());
    }
    if starts_ci(s, ";URLAUTH=") {
        let start = b.len() - s.len() + 9;
        let v = &s[9..];
        let n = v.iter().position(|&c| c == b':').unwrap_or(v.len());
        let (access, verifier) = v.split_at(n);
        url.access = Some(parse_access(access)?);
        url.rump_len = start + n;
        s = &[];
        if !verifier.is_empty() {
            let verifier = &verifier[1..];
            let c = verifier
                .iter()
                .position(|&c| c == b':')
                .ok_or("expected ':' after the mechanism")?;
            let (mech, token) = (&verifier[..c], &verifier[c + 1..]);
            if mech.is_empty()
                || !mech
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
            {
                return Err("bad URLAUTH mechanism");
            }
            if token.len() < 32 || !token.iter().all(u8::is_ascii_hexdigit) {
                return Err("bad URLAUTH token");
            }
            url.mech = Some(String::from_utf8_lossy(mech).to_ascii_uppercase());
            url.token = Some(String::from_utf8_lossy(token).to_ascii_lowercase());
        }
    } else if url.expire.is_some() {
        return Err(";EXPIRE= without ;URLAUTH=");
    }
    if !s.is_empty() {
        return Err("unexpected text in URL");
    }
    Ok(url)
}

fn parse_access(a: &[u8]) -> R<Access> {
    if a.eq_ignore_ascii_case(b"authuser") {
        Ok(Access::AuthUser)
    } else if a.eq_ignore_ascii_case(b"anonymous") {
        Ok(Access::Anonymous)
    } else if starts_ci(a, "submit+") && a.len() > 7 {
        Ok(Access::Submit(decode(&a[7..])?))
    } else if starts_ci(a, "user+") && a.len() > 5 {
        Ok(Access::User(decode(&a[5..])?))
    } else {
        Err("unknown URLAUTH access identifier")
    }
}

impl ImapUrl {
    /// The URL rump of `input` (what the verifier signs), if it has one.
    pub fn rump<'a>(&self, input: &'a str) -> Option<&'a str> {
        self.access.as_ref()?;
        input.get(..self.rump_len)
    }
}

/// Most URLs (or CATENATE parts) in one command.
pub const MAX_URLS: usize = 256;
