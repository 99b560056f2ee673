//! Password hashes. New hashes are Argon2id (PHC string `$argon2id$...`);
//! SHA-512-crypt / SHA-256-crypt (`$6$` / `$5$`, optionally `{CRYPT}`
//! prefixed as in LDAP) verify too, so existing user bases can be imported.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

/// Hashes a new password with Argon2id and a random salt.
pub fn hash(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// Constant-time verification against any supported scheme. Unknown
/// schemes never match.
pub fn verify(password: &str, stored: &str) -> bool {
    let stored = stored
        .strip_prefix("{CRYPT}")
        .or_else(|| stored.strip_prefix("{crypt}"))
        .or_else(|| stored.strip_prefix("{ARGON2}"))
        .unwrap_or(stored);
    if stored.starts_with("$argon2") {
        Argon2::default()
            .verify_password(password.as_bytes(), stored)
            .is_ok()
    } else if stored.starts_with("$6$") || stored.starts_with("$5$") {
        sha_crypt::ShaCrypt::default()
            .verify_password(password.as_bytes(), stored)
            .is_ok()
    } else {
        false
    }
}

/// Limits concurrent hash verifications to twice the number of cores: each
/// Argon2id verification holds 19 MiB for its duration.
pub fn hashing_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores * 2)
    })
}

/// A password that nobody can guess, for generated accounts.
pub fn generate() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("s3cret", &h));
        assert!(!verify("s3creT", &h));
    }

    #[test]
    fn sha512_crypt_from_an_existing_directory_verifies() {
        // `mkpasswd -m sha-512 -S saltsalt password`
        let h = "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/";
        assert!(verify("password", h));
        assert!(verify("password", &format!("{{CRYPT}}{h}")));
        assert!(!verify("passwore", h));
    }

    #[test]
    fn unknown_scheme_never_matches() {
        assert!(!verify("x", "x"));
        assert!(!verify("", ""));
        assert!(!verify("x", "{PLAIN}x"));
    }
}
