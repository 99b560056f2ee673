//! LIST and LSUB (RFC 3501 6.3.8, 6.3.9; RFC 3348 CHILDREN; RFC 6154
//! SPECIAL-USE): pattern matching and attributes. Pure functions over the
//! store's mailbox list; names are UTF-8 here, the caller encodes them.

use std::collections::{BTreeMap, BTreeSet};

use crate::store::{MailboxInfo, DELIMITER};

/// One LIST/LSUB answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub attributes: Vec<&'static str>,
}

/// Does `name` match `pattern` (`*` anything, `%` anything but the
/// hierarchy delimiter)?
///
/// No recursion and no backtracking: runs of wildcards collapse to one
/// (`*` wins), a pattern with more literal characters than the name fails
/// at once, and the rest is one pass per pattern character over the set of
/// name positions reached, O(len(name)^2) at worst whatever the pattern.
pub fn matches(pattern: &str, name: &str) -> bool {
    let n: Vec<char> = name.chars().collect();
    let mut p: Vec<char> = Vec::new();
    let mut literals = 0usize;
    for c in pattern.chars() {
        match (c, p.last_mut()) {
            ('*' | '%', Some(last @ ('*' | '%'))) => {
                if c == '*' {
                    *last = '*';
                }
            }
            ('*' | '%', _) => p.push(c),
            _ => {
                literals += 1;
                if literals > n.len() {
                    return false;
                }
                p.push(c);
            }
        }
    }
    // reach[j]: the pattern so far matches the first j characters.
    let mut reach = vec![false; n.len() + 1];
    reach[0] = true;
    for &pc in &p {
        let mut next = vec![false; n.len() + 1];
        match pc {
            '*' | '%' => {
                let mut on = false;
                for j in 0..=n.len() {
                    if pc == '%' && j > 0 && n.get(j - 1) == Some(&DELIMITER) {
                        on = false;
                    }
                    on |= reach[j];
                    next[j] = on;
                }
            }
            c => {
                for j in 1..=n.len() {
                    next[j] = reach[j - 1] && n.get(j - 1) == Some(&c);
                }
            }
        }
        reach = next;
        if !reach.contains(&true) {
            return false;
        }
    }
    reach[n.len()]
}

/// The reference and the pattern joined, with `INBOX` in any case as the
/// first level spelled `INBOX`.
pub fn full_pattern(reference: &str, pattern: &str) -> String {
    let joined = format!("{reference}{pattern}");
    let first_end = joined.find(DELIMITER).unwrap_or(joined.len());
    match joined.get(..first_end) {
        Some(first) if first.eq_ignore_ascii_case("INBOX") => {
            format!("INBOX{}", joined.get(first_end..).unwrap_or_default())
        }
        _ => joined,
    }
}

fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.char_indices()
        .filter(|(_, c)| *c == DELIMITER)
        .filter_map(move |(i, _)| name.get(..i))
}

/// LIST: every existing mailbox matching, plus hierarchy levels that do not
/// exist themselves but have mailboxes under them (`\Noselect`).
pub fn list(mailboxes: &[MailboxInfo], pattern: &str) -> Vec<Entry> {
    let existing: BTreeMap<&str, &MailboxInfo> =
        mailboxes.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut names: BTreeSet<&str> = existing.keys().copied().collect();
    for m in mailboxes {
        // A missing level is listed when `%` stops at it (RFC 3501 6.3.8).
        if !matches(pattern, &m.name) {
            names.extend(ancestors(&m.name));
        }
    }
    let mut out = Vec::new();
    for name in names {
        if !matches(pattern, name) {
            continue;
        }
        let prefix = format!("{name}{DELIMITER}");
        let children = existing.keys().any(|n| n.starts_with(&prefix));
        let mut attributes = Vec::new();
        match existing.get(name) {
            None => attributes.push("\\Noselect"),
            Some(m) => {
                if let Some(u) = m.special_use {
                    attributes.push(u.attribute());
                }
            }
        }
        attributes.insert(
            0,
            if children {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            },
        );
        out.push(Entry {
            name: name.to_string(),
            attributes,
        });
    }
    out
}

