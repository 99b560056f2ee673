//! Access control (RFC 4314): rights letters, SETACL modifications, and
//! the names under which other users' shared mailboxes appear.
//!
//! The owner of a mailbox has every right implicitly (nothing stored);
//! other users get what the mailbox's ACL grants to their address or to
//! `anyone`. Shared mailboxes appear in the other users' namespace as
//! `Other Users/<owner>/<name>` (RFC 2342 NAMESPACE says so).

use crate::store::DELIMITER;

/// Prefix of the other users' namespace (RFC 2342), without delimiter.
pub const OTHER_USERS: &str = "Other Users";

/// Every right RFC 4314 defines (2.1), in canonical order.
pub const ALL_RIGHTS: &str = "lrswipkxtea";

/// The rights a mailbox owner always has.
pub const OWNER_RIGHTS: &str = ALL_RIGHTS;

/// A set of rights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rights(u16);

impl Rights {
    pub fn all() -> Rights {
        Rights::parse(ALL_RIGHTS).unwrap_or_default()
    }

    /// Parses rights letters; the obsolete `c` and `d` (RFC 4314 2.1.1)
    /// stand for `k` and `xte`. `None`: a letter we do not know.
    pub fn parse(s: &str) -> Option<Rights> {
        let mut r = 0u16;
        for c in s.chars() {
            match c {
                'c' => r |= bit('k'),
                'd' => r |= bit('x') | bit('t') | bit('e'),
                c if ALL_RIGHTS.contains(c) => r |= bit(c),
                _ => return None,
            }
        }
        Some(Rights(r))
    }

    pub fn has(self, c: char) -> bool {
        self.0 & bit(c) != 0
    }

    pub fn union(self, o: Rights) -> Rights {
        Rights(self.0 | o.0)
    }

    pub fn minus(self, o: Rights) -> Rights {
        Rights(self.0 & !o.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// May the holder change the mailbox at all (SELECT is READ-WRITE)?
    pub fn writable(self) -> bool {
        self.has('s') || self.has('w') || self.has('t') || self.has('e')
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in ALL_RIGHTS.chars() {
            if self.has(c) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

fn bit(c: char) -> u16 {
    ALL_RIGHTS
        .chars()
        .position(|x| x == c)
        .map(|i| 1 << i)
        .unwrap_or(0)
}

/// A SETACL rights argument: `+rights` adds, `-rights` removes, plain
/// replaces (RFC 4314 3.1).
pub fn modify(current: Rights, arg: &str) -> Option<Rights> {
    if let Some(add) = arg.strip_prefix('+') {
        Some(current.union(Rights::parse(add)?))
    } else if let Some(del) = arg.strip_prefix('-') {
        Some(current.minus(Rights::parse(del)?))
    } else {
        Rights::parse(arg)
    }
}

/// The LISTRIGHTS answer for a non-owner (RFC 4314 3.7): nothing is
/// granted implicitly; each right can be granted on its own.
pub fn listrights_groups() -> String {
    ALL_RIGHTS
        .chars()
        .map(String::from)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A client-visible mailbox name in the other users' namespace: (owner,
/// name in the owner's store). `None` for the user's own names.
pub fn split_shared(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(OTHER_USERS)?.strip_prefix(DELIMITER)?;
    let (owner, mailbox) = rest.split_once(DELIMITER)?;
    if owner.is_empty() || mailbox.is_empty() {
        return None;
    }
    Some((owner, mailbox))
}

/// The client-visible name of another user's mailbox.
pub fn shared_name(owner: &str, mailbox: &str) -> String {
    format!("{OTHER_USERS}{DELIMITER}{owner}{DELIMITER}{mailbox}")
}

/// Is this name at or under the other users' namespace?
pub fn in_shared_namespace(name: &str) -> bool {
    name == OTHER_USERS
        || name
            .strip_prefix(OTHER_USERS)
            .is_some_and(|r| r.starts_with(DELIMITER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4314_2_1_rights_letters() {
        let r = Rights::parse("lrs").unwrap();
        assert!(r.has('l') && r.has('r') && r.has('s') && !r.has('w'));
        assert_eq!(r.to_string(), "lrs");
        // Obsolete c and d (RFC 4314 2.1.1).
        assert_eq!(Rights::parse("cd").unwrap().to_string(), "kxte");
        assert_eq!(Rights::parse("lz"), None);
        assert_eq!(Rights::all().to_string(), ALL_RIGHTS);
        assert!(!Rights::parse("lr").unwrap().writable());
        assert!(Rights::parse("lrs").unwrap().writable());
    }

    #[test]
    fn rfc4314_3_1_setacl_modifications() {
        let cur = Rights::parse("lr").unwrap();
        assert_eq!(modify(cur, "+sw").unwrap().to_string(), "lrsw");
        assert_eq!(modify(cur, "-r").unwrap().to_string(), "l");
        assert_eq!(modify(cur, "lrswi").unwrap().to_string(), "lrswi");
        assert_eq!(modify(cur, "+q"), None);
    }

    #[test]
    fn rfc2342_other_users_names() {
        assert_eq!(
            split_shared("Other Users/bob@example.com/Projects/x"),
            Some(("bob@example.com", "Projects/x"))
        );
        assert_eq!(split_shared("Other Users/bob@example.com"), None);
        assert_eq!(split_shared("INBOX"), None);
        assert_eq!(shared_name("bob@x", "INBOX"), "Other Users/bob@x/INBOX");
        assert!(in_shared_namespace("Other Users"));
        assert!(in_shared_namespace("Other Users/bob"));
        assert!(!in_shared_namespace("Other Usersx"));
    }
}
