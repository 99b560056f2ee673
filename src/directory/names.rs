//! Validation of the names a directory is given: user and alias addresses
//! and domains, checked when they are created (`msgd user|alias|domain
//! add`, `embedded::add_user`).
//!
//! An address is RFC 5321 4.1.2 `Local-part "@" Domain`: the local part a
//! dot-atom or a quoted string, the domain dot-separated labels of
//! letters, digits and hyphens (non-ASCII letters allowed, RFC 6531). On top
//! of the grammar, and because names end up in file names and logs: no
//! control characters, no path separators (`/`, `\`, NUL) in any part,
//! no `.` or `..` label, and the RFC 5321 4.5.3.1 length limits.

use std::fmt;

/// RFC 5321 4.5.3.1.1 / 4.5.3.1.2 / the path limit less the brackets.
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_LABEL: usize = 63;
const MAX_ADDRESS: usize = 254;

/// Why a name was refused; `Display` is the message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadName {
    pub name: String,
    pub why: &'static str,
}

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not a valid name: {}",
            self.name.escape_debug(),
            self.why
        )
    }
}

impl std::error::Error for BadName {}

fn bad(name: &str, why: &'static str) -> BadName {
    BadName {
        name: name.to_string(),
        why,
    }
}

/// RFC 5322 atext, less `/` (a path separator); non-ASCII allowed (RFC 6531).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

/// Checks what every part must satisfy whatever its syntax.
fn common(name: &str, whole: &str) -> Result<(), BadName> {
    if name.chars().any(|c| c.is_control()) {
        return Err(bad(whole, "control characters are not allowed"));
    }
    if name.contains(['/', '\\', '\0']) {
        return Err(bad(whole, "path separators (/ and \\) are not allowed"));
    }
    Ok(())
}

/// A domain: labels of letters, digits and hyphens, no leading or
/// trailing hyphen, none empty (so no `.` / `..`), at most 63 octets each
/// and 255 in all. A single label (`localhost`) is accepted.
pub fn check_domain(domain: &str) -> Result<(), BadName> {
    common(domain, domain)?;
    if domain.is_empty() {
        return Err(bad(domain, "the domain is empty"));
    }
    if domain.len() > MAX_DOMAIN {
        return Err(bad(domain, "the domain is longer than 255 octets"));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err(bad(
                domain,
                "a domain label is empty (leading, trailing or double dot)",
            ));
        }
        if label.len() > MAX_LABEL {
            return Err(bad(domain, "a domain label is longer than 63 octets"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad(domain, "a domain label starts or ends with a hyphen"));
        }
        if !label.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric())
        }) {
            return Err(bad(
                domain,
                "a domain label may hold only letters, digits and hyphens",
            ));
        }
    }
    Ok(())
}

/// A local part: a dot-atom (no empty atom, so no leading, trailing or
/// double dot) or a quoted string of printable characters.
fn check_local(local: &str, whole: &str) -> Result<(), BadName> {
    if local.is_empty() {
        return Err(bad(whole, "the local part is empty"));
    }
    if local.len() > MAX_LOCAL {
        return Err(bad(whole, "the local part is longer than 64 octets"));
    }
    if let Some(inner) = local.strip_prefix('"') {
        let Some(inner) = inner.strip_suffix('"') else {
            return Err(bad(whole, "an unterminated quoted local part"));
        };
        if inner.is_empty() || inner.contains('"') {
            return Err(bad(
                whole,
                "a quoted local part must be non-empty, without inner quotes",
            ));
        }
        if inner.trim_matches('.').is_empty() {
            return Err(bad(whole, "a local part of only dots is not allowed"));
        }
        return Ok(());
    }
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err(bad(
                whole,
                "the local part has a leading, trailing or double dot (quote it)",
            ));
        }
        if !atom.chars().all(is_atext) {
            return Err(bad(
                whole,
                "the local part holds a character that needs quoting (space, @, brackets...)",
            ));
        }
    }
    Ok(())
}

/// An address `local@domain` as RFC 5321 4.1.2 allows it, with the extra
/// rules above.
pub fn check_address(address: &str) -> Result<(), BadName> {
    common(address, address)?;
    if address.len() > MAX_ADDRESS {
        return Err(bad(address, "the address is longer than 254 octets"));
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(bad(address, "an address needs local-part@domain"));
    };
    check_local(local, address)?;
    check_domain(domain).map_err(|e| bad(address, e.why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5321_4_1_2_addresses_are_accepted() {
        for ok in [
            "alice@example.com",
            "alice@localhost",
            "first.last+tag@mail.example.co.uk",
            "o'brien@example.com",
            "x_y-z=1@a-b.example",
            "\"john doe\"@example.com",
            "\"a@b\"@example.com",
            "jörg@bücher.example",
            "postmaster@xn--bcher-kva.example",
        ] {
            assert_eq!(check_address(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn bad_addresses_are_refused_with_a_reason() {
        for (bad, why) in [
            ("alice", "local-part@domain"),
            ("@example.com", "local part is empty"),
            ("alice@", "domain is empty"),
            (".alice@example.com", "double dot"),
            ("alice.@example.com", "double dot"),
            ("a..b@example.com", "double dot"),
            ("a b@example.com", "needs quoting"),
            ("a(b)@example.com", "needs quoting"),
            ("../../etc@example.com", "path separators"),
            ("a/b@example.com", "path separators"),
            ("a\\b@example.com", "path separators"),
            ("a\0b@example.com", "control"),
            ("a\nb@example.com", "control"),
            ("a\u{7f}@example.com", "control"),
            ("alice@exa mple.com", "letters, digits and hyphens"),
            ("alice@example..com", "empty"),
            ("alice@.example.com", "empty"),
            ("alice@example.com.", "empty"),
            ("alice@..", "empty"),
            ("alice@-x.com", "hyphen"),
            ("alice@x_y.com", "letters, digits and hyphens"),
            ("\"..\"@example.com", "only dots"),
            ("\"x@example.com", "unterminated"),
        ] {
            let e = check_address(bad).expect_err(bad);
            assert!(e.why.contains(why), "{bad}: {e}");
            assert!(e.to_string().contains("is not a valid name"), "{e}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(check_address(&long).is_err());
        let long = format!("a@{}.com", "b".repeat(64));
        assert!(check_address(&long).is_err());
    }

    #[test]
    fn domains_are_checked_alone_too() {
        assert_eq!(check_domain("example.com"), Ok(()));
        assert_eq!(check_domain("localhost"), Ok(()));
        for bad in ["", ".", "..", "../x", "a/b", "ex ample.com", "a\tb"] {
            assert!(check_domain(bad).is_err(), "{bad:?}");
        }
    }
}