/// LSUB: subscribed names matching; a level that is not subscribed itself
/// but has subscribed names under it matches `%` as `\Noselect` (RFC 3501
/// 6.3.9).
pub fn lsub(subscribed: &[String], pattern: &str) -> Vec<Entry> {
    let subs: BTreeSet<&str> = subscribed.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for name in &subs {
        if matches(pattern, name) && seen.insert(name.to_string()) {
            out.push(Entry {
                name: name.to_string(),
                attributes: vec![],
            });
        }
        if matches(pattern, name) {
            continue;
        }
        for a in ancestors(name) {
            if !subs.contains(a) && matches(pattern, a) && seen.insert(a.to_string()) {
                out.push(Entry {
                    name: a.to_string(),
                    attributes: vec!["\\Noselect"],
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SpecialUse;

    fn mb(name: &str, su: Option<SpecialUse>) -> MailboxInfo {
        MailboxInfo {
            id: 1,
            user: "u".into(),
            name: name.into(),
            uidvalidity: 1,
            uidnext: 1,
            highestmodseq: 1,
            special_use: su,
            subscribed: false,
            exists: 0,
            unseen: 0,
            size: 0,
            recent_uid: 1,
        }
    }

    #[test]
    fn rfc3501_6_3_8_wildcards() {
        assert!(matches("*", "a/b/c"));
        assert!(matches("%/%", "a/b"));
        assert!(!matches("%/%", "a/b/c"));
        assert!(matches("a*%c", "a/b/c"));
        assert!(matches("%*", "a/b"));
        assert!(!matches("*%/", "a"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(matches("%", "a"));
        assert!(!matches("%", "a/b"));
        assert!(matches("a/%", "a/b"));
        assert!(!matches("a/%", "a/b/c"));
        assert!(matches("a/*", "a/b/c"));
        assert!(matches("*b*", "a/b/c"));
        assert!(matches("%/%", "a/b"));
        assert!(!matches("INBOX", "INBOX/x"));
        assert!(matches("Ü%", "Über"));
        assert!(matches("", ""));
        assert!(!matches("a", ""));
    }

    #[test]
    fn rfc3501_6_3_8_inbox_case_insensitive() {
        assert_eq!(full_pattern("", "inbox"), "INBOX");
        assert_eq!(full_pattern("Inbox/", "%"), "INBOX/%");
        assert_eq!(full_pattern("", "Inboxes"), "Inboxes");
        assert_eq!(full_pattern("foo/", "bar"), "foo/bar");
    }

    #[test]
    fn rfc3348_children_and_rfc6154_special_use() {
        let boxes = vec![
            mb("INBOX", None),
            mb("Sent", Some(SpecialUse::Sent)),
            mb("a/b/c", None),
            mb("a/b", None),
        ];
        let all = list(&boxes, "*");
        let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["INBOX", "Sent", "a/b", "a/b/c"]);
        assert_eq!(all[0].attributes, vec!["\\HasNoChildren"]);
        assert_eq!(all[1].attributes, vec!["\\HasNoChildren", "\\Sent"]);
        assert_eq!(all[2].attributes, vec!["\\HasChildren"]);
        let top = list(&boxes, "%");
        assert_eq!(top.len(), 3);
        assert_eq!(top[2].name, "a");
        assert_eq!(top[2].attributes, vec!["\\HasChildren", "\\Noselect"]);
    }

    #[test]
    fn rfc3501_6_3_9_lsub_noselect_parent() {
        let subs = vec!["news/comp".to_string(), "INBOX".to_string()];
        let r = lsub(&subs, "%");
        assert_eq!(
            r,
            vec![
                Entry {
                    name: "INBOX".into(),
                    attributes: vec![]
                },
                Entry {
                    name: "news".into(),
                    attributes: vec!["\\Noselect"]
                }
            ]
        );
        assert_eq!(lsub(&subs, "*").len(), 2);
    }

    #[test]
    fn rfc3501_6_3_8_hostile_patterns_cost_no_stack_and_no_backtracking() {
        let name = format!("{}b", "a/".repeat(500));
        let long = "a".repeat(1000);
        assert!(matches(&"*a%".repeat(300), &long));
        assert!(!matches(&"*a%".repeat(20_000), &long));
        assert!(matches(&"*".repeat(100_000), ""));
        assert!(matches(&format!("{}b", "*".repeat(100_000)), &name));
        assert!(!matches(&format!("{}c", "%*%".repeat(30_000)), &name));
        assert!(!matches(&"a".repeat(100_000), &name));
        assert!(matches(&"%/".repeat(500), &"a/".repeat(500)));
    }
}
