//! Bearer tokens a mem presents to a store when it forwards a logged-in
//! user's JMAP calls: `msgd1.<user>.<expiry>.<mac>` where `user` is the
//! account name in unpadded base64url, `expiry` Unix seconds, and `mac`
//! HMAC-SHA256 over `msgd1.<user>.<expiry>` with the key every mem and
//! store share (`http.token_key_file`). Short-lived (`http.token_ttl`),
//! bound to one user, and accepted by a store only from
//! `http.token_networks` (checked by the caller).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

const PREFIX: &str = "msgd1";

pub struct TokenKey(hmac::Key);

impl TokenKey {
    pub fn new(key: &[u8]) -> TokenKey {
        TokenKey(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// A token for `user` valid for `ttl` from now.
    pub fn issue(&self, user: &str, ttl: Duration) -> String {
        self.issue_at(user, now() + ttl.as_secs())
    }

    fn issue_at(&self, user: &str, expiry: u64) -> String {
        let body = format!("{PREFIX}.{}.{expiry}", URL_SAFE_NO_PAD.encode(user));
        let mac = hmac::sign(&self.0, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
    }

    /// The user a valid, unexpired token names; None for anything else.
    pub fn verify(&self, token: &str) -> Option<String> {
        if token.len() > 1024 {
            return None;
        }
        let (body, mac) = token.rsplit_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        hmac::verify(&self.0, body.as_bytes(), &mac).ok()?;
        let mut parts = body.split('.');
        if parts.next()? != PREFIX {
            return None;
        }
        let user = String::from_utf8(URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()?;
        let expiry: u64 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || expiry <= now() || user.is_empty() {
            return None;
        }
        Some(user)
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
        let t = k.issue("alice@example.com", Duration::from_secs(60));
        assert_eq!(k.verify(&t).as_deref(), Some("alice@example.com"));
        // another key, a changed user, an expired token, garbage
        assert_eq!(TokenKey::new(&[8u8; 32]).verify(&t), None);
        let forged = t.replacen(
            &URL_SAFE_NO_PAD.encode("alice@example.com"),
            &URL_SAFE_NO_PAD.encode("bob@example.com"),
            1,
        );
        assert_eq!(k.verify(&forged), None);
        assert_eq!(k.verify(&k.issue_at("alice@example.com", now() - 1)), None);
        assert_eq!(k.verify("msgd1.x.y.z"), None);
        assert_eq!(k.verify(""), None);
    }
}
