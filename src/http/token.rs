//! Bearer tokens a mem presents to a store when it forwards a logged-in
//! user's JMAP calls: `msgd2.<user>.<expiry>.<session>.<mac>` where `user`
//! is the account name in unpadded base64url, `expiry` Unix seconds,
//! `session` the webmail session's id (base64url, from the sealed cookie)
//! and `mac` HMAC-SHA256 over everything before it with the key every mem
//! and store share (`http.token_key_file`). Short-lived
//! (`http.token_ttl`), bound to one user and one session, and accepted by
//! a store only from `http.token_networks` (checked by the caller); the
//! store refuses tokens whose session was ended by a logout
//! (`crate::store` sessions, checked in `crate::jmap::auth`).
//! The older form `msgd1.<user>.<expiry>.<mac>` (no session) still
//! verifies, for mems not yet upgraded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

const PREFIX_V1: &str = "msgd1";
const PREFIX: &str = "msgd2";

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: String,
    /// The webmail session the token was issued for (None: an old-form
    /// token).
    pub session: Option<String>,
}

pub struct TokenKey(hmac::Key);

impl TokenKey {
    pub fn new(key: &[u8]) -> TokenKey {
        TokenKey(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// A token for `user`'s webmail session `session` (an id of
    /// base64url characters) valid for `ttl` from now.
    pub fn issue(&self, user: &str, session: &str, ttl: Duration) -> String {
        self.issue_at(user, session, now() + ttl.as_secs())
    }

    fn issue_at(&self, user: &str, session: &str, expiry: u64) -> String {
        let body = format!(
            "{PREFIX}.{}.{expiry}.{session}",
            URL_SAFE_NO_PAD.encode(user)
        );
        self.signed(body)
    }

    fn signed(&self, body: String) -> String {
        let mac = hmac::sign(&self.0, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
    }

    /// The user and session a valid, unexpired token names; None for
    /// anything else.
    pub fn verify(&self, token: &str) -> Option<Verified> {
        if token.len() > 1024 {
            return None;
        }
        let (body, mac) = token.rsplit_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        hmac::verify(&self.0, body.as_bytes(), &mac).ok()?;
        let mut parts = body.split('.');
        let version = parts.next()?;
        if version != PREFIX && version != PREFIX_V1 {
            return None;
        }
        let user = String::from_utf8(URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()?;
        let expiry: u64 = parts.next()?.parse().ok()?;
        let session = if version == PREFIX {
            let s = parts.next()?;
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return None;
            }
            Some(s.to_string())
        } else {
            None
        };
        if parts.next().is_some() || expiry <= now() || user.is_empty() {
            return None;
        }
        Some(Verified { user, session })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let k = TokenKey::new(&[7u8; 32]);
        let t = k.issue("alice@example.com", "sid1", Duration::from_secs(60));
        let v = k.verify(&t).unwrap();
        assert_eq!(v.user, "alice@example.com");
        assert_eq!(v.session.as_deref(), Some("sid1"));
        // another key, a changed user, an expired token, garbage
        assert_eq!(TokenKey::new(&[8u8; 32]).verify(&t), None);
        let forged = t.replacen(
            &URL_SAFE_NO_PAD.encode("alice@example.com"),
            &URL_SAFE_NO_PAD.encode("bob@example.com"),
            1,
        );
        assert_eq!(k.verify(&forged), None);
        assert_eq!(
            k.verify(&k.issue_at("alice@example.com", "s", now() - 1)),
            None
        );
        assert_eq!(k.verify("msgd1.x.y.z"), None);
        assert_eq!(k.verify(""), None);
    }

    #[test]
    fn the_session_id_is_covered_by_the_mac() {
        let k = TokenKey::new(&[7u8; 32]);
        let t = k.issue("alice@example.com", "sidA", Duration::from_secs(60));
        assert_eq!(k.verify(&t.replacen(".sidA.", ".sidB.", 1)), None);
        // a session id that is not base64url is not issued-looking
        let odd = k.issue("alice@example.com", "a b", Duration::from_secs(60));
        assert_eq!(k.verify(&odd), None);
    }

    #[test]
    fn old_form_tokens_still_verify_without_a_session() {
        let k = TokenKey::new(&[7u8; 32]);
        let body = format!(
            "msgd1.{}.{}",
            URL_SAFE_NO_PAD.encode("bob@example.com"),
            now() + 60
        );
        let v = k.verify(&k.signed(body)).unwrap();
        assert_eq!(v.user, "bob@example.com");
        assert_eq!(v.session, None);
    }
}
